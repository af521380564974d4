"""`RemoteBackend`: any navigation backend hosted in a subprocess, possibly another Python.

    backend = RemoteBackend("habitat", agent, sensors, python="/opt/conda/envs/habitat/bin/python")

The client implements `NavBackend`, so the tasks cannot tell it from an in-process
backend: the same calls give the same observations (frames come back through shared
memory) and the same random samples (the generator's state travels with the call).

Robustness: every call has a deadline (`timeout` seconds); a worker that does not answer
in time is killed and the call raises `RemoteBackendError`. A worker that died is reported
with its exit code and the tail of its stderr (kept in a file, so a chatty simulator can
never fill a pipe and block). The shared memory blocks are unlinked on `close()`, when
the worker fails to start, and at garbage collection.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
import weakref
from dataclasses import asdict
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any

import numpy as np

from .backend import as_goals
from .types import AgentConfig, AgentPose, Frames, SensorConfig, StepOutcome

WORKER = Path(__file__).parents[1] / "worker.py"
STDERR_TAIL = 4000  # characters of the worker's stderr quoted in an error


class RemoteBackendError(RuntimeError):
    """The worker reported an error, timed out or died; the message says which, with its
    traceback or its exit code and stderr tail."""


def _release(blocks: list[shared_memory.SharedMemory]) -> None:
    for block in blocks:
        with contextlib.suppress(FileNotFoundError, BufferError):
            block.close()
            block.unlink()
    blocks.clear()


class RemoteBackend:
    def __init__(
        self,
        name: str,
        agent: AgentConfig,
        sensors: SensorConfig,
        python: str | None = None,
        timeout: float = 120.0,
        **options: Any,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"backend.timeout must be > 0 seconds, got {timeout}")
        self.name, self.agent, self.sensors = name, agent, sensors
        self.timeout = float(timeout)
        self._python = python or sys.executable
        self._options = options  # the backend's own options, checked by its constructor in the worker
        self._proc: subprocess.Popen | None = None
        self._stderr = None
        self._buffer = b""
        self._blocks: list[shared_memory.SharedMemory] = []
        self._views: dict[str, np.ndarray] = {}
        self._scene_key: Any = None
        self._sent_goals: bytes | None = None  # the worker keeps the last goal set: resend only on change
        self._finalizer = weakref.finalize(self, _release, self._blocks)

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
            self._blocks.append(block)
            self._views[key] = np.ndarray(shape, dtype=dtype, buffer=block.buf)
            spec[key] = {"name": block.name, "shape": list(shape), "dtype": np.dtype(dtype).str}
        self._sent_goals = None
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the worker; closed in _shutdown)
        self._proc = subprocess.Popen([self._python, str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=self._stderr)
        self._call("init", backend=self.name, agent=asdict(self.agent), sensors=asdict(self.sensors), shm=spec,
                   options=self._options)

    def _call(self, cmd: str, **args: Any) -> Any:
        if self._proc is None:
            try:
                self._start()
            except BaseException:
                self._shutdown()  # never leave a half-started worker or its shared memory behind
                raise
        try:
            self._proc.stdin.write((json.dumps({"cmd": cmd, "args": args}) + "\n").encode())
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # it died: the read below reports how
        reply = json.loads(self._read_line(cmd))
        if "error" in reply:
            raise RemoteBackendError(f"backend worker failed in '{cmd}': {reply['error']}")
        return reply["ok"]

    def _read_line(self, cmd: str) -> str:
        """One reply line, waiting at most `timeout` seconds."""
        deadline = time.monotonic() + self.timeout
        fd = self._proc.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    self._proc.kill()
                    self._proc.wait()
                    raise RemoteBackendError(f"backend worker ({self._python}) did not answer '{cmd}' within "
                                             f"{self.timeout:g} s (backend.timeout); killed it.{self._stderr_tail()}")
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    code = self._proc.wait()
                    raise RemoteBackendError(f"backend worker ({self._python}) exited with code {code} during "
                                             f"'{cmd}'.{self._stderr_tail()}")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0, os.SEEK_END)
        size = self._stderr.tell()
        self._stderr.seek(max(0, size - STDERR_TAIL))
        tail = self._stderr.read().decode(errors="replace").strip()
        return f"\n--- worker stderr (last {STDERR_TAIL} characters) ---\n{tail}" if tail else " (stderr empty)"

    def _shutdown(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            for stream in (self._proc.stdin, self._proc.stdout):
                with contextlib.suppress(OSError):
                    stream.close()
            self._proc = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        self._views = {}
        _release(self._blocks)

    # ------------------------------------------------------------------ NavBackend
    def load_scene(self, scene: Any) -> None:
        key = scene if isinstance(scene, str) else (scene.seed, id(scene))
        if key == self._scene_key:
            return
        if isinstance(scene, str):
            self._call("load_scene", path=scene)
        else:
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

    def _goals(self, goals: np.ndarray) -> list | None:
        """The goal set to send, or None for "the same as last time" (ObjectNav's set of view
        points is asked about every step: sending it once per episode keeps steps cheap)."""
        g = as_goals(goals)
        key = g.tobytes()  # (K, 3) float64: the bytes fix the shape too
        if key == self._sent_goals:
            return None
        self._sent_goals = key
        return g.tolist()

    def geodesic_distance(self, a: np.ndarray, goals: np.ndarray) -> float:
        d = self._call("geodesic_distance", a=[float(v) for v in a], goals=self._goals(goals))
        return float("inf") if d is None else float(d)

    def shortest_path(self, a: np.ndarray, goals: np.ndarray) -> np.ndarray:
        path = self._call("shortest_path", a=[float(v) for v in a], goals=self._goals(goals))
        return np.asarray(path, dtype=np.float64).reshape(-1, 3)

    def next_action(self, goals: np.ndarray, stop_radius: float) -> int:
        return int(self._call("next_action", goals=self._goals(goals), stop_radius=float(stop_radius)))

    def walk_to(self, goals: np.ndarray, stop_radius: float, max_steps: int) -> list[int]:
        return [int(a) for a in self._call("walk_to", goals=self._goals(goals), stop_radius=float(stop_radius),
                                           max_steps=int(max_steps))]

    def sample_navigable_point(self, rng: np.random.Generator) -> np.ndarray:
        r = self._call("sample_navigable_point", rng_state=rng.bit_generator.state)
        rng.bit_generator.state = r["rng_state"]
        return np.asarray(r["point"], dtype=np.float64)

    def is_navigable(self, points: np.ndarray) -> bool | np.ndarray:
        pts = np.asarray(points, dtype=np.float64)
        out = self._call("is_navigable", points=pts.tolist())
        return bool(out) if pts.ndim == 1 else np.asarray(out, dtype=bool).reshape(len(pts))

    def close(self) -> None:
        """Stop the worker (politely, then by force) and release the shared memory, always."""
        try:
            if self._proc is not None and self._proc.poll() is None:
                with contextlib.suppress(RemoteBackendError, OSError, ValueError):
                    self._call("close")
        finally:
            self._shutdown()
            self._scene_key = None
