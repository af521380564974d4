"""The navigation backend protocol: the one contract every simulator implements.

The Gymnasium tasks (`embodied.envs.nav`) talk only to this protocol, so the same task
runs on the embedded MuJoCo backend, on habitat-sim, or on either hosted in another
interpreter (`embodied.envs.worker`).

World frame: right-handed, Z up, metres. The floor is z = 0. The agent's pose is its
base position on the floor (x, y, 0) and its heading `yaw` in radians about +Z, with
yaw = 0 facing +X and positive yaw turning left (counter-clockwise seen from above).
Readers of Y-up data (habitat, R2R-CE files) convert at the boundary:
`zup = (x, -z, y)` for a habitat point `(x, y, z)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from embodied.envs.scenes import Scene


class Action(IntEnum):
    """Discrete navigation actions, in the VLN-CE / habitat order."""

    STOP = 0
    MOVE_FORWARD = 1
    TURN_LEFT = 2
    TURN_RIGHT = 3


@dataclass(frozen=True)
class AgentConfig:
    """Embodiment and action granularity; defaults follow VLN-CE (`vlnce_task.yaml`)."""

    radius: float = 0.18
    height: float = 1.5
    camera_height: float = 1.25
    forward_step: float = 0.25
    turn_angle_deg: float = 15.0
    allow_sliding: bool = True


@dataclass(frozen=True)
class SensorConfig:
    """Which images to render and how."""

    width: int = 128
    height: int = 128
    hfov_deg: float = 90.0
    rgb: bool = True
    depth: bool = True
    semantic: bool = False
    min_depth: float = 0.0
    max_depth: float = 10.0


@dataclass(frozen=True)
class AgentPose:
    position: np.ndarray  # (3,) float64, base on the floor
    yaw: float  # radians, 0 = +X, counter-clockwise positive


@dataclass
class StepOutcome:
    """What applying one action did to the agent."""

    collided: bool = False
    moved: float = 0.0  # metres actually travelled


@dataclass
class Frames:
    """Rendered sensors. Absent sensors are None."""

    rgb: np.ndarray | None = None  # (H, W, 3) uint8
    depth: np.ndarray | None = None  # (H, W, 1) float32 metres, clipped to [min_depth, max_depth]
    semantic_object: np.ndarray | None = None  # (H, W) int32 object id, 0 = structure/background
    semantic_category: np.ndarray | None = None  # (H, W) int32 category id, 0 = structure/background
    extra: dict[str, np.ndarray] = field(default_factory=dict)


@runtime_checkable
class NavBackend(Protocol):
    """A navigation simulator. Implementations: `MujocoBackend`, `HabitatBackend`,
    and `RemoteBackend` (any of the two in a subprocess)."""

    agent: AgentConfig
    sensors: SensorConfig

    def load_scene(self, scene: Scene) -> None:
        """Build the simulator scene; cheap to call again with the same scene."""

    def set_agent_pose(self, position: np.ndarray, yaw: float) -> None: ...

    def get_agent_pose(self) -> AgentPose: ...

    def apply_action(self, action: int) -> StepOutcome:
        """Move or turn the agent with collision handling. STOP does nothing."""

    def render(self) -> Frames: ...

    def geodesic_distance(self, a: np.ndarray, b: np.ndarray) -> float:
        """Shortest navigable path length from a to b in metres; inf if unreachable."""

    def shortest_path(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """(N, 3) waypoints from a to b along navigable space (a first, b last)."""

    def sample_navigable_point(self, rng: np.random.Generator) -> np.ndarray: ...

    def is_navigable(self, point: np.ndarray) -> bool: ...

    def close(self) -> None: ...
