"""Out-of-process backend worker: the server side of `sim.remote.RemoteBackend`.

Started as `<python> embodied/envs/worker.py`, possibly by another interpreter (a conda env
holding habitat-sim on Python 3.9). Python puts this file's folder first on `sys.path`, so
the worker imports the `sim` package beside it directly: `sim` uses only relative
imports, numpy and the simulator, and never runs `embodied.envs` (Gymnasium, torch).

Protocol: one JSON object per line. Requests on stdin: {"cmd": name, "args": {...}};
replies on the process's original stdout: {"ok": result} or {"error": text}. Before
anything else is imported, file descriptor 1 is pointed at stderr: simulators log from
native code straight to fd 1, and a log line on the reply stream would break the protocol.
Rendered frames go to shared memory blocks created by the client; the reply to "render"
says which were written.
"""

import json
import os
import sys
import traceback


def protocol_stream():
    """The reply stream: a private copy of fd 1, after fd 1 itself is moved to stderr."""
    reply_fd = os.dup(1)
    os.dup2(2, 1)  # from now on whatever writes to fd 1 (C++ logs, print) lands on stderr
    return os.fdopen(reply_fd, "w")


BACKEND_CLASSES = {
    "mujoco": ("sim.mujoco_backend", "MujocoBackend"),
    "habitat": ("sim.habitat_backend", "HabitatBackend"),
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


def _floats(v):
    return [float(x) for x in v]


class Server:
    def __init__(self):
        self.backend = None
        self.frames = {}  # sensor name -> (SharedMemory, ndarray view)
        self.goals = None  # the last goal set the client sent (it sends None for "the same")

    # ------------------------------------------------------------------ commands
    def init(self, backend, agent, sensors, shm, options):
        import importlib

        from sim.types import AgentConfig, SensorConfig

        if backend not in BACKEND_CLASSES:
            raise ValueError("backend.name must be one of %s, got '%s'" % (sorted(BACKEND_CLASSES), backend))
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

    def load_scene(self, scene_json=None, path=None):
        from sim.scene import Scene

        self.backend.load_scene(path if path is not None else Scene.from_json(scene_json))

    def set_agent_pose(self, position, yaw):
        import numpy as np

        self.backend.set_agent_pose(np.asarray(position, dtype=np.float64), float(yaw))

    def get_agent_pose(self):
        pose = self.backend.get_agent_pose()
        return {"position": _floats(pose.position), "yaw": float(pose.yaw)}

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

    def _goals(self, goals):
        import numpy as np

        if goals is not None:
            self.goals = np.asarray(goals, dtype=np.float64)
        if self.goals is None:
            raise ValueError("no goal set sent yet")
        return self.goals

    def geodesic_distance(self, a, goals):
        import numpy as np

        d = float(self.backend.geodesic_distance(np.asarray(a), self._goals(goals)))
        return d if np.isfinite(d) else None  # JSON has no infinity

    def shortest_path(self, a, goals):
        import numpy as np

        return np.asarray(self.backend.shortest_path(np.asarray(a), self._goals(goals))).tolist()

    def next_action(self, goals, stop_radius):
        return int(self.backend.next_action(self._goals(goals), float(stop_radius)))

    def walk_to(self, goals, stop_radius, max_steps):
        return [int(a) for a in self.backend.walk_to(self._goals(goals), float(stop_radius), int(max_steps))]

    def sample_navigable_point(self, rng_state):
        import numpy as np

        rng = np.random.Generator(np.random.PCG64())
        rng.bit_generator.state = rng_state
        point = self.backend.sample_navigable_point(rng)
        return {"point": _floats(point), "rng_state": rng.bit_generator.state}

    def is_navigable(self, points):
        import numpy as np

        out = self.backend.is_navigable(np.asarray(points, dtype=np.float64))
        return bool(out) if np.ndim(out) == 0 else [bool(v) for v in out]

    def close(self):
        if self.backend is not None:
            self.backend.close()
        for block, _ in self.frames.values():
            block.close()
        self.frames = {}


def serve(requests, replies):
    server = Server()
    for line in requests:
        request = json.loads(line)
        try:
            result = getattr(server, request["cmd"])(**request.get("args", {}))
            reply = {"ok": result}
        except Exception as exc:  # report to the client, keep serving
            reply = {"error": "%s: %s\n%s" % (type(exc).__name__, exc, traceback.format_exc())}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()
        if request["cmd"] == "close":
            break


def main():
    replies = protocol_stream()
    serve(sys.stdin, replies)


if __name__ == "__main__":
    main()
