"""LIBERO manipulation benchmark as `embodied/Libero-v0` (optional extra: `pip install embodied[libero]`).

Importing this package never imports LIBERO; constructing the env does, and fails with an
install hint when it is missing. See docs/libero.md.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from embodied.envs.libero._loader import INSTALL_HINT, ensure_libero_config, libero_available
from embodied.envs.libero.protocol import NUM_TASKS, PROTOCOLS, SUITES, LiberoProtocol, get_protocol

GYM_ID = "embodied/Libero-v0"
ENTRY_POINT = "embodied.envs.libero.env:LiberoEnv"

if GYM_ID not in gym.registry:
    gym.register(id=GYM_ID, entry_point=ENTRY_POINT)


def __getattr__(name: str) -> Any:  # lazy: env.py is light, but keep the package import minimal
    if name in ("LiberoEnv", "LiberoSettings", "CAMERAS", "INSTRUCTION_CHARSET"):
        from embodied.envs.libero import env

        return getattr(env, name)
    if name in ("TaskExpert", "PickPlaceExpert", "ExpertError", "pick_place_goals"):
        from embodied.envs.libero import expert

        return getattr(expert, name)
    raise AttributeError(name)


__all__ = [
    "ENTRY_POINT",
    "GYM_ID",
    "INSTALL_HINT",
    "NUM_TASKS",
    "PROTOCOLS",
    "SUITES",
    "LiberoProtocol",
    "ensure_libero_config",
    "get_protocol",
    "libero_available",
]
