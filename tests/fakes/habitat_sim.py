"""Test double of habitat-sim, for unit tests of OUR side of the habitat backend only.

It reproduces the behaviours of a real habitat-sim 0.2.2 build that the backend has to
cope with (reported in issue 14), not habitat's physics or rendering:
- C++ log lines written straight to file descriptor 1, at import and when a simulator is built;
- object templates recentre a mesh on its centre (`compute_COM_from_shape = True` by default);
- `reconfigure` with an unchanged scene keeps the objects already added;
- the navmesh covers furniture tops, and a scan's floor is not at height 0 (`FLOOR_Y`).
Navigability: inside the structure's floor rectangle and outside every object's box.
"""

import math
import os
import types

import numpy as np

LOG_LINE = (b"[Metadata] AttributesManagerBase.h(380)::createFromJsonOrDefaultInternal : "
            b"<Scene Dataset> : default.scene_dataset_config.json This file does not exist.\n")
os.write(1, LOG_LINE)
__version__ = "0.2.2-fake"
FLOOR_Y = 0.0  # floor height of a scan ("NONE" stages have their floor at the structure's bottom)


class _Bag:
    def __init__(self, *args, **kwargs):
        self.args = args
        self.__dict__.update(kwargs)


SimulatorConfiguration = CameraSensorSpec = NavMeshSettings = AgentState = _Bag
NavMeshSettings.set_defaults = lambda self: None
SensorType = types.SimpleNamespace(COLOR="COLOR", DEPTH="DEPTH", SEMANTIC="SEMANTIC")
physics = types.SimpleNamespace(MotionType=types.SimpleNamespace(STATIC="STATIC", KINEMATIC="KINEMATIC"))
agent = types.SimpleNamespace(ActionSpec=_Bag, ActuationSpec=_Bag, AgentConfiguration=_Bag)


class GreedyFollowerError(Exception):
    pass


errors = types.SimpleNamespace(GreedyFollowerError=GreedyFollowerError)


class Configuration:
    def __init__(self, sim_cfg, agents):
        self.sim_cfg, self.agents = sim_cfg, agents


class _Template:
    def __init__(self, handle):
        self.handle = handle
        self.compute_COM_from_shape = True  # habitat's default


class _Templates:
    def __init__(self):
        self.registered = {}

    def create_new_template(self, handle):
        return _Template(handle)

    def register_template(self, template, handle):
        self.registered[handle] = template


class _Object:
    def __init__(self, template):
        import trimesh  # read the mesh now: the file may be deleted once it is loaded

        lo, hi = trimesh.load(template.handle, force="mesh").bounds
        if template.compute_COM_from_shape:  # recentred on its centre, as habitat does
            lo, hi = lo - (lo + hi) / 2, hi - (lo + hi) / 2
        self.aabb = (lo, hi)
        self.motion_type, self.semantic_id = None, None


class _Objects:
    def __init__(self, templates):
        self.templates, self.objects = templates, []

    def add_object_by_template_handle(self, handle):
        obj = _Object(self.templates.registered[handle])
        self.objects.append(obj)
        return obj

    def remove_all_objects(self):
        self.objects = []


class _PathFinder:
    def __init__(self, sim):
        self.sim, self.is_loaded, self.rng = sim, False, np.random.default_rng(0)

    def seed(self, s):
        self.rng = np.random.default_rng(s)

    def _floor(self):
        if self.sim.scene_id != "NONE":
            return np.array([-5.0, FLOOR_Y, -5.0]), np.array([5.0, FLOOR_Y, 5.0])
        lo, hi = self.sim.objects.objects[0].aabb  # the structure
        return np.array([lo[0], 0.0, lo[2]]), np.array([hi[0], 0.0, hi[2]])

    def is_navigable(self, p, max_y_delta=0.5):
        lo, hi = self._floor()
        p = np.asarray(p, dtype=np.float64)
        if abs(p[1] - lo[1]) > max_y_delta or not (lo[0] < p[0] < hi[0] and lo[2] < p[2] < hi[2]):
            return False
        return not any(o.aabb[0][0] < p[0] < o.aabb[1][0] and o.aabb[0][2] < p[2] < o.aabb[1][2]
                       for o in self.sim.objects.objects[1:])

    def get_random_navigable_point(self):
        lo, hi = self._floor()
        furniture = self.sim.objects.objects[1:]
        if furniture and self.rng.random() < 0.25:  # the navmesh also covers furniture tops
            o = furniture[int(self.rng.integers(len(furniture)))]
            return np.array([(o.aabb[0][0] + o.aabb[1][0]) / 2, o.aabb[1][1], (o.aabb[0][2] + o.aabb[1][2]) / 2])
        while True:
            p = lo + self.rng.random(3) * (hi - lo)
            if self.is_navigable(p):
                return p.astype(np.float32)

    def find_path(self, path):
        ends = [np.asarray(e, dtype=np.float64) for e in path.requested_ends]
        start = np.asarray(path.requested_start, dtype=np.float64)
        if not self.is_navigable(start) or not ends:
            return False
        d = [float(np.linalg.norm(e - start)) for e in ends]
        k = int(np.argmin(d))
        path.geodesic_distance, path.closest_end_point_index, path.points = d[k], k, [start, ends[k]]
        return True


class MultiGoalShortestPath:
    def __init__(self):
        self.requested_start, self.requested_ends = None, []
        self.geodesic_distance, self.points, self.closest_end_point_index = math.inf, [], -1


class _Agent:
    def __init__(self):
        import quaternion

        self.state = AgentState(position=np.zeros(3, np.float32), rotation=quaternion.quaternion(1.0, 0.0, 0.0, 0.0))

    def get_state(self):
        return AgentState(position=np.array(self.state.position), rotation=self.state.rotation)

    def set_state(self, state, reset_sensors=True):
        self.state = AgentState(position=np.asarray(state.position, np.float32), rotation=state.rotation)

    def act(self, name):
        return False


class GreedyGeodesicFollower:
    def __init__(self, pathfinder, agent, goal_radius=None, *, stop_key=None, forward_key=None, left_key=None,
                 right_key=None):
        self.agent, self.goal_radius, self.stop_key, self.forward_key = agent, goal_radius, stop_key, forward_key

    def next_action_along(self, goal):
        d = np.linalg.norm(np.asarray(goal) - self.agent.get_state().position)
        if d > 50:
            raise GreedyFollowerError("no path")
        return self.stop_key if d <= self.goal_radius else self.forward_key


nav = types.SimpleNamespace(GreedyGeodesicFollower=GreedyGeodesicFollower)


class Simulator:
    def __init__(self, cfg):
        os.write(1, LOG_LINE)
        self.templates = _Templates()
        self.objects = _Objects(self.templates)
        self.pathfinder = _PathFinder(self)
        self.scene_id = cfg.sim_cfg.scene_id
        self.pathfinder.is_loaded = self.scene_id != "NONE"

    def reconfigure(self, cfg):
        if cfg.sim_cfg.scene_id == self.scene_id:  # habitat returns early on an unchanged config
            return
        self.scene_id = cfg.sim_cfg.scene_id
        self.objects.remove_all_objects()
        self.pathfinder.is_loaded = self.scene_id != "NONE"

    def seed(self, s):
        pass

    def initialize_agent(self, index):
        self._agent = _Agent()
        return self._agent

    def get_object_template_manager(self):
        return self.templates

    def get_rigid_object_manager(self):
        return self.objects

    def recompute_navmesh(self, pathfinder, settings, include_static_objects=False):
        pathfinder.is_loaded = True
        return True

    def get_sensor_observations(self):
        return {"rgb": np.zeros((8, 8, 4), np.uint8), "depth": np.ones((8, 8), np.float32)}

    def close(self):
        pass
