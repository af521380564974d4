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
        self.ks = self._turn_counts()
        self._turn_penalty = turn_cost * np.abs(self.ks)
        n = max(1, math.ceil(agent.forward_step / (0.5 * grid.cell)))
        self._fractions = (np.arange(1, n + 1) / n)[None, :, None]  # sub-steps checked along a move
        self._moves: dict[float, np.ndarray] = {}  # yaw -> (headings, 2) forward displacements

    def next_action(self, pose: AgentPose, goals: np.ndarray, stop_radius: float = 0.2) -> Action:
        """The next action towards the nearest of `goals` (one point or a (K, 3) set)."""
        grid = self.grid
        field = grid.distance_field(goals)
        pos = np.asarray(pose.position[:2], dtype=np.float64)
        if field is None:
            return Action.STOP
        d_now = grid.distance_in(field, pos)
        if not np.isfinite(d_now) or d_now <= stop_radius:
            return Action.STOP
        disp = self._displacements(pose.yaw)
        ends = self._predict(grid, pos, disp, sliding=False)
        d_after = grid.field_at(field, ends)
        if not np.any(d_after < d_now - self.min_progress):  # only sliding moves might help
            ends = self._predict(grid, pos, disp, sliding=self.agent.allow_sliding)
            d_after = grid.field_at(field, ends)
        score = np.where(d_after < d_now - self.min_progress, d_after + self._turn_penalty, np.inf)
        if not np.isfinite(score).any():
            return Action.STOP
        k = int(self.ks[int(np.argmin(score))])  # ks is ordered so ties prefer fewer turns, then left
        if k == 0:
            return Action.MOVE_FORWARD
        return Action.TURN_LEFT if k > 0 else Action.TURN_RIGHT

    def walk(self, backend, goals: np.ndarray, stop_radius: float, max_steps: int) -> list[int]:
        """Drive `backend` to the nearest goal along the grid's shortest path: turn towards the
        next corner, step forward. A step costs a few scalar checks instead of `next_action`'s
        search over every heading, which makes scripted walks (tours) cheap. From the first
        forward step that would not make progress on, it hands over to `next_action`."""
        grid, half_turn = self.grid, math.radians(self.agent.turn_angle_deg) / 2
        field = grid.distance_field(goals)
        path = grid.shortest_path(backend.get_agent_pose().position, goals) if field is not None else []
        corners, c, greedy = [p[:2] for p in path[1:]], 0, False
        actions: list[int] = []
        while corners and len(actions) < max_steps:
            pose = backend.get_agent_pose()
            pos = pose.position[:2]
            d = grid.distance_in(field, pos)
            if not d > stop_radius:  # reached (or unreachable: nan / inf fail `>` too)
                break
            if greedy:
                a = self.next_action(pose, goals, stop_radius)
            else:
                while c < len(corners) - 1 and math.hypot(*(corners[c] - pos)) < self.agent.forward_step:
                    c += 1
                to = corners[c] - pos
                delta = (math.atan2(to[1], to[0]) - pose.yaw + math.pi) % (2 * math.pi) - math.pi
                if abs(delta) > half_turn:
                    a = Action.TURN_LEFT if delta > 0 else Action.TURN_RIGHT
                else:
                    step = self.agent.forward_step * np.array([math.cos(pose.yaw), math.sin(pose.yaw)])
                    end, _ = grid.try_move(pos, step, self.agent.allow_sliding)
                    a = Action.MOVE_FORWARD
                    if grid.distance_in(field, end) > d - self.min_progress:
                        greedy = True
                        a = self.next_action(pose, goals, stop_radius)
            if a == Action.STOP:
                break
            backend.apply_action(a)
            actions.append(int(a))
        return actions

    def _turn_counts(self) -> np.ndarray:
        """Turn counts ordered 0, +1, -1, +2, -2, ... covering a full circle once."""
        n = max(1, round(360.0 / self.agent.turn_angle_deg))
        ks = [0]
        for m in range(1, n // 2 + 1):
            ks += [m, -m] if m < n - m else [m]
        return np.array(ks[:n])

    def _displacements(self, yaw: float) -> np.ndarray:
        """One forward step along every reachable heading; headings repeat (yaw moves in whole
        turns), so they are cached per yaw."""
        disp = self._moves.get(yaw)
        if disp is None:
            yaws = yaw + np.deg2rad(self.agent.turn_angle_deg) * self.ks
            disp = self.agent.forward_step * np.stack([np.cos(yaws), np.sin(yaws)], axis=1)
            if len(self._moves) > 4096:
                self._moves.clear()
            self._moves[yaw] = disp
        return disp

    def _predict(self, grid: NavGrid, pos: np.ndarray, disp: np.ndarray, sliding: bool) -> np.ndarray:
        if not sliding:
            pts = pos[None, None, :] + self._fractions * disp[:, None, :]
            ok = grid.lookup(grid.navigable, pts).all(axis=1)
            return np.where(ok[:, None], pos[None, :] + disp, pos[None, :])
        return np.array([grid.try_move(pos, d, True)[0] for d in disp])
