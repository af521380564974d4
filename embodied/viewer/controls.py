"""Keyboard driving: a key name (as the browser's `KeyboardEvent.key`, lower-cased) -> an env action.

Navigation (Discrete(4), `embodied.envs.sim.types.Action`): W forward, A turn left, D turn right,
S or space STOP. LIBERO (7-d end-effector delta + gripper, in [-1, 1]): W/S +x/-x, A/D +y/-y,
R/F up/down, Q/E yaw left/right, space toggles the gripper (it stays as set for the next moves).
"""

from __future__ import annotations

import numpy as np

from embodied.envs.sim.types import Action

NAV_KEYS: dict[str, int] = {"w": int(Action.MOVE_FORWARD), "a": int(Action.TURN_LEFT), "d": int(Action.TURN_RIGHT),
                            "s": int(Action.STOP), " ": int(Action.STOP)}
# key -> (action component, sign); components 0-2 are position deltas, 5 the yaw delta
LIBERO_KEYS: dict[str, tuple[int, float]] = {"w": (0, 1.0), "s": (0, -1.0), "a": (1, 1.0), "d": (1, -1.0),
                                             "r": (2, 1.0), "f": (2, -1.0), "q": (5, 1.0), "e": (5, -1.0)}
LIBERO_GRIPPER_KEY = " "
KINDS = ("nav", "libero")


class Keyboard:
    """Turns key presses into actions; holds the one piece of state keys have (LIBERO's gripper)."""

    def __init__(self, kind: str, delta: float = 0.5) -> None:
        if kind not in KINDS:
            raise ValueError(f"keyboard kind must be one of {list(KINDS)}, got {kind!r}")
        if not 0.0 < delta <= 1.0:
            raise ValueError(f"view.ee_delta must be in (0, 1], got {delta}")
        self.kind, self.delta = kind, float(delta)
        self.gripper = -1.0  # LIBERO: -1 open, +1 closed

    def keys(self) -> list[str]:
        return sorted(NAV_KEYS if self.kind == "nav" else [*LIBERO_KEYS, LIBERO_GRIPPER_KEY])

    def action(self, key: str) -> int | np.ndarray:
        key = key.lower()
        if self.kind == "nav":
            if key not in NAV_KEYS:
                raise ValueError(f"key {key!r} drives nothing; navigation keys: W A D, S or space (STOP)")
            return NAV_KEYS[key]
        action = np.zeros(7, dtype=np.float32)
        if key == LIBERO_GRIPPER_KEY:
            self.gripper = -self.gripper
        elif key in LIBERO_KEYS:
            i, sign = LIBERO_KEYS[key]
            action[i] = sign * self.delta
        else:
            raise ValueError(f"key {key!r} drives nothing; LIBERO keys: W S A D R F Q E, space (gripper)")
        action[6] = self.gripper
        return action
