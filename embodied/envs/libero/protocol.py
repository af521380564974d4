"""The LIBERO evaluation protocol as named, recorded settings.

A protocol is a frozen dataclass: every constant that changes published LIBERO numbers
(max steps per suite, wait steps, init-state coverage, render resolution, seed) is pinned
here and exposed on the env (`env.unwrapped.protocol`) and in every `info`, so evaluation
reports can print it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

SUITES: tuple[str, ...] = ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")
NUM_TASKS: dict[str, int] = {"libero_spatial": 10, "libero_object": 10, "libero_goal": 10, "libero_10": 10,
                             "libero_90": 90}

_OPENVLA_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520,
                  "libero_90": 400}


@dataclass(frozen=True)
class LiberoProtocol:
    """Evaluation constants of one named LIBERO protocol.

    - `max_steps[suite]`: policy steps per episode (wait steps excluded); `truncated` after that.
    - `num_steps_wait`: no-op steps (zero motion, gripper -1 = open) after setting the init state,
      so objects settle; not counted as steps and not seen by the policy.
    - `num_init_states`: fixed init states per task; episode i uses state i (the seed does not vary them).
    - `resolution`: camera resolution the protocol renders at (the env may render lower for CPU work;
      the actual resolution is recorded next to the protocol in `info["settings"]`).
    - `sim_seed`: `env.seed(...)` given to the simulator (OpenVLA uses 0).
    """

    name: str
    max_steps: dict[str, int] = field(default_factory=lambda: dict(_OPENVLA_STEPS), hash=False)
    num_steps_wait: int = 10
    num_init_states: int = 50
    resolution: int = 256
    sim_seed: int = 0
    image_rotation_deg: int = 180
    gripper_open: float = -1.0
    success: str = "simulator check_success() (all BDDL goal predicates hold)"

    def max_steps_for(self, suite: str) -> int:
        return int(self.max_steps[suite])

    def as_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["max_steps"] = dict(self.max_steps)
        return d

    def __str__(self) -> str:
        steps = ", ".join(f"{k}={v}" for k, v in self.max_steps.items())
        return (f"LiberoProtocol({self.name}: max_steps[{steps}], wait={self.num_steps_wait} no-op steps "
                f"(gripper {self.gripper_open:+.0f}), init_states={self.num_init_states}/task (episode i -> "
                f"state i), resolution={self.resolution}, sim_seed={self.sim_seed}, "
                f"rotate {self.image_rotation_deg} deg)")


PROTOCOLS: dict[str, LiberoProtocol] = {
    # OpenVLA / openvla-oft / openpi (run_libero_eval.py).
    "openvla": LiberoProtocol(name="openvla"),
    # LeRobot's LiberoEnv: spatial gets 280 like object.
    "lerobot": LiberoProtocol(
        name="lerobot", max_steps={**_OPENVLA_STEPS, "libero_spatial": 280}),
}


def get_protocol(name: str) -> LiberoProtocol:
    if name not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {sorted(PROTOCOLS)}, got {name!r}")
    return PROTOCOLS[name]
