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
