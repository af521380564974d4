"""Out-of-process backend worker: the server side.

Started by `embodied.envs.worker.RemoteBackend` as `<python> worker_main.py`, possibly in
another interpreter (a conda env holding habitat-sim on Python 3.9). It therefore imports
only the standard library, numpy and the simulator, keeps Python 3.9 syntax, and loads
the backend modules without running `embodied/__init__` chains that need gymnasium/torch.

Protocol: one JSON object per line. Requests on stdin: {"cmd": name, "args": {...}};
replies on stdout: {"ok": result} or {"error": text}. Rendered frames go to shared
memory blocks created by the client; the reply to "render" says which were written.
"""

import json
import os
import sys
import traceback
import types


def _install_package_stubs():
    """Make `embodied.envs.X` importable without executing the package __init__ files."""
    envs_dir = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(envs_dir)
    packages = (
        ("embodied", root),
        ("embodied.envs", envs_dir),
        ("embodied.envs.scenes", os.path.join(envs_dir, "scenes")),
    )
    for name, path in packages:
        if name not in sys.modules:
            module = types.ModuleType(name)
            module.__path__ = [path]
            sys.modules[name] = module


BACKEND_CLASSES = {
    "mujoco": ("embodied.envs.mujoco_backend", "MujocoBackend"),
    "habitat": ("embodied.envs.habitat_backend", "HabitatBackend"),
}


def _attach_untracked(shared_memory, name):
    """Attach to the client's block without letting this process's resource tracker unlink
    it at exit (Python < 3.13 tracks attached blocks too; the client owns them)."""
    try:
        return shared_memory.SharedMemory(name=name, track=False)  # Python >= 3.13
    except TypeError:
        from multiprocessing import resource_tracker

        block = shared_memory.SharedMemory(name=name)
        resource_tracker.unregister(block._name, "shared_memory")
        return block


class Server:
    def __init__(self):
        self.backend = None
        self.frames = {}  # sensor name -> (SharedMemory, ndarray view)

    # ------------------------------------------------------------------ commands
    def init(self, backend, agent, sensors, shm, options):
        import importlib

        from embodied.envs.backend import AgentConfig, SensorConfig

        module, cls = BACKEND_CLASSES[backend]
        backend_cls = getattr(importlib.import_module(module), cls)
        self.backend = backend_cls(AgentConfig(**agent), SensorConfig(**sensors), **options)
        self._attach(shm)
        return {"python": sys.version.split()[0]}

    def _attach(self, shm):
        from multiprocessing import shared_memory

        import numpy as np

        for name, spec in shm.items():
            block = _attach_untracked(shared_memory, spec["name"])
            view = np.ndarray(tuple(spec["shape"]), dtype=np.dtype(spec["dtype"]), buffer=block.buf)
            self.frames[name] = (block, view)

    def load_scene(self, scene_json):
        from embodied.envs.scenes.types import Scene

        self.backend.load_scene(Scene.from_json(scene_json))

    def set_agent_pose(self, position, yaw):
        import numpy as np

        self.backend.set_agent_pose(np.asarray(position, dtype=np.float64), float(yaw))

    def get_agent_pose(self):
        pose = self.backend.get_agent_pose()
        return {"position": [float(v) for v in pose.position], "yaw": float(pose.yaw)}

    def apply_action(self, action):
        out = self.backend.apply_action(int(action))
        return {"collided": bool(out.collided), "moved": float(out.moved)}

    def render(self):
        frames = self.backend.render()
        written = []
        for name in self.frames:
            value = getattr(frames, name)
            if value is not None:
                self.frames[name][1][...] = value
                written.append(name)
        return written

    def geodesic_distance(self, a, b):
        import numpy as np

        d = float(self.backend.geodesic_distance(np.asarray(a), np.asarray(b)))
        return d if np.isfinite(d) else None

    def shortest_path(self, a, b):
        import numpy as np

        return np.asarray(self.backend.shortest_path(np.asarray(a), np.asarray(b))).tolist()

    def sample_navigable_point(self, rng_state):
        import numpy as np

        rng = np.random.Generator(np.random.PCG64())
        rng.bit_generator.state = rng_state
        point = self.backend.sample_navigable_point(rng)
        return {"point": [float(v) for v in point], "rng_state": rng.bit_generator.state}

    def is_navigable(self, point):
        import numpy as np

        return bool(self.backend.is_navigable(np.asarray(point)))

    def close(self):
        if self.backend is not None:
            self.backend.close()
        for block, _ in self.frames.values():
            block.close()
        self.frames = {}


def main():
    _install_package_stubs()
    reply_stream = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout = sys.stderr  # anything the simulator prints must not corrupt the protocol
    server = Server()
    for line in sys.stdin:
        request = json.loads(line)
        try:
            result = getattr(server, request["cmd"])(**request.get("args", {}))
            reply = {"ok": result}
        except Exception as exc:  # report to the client, keep serving
            reply = {"error": "%s: %s\n%s" % (type(exc).__name__, exc, traceback.format_exc())}
        reply_stream.write(json.dumps(reply) + "\n")
        reply_stream.flush()
        if request["cmd"] == "close":
            break


if __name__ == "__main__":
    main()
