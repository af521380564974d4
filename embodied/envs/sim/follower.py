"""The grid oracle: the MuJoCo backend's answer to `NavBackend.next_action`."""

from __future__ import annotations

import math

import numpy as np

from .navgrid import NavGrid
from .types import Action, AgentConfig, AgentPose


class GreedyFollower:
    """Oracle expert: the discrete action that makes the most geodesic progress.

    For each reachable heading (current yaw + k turns) it predicts the end of one forward
    step with the *same* motion model the backend uses (`NavGrid.try_move`) and scores it
    by geodesic distance to the goals plus a small cost per turn. It moves forward when the
    current heading is the best, otherwise turns towards the best heading. The position
    does not change while turning, so the target heading is stable (no oscillation), and
    every forward step strictly reduces the geodesic distance (no livelock). When no heading
    makes progress, or the goal is within `stop_radius`, it returns STOP.
    """

    def __init__(self, grid: NavGrid, agent: AgentConfig, turn_cost: float = 0.01, min_progress: float = 1e-3):
        self.grid, self.agent = grid, agent
        self.turn_cost, self.min_progress = turn_cost, min_progress

    def next_action(self, pose: AgentPose, goals: np.ndarray, stop_radius: float = 0.2) -> Action:
        """The next action towards the nearest of `goals` (one point or a (K, 3) set)."""
        grid = self.grid
        field = grid.distance_field(goals)
        pos = np.asarray(pose.position[:2], dtype=np.float64)
        if field is None:
            return Action.STOP
        d_now = grid.geodesic_distance(pos, goals)
        if not np.isfinite(d_now) or d_now <= stop_radius:
            return Action.STOP
        ks, yaws = self._headings(pose.yaw)
        ends = self._predict(grid, pos, yaws, sliding=False)
        d_after = grid.field_at(field, ends)
        if not np.any(d_after < d_now - self.min_progress):  # only sliding moves might help
            ends = self._predict(grid, pos, yaws, sliding=self.agent.allow_sliding)
            d_after = grid.field_at(field, ends)
        score = np.where(d_after < d_now - self.min_progress, d_after + self.turn_cost * np.abs(ks), np.inf)
        if not np.isfinite(score).any():
            return Action.STOP
        k = int(ks[int(np.argmin(score))])  # ks is ordered so ties prefer fewer turns, then left
        if k == 0:
            return Action.MOVE_FORWARD
        return Action.TURN_LEFT if k > 0 else Action.TURN_RIGHT

    def _headings(self, yaw: float) -> tuple[np.ndarray, np.ndarray]:
        """Turn counts ordered 0, +1, -1, +2, -2, ... covering a full circle once."""
        n = max(1, round(360.0 / self.agent.turn_angle_deg))
        half = n // 2
        ks = [0]
        for m in range(1, half + 1):
            ks += [m, -m] if m < n - m else [m]
        ks_arr = np.array(ks[:n])
        return ks_arr, yaw + np.deg2rad(self.agent.turn_angle_deg) * ks_arr

    def _predict(self, grid: NavGrid, pos: np.ndarray, yaws: np.ndarray, sliding: bool) -> np.ndarray:
        step = self.agent.forward_step
        disp = step * np.stack([np.cos(yaws), np.sin(yaws)], axis=1)
        if not sliding:
            n = max(1, math.ceil(step / (0.5 * grid.cell)))
            ts = np.arange(1, n + 1) / n
            pts = pos[None, None, :] + ts[None, :, None] * disp[:, None, :]
            ok = grid.lookup(grid.navigable, pts).all(axis=1)
            return np.where(ok[:, None], pos[None, :] + disp, pos[None, :])
        return np.array([grid.try_move(pos, d, True)[0] for d in disp])
