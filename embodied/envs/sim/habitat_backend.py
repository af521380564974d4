"""Habitat backend: the navigation tasks on real habitat-sim (0.2.x and 0.3.x).

habitat-sim installs with conda, usually in a Python 3.9 environment of its own, so this
module is written to be hosted by the out-of-process worker (`backend.python=...`): Python
3.9 syntax, and it imports only numpy, habitat_sim and (for procedural houses) trimesh.
The worker keeps habitat's C++ log lines (written to file descriptor 1) off its protocol.

Frames: the toolkit is Z-up, habitat is Y-up. A toolkit point (x, y, z) is habitat's
(x, z, -y); a toolkit yaw (0 = +X) is a rotation of `yaw - pi/2` about habitat's +Y (the
habitat agent faces -Z at identity, which is the toolkit's +Y).

Procedural houses are exported to `.glb` (structure + one mesh per object, in glTF's Y-up
frame, in world coordinates) and added over an empty stage as STATIC rigid objects at the
identity pose: the structure with semantic id 0 and each object with its own `semantic_id`,
so the semantic sensor reports object ids. Templates keep the mesh where it was written
(`compute_COM_from_shape = False`: habitat's default recentres a mesh on its centre of
mass, which would pile every object onto the origin). The previous house's objects are
removed first (`reconfigure` keeps them when the config is unchanged) and the exported
files are deleted once loaded. The navmesh is recomputed from the agent's radius and height
with static objects included. Real scenes (HM3D, MP3D, Replica `.glb`, or a scene in a
`scene_dataset_config.json`) load through `load_scene("<path or scene handle>")`.

Heights are habitat's: a pose's z is the floor under the agent, on every floor of a scan.
In a procedural house the navmesh also covers furniture tops, so sampled points are kept
only on the floor (z = 0).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile

import numpy as np

from .backend import as_goals, walk_with_oracle
from .types import Action, AgentConfig, AgentPose, Frames, SensorConfig, StepOutcome

ACTION_NAMES = {Action.MOVE_FORWARD: "move_forward", Action.TURN_LEFT: "turn_left", Action.TURN_RIGHT: "turn_right"}
ACTION_OF_NAME = {name: action for action, name in ACTION_NAMES.items()}
FLOOR_TOLERANCE = 0.1  # metres: a procedural sample higher than this stands on furniture


def zup_to_habitat(p) -> np.ndarray:
    x, y, z = (float(v) for v in p)
    return np.array([x, z, -y], dtype=np.float32)


def habitat_to_zup(p) -> np.ndarray:
    x, y, z = (float(v) for v in p)
    return np.array([x, -z, y], dtype=np.float64)


def world_frame_template(templates, path: str):
    """An object template that keeps a mesh written in world coordinates where it is.

    habitat's templates recentre a mesh on its centre of mass by default
    (`compute_COM_from_shape = True`); our meshes carry their world placement in their
    vertices and are added at the identity pose, so that recentring must be off.
    """
    template = templates.create_new_template(path)
    template.render_asset_handle = path
    template.collision_asset_handle = path
    template.compute_COM_from_shape = False
    return template


def yaw_to_habitat_quat(yaw: float):
    """Rotation of `yaw - pi/2` about +Y as a numpy-quaternion (w, x, y, z)."""
    import quaternion  # numpy-quaternion ships with habitat-sim

    theta = yaw - math.pi / 2
    return quaternion.quaternion(math.cos(theta / 2), 0.0, math.sin(theta / 2), 0.0)


def habitat_quat_to_yaw(q) -> float:
    theta = 2.0 * math.atan2(q.y, q.w)
    yaw = theta + math.pi / 2
    return math.atan2(math.sin(yaw), math.cos(yaw))


class HabitatBackend:
    """`NavBackend` over `habitat_sim.Simulator`. `gpu_device_id=-1` selects the software
    EGL device (Mesa llvmpipe); habitat's default device 0 aborts the process on a machine
    without a CUDA device, which Python cannot catch."""

    def __init__(self, agent: AgentConfig | None = None, sensors: SensorConfig | None = None,
                 gpu_device_id: int = -1, scene_dataset_config: str = "default", seed: int = 0) -> None:
        try:
            import habitat_sim  # noqa: F401  (fail here, with a clear message, not on first use)
        except ImportError as exc:
            raise ImportError(
                "the habitat backend needs habitat-sim, which installs with conda (see docs/habitat.md); "
                "run it in that interpreter with backend={name: habitat, python: /path/to/conda/env/bin/python}"
            ) from exc
        self.agent, self.sensors = agent or AgentConfig(), sensors or SensorConfig()
        self.gpu_device_id = gpu_device_id
        self.scene_dataset_config = scene_dataset_config
        self.seed = seed
        self.sim = None
        self._scene_key = None
        self._category_of = {}  # semantic object id -> category id
        self._tmp = None  # root of the exported houses; each house's files go once loaded
        self._houses = 0
        self._followers = {}  # stop radius -> habitat_sim.nav.GreedyGeodesicFollower
        self._procedural = False

    # ------------------------------------------------------------------ configuration
    def _sim_config(self, scene_id: str):
        import habitat_sim

        sim_cfg = habitat_sim.SimulatorConfiguration()
        sim_cfg.scene_id = scene_id
        sim_cfg.scene_dataset_config_file = self.scene_dataset_config
        sim_cfg.gpu_device_id = self.gpu_device_id
        sim_cfg.allow_sliding = self.agent.allow_sliding
        sim_cfg.enable_physics = False
        sim_cfg.random_seed = self.seed
        specs = []
        for uuid, kind, wanted in (("rgb", "COLOR", self.sensors.rgb), ("depth", "DEPTH", self.sensors.depth),
                                   ("semantic", "SEMANTIC", self.sensors.semantic)):
            if not wanted:
                continue
            spec = habitat_sim.CameraSensorSpec()
            spec.uuid = uuid
            spec.sensor_type = getattr(habitat_sim.SensorType, kind)
            spec.resolution = [self.sensors.height, self.sensors.width]
            spec.position = [0.0, self.agent.camera_height, 0.0]
            spec.hfov = self.sensors.hfov_deg
            specs.append(spec)
        act = habitat_sim.agent.ActionSpec
        amount = habitat_sim.agent.ActuationSpec
        agent_cfg = habitat_sim.agent.AgentConfiguration(
            height=self.agent.height, radius=self.agent.radius, sensor_specifications=specs,
            action_space={
                "move_forward": act("move_forward", amount(amount=self.agent.forward_step)),
                "turn_left": act("turn_left", amount(amount=self.agent.turn_angle_deg)),
                "turn_right": act("turn_right", amount(amount=self.agent.turn_angle_deg)),
            },
        )
        return habitat_sim.Configuration(sim_cfg, [agent_cfg])

    def _open(self, scene_id: str) -> None:
        import habitat_sim

        cfg = self._sim_config(scene_id)
        if self.sim is None:
            self.sim = habitat_sim.Simulator(cfg)
        else:
            self.sim.reconfigure(cfg)
        self.sim.seed(self.seed)
        # `reconfigure` with an unchanged config returns early and keeps the objects added so
        # far: clear them, or every house would be stacked on the previous ones.
        self.sim.get_rigid_object_manager().remove_all_objects()
        self._agent = self.sim.initialize_agent(0)
        self._followers = {}

    def _recompute_navmesh(self) -> None:
        import habitat_sim

        settings = habitat_sim.NavMeshSettings()
        settings.set_defaults()
        settings.agent_radius = self.agent.radius
        settings.agent_height = self.agent.height
        settings.cell_size = 0.05
        if hasattr(settings, "include_static_objects"):  # 0.3.x
            settings.include_static_objects = True
            ok = self.sim.recompute_navmesh(self.sim.pathfinder, settings)
        else:  # 0.2.x
            ok = self.sim.recompute_navmesh(self.sim.pathfinder, settings, include_static_objects=True)
        if ok is False or not self.sim.pathfinder.is_loaded:
            raise RuntimeError("habitat-sim failed to compute a navmesh for the scene")

    # ------------------------------------------------------------------ scenes
    def load_scene(self, scene) -> None:
        """A procedural `Scene`, or a path / scene handle of a real scene."""
        if isinstance(scene, str):
            if scene != self._scene_key:
                self._open(scene)
                if not self.sim.pathfinder.is_loaded:  # a scan shipped without its .navmesh
                    self._recompute_navmesh()
                self._category_of = {}
                self._procedural = False
                self._scene_key = scene
            return
        key = ("procedural", scene.seed, scene.to_json())
        if key == self._scene_key:
            return
        self._open("NONE")
        house_dir = self._export_dir()
        try:
            self._add_procedural(scene, house_dir)
            self._recompute_navmesh()
        finally:
            shutil.rmtree(house_dir, ignore_errors=True)  # loaded: the files are not needed any more
        self._procedural = True
        self._scene_key = key

    def _export_dir(self) -> str:
        if self._tmp is None:
            self._tmp = tempfile.mkdtemp(prefix="embodied-habitat-")
        self._houses += 1  # a fresh name per house: habitat caches assets by file name
        path = os.path.join(self._tmp, f"house{self._houses}")
        os.makedirs(path)
        return path

    def _add_procedural(self, scene, house_dir: str) -> None:
        import habitat_sim

        from .habitat_scene import export_glb

        structure = os.path.join(house_dir, "structure.glb")
        object_files = export_glb(scene, structure, frame="y_up")
        templates = self.sim.get_object_template_manager()
        objects = self.sim.get_rigid_object_manager()
        self._category_of = {}
        for semantic_id, path, category in [(0, structure, 0)] + [
            (o.id, str(object_files[o.id]), o.category_id) for o in scene.objects
        ]:
            templates.register_template(world_frame_template(templates, path), path)
            obj = objects.add_object_by_template_handle(path)
            obj.motion_type = habitat_sim.physics.MotionType.STATIC
            obj.semantic_id = semantic_id
            self._category_of[semantic_id] = category

    # ------------------------------------------------------------------ agent
    def set_agent_pose(self, position: np.ndarray, yaw: float) -> None:
        import habitat_sim

        state = habitat_sim.AgentState()
        state.position = zup_to_habitat(position)
        state.rotation = yaw_to_habitat_quat(yaw)
        self._agent.set_state(state, reset_sensors=True)

    def get_agent_pose(self) -> AgentPose:
        state = self._agent.get_state()  # habitat's agent position is its base on the floor
        return AgentPose(habitat_to_zup(state.position), habitat_quat_to_yaw(state.rotation))

    def apply_action(self, action: int) -> StepOutcome:
        action = Action(int(action))
        if action == Action.STOP:
            return StepOutcome()
        before = self.get_agent_pose().position
        collided = bool(self._agent.act(ACTION_NAMES[action]))
        moved = float(np.linalg.norm(self.get_agent_pose().position - before))
        return StepOutcome(collided=collided, moved=moved)

    def render(self) -> Frames:
        obs = self.sim.get_sensor_observations()
        frames = Frames()
        if "rgb" in obs:
            frames.rgb = np.ascontiguousarray(obs["rgb"][..., :3], dtype=np.uint8)
        if "depth" in obs:
            depth = np.clip(obs["depth"], self.sensors.min_depth, self.sensors.max_depth)
            frames.depth = depth.astype(np.float32)[..., None]
        if "semantic" in obs:
            ids = obs["semantic"].astype(np.int32)
            frames.semantic_object = ids
            lookup = np.zeros(max(self._category_of, default=0) + 1, dtype=np.int32)
            for sid, cat in self._category_of.items():
                lookup[sid] = cat
            frames.semantic_category = lookup[np.clip(ids, 0, len(lookup) - 1)]
        return frames

    # ------------------------------------------------------------------ navigation queries
    def _path(self, a: np.ndarray, goals: np.ndarray):
        import habitat_sim

        path = habitat_sim.MultiGoalShortestPath()
        path.requested_start = zup_to_habitat(a)
        path.requested_ends = [zup_to_habitat(g) for g in as_goals(goals)]
        found = self.sim.pathfinder.find_path(path)
        return path if found else None

    def geodesic_distance(self, a: np.ndarray, goals: np.ndarray) -> float:
        path = self._path(a, goals)
        return float(path.geodesic_distance) if path is not None else float("inf")

    def shortest_path(self, a: np.ndarray, goals: np.ndarray) -> np.ndarray:
        path = self._path(a, goals)
        if path is None:
            return np.zeros((0, 3))
        return np.array([habitat_to_zup(p) for p in path.points]).reshape(-1, 3)

    def next_action(self, goals: np.ndarray, stop_radius: float) -> int:
        """habitat's own oracle (`GreedyGeodesicFollower`, what habitat-lab's
        `ShortestPathFollower` wraps) towards the nearest goal."""
        import habitat_sim

        goals = as_goals(goals)
        path = self._path(self.get_agent_pose().position, goals)
        if path is None:
            return int(Action.STOP)
        goal = goals[int(getattr(path, "closest_end_point_index", 0))]
        follower = self._followers.get(stop_radius)
        if follower is None:
            follower = habitat_sim.nav.GreedyGeodesicFollower(
                self.sim.pathfinder, self._agent, goal_radius=stop_radius, stop_key="stop",
                forward_key=ACTION_NAMES[Action.MOVE_FORWARD], left_key=ACTION_NAMES[Action.TURN_LEFT],
                right_key=ACTION_NAMES[Action.TURN_RIGHT])
            self._followers[stop_radius] = follower
        try:
            key = follower.next_action_along(zup_to_habitat(goal))
        except habitat_sim.errors.GreedyFollowerError:  # no action makes progress
            return int(Action.STOP)
        return int(ACTION_OF_NAME.get(key, Action.STOP))

    def walk_to(self, goals: np.ndarray, stop_radius: float, max_steps: int) -> list[int]:
        return walk_with_oracle(self, goals, stop_radius, max_steps)

    def sample_navigable_point(self, rng: np.random.Generator) -> np.ndarray:
        # habitat's sampler has its own seed; seeding it from our generator keeps episodes
        # a pure function of the episode seed.
        self.sim.pathfinder.seed(int(rng.integers(2**31)))
        for _ in range(100):
            p = habitat_to_zup(self.sim.pathfinder.get_random_navigable_point())
            if not self._procedural or abs(p[2]) <= FLOOR_TOLERANCE:
                return p
        raise RuntimeError("habitat's navmesh gave no navigable point on the floor in 100 draws")

    def is_navigable(self, points: np.ndarray):
        pts = np.asarray(points, dtype=np.float64)
        if pts.ndim == 1:
            return bool(self.sim.pathfinder.is_navigable(zup_to_habitat(pts)))
        return np.array([self.sim.pathfinder.is_navigable(zup_to_habitat(p)) for p in pts], dtype=bool)

    def close(self) -> None:
        if self.sim is not None:
            self.sim.close()
            self.sim = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
