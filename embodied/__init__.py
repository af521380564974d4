"""embodied: a toolkit for embodied agents with memory.

Subpackages are imported lazily, so `import embodied` stays cheap and a user who only
needs the environments never pays for torch:

    import embodied
    env = embodied.envs.make("pointnav")
    mem = embodied.memory.make("hcam", dim=64)
"""

from __future__ import annotations

import importlib
from types import ModuleType

__version__ = "0.1.0"

_SUBPACKAGES = ("envs", "memory", "policies", "data", "train", "evaluate", "viewer")


def __getattr__(name: str) -> ModuleType:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'embodied' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted([*globals(), *_SUBPACKAGES])
