"""VLN (embodied/VLN-v0): follow an R2R-style instruction, scored with VLN-CE's metrics."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from gymnasium import spaces

from embodied.envs.nav.env import NavEnv
from embodied.envs.nav.episodes import NavEpisode
from embodied.envs.nav.geometry import (
    NoEpisode,
    as_list,
    object_viewpoints,
    random_yaw,
    resample_path,
    room_at,
    room_name,
)
from embodied.envs.nav.language import CHARSET, MAX_INSTRUCTION_CHARS, describe, turn_phrase, vln_instruction
from embodied.envs.sim.scene import Scene


class VLNEnv(NavEnv):
    """Follow an instruction generated from the shortest path (rooms passed, landmarks, the
    first turn, the goal object and room). Success: STOP within the episode's goal radius
    (3 m in R2R-CE and in sampled episodes). nDTW and SDTW compare the trajectory with the
    dense ground-truth locations (`_gt` file) when the episode has them, else with its
    reference path."""

    success_distance = 3.0
    expert_stop_distance = 0.3
    default_gps_compass = False

    def task_spaces(self) -> dict[str, spaces.Space]:
        return {"instruction": spaces.Text(MAX_INSTRUCTION_CHARS, charset=CHARSET)}

    def _extra_metric_defaults(self) -> dict[str, float]:
        return {"ndtw": 0.0, "sdtw": 0.0}

    def sample_episode(self, rng: np.random.Generator, scene: Scene) -> NavEpisode:
        start = self.backend.sample_navigable_point(rng)
        start_room = room_at(scene, start)
        candidates = [o for o in scene.objects if o.room != start_room]
        if start_room is None or not candidates:
            raise NoEpisode("start in a doorway or a one-room house")
        target = candidates[int(rng.integers(len(candidates)))]
        goal = self.goal_of(scene, target)
        if goal is None:
            raise NoEpisode("goal object has no view point")
        d = self.backend.geodesic_distance(start, goal)
        if not (self.success_distance + 1.0 <= d < math.inf):
            raise NoEpisode("goal too close or unreachable")
        path = self.backend.shortest_path(start, goal)
        rooms, landmarks = self._rooms_and_landmarks(scene, path, exclude=target.id)
        yaw = random_yaw(rng)
        ahead = path[min(3, len(path) - 1)][:2] - start[:2]
        text = vln_instruction(turn_phrase(yaw, ahead), rooms, landmarks, describe(target),
                               room_name(scene, target.room))
        dense = resample_path(path, self.agent_cfg.forward_step)
        return NavEpisode("", "", as_list(start), yaw, [as_list(goal)], self.success_distance, geodesic_distance=d,
                          instruction=text, reference_path=[as_list(p) for p in path],
                          gt_locations=[as_list(p) for p in dense], gt_forward_steps=len(dense) - 1,
                          target_object_ids=[target.id])

    def goal_of(self, scene: Scene, target) -> np.ndarray | None:
        """The view point of `target` nearest its room's centre: one goal per object (kept for
        the house), so its distance field serves every episode in the house that ends there."""
        key = ("goal", target.id)
        if key not in self.house:
            views = object_viewpoints(self.backend, target, self.agent_cfg.radius + 0.1)
            x0, y0, x1, y1 = scene.room_by_id(target.room).bounds
            centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
            self.house[key] = min(views, key=lambda v: float(np.hypot(*(v[:2] - centre)))) if views else None
        return self.house[key]

    def _rooms_and_landmarks(self, scene: Scene, path: np.ndarray, exclude: int) -> tuple[list[str], list]:
        dense = resample_path(path, 0.25)  # the corners alone would skip the rooms in between
        room_ids: list[int] = []
        for p in dense:
            r = room_at(scene, p)
            if r is not None and (not room_ids or room_ids[-1] != r):
                room_ids.append(r)
        landmarks = []
        for rid in room_ids:
            inside = [p for p in dense if room_at(scene, p) == rid]
            near = [(min(np.linalg.norm(np.asarray(o.position[:2]) - q[:2]) for q in inside), o)
                    for o in scene.objects if o.room == rid and o.id != exclude]
            near = [(dist, o) for dist, o in near if dist < 1.5]
            landmarks.append(describe(min(near, key=lambda t: t[0])[1]) if near else None)
        return [room_name(scene, r) for r in room_ids], landmarks

    def task_observation(self) -> dict[str, Any]:
        return {"instruction": self.episode.instruction}

    def ndtw_reference(self) -> np.ndarray | None:
        reference = self.episode.ndtw_reference
        return np.asarray(reference, dtype=np.float64).reshape(-1, 3) if reference else None
