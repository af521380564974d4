"""The Gymnasium navigation tasks over any `NavBackend`.

`NavEnv` holds everything the tasks share (backend, sensors, episode bookkeeping,
metrics, the oracle); each task only says how to sample an episode, which goal
observations it adds and how success is judged:

- `PointNavEnv`   (embodied/PointNav-v0): reach a point given relative to the agent.
- `ObjectNavEnv`  (embodied/ObjectNav-v0): reach any instance of a named category.
- `VLNEnv`        (embodied/VLN-v0): follow an R2R-style instruction.
- `ObjectRecallEnv` (embodied/ObjectRecall-v0): after a guided tour, go to an object the
  question describes by what was seen on the tour.

Episode k of a run is a pure function of the reset seed (or, with `episodes=<file>`, the
file's episode `seed % len`), so the same seed gives the same episode on every machine.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from embodied.envs.backend import Action, AgentConfig, NavBackend, SensorConfig
from embodied.envs.nav import metrics as M
from embodied.envs.nav.episodes import NavEpisode, load_episodes
from embodied.envs.nav.language import (
    CHARSET,
    MAX_INSTRUCTION_CHARS,
    category_question,
    colour_question,
    describe,
    ordinal_question,
    tour_instruction,
    turn_phrase,
    vln_instruction,
)
from embodied.envs.navgrid import GreedyFollower
from embodied.envs.scenes import CATEGORIES, SPLIT_SEEDS, Scene, generate_scene, split_scene_seeds

SPLITS = tuple(SPLIT_SEEDS)
BACKENDS = ("mujoco", "habitat")
PHASE_TOUR, PHASE_TASK = 0, 1
MAX_SCENE_EXTENT = 100.0  # metres: bounds the goal and GPS observations (houses are under 25 m)


@lru_cache(maxsize=16)
def cached_scene(seed: int) -> Scene:
    return generate_scene(seed)


def make_backend(spec: str | dict[str, Any], agent: AgentConfig, sensors: SensorConfig) -> NavBackend:
    """Build a backend from `"mujoco"` or `{"name": "mujoco", "python": "/path/to/python"}`."""
    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    name = spec.pop("name", "mujoco")
    python = spec.pop("python", None)
    if name not in BACKENDS:
        raise ValueError(f"backend.name must be one of {list(BACKENDS)}, got '{name}'")
    if python:
        from embodied.envs.worker import RemoteBackend

        return RemoteBackend(name, agent, sensors, python=python, **spec)
    if name == "mujoco":
        from embodied.envs.mujoco_backend import MujocoBackend

        return MujocoBackend(agent, sensors, **spec)
    from embodied.envs.habitat_backend import HabitatBackend

    return HabitatBackend(agent, sensors, **spec)


def wrap_angle(a: float) -> float:
    return (a + math.pi) % (2 * math.pi) - math.pi


class NavEnv(gym.Env):
    """Shared machinery of the navigation tasks. Subclasses implement `sample_episode`."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 10}
    success_distance = 1.0
    expert_stop_distance = 0.5
    default_gps_compass = True  # habitat's PointNav/ObjectNav agents have GPS+compass; R2R-CE's do not

    def __init__(
        self,
        split: str = "val_unseen",
        max_episode_steps: int = 500,
        resolution: int = 128,
        hfov: float = 90.0,
        depth: bool = True,
        semantic: bool = False,
        expert: bool = False,
        backend: str | dict[str, Any] = "mujoco",
        forward_step: float = 0.25,
        turn_angle: float = 15.0,
        allow_sliding: bool = True,
        num_scenes: int | None = None,
        episodes: str | None = None,
        gps_compass: bool | None = None,
        render_mode: str | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {list(SPLITS)}, got '{split}'")
        if max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
        if resolution < 8:
            raise ValueError(f"resolution must be >= 8 pixels, got {resolution}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got '{render_mode}'")
        self.split = split
        self.max_episode_steps = max_episode_steps
        self.expert = expert
        self.gps_compass = self.default_gps_compass if gps_compass is None else gps_compass
        self.render_mode = render_mode
        self.agent_cfg = AgentConfig(forward_step=forward_step, turn_angle_deg=turn_angle, allow_sliding=allow_sliding)
        self.sensor_cfg = SensorConfig(width=resolution, height=resolution, hfov_deg=hfov, depth=depth,
                                       semantic=semantic)
        self.scene_seeds = split_scene_seeds(split, num_scenes)
        self.dataset = load_episodes(episodes) if episodes else None
        self._backend_spec = backend
        self._backend: NavBackend | None = None  # created lazily: GL contexts must not cross a fork
        self.action_space = spaces.Discrete(len(Action))
        self.observation_space = spaces.Dict(self._observation_spaces())
        self.episode: NavEpisode | None = None

    # ----------------------------------------------------------------- spaces
    def _observation_spaces(self) -> dict[str, spaces.Space]:
        h, w = self.sensor_cfg.height, self.sensor_cfg.width
        out: dict[str, spaces.Space] = {"rgb": spaces.Box(0, 255, (h, w, 3), np.uint8)}
        if self.sensor_cfg.depth:
            out["depth"] = spaces.Box(0.0, self.sensor_cfg.max_depth, (h, w, 1), np.float32)
        if self.sensor_cfg.semantic:
            big = np.iinfo(np.int32).max
            out["semantic"] = spaces.Box(0, big, (h, w), np.int32)
            out["semantic_category"] = spaces.Box(0, big, (h, w), np.int32)
        if self.gps_compass:
            far = np.float32(MAX_SCENE_EXTENT)
            out["gps"] = spaces.Box(-far, far, (2,), np.float32)
            out["compass"] = spaces.Box(-np.pi, np.pi, (1,), np.float32)
        out.update(self.task_spaces())
        if self.expert:
            out["expert_action"] = spaces.Discrete(len(Action))
        return out

    def task_spaces(self) -> dict[str, spaces.Space]:
        return {}

    @property
    def backend(self) -> NavBackend:
        if self._backend is None:
            self._backend = make_backend(self._backend_spec, self.agent_cfg, self.sensor_cfg)
        return self._backend

    # ----------------------------------------------------------------- episode sampling
    def sample_episode(self, rng: np.random.Generator, scene: Scene) -> NavEpisode:
        raise NotImplementedError

    def _new_episode(self, seed: int) -> NavEpisode:
        if self.dataset is not None:
            episode = self.dataset[seed % len(self.dataset)]
            self.scene = cached_scene(episode.scene_seed)
            self.backend.load_scene(self.scene)
            return episode
        rng = np.random.default_rng(seed)
        for _ in range(20):  # a house may lack what a task needs (e.g. a distractor): draw another
            self.scene = cached_scene(int(rng.choice(self.scene_seeds)))
            self.backend.load_scene(self.scene)
            try:
                episode = self.sample_episode(rng, self.scene)
            except NoEpisode:
                continue
            episode.episode_id = f"{self.split}-{seed}"
            return episode
        raise RuntimeError(f"could not sample a {type(self).__name__} episode for seed {seed}")

    # ----------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        episode_seed = int(self.np_random.integers(2**31)) if seed is None else seed
        self.episode = self._new_episode(episode_seed)
        self.goals = [np.asarray(g, dtype=np.float64) for g in self.episode.goals]
        self.backend.set_agent_pose(np.asarray(self.episode.start_position, dtype=np.float64),
                                    self.episode.start_yaw)
        self.steps = 0
        self.phase = PHASE_TOUR if self.episode.tour_actions else PHASE_TASK
        self.called_stop = False
        self.collisions = 0
        self._start_task_phase() if self.phase == PHASE_TASK else self._start_tour()
        return self._observation(), self._info()

    def _start_tour(self) -> None:
        self.tour_step = 0

    def _start_task_phase(self) -> None:
        self.phase = PHASE_TASK
        pose = self.backend.get_agent_pose()
        self.running = M.RunningMetrics(pose.position, self.distance_to_goal(pose.position),
                                        self.success_distance, self.reference_path())

    def step(self, action: Any):
        if self.episode is None:
            raise RuntimeError("call reset() before step()")
        action = int(action)
        if not 0 <= action < len(Action):
            raise ValueError(f"action must be in 0..{self.action_space.n - 1} (STOP, MOVE_FORWARD, "
                             f"TURN_LEFT, TURN_RIGHT), got {action}")
        self.steps += 1
        if self.phase == PHASE_TOUR:
            self._tour_step()
        elif action == Action.STOP:
            self.called_stop = True
        else:
            outcome = self.backend.apply_action(action)
            self.collisions += int(outcome.collided)
            pos = self.backend.get_agent_pose().position
            self.running.add(pos, self.distance_to_goal(pos))
        terminated = self.called_stop
        truncated = not terminated and self.steps >= self.max_episode_steps
        info = self._info()
        reward = float(info["metrics"]["success"]) if terminated else 0.0
        return self._observation(), reward, terminated, truncated, info

    def _tour_step(self) -> None:
        self.backend.apply_action(self.episode.tour_actions[self.tour_step])
        self.tour_step += 1
        if self.tour_step >= len(self.episode.tour_actions):
            self._start_task_phase()

    def render(self) -> np.ndarray | None:
        if self.render_mode == "rgb_array":
            return self.backend.render().rgb
        return None

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    # ----------------------------------------------------------------- observations, metrics
    def distance_to_goal(self, position: np.ndarray) -> float:
        return min(self.backend.geodesic_distance(position, g) for g in self.goals)

    def _observation(self) -> dict[str, Any]:
        frames = self.backend.render()
        obs: dict[str, Any] = {"rgb": frames.rgb}
        if self.sensor_cfg.depth:
            obs["depth"] = frames.depth
        if self.sensor_cfg.semantic:
            obs["semantic"] = frames.semantic_object
            obs["semantic_category"] = frames.semantic_category
        if self.gps_compass:
            obs.update(self.gps_compass_observation())
        obs.update(self.task_observation())
        if self.expert:
            obs["expert_action"] = self.expert_action()
        return obs

    def task_observation(self) -> dict[str, Any]:
        return {}

    def gps_compass_observation(self) -> dict[str, np.ndarray]:
        """Position and heading relative to the episode's start pose, in the start frame."""
        pose = self.backend.get_agent_pose()
        start = np.asarray(self.episode.start_position)
        y0 = self.episode.start_yaw
        rel = pose.position[:2] - start[:2]
        c, s = math.cos(-y0), math.sin(-y0)
        return {
            "gps": np.array([c * rel[0] - s * rel[1], s * rel[0] + c * rel[1]], np.float32),
            "compass": np.array([wrap_angle(pose.yaw - y0)], np.float32),
        }

    def expert_action(self) -> int:
        """The shortest-path follower's next action (the scripted one during a tour)."""
        if self.phase == PHASE_TOUR:
            return int(self.episode.tour_actions[self.tour_step])
        pose = self.backend.get_agent_pose()
        goal = min(self.goals, key=lambda g: self.backend.geodesic_distance(pose.position, g))
        return int(self.follower.next_action(pose, goal, self.expert_stop_distance))

    @property
    def follower(self) -> GreedyFollower:
        if getattr(self, "_follower", None) is None or self._follower_backend is not self.backend:
            self._follower = GreedyFollower(self.backend, self.agent_cfg)
            self._follower_backend = self.backend
        return self._follower

    def _info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"episode_id": self.episode.episode_id, "phase": self.phase,
                                "steps": self.steps}
        if self.phase == PHASE_TASK:
            info["metrics"] = self.metrics()
        else:
            here = self.backend.get_agent_pose().position
            info["metrics"] = {"distance_to_goal": self.distance_to_goal(here), "success": 0.0, "oracle_success": 0.0,
                               "spl": 0.0, "path_length": 0.0, **self._extra_metric_defaults()}
        return info

    def _extra_metric_defaults(self) -> dict[str, float]:
        return {}

    def metrics(self) -> dict[str, float]:
        out = self.running.result(self.called_stop)
        out["collisions"] = float(self.collisions)
        return out

    def reference_path(self) -> np.ndarray | None:
        return None


class NoEpisode(Exception):
    """The scene cannot host this task's episode; the sampler draws another scene."""


# ===================================================================== helpers for goals
def room_name(scene: Scene, room_id: int) -> str:
    return next(r.name for r in scene.rooms if r.id == room_id)


def room_at(scene: Scene, point: np.ndarray) -> int | None:
    """Id of the room whose polygon contains `point` (ray casting), or None (a doorway)."""
    x, y = float(point[0]), float(point[1])
    for room in scene.rooms:
        poly = room.polygon
        inside = False
        for (x1, y1), (x2, y2) in zip(poly, poly[1:] + poly[:1]):
            if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
                inside = not inside
        if inside:
            return room.id
    return None


def object_viewpoints(backend: NavBackend, obj, clearance: float, n: int = 16) -> list[np.ndarray]:
    """Navigable points around an object's footprint: where an agent stands to see it."""
    half = np.asarray(obj.size[:2], dtype=np.float64) / 2
    c, s = math.cos(obj.yaw), math.sin(obj.yaw)
    points = []
    for theta in np.linspace(0, 2 * math.pi, n, endpoint=False):
        d = np.array([math.cos(theta), math.sin(theta)])
        local = np.array([d[0] * c + d[1] * s, -d[0] * s + d[1] * c])  # direction in the object frame
        # distance from the centre to the box edge along `local`, plus the clearance
        reach = min(half[0] / max(abs(local[0]), 1e-9), half[1] / max(abs(local[1]), 1e-9)) + clearance
        p = np.array([obj.position[0] + d[0] * reach, obj.position[1] + d[1] * reach, 0.0])
        if backend.is_navigable(p):
            points.append(p)
    return points


def sample_start(rng: np.random.Generator, backend: NavBackend, goals: list[np.ndarray],
                 min_dist: float, max_dist: float = math.inf) -> tuple[np.ndarray, float]:
    for _ in range(50):
        start = backend.sample_navigable_point(rng)
        d = min(backend.geodesic_distance(start, g) for g in goals)
        if min_dist <= d <= max_dist:
            return start, d
    raise NoEpisode("no start at the required distance")


def resample_path(path: np.ndarray, spacing: float) -> np.ndarray:
    """Points every `spacing` metres along a polyline (ends included): the dense ground-truth
    locations that nDTW compares against, as VLN-CE's `_gt` files hold."""
    path = np.asarray(path, dtype=np.float64)
    seg = np.linalg.norm(np.diff(path, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    stops = np.append(np.arange(0.0, cum[-1], spacing), cum[-1])
    return np.stack([np.interp(stops, cum, path[:, k]) for k in range(path.shape[1])], axis=1)


def random_yaw(rng: np.random.Generator) -> float:
    return float(rng.uniform(-math.pi, math.pi))


def as_list(p: np.ndarray) -> list[float]:
    return [float(v) for v in p]


# ===================================================================== the tasks
class PointNavEnv(NavEnv):
    """Reach a goal point. Observations add `pointgoal` (distance, relative angle to the
    goal, as habitat's PointGoalWithGPSCompass) to the `gps` (position relative to the
    start, in the start frame) and `compass` (heading relative to the start) that every
    task but VLN observes (`gps_compass=True`)."""

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
        start, d = sample_start(rng, self.backend, [goal], min_dist=1.0, max_dist=30.0)
        return NavEpisode("", f"procedural:{scene.seed}", as_list(start), random_yaw(rng), [as_list(goal)],
                          self.success_distance, geodesic_distance=d)

    def task_observation(self) -> dict[str, Any]:
        pose = self.backend.get_agent_pose()
        to_goal = self.goals[0][:2] - pose.position[:2]
        phi = wrap_angle(math.atan2(to_goal[1], to_goal[0]) - pose.yaw)
        return {"pointgoal": np.array([np.linalg.norm(to_goal), phi], np.float32)}


class ObjectNavEnv(NavEnv):
    """Find any instance of a category; success when STOP is called within 1.0 m (geodesic)
    of a view point of an instance (the navigable ring around its footprint)."""

    success_distance = 1.0
    expert_stop_distance = 0.5

    def task_spaces(self) -> dict[str, spaces.Space]:
        return {
            "objectgoal": spaces.Discrete(len(CATEGORIES)),
            "instruction": spaces.Text(MAX_INSTRUCTION_CHARS, charset=CHARSET),
        }

    def sample_episode(self, rng: np.random.Generator, scene: Scene) -> NavEpisode:
        categories = sorted({o.category for o in scene.objects})
        category = str(rng.choice(categories))
        instances = [o for o in scene.objects if o.category == category]
        goals = [p for o in instances for p in object_viewpoints(self.backend, o, self.agent_cfg.radius + 0.1)]
        if not goals:
            raise NoEpisode(f"no view point for {category}")
        start, d = sample_start(rng, self.backend, goals, min_dist=self.success_distance + 0.5)
        return NavEpisode("", f"procedural:{scene.seed}", as_list(start), random_yaw(rng),
                          [as_list(g) for g in goals], self.success_distance, geodesic_distance=d,
                          instruction=f"Find a {category}.", object_category=category,
                          target_object_ids=[o.id for o in instances])

    def task_observation(self) -> dict[str, Any]:
        return {"objectgoal": CATEGORIES.index(self.episode.object_category),
                "instruction": self.episode.instruction}


class VLNEnv(NavEnv):
    """Follow an instruction generated from the shortest path (rooms passed, landmarks, the
    first turn, the goal object and room); VLN-CE metrics with a 3 m success radius."""

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
        views = object_viewpoints(self.backend, target, self.agent_cfg.radius + 0.1)
        if not views:
            raise NoEpisode("goal object has no view point")
        goal = min(views, key=lambda v: self.backend.geodesic_distance(start, v))
        d = self.backend.geodesic_distance(start, goal)
        if not (self.success_distance + 1.0 <= d < math.inf):
            raise NoEpisode("goal too close or unreachable")
        path = self.backend.shortest_path(start, goal)
        rooms, landmarks = self._rooms_and_landmarks(scene, path, exclude=target.id)
        yaw = random_yaw(rng)
        ahead = path[min(3, len(path) - 1)][:2] - start[:2]
        text = vln_instruction(turn_phrase(yaw, ahead), rooms, landmarks, describe(target),
                               room_name(scene, target.room))
        return NavEpisode("", f"procedural:{scene.seed}", as_list(start), yaw, [as_list(goal)],
                          self.success_distance, geodesic_distance=d, instruction=text,
                          reference_path=[as_list(p) for p in resample_path(path, self.agent_cfg.forward_step)],
                          target_object_ids=[target.id])

    def _rooms_and_landmarks(self, scene: Scene, path: np.ndarray, exclude: int) -> tuple[list[str], list]:
        room_ids: list[int] = []
        for p in path:
            r = room_at(scene, p)
            if r is not None and (not room_ids or room_ids[-1] != r):
                room_ids.append(r)
        landmarks = []
        for rid in room_ids:
            inside = [p for p in path if room_at(scene, p) == rid]
            near = [(min(np.linalg.norm(np.asarray(o.position[:2]) - q[:2]) for q in inside), o)
                    for o in scene.objects if o.room == rid and o.id != exclude]
            near = [(dist, o) for dist, o in near if dist < 1.5]
            landmarks.append(describe(min(near, key=lambda t: t[0])[1]) if near else None)
        return [room_name(scene, r) for r in room_ids], landmarks

    def task_observation(self) -> dict[str, Any]:
        return {"instruction": self.episode.instruction}

    def reference_path(self) -> np.ndarray | None:
        return np.asarray(self.episode.reference_path)


class ObjectRecallEnv(NavEnv):
    """A memory task in the spirit of FindingDory. The episode opens with a guided tour:
    the environment drives the agent past `tour_objects` objects (its actions are ignored,
    `phase` is 0 and the instruction says so). Then the question (`phase` 1) names one of
    them only by what the tour showed: its order ("the object you were shown second"), or
    its category or colour when the house holds unshown distractors of the same category or
    colour. Success: STOP within 1.0 m (geodesic) of a view point of that object."""

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

    def sample_episode(self, rng: np.random.Generator, scene: Scene) -> NavEpisode:
        clearance = self.agent_cfg.radius + 0.1
        viewable = [(o, v) for o in scene.objects if (v := object_viewpoints(self.backend, o, clearance))]
        if len(viewable) < self.tour_objects + 1:
            raise NoEpisode("too few objects")
        order = rng.permutation(len(viewable))[: self.tour_objects]
        shown = [viewable[i] for i in order]
        start = self.backend.sample_navigable_point(rng)
        yaw = random_yaw(rng)
        actions, end_pos, _ = self._tour_script(rng, start, yaw, shown)
        if len(actions) > self.max_tour_steps:
            raise NoEpisode("tour too long")
        question, target = self._question(rng, scene, [o for o, _ in shown])
        goals = next(v for o, v in shown if o.id == target.id)
        d = min(self.backend.geodesic_distance(end_pos, g) for g in goals)
        return NavEpisode("", f"procedural:{scene.seed}", as_list(start), yaw, [as_list(g) for g in goals],
                          self.success_distance, geodesic_distance=d, instruction=question,
                          target_object_ids=[target.id], tour_actions=actions,
                          extra={"shown_object_ids": [o.id for o, _ in shown]})

    def _tour_script(self, rng: np.random.Generator, start: np.ndarray, yaw: float,
                     shown) -> tuple[list[int], np.ndarray, float]:
        """Simulate the follower from view point to view point, turning to face each object,
        then walk away to a point far from all of them, so that stopping where the tour ends
        answers no question."""
        backend = self.backend
        backend.set_agent_pose(start, yaw)
        actions: list[int] = []
        for obj, views in shown:
            pose = backend.get_agent_pose()
            actions += self._walk_to(min(views, key=lambda v: backend.geodesic_distance(pose.position, v)))
            actions += self._face(obj)
            if len(actions) > self.max_tour_steps:
                raise NoEpisode("tour too long")
        actions += self._walk_to(self._tour_end(rng, [v for _, views in shown for v in views]))
        pose = backend.get_agent_pose()
        return actions, pose.position.copy(), pose.yaw

    def _walk_to(self, goal: np.ndarray) -> list[int]:
        actions: list[int] = []
        for _ in range(self.max_tour_steps):
            a = int(self.follower.next_action(self.backend.get_agent_pose(), goal, 0.3))
            if a == Action.STOP:
                break
            self.backend.apply_action(a)
            actions.append(a)
        return actions

    def _tour_end(self, rng: np.random.Generator, views: list[np.ndarray]) -> np.ndarray:
        """A navigable point at least `success_distance + 2 m` (geodesic) from every view point
        of every shown object, and as close to the agent as such a point can be found."""
        here = self.backend.get_agent_pose().position
        far = self.success_distance + 2.0
        candidates = []
        for _ in range(40):
            p = self.backend.sample_navigable_point(rng)
            if min(self.backend.geodesic_distance(p, v) for v in views) >= far:
                candidates.append(p)
        if not candidates:
            raise NoEpisode("no tour end far from the shown objects")
        return min(candidates, key=lambda p: self.backend.geodesic_distance(here, p))

    def _face(self, obj) -> list[int]:
        backend, step = self.backend, math.radians(self.agent_cfg.turn_angle_deg)
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

    def _question(self, rng: np.random.Generator, scene: Scene, shown: list) -> tuple[str, Any]:
        shown_ids = {o.id for o in shown}
        unshown = [o for o in scene.objects if o.id not in shown_ids]
        options: list[tuple[str, Any]] = [(ordinal_question(k), o) for k, o in enumerate(shown)]
        for o in shown:
            same_cat = [s for s in shown if s.category == o.category]
            if len(same_cat) == 1 and any(u.category == o.category for u in unshown):
                options.append((category_question(o.category), o))
            same_col = [s for s in shown if s.colour == o.colour]
            if len(same_col) == 1 and any(u.colour == o.colour for u in unshown):
                options.append((colour_question(o.colour), o))
        return options[int(rng.integers(len(options)))]
