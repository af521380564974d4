"""Habitat backend: the navigation tasks on real habitat-sim (0.2.x and 0.3.x).

habitat-sim installs with conda, usually in a Python 3.9 environment of its own, so this
module is written to be hosted by the out-of-process worker (`backend.python=...`): Python
3.9 syntax, and it imports only numpy, habitat_sim and (for procedural houses) trimesh.

Frames: the toolkit is Z-up, habitat is Y-up. A toolkit point (x, y, z) is habitat's
(x, z, -y); a toolkit yaw (0 = +X) is a rotation of `yaw - pi/2` about habitat's +Y (the
habitat agent faces -Z at identity, which is the toolkit's +Y).

Procedural houses are exported to `.glb` (structure + one mesh per object, in glTF's Y-up
frame) and added over an empty stage as STATIC rigid objects: the structure with semantic
id 0 and each object with its own `semantic_id`, so the semantic sensor reports object ids.
The navmesh is recomputed at load time from the agent's radius and height with static
objects included. Real scenes (HM3D, MP3D, Replica `.glb`, or a scene in a
`scene_dataset_config.json`) load through `load_scene("<path or scene handle>")`.
"""

from __future__ import annotations

import math
import os
import tempfile

import numpy as np

from embodied.envs.backend import Action, AgentConfig, AgentPose, Frames, SensorConfig, StepOutcome

ACTION_NAMES = {Action.MOVE_FORWARD: "move_forward", Action.TURN_LEFT: "turn_left", Action.TURN_RIGHT: "turn_right"}


def zup_to_habitat(p) -> np.ndarray:
    x, y, z = (float(v) for v in p)
    return np.array([x, z, -y], dtype=np.float32)


def habitat_to_zup(p) -> np.ndarray:
    x, y, z = (float(v) for v in p)
    return np.array([x, -z, y], dtype=np.float64)


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
        self._tmp = None

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
        self._agent = self.sim.initialize_agent(0)

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
                self._category_of = {}
                self._scene_key = scene
            return
        key = ("procedural", scene.seed, scene.to_json())
        if key == self._scene_key:
            return
        self._open("NONE")
        self._add_procedural(scene)
        self._recompute_navmesh()
        self._scene_key = key

    def _add_procedural(self, scene) -> None:
        import habitat_sim

        from embodied.envs.scenes.export import export_glb

        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="embodied-habitat-")
        stem = os.path.join(self._tmp.name, f"house{scene.seed}")
        object_files = export_glb(scene, stem + ".glb", frame="y_up")
        templates = self.sim.get_object_template_manager()
        objects = self.sim.get_rigid_object_manager()
        self._category_of = {}
        for semantic_id, path, category in [(0, stem + ".glb", 0)] + [
            (o.id, str(object_files[o.id]), o.category_id) for o in scene.objects
        ]:
            template = templates.create_new_template(path)
            template.render_asset_handle = path
            template.collision_asset_handle = path
            templates.register_template(template, path)
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
        state = self._agent.get_state()
        position = habitat_to_zup(state.position)
        position[2] = 0.0  # the toolkit's pose is the base on the floor
        return AgentPose(position, habitat_quat_to_yaw(state.rotation))

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
    def _path(self, a: np.ndarray, b: np.ndarray):
        import habitat_sim

        path = habitat_sim.ShortestPath()
        path.requested_start = zup_to_habitat(a)
        path.requested_end = zup_to_habitat(b)
        found = self.sim.pathfinder.find_path(path)
        return path if found else None

    def geodesic_distance(self, a: np.ndarray, b: np.ndarray) -> float:
        path = self._path(a, b)
        return float(path.geodesic_distance) if path is not None else float("inf")

    def shortest_path(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        path = self._path(a, b)
        if path is None:
            return np.zeros((0, 3))
        points = np.array([habitat_to_zup(p) for p in path.points])
        points[:, 2] = 0.0
        return points

    def sample_navigable_point(self, rng: np.random.Generator) -> np.ndarray:
        # habitat's sampler has its own seed; seeding it from our generator keeps episodes
        # a pure function of the episode seed.
        self.sim.pathfinder.seed(int(rng.integers(2**31)))
        p = habitat_to_zup(self.sim.pathfinder.get_random_navigable_point())
        p[2] = 0.0
        return p

    def is_navigable(self, point: np.ndarray) -> bool:
        return bool(self.sim.pathfinder.is_navigable(zup_to_habitat(point)))

    def close(self) -> None:
        if self.sim is not None:
            self.sim.close()
            self.sim = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
