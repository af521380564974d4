"""ObjectRecall's guided tour and its questions.

The tour is scripted with the backend's own oracle (`NavBackend.next_action`), so it is
the same in process, out of process and on habitat-sim: walk to the nearest view point of
each shown object, turn to face it, then walk to a point far from all of them so that
stopping where the tour ends answers no question.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from embodied.envs.nav.geometry import NoEpisode, wrap_angle
from embodied.envs.nav.language import category_question, colour_question, ordinal_question
from embodied.envs.sim.backend import NavBackend
from embodied.envs.sim.scene import SceneObject
from embodied.envs.sim.types import Action

WAYPOINT_RADIUS = 0.3  # metres: close enough to a view point to turn and look


@dataclass
class Tour:
    actions: list[int]
    end: np.ndarray  # where the agent stands when the question comes


def script_tour(backend: NavBackend, rng: np.random.Generator, start: np.ndarray, yaw: float,
                shown: list[tuple[SceneObject, np.ndarray]], far: float, max_steps: int) -> Tour:
    """Drive the agent from `start` past each (object, view points) in `shown`, then to a
    point at least `far` (geodesic) from every view point. Raises NoEpisode beyond `max_steps`."""
    backend.set_agent_pose(start, yaw)
    actions: list[int] = []
    for obj, views in shown:
        actions += walk_to(backend, views, max_steps - len(actions))
        actions += face(backend, obj)
        if len(actions) > max_steps:
            raise NoEpisode("tour too long")
    all_views = np.concatenate([views for _, views in shown])
    actions += walk_to(backend, tour_end(backend, rng, all_views, far), max_steps - len(actions))
    if len(actions) > max_steps:
        raise NoEpisode("tour too long")
    return Tour(actions, backend.get_agent_pose().position.copy())


def walk_to(backend: NavBackend, goals: np.ndarray, max_steps: int) -> list[int]:
    """Follow the oracle to the nearest of `goals` (one backend call); the actions taken.
    One step more than allowed is taken, so that a walk too long for the tour shows."""
    return backend.walk_to(goals, WAYPOINT_RADIUS, max_steps + 1)


def face(backend: NavBackend, obj: SceneObject) -> list[int]:
    """Turn in place until the object's centre is within half a turn of straight ahead."""
    step = math.radians(backend.agent.turn_angle_deg)
    out: list[int] = []
    for _ in range(int(2 * math.pi / step) + 1):
        pose = backend.get_agent_pose()
        to = np.asarray(obj.position[:2]) - pose.position[:2]
        delta = wrap_angle(math.atan2(to[1], to[0]) - pose.yaw)
        if abs(delta) <= step / 2:
            break
        a = Action.TURN_LEFT if delta > 0 else Action.TURN_RIGHT
        backend.apply_action(a)
        out.append(int(a))
    return out


def tour_end(backend: NavBackend, rng: np.random.Generator, views: np.ndarray, far: float,
             candidates: int = 40) -> np.ndarray:
    """A navigable point at least `far` (geodesic) from every view point, the nearest such
    candidate to the agent in a straight line. Geodesics are symmetric, so the filter is
    one distance field (the view points'), whatever the number of candidates."""
    here = backend.get_agent_pose().position
    points = [backend.sample_navigable_point(rng) for _ in range(candidates)]
    points = [p for p in points if backend.geodesic_distance(p, views) >= far]
    if not points:
        raise NoEpisode("no tour end far from the shown objects")
    return min(points, key=lambda p: backend.geodesic_distance(p, here))


def make_question(rng: np.random.Generator, objects: list[SceneObject],
                  shown: list[SceneObject]) -> tuple[str, SceneObject]:
    """A question naming one shown object only by what the tour showed: its order, or its
    category / colour when unshown objects of the house share it (distractors)."""
    shown_ids = {o.id for o in shown}
    unshown = [o for o in objects if o.id not in shown_ids]
    options: list[tuple[str, SceneObject]] = [(ordinal_question(k), o) for k, o in enumerate(shown)]
    for o in shown:
        same_cat = [s for s in shown if s.category == o.category]
        if len(same_cat) == 1 and any(u.category == o.category for u in unshown):
            options.append((category_question(o.category), o))
        same_col = [s for s in shown if s.colour == o.colour]
        if len(same_col) == 1 and any(u.colour == o.colour for u in unshown):
            options.append((colour_question(o.colour), o))
    return options[int(rng.integers(len(options)))]
