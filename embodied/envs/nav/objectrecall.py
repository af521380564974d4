"""ObjectRecall (embodied/ObjectRecall-v0): a memory task in the spirit of FindingDory."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from embodied.envs.nav.env import PHASE_TOUR, NavEnv
from embodied.envs.nav.episodes import NavEpisode
from embodied.envs.nav.geometry import NoEpisode, as_list, object_viewpoints, random_yaw
from embodied.envs.nav.language import CHARSET, MAX_INSTRUCTION_CHARS, tour_instruction
from embodied.envs.nav.tour import make_question, script_tour
from embodied.envs.sim.scene import Scene


class ObjectRecallEnv(NavEnv):
    """The episode opens with a guided tour: the environment drives the agent past
    `tour_objects` objects (its actions are ignored, `phase` is 0 and the instruction says
    so). Then the question (`phase` 1) names one of them only by what the tour showed: its
    order ("the object you were shown second"), or its category or colour when the house
    holds unshown distractors of the same category or colour. Success: STOP within 1.0 m
    (geodesic) of a view point of that object."""

    success_distance = 1.0
    expert_stop_distance = 0.5

    def __init__(self, tour_objects: int = 3, max_tour_steps: int = 250, **kwargs: Any) -> None:
        if not 2 <= tour_objects <= 8:
            raise ValueError(f"tour_objects must be in 2..8, got {tour_objects}")
        self.tour_objects = tour_objects
        self.max_tour_steps = max_tour_steps
        super().__init__(**kwargs)

    def task_spaces(self) -> dict[str, spaces.Space]:
        return {"instruction": spaces.Text(MAX_INSTRUCTION_CHARS, charset=CHARSET), "phase": spaces.Discrete(2)}

    def task_observation(self) -> dict[str, Any]:
        text = tour_instruction() if self.phase == PHASE_TOUR else self.episode.instruction
        return {"instruction": text, "phase": self.phase}

    def viewable_objects(self, scene: Scene) -> list[tuple[Any, np.ndarray]]:
        """(object, view points) of every object one can stand next to; computed once a house."""
        if "viewable" not in self.house:
            clearance = self.agent_cfg.radius + 0.1
            views = [(o, np.asarray(object_viewpoints(self.backend, o, clearance)).reshape(-1, 3))
                     for o in scene.objects]
            self.house["viewable"] = [(o, v) for o, v in views if len(v)]
        return self.house["viewable"]

    def sample_episode(self, rng: np.random.Generator, scene: Scene) -> NavEpisode:
        viewable = self.viewable_objects(scene)
        if len(viewable) < self.tour_objects + 1:
            raise NoEpisode("too few objects")
        order = rng.permutation(len(viewable))[: self.tour_objects]
        shown = [viewable[i] for i in order]
        start = self.backend.sample_navigable_point(rng)
        yaw = random_yaw(rng)
        tour = script_tour(self.backend, rng, start, yaw, shown, far=self.success_distance + 2.0,
                           max_steps=self.max_tour_steps)
        question, target = make_question(rng, scene.objects, [o for o, _ in shown])
        goals = next(v for o, v in shown if o.id == target.id)
        d = self.backend.geodesic_distance(tour.end, goals)
        return NavEpisode("", "", as_list(start), yaw, [as_list(g) for g in goals], self.success_distance,
                          geodesic_distance=d, instruction=question, target_object_ids=[target.id],
                          tour_actions=tour.actions, extra={"shown_object_ids": [o.id for o, _ in shown]})
