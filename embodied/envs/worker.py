"""`RemoteBackend`: any navigation backend hosted in a subprocess, possibly another Python.

    backend = RemoteBackend("habitat", agent, sensors, python="/opt/conda/envs/habitat/bin/python")

The client implements `NavBackend`, so the tasks cannot tell it from an in-process
backend: the same calls give the same observations (frames come back through shared
memory) and the same random samples (the generator's state travels with the call).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from dataclasses import asdict
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any

import numpy as np

from embodied.envs.backend import AgentConfig, AgentPose, Frames, SensorConfig, StepOutcome

WORKER = Path(__file__).with_name("worker_main.py")


class RemoteBackendError(RuntimeError):
    """The worker reported an error or died; the message carries its traceback."""


class RemoteBackend:
    def __init__(
        self,
        name: str,
        agent: AgentConfig,
        sensors: SensorConfig,
        python: str | None = None,
        **options: Any,
    ) -> None:
        self.name, self.agent, self.sensors = name, agent, sensors
        self._python = python or sys.executable
        self._options = options
        self._proc: subprocess.Popen | None = None
        self._blocks: dict[str, shared_memory.SharedMemory] = {}
        self._views: dict[str, np.ndarray] = {}
        self._scene_key: Any = None

    # ------------------------------------------------------------------ process
    def _start(self) -> None:
        h, w = self.sensors.height, self.sensors.width
        layout = {
            "rgb": ((h, w, 3), np.uint8, self.sensors.rgb),
            "depth": ((h, w, 1), np.float32, self.sensors.depth),
            "semantic_object": ((h, w), np.int32, self.sensors.semantic),
            "semantic_category": ((h, w), np.int32, self.sensors.semantic),
        }
        spec = {}
        for key, (shape, dtype, wanted) in layout.items():
            if not wanted:
                continue
            nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
            block = shared_memory.SharedMemory(create=True, size=nbytes)
            self._blocks[key] = block
            self._views[key] = np.ndarray(shape, dtype=dtype, buffer=block.buf)
            spec[key] = {"name": block.name, "shape": list(shape), "dtype": np.dtype(dtype).str}
        self._proc = subprocess.Popen(
            [self._python, str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        self._call("init", backend=self.name, agent=asdict(self.agent), sensors=asdict(self.sensors), shm=spec,
                   options=self._options)

    def _call(self, cmd: str, **args: Any) -> Any:
        if self._proc is None:
            self._start()
        assert self._proc is not None and self._proc.stdin and self._proc.stdout
        try:
            self._proc.stdin.write(json.dumps({"cmd": cmd, "args": args}) + "\n")
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            code = self._proc.poll()
            raise RemoteBackendError(f"backend worker ({self._python}) exited with code {code} during '{cmd}'")
        reply = json.loads(line)
        if "error" in reply:
            raise RemoteBackendError(f"backend worker failed in '{cmd}': {reply['error']}")
        return reply["ok"]

    # ------------------------------------------------------------------ NavBackend
    def load_scene(self, scene: Any) -> None:
        key = getattr(scene, "seed", None), id(scene)
        if key == self._scene_key:
            return
        self._call("load_scene", scene_json=scene.to_json())
        self._scene_key = key

    def set_agent_pose(self, position: np.ndarray, yaw: float) -> None:
        self._call("set_agent_pose", position=[float(v) for v in position], yaw=float(yaw))

    def get_agent_pose(self) -> AgentPose:
        r = self._call("get_agent_pose")
        return AgentPose(np.asarray(r["position"], dtype=np.float64), float(r["yaw"]))

    def apply_action(self, action: int) -> StepOutcome:
        r = self._call("apply_action", action=int(action))
        return StepOutcome(collided=r["collided"], moved=r["moved"])

    def render(self) -> Frames:
        written = set(self._call("render"))
        return Frames(**{k: v.copy() for k, v in self._views.items() if k in written})

    def geodesic_distance(self, a: np.ndarray, b: np.ndarray) -> float:
        d = self._call("geodesic_distance", a=[float(v) for v in a], b=[float(v) for v in b])
        return float("inf") if d is None else float(d)

    def shortest_path(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.asarray(self._call("shortest_path", a=[float(v) for v in a], b=[float(v) for v in b]))

    def sample_navigable_point(self, rng: np.random.Generator) -> np.ndarray:
        r = self._call("sample_navigable_point", rng_state=rng.bit_generator.state)
        rng.bit_generator.state = r["rng_state"]
        return np.asarray(r["point"], dtype=np.float64)

    def is_navigable(self, point: np.ndarray) -> bool:
        return bool(self._call("is_navigable", point=[float(v) for v in point]))

    def close(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(RemoteBackendError):
                self._call("close")
            self._proc.wait(timeout=10)
            self._proc = None
        for block in self._blocks.values():
            block.close()
            block.unlink()
        self._blocks, self._views = {}, {}

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
