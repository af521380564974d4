"""Plain types every navigation module shares: actions, embodiment, sensors, poses, frames.

A leaf: it imports only numpy, so the tasks, the backends and the out-of-process worker
(which may run in a bare Python 3.9 interpreter) all build on it.

World frame: right-handed, Z up, metres. A pose is the agent's base on the floor
(x, y, z), z being the floor height under the agent (0 in procedural houses; a real scan's
floors can sit anywhere), and its heading `yaw` in radians about +Z, yaw = 0 facing +X,
positive turning left. Readers of Y-up data (habitat, R2R-CE files) convert at the
boundary: `zup = (x, -z, y)` for a habitat point `(x, y, z)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np


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
