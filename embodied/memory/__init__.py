"""Memory banks for embodied policies, batched over parallel environments.

Build one by name: `embodied.memory.make("hcam", dim=64)`. See `docs/memory.md`.
"""

from __future__ import annotations

from typing import Any

from embodied.registry import Registry

MEMORIES: Registry[Any] = Registry("memory")


def make(name: str, **kwargs: Any) -> Any:
    """Build the memory registered under `name`; an unknown name lists the valid ones."""
    return MEMORIES.make(name, **kwargs)


def names() -> list[str]:
    return MEMORIES.names()


# Register the built-in memories (imported after MEMORIES exists: the modules use it).
from embodied.memory import dual_kv, events, hcam, pcmb, place, voxel_map  # noqa: E402
from embodied.memory.base import Memory, ReadResult  # noqa: E402

__all__ = [
    "MEMORIES",
    "Memory",
    "ReadResult",
    "dual_kv",
    "events",
    "hcam",
    "make",
    "names",
    "pcmb",
    "place",
    "voxel_map",
]
