"""`NavEnv`: what the navigation tasks share, over any `NavBackend` and any `SceneSource`.

Backend, sensors, episode bookkeeping, metrics and the oracle live here; each task (one
module each: `pointnav`, `objectnav`, `vln`, `objectrecall`) only says how to sample an
episode, which goal observations it adds and how success is judged.

Episodes are a pure function of the reset seed (or, with `episodes=<file>`, the file's
episode `seed % len`), so the same seed gives the same episode on every machine. Like
habitat-lab, episodes are grouped by scene, because loading a house is what costs:
seeds `k * episodes_per_scene ... (k + 1) * episodes_per_scene - 1` share a house, so an
evaluation over consecutive seeds loads a new house only every `episodes_per_scene`
episodes, and everything built for a house (model, render context, navigation grid,
distance fields) is reused in between.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from embodied.envs.nav import metrics as M
from embodied.envs.nav.episodes import NavEpisode, load_episodes
from embodied.envs.nav.geometry import NoEpisode, wrap_angle
from embodied.envs.scenes.generator import SPLIT_SEEDS
from embodied.envs.scenes.sources import ProceduralScenes, SceneDirectory, SceneSource
from embodied.envs.sim.backend import NavBackend
from embodied.envs.sim.factory import make_backend
from embodied.envs.sim.scene import Scene
from embodied.envs.sim.types import Action, AgentConfig, SensorConfig

SPLITS = tuple(SPLIT_SEEDS)
PHASE_TOUR, PHASE_TASK = 0, 1
MAX_SCENE_EXTENT = 100.0  # metres: bounds the goal and GPS observations (houses are under 25 m)
TRIES_PER_HOUSE = 5  # episode draws in a house before the sampler moves to another
HOUSE_STREAM = 0x5CE7E  # keeps the house draw independent of the episode draw of the same seed


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
        scenes: SceneSource | None = None,
        scenes_dir: str | None = None,
        episodes_per_scene: int = 10,
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
        if episodes_per_scene < 1:
            raise ValueError(f"episodes_per_scene must be >= 1, got {episodes_per_scene}")
        if scenes is not None and scenes_dir is not None:
            raise ValueError("give either scenes (a SceneSource) or scenes_dir (a folder), not both")
        self.split = split
        self.max_episode_steps = max_episode_steps
        self.expert = expert
        self.episodes_per_scene = episodes_per_scene
        self.gps_compass = self.default_gps_compass if gps_compass is None else gps_compass
        self.render_mode = render_mode
        self.agent_cfg = AgentConfig(forward_step=forward_step, turn_angle_deg=turn_angle, allow_sliding=allow_sliding)
        self.sensor_cfg = SensorConfig(width=resolution, height=resolution, hfov_deg=hfov, depth=depth,
                                       semantic=semantic)
        if scenes is None:
            scenes = SceneDirectory(scenes_dir) if scenes_dir else ProceduralScenes(split, num_scenes)
        self.scenes: SceneSource = scenes
        self.dataset = load_episodes(episodes) if episodes else None
        self._backend_spec = backend
        self._backend: NavBackend | None = None  # created lazily: GL contexts must not cross a fork
        self.action_space = spaces.Discrete(len(Action))
        self.observation_space = spaces.Dict(self._observation_spaces())
        self.episode: NavEpisode | None = None
        self.scene: Scene | None = None  # None on a real scan (no plain description)
        self._scene_id: str | None = None
        self.house: dict[Any, Any] = {}  # what a task derives from the current scene, kept until it changes

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

    def episode_group(self, seed: int, options: dict[str, Any] | None = None) -> str:
        """What episodes of seed `seed` share with others: its scene. An evaluator that keeps a group
        on one env loads each house once (habitat-lab's episodes grouped by scene). Needs no simulator."""
        if self.dataset is not None:
            return self.dataset[seed % len(self.dataset)].scene_id
        return f"{self.split}/house-draw-{seed // self.episodes_per_scene}"  # the draw `_new_episode` makes

    def load_scene(self, scene_id: str) -> None:
        """Make `scene_id` the current scene (a no-op when it already is)."""
        if scene_id == self._scene_id:
            return
        loaded = self.scenes.load(scene_id)
        self.backend.load_scene(loaded)
        self.scene = loaded if isinstance(loaded, Scene) else None
        self._scene_id = scene_id
        self.house = {}

    def _new_episode(self, seed: int) -> NavEpisode:
        if self.dataset is not None:
            episode = self.dataset[seed % len(self.dataset)]
            self.load_scene(episode.scene_id)
            return episode
        scene_ids = self.scenes.scene_ids()
        if not scene_ids:
            raise ValueError(f"the scene source {type(self.scenes).__name__} lists no scene to sample episodes in")
        houses = np.random.default_rng([seed // self.episodes_per_scene, HOUSE_STREAM])
        rng = np.random.default_rng(seed)
        for _ in range(20):  # a house may lack what a task needs (e.g. a distractor): draw another
            self.load_scene(scene_ids[int(houses.integers(len(scene_ids)))])
            if self.scene is None:
                raise ValueError(f"scene '{self._scene_id}' is a scan: {type(self).__name__} samples episodes in "
                                 "procedural scenes only; replay an episode file with episodes=<file> instead")
            for _ in range(TRIES_PER_HOUSE):  # a bad draw (a start in a doorway) is no reason to leave
                try:
                    episode = self.sample_episode(rng, self.scene)
                except NoEpisode:
                    continue
                episode.scene_id = self._scene_id
                episode.episode_id = f"{self.split}-{seed}"
                return episode
        raise RuntimeError(f"could not sample a {type(self).__name__} episode for seed {seed}")

    # ----------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        episode_seed = int(self.np_random.integers(2**31)) if seed is None else seed
        self.episode = self._new_episode(episode_seed)
        self.goals = np.asarray(self.episode.goals, dtype=np.float64).reshape(-1, 3)
        self.backend.set_agent_pose(np.asarray(self.episode.start_position, dtype=np.float64),
                                    self.episode.start_yaw)
        self.steps = 0
        self.phase = PHASE_TOUR if self.episode.tour_actions else PHASE_TASK
        self.called_stop = False
        self.collisions = 0
        self.unreachable = False
        self._start_task_phase() if self.phase == PHASE_TASK else self._start_tour()
        return self._observation(), self._info()

    def _start_tour(self) -> None:
        self.tour_step = 0

    def _start_task_phase(self) -> None:
        self.phase = PHASE_TASK
        pose = self.backend.get_agent_pose()
        reference = self.ndtw_reference()
        self.running = M.RunningMetrics(pose.position, self.distance_to_goal(pose.position),
                                        self.episode.success_distance, reference)

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
            self._scene_id = None
            self.house = {}

    # ----------------------------------------------------------------- observations, metrics
    def distance_to_goal(self, position: np.ndarray) -> float:
        """Geodesic distance to the nearest goal. Where no goal is reachable (another island
        of a scan's navmesh) it is the straight-line distance instead, so metrics stay finite
        (JSON has no infinity), and the episode reports `unreachable` = 1."""
        d = self.backend.geodesic_distance(position, self.goals)
        if math.isfinite(d):
            return d
        self.unreachable = True
        return float(np.min(np.linalg.norm(self.goals - np.asarray(position)[None, :], axis=1)))

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
        """The backend's oracle towards the nearest goal (the scripted action during a tour)."""
        if self.phase == PHASE_TOUR:
            return int(self.episode.tour_actions[self.tour_step])
        return int(self.backend.next_action(self.goals, self.expert_stop_distance))

    def _info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"episode_id": self.episode.episode_id, "phase": self.phase,
                                "steps": self.steps}
        if self.phase == PHASE_TASK:
            info["metrics"] = self.metrics()
        else:
            here = self.backend.get_agent_pose().position
            info["metrics"] = {"distance_to_goal": self.distance_to_goal(here), "success": 0.0, "oracle_success": 0.0,
                               "spl": 0.0, "path_length": 0.0, **self._extra_metric_defaults(),
                               "collisions": 0.0, "unreachable": float(self.unreachable)}
        return info

    def _extra_metric_defaults(self) -> dict[str, float]:
        return {}

    def metrics(self) -> dict[str, float]:
        out = self.running.result(self.called_stop)
        out["collisions"] = float(self.collisions)
        out["unreachable"] = float(self.unreachable)
        return out

    def ndtw_reference(self) -> np.ndarray | None:
        """The path nDTW compares against (VLN only)."""
        return None
