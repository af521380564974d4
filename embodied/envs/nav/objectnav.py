"""ObjectNav (embodied/ObjectNav-v0): find any instance of a named category."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from embodied.envs.nav.env import NavEnv
from embodied.envs.nav.episodes import NavEpisode
from embodied.envs.nav.geometry import NoEpisode, as_list, object_viewpoints, random_yaw, sample_start, view_point_band
from embodied.envs.nav.language import CHARSET, MAX_INSTRUCTION_CHARS
from embodied.envs.sim.scene import CATEGORIES, Scene

# success rule -> (success distance, expert stop distance)
SUCCESS_RULES = {
    "view_points": (0.1, 0.05),  # habitat's: STOP within 0.1 m of a view point of an instance
    "near_object": (1.0, 0.5),  # looser: STOP within 1.0 m of the ring next to an instance
}
VIEW_BAND = 1.0  # metres of view points beyond the clearance ring (habitat's goals reach ~1 m out)


class ObjectNavEnv(NavEnv):
    """Observations add `objectgoal` (category id) and `instruction` ("Find a lamp.").

    Success (`success_rule`): `view_points` (default, habitat's rule): STOP within 0.1 m
    (geodesic) of a view point of any instance, the view points being every navigable point
    within 1 m beyond the agent's clearance around the footprint, on a 0.1 m lattice;
    `near_object`: STOP within 1.0 m of the navigable ring next to an instance.
    """

    def __init__(self, success_rule: str = "view_points", **kwargs: Any) -> None:
        if success_rule not in SUCCESS_RULES:
            raise ValueError(f"success_rule must be one of {list(SUCCESS_RULES)}, got '{success_rule}'")
        self.success_rule = success_rule
        self.success_distance, self.expert_stop_distance = SUCCESS_RULES[success_rule]
        super().__init__(**kwargs)

    def task_spaces(self) -> dict[str, spaces.Space]:
        return {
            "objectgoal": spaces.Discrete(len(CATEGORIES)),
            "instruction": spaces.Text(MAX_INSTRUCTION_CHARS, charset=CHARSET),
        }

    def goal_points(self, obj) -> np.ndarray:
        """An instance's view points (computed once per house)."""
        key = ("goals", obj.id)
        if key not in self.house:
            clearance = self.agent_cfg.radius + 0.1
            if self.success_rule == "view_points":
                self.house[key] = view_point_band(self.backend, obj, clearance, VIEW_BAND)
            else:
                self.house[key] = np.asarray(object_viewpoints(self.backend, obj, clearance)).reshape(-1, 3)
        return self.house[key]

    def sample_episode(self, rng: np.random.Generator, scene: Scene) -> NavEpisode:
        categories = sorted({o.category for o in scene.objects})
        category = str(rng.choice(categories))
        instances = [o for o in scene.objects if o.category == category]
        goals = np.concatenate([self.goal_points(o) for o in instances])
        if len(goals) == 0:
            raise NoEpisode(f"no view point for {category}")
        start, d = sample_start(rng, self.backend, goals, min_dist=self.success_distance + 1.0)
        return NavEpisode("", "", as_list(start), random_yaw(rng), [as_list(g) for g in goals],
                          self.success_distance, geodesic_distance=d, instruction=f"Find a {category}.",
                          object_category=category, target_object_ids=[o.id for o in instances])

    def task_observation(self) -> dict[str, Any]:
        return {"objectgoal": CATEGORIES.index(self.episode.object_category),
                "instruction": self.episode.instruction}
