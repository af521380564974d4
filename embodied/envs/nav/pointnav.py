"""PointNav (embodied/PointNav-v0): reach a goal point given relative to the agent."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from gymnasium import spaces

from embodied.envs.nav.env import MAX_SCENE_EXTENT, NavEnv
from embodied.envs.nav.episodes import NavEpisode
from embodied.envs.nav.geometry import as_list, random_yaw, sample_start, wrap_angle
from embodied.envs.sim.scene import Scene


class PointNavEnv(NavEnv):
    """Observations add `pointgoal` (distance, relative angle to the goal, as habitat's
    PointGoalWithGPSCompass) to the `gps` (position relative to the start, in the start
    frame) and `compass` (heading relative to the start) that every task but VLN observes
    (`gps_compass=True`). Success: STOP within 0.2 m (geodesic)."""

    success_distance = 0.2
    expert_stop_distance = 0.15

    def task_spaces(self) -> dict[str, spaces.Space]:
        far = np.float32(MAX_SCENE_EXTENT)
        return {
            "pointgoal": spaces.Box(np.array([0, -np.pi], np.float32), np.array([far, np.pi], np.float32), (2,),
                                    np.float32),
        }

    def sample_episode(self, rng: np.random.Generator, scene: Scene) -> NavEpisode:
        goal = self.backend.sample_navigable_point(rng)
        start, d = sample_start(rng, self.backend, goal, min_dist=1.0, max_dist=30.0)
        return NavEpisode("", "", as_list(start), random_yaw(rng), [as_list(goal)], self.success_distance,
                          geodesic_distance=d)

    def task_observation(self) -> dict[str, Any]:
        pose = self.backend.get_agent_pose()
        to_goal = self.goals[0][:2] - pose.position[:2]
        phi = wrap_angle(math.atan2(to_goal[1], to_goal[0]) - pose.yaw)
        return {"pointgoal": np.array([np.linalg.norm(to_goal), phi], np.float32)}
