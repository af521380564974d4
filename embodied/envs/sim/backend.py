"""The navigation backend protocol: the one contract every simulator implements.

The Gymnasium tasks (`embodied.envs.nav`) talk only to this protocol, so the same task
runs on the embedded MuJoCo backend, on habitat-sim, or on either hosted in another
interpreter (`RemoteBackend`). Frames and poses are the plain types of `types.py`
(Z up, metres; a pose's z is the floor height under the agent).

Goals: wherever a method takes `goals`, it is one point (3,) or a set of points (K, 3),
and the answer is about the nearest of them (habitat's `MultiGoalShortestPath`): an
ObjectNav goal is the set of an object's view points.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from .scene import Scene
    from .types import AgentConfig, AgentPose, Frames, SensorConfig, StepOutcome

@runtime_checkable
class NavBackend(Protocol):
    """A navigation simulator. Implementations: `MujocoBackend`, `HabitatBackend`,
    and `RemoteBackend` (either of the two in a subprocess)."""

    agent: AgentConfig
    sensors: SensorConfig

    def load_scene(self, scene: Scene | str) -> None:
        """Build a procedural `Scene` (or, on habitat, load a real scan by path); a no-op when
        the same scene is already loaded."""

    def set_agent_pose(self, position: np.ndarray, yaw: float) -> None: ...

    def get_agent_pose(self) -> AgentPose: ...

    def apply_action(self, action: int) -> StepOutcome:
        """Move or turn the agent with collision handling. STOP does nothing."""

    def render(self) -> Frames: ...

    def geodesic_distance(self, a: np.ndarray, goals: np.ndarray) -> float:
        """Shortest navigable path length from a to the nearest goal in metres; inf if unreachable."""

    def shortest_path(self, a: np.ndarray, goals: np.ndarray) -> np.ndarray:
        """(N, 3) waypoints from a to the nearest goal (a first); (0, 3) if unreachable."""

    def next_action(self, goals: np.ndarray, stop_radius: float) -> int:
        """The oracle's next action from the agent's pose towards the nearest goal: STOP once
        within `stop_radius` (geodesic) or when no action makes progress."""

    def walk_to(self, goals: np.ndarray, stop_radius: float, max_steps: int) -> list[int]:
        """Apply the oracle's actions until it says STOP (or `max_steps`); the actions applied.
        One call for a whole walk: scripted tours cost one round trip out of process."""

    def sample_navigable_point(self, rng: np.random.Generator) -> np.ndarray: ...

    def is_navigable(self, points: np.ndarray) -> bool | np.ndarray:
        """Whether the agent may stand at a point (3,) -> bool, or at each of (K, 3) -> (K,) bools."""

    def close(self) -> None: ...


def walk_with_oracle(backend: NavBackend, goals: np.ndarray, stop_radius: float, max_steps: int) -> list[int]:
    """`walk_to` from `next_action` and `apply_action`: what the in-process backends run."""
    actions: list[int] = []
    for _ in range(max(0, max_steps)):
        a = int(backend.next_action(goals, stop_radius))
        if a == 0:  # STOP
            break
        backend.apply_action(a)
        actions.append(a)
    return actions


def as_goals(goals: np.ndarray) -> np.ndarray:
    """Goals as a (K, 3) float64 array (one point becomes K = 1)."""
    g = np.asarray(goals, dtype=np.float64)
    return g.reshape(1, -1) if g.ndim == 1 else g
