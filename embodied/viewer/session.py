"""The viewer's session: one environment, one policy and the simulation thread that runs them.

Everything that touches the simulator or the policy happens on that one thread (MuJoCo's GL context
is current there only; a policy's `act` may take seconds). The server thread only queues commands
(`submit`) and reads finished payloads (`snapshot`, `frame`), so a slow policy never blocks the page:
a command sent while the policy thinks runs as soon as its `act` returns, and the page shows `busy`.

Frames: frame 0 is the reset observation; frame k is what step k produced. Frame k's payload carries
the action of step k, who chose it (`policy` or `human`), and what the policy's memories read while
choosing it (at frame k-1; `embodied.policies.traces.act_with_trace`). The policy acts at every step,
also while a person drives, so its memory keeps observing the episode and a hand-back continues it;
the person's action is the one executed. Payloads are built once, on this thread, and kept for the
episode: scrubbing back shows exactly what was shown live.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from embodied.envs.vector import batch_observations
from embodied.policies.traces import act_with_trace
from embodied.viewer import panels
from embodied.viewer.controls import Keyboard
from embodied.viewer.recorder import RecordedEpisode, SessionRecorder

# command name -> accepted argument names (and their types)
COMMANDS: dict[str, dict[str, type]] = {
    "key": {"key": str}, "step": {}, "run": {}, "pause": {}, "takeover": {}, "handback": {},
    "reset": {"episode": int, "task": int}, "next": {}, "next_scene": {}, "record": {"on": bool},
}
_STOP = object()


def check_command(name: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """A command from the page, checked: an unknown name or argument is an error naming the accepted ones."""
    if name not in COMMANDS:
        raise ValueError(f"unknown command {name!r}; commands: {sorted(COMMANDS)}")
    accepted = COMMANDS[name]
    unknown = sorted(set(args) - set(accepted))
    if unknown:
        raise ValueError(f"command {name!r}: unknown argument(s) {unknown}; accepted: {sorted(accepted)}")
    out = {}
    for key, value in args.items():
        kind = accepted[key]
        if value is None and name == "reset":
            continue
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"command {name!r}: {key} must be {kind.__name__}, got {value!r}")
        if kind is int and value < 0:
            raise ValueError(f"command {name!r}: {key} must be >= 0, got {value}")
        out[key] = value
    if name == "key" and not out.get("key"):
        raise ValueError("command 'key': key is required")
    return out


def _jsonable_action(action: Any) -> Any:
    a = np.asarray(action)
    return int(a) if a.ndim == 0 else [round(float(v), 3) for v in a.ravel()]


class Session:
    """Build the env (`embodied.envs.make`) and the policy (`build_policy`, as `embodied-eval` does, or a
    given policy object), then `start()` the simulation thread; `close()` stops it, commits a recording in
    progress and closes the simulator."""

    def __init__(self, env_name: str, env_kwargs: Mapping[str, Any], policy_cfg: Mapping[str, Any],
                 record_dir: str | Path, seed: int = 0, task: int | None = None, run_hz: float = 10.0,
                 ee_delta: float = 0.5, policy: Any = None) -> None:
        from embodied import envs
        from embodied.data.collect import EpisodeIdentity
        from embodied.policies.loading import build_policy

        if run_hz <= 0:
            raise ValueError(f"view.run_hz must be > 0 (policy steps per second while running), got {run_hz}")
        if seed < 0:
            raise ValueError(f"view.episode must be >= 0, got {seed}")
        self.env_name, self.kind = env_name, "libero" if env_name == "libero" else "nav"
        if task is not None and self.kind != "libero":
            raise ValueError(f"view.task picks a LIBERO task; env '{env_name}' has none (use view.episode)")
        self.env = EpisodeIdentity(envs.make(env_name, **env_kwargs))
        self.policy_name = str(policy_cfg.get("name", type(policy).__name__))
        self.policy = policy if policy is not None else build_policy(
            dict(policy_cfg), self.env.observation_space, self.env.action_space)
        self.keyboard = Keyboard(self.kind, ee_delta)
        self.recorder = SessionRecorder(record_dir, self.env.observation_space, self.env.action_space,
                                        fps=int(self.env.metadata.get("render_fps", 10)),
                                        env={"name": env_name, "options": dict(env_kwargs)}, policy=dict(policy_cfg))
        self.run_hz = float(run_hz)
        self.seed, self.task = int(seed), task
        self._queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []
        self._thread: threading.Thread | None = None
        self._closed = False
        # published state (read by the server thread under the lock)
        self._episode_json, self._frames_json = "{}", []
        self._status: dict[str, Any] = {"driver": "policy", "running": False, "busy": False, "recording": False,
                                        "recorded": [], "done": False, "message": "", "policy_ms": None,
                                        "frame": -1, "episode": 0}
        self.versions = {"episode": 0, "frame": 0, "status": 0}
        # simulation-thread state
        self._obs: dict[str, Any] = {}
        self._buffer: RecordedEpisode | None = None
        self._thumbs: list[str] = []
        self._trajectory: list[list[float]] = []
        self._scene: dict[str, Any] | None = None
        self._last_step = 0.0

    # ------------------------------------------------------------------ server-facing API (any thread)
    def subscribe(self, listener: Callable[[], None]) -> None:
        """`listener()` is called on the simulation thread after every change; it must not block."""
        self._listeners.append(listener)

    def submit(self, name: str, **args: Any) -> None:
        self._queue.put((name, check_command(name, args)))

    def snapshot(self) -> tuple[dict[str, int], str, str | None, dict[str, Any]]:
        """(versions, episode JSON, latest frame JSON or None, status)."""
        with self._lock:
            frame = self._frames_json[-1] if self._frames_json else None
            return dict(self.versions), self._episode_json, frame, dict(self._status)

    def frame(self, k: int) -> str:
        """Frame k of the current episode, as JSON (scrubbing)."""
        with self._lock:
            if not 0 <= k < len(self._frames_json):
                raise ValueError(f"frame must be in [0, {len(self._frames_json) - 1}], got {k}")
            return self._frames_json[k]

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "env": self.env_name, "policy": self.policy_name, "keys": self.keyboard.keys(),
                "run_hz": self.run_hz, "record_dir": str(self.recorder.root)}

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="embodied-view-sim", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 60.0) -> None:
        """Stop after the current step (a policy's act finishes first), commit a recording in progress,
        close the simulator. Idempotent."""
        self._stop.set()
        self._queue.put((_STOP, {}))
        if self._thread is None and not self._closed:  # never started: nothing but the simulator to close
            self._shutdown()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                print(f"embodied-view: the simulation thread did not stop within {timeout:.0f} s", file=sys.stderr)
            self._thread = None

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until every queued command ran (tests and scripts)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.01)
        return False

    # ------------------------------------------------------------------ simulation thread
    def _loop(self) -> None:
        try:
            self._guard(self._reset, self.seed, self.task)
            while not self._stop.is_set():
                running = self._status["running"] and not self._status["done"]
                timeout = max(0.0, self._last_step + 1.0 / self.run_hz - time.monotonic()) if running else None
                try:
                    name, args = self._queue.get(timeout=timeout) if timeout != 0.0 else self._queue.get_nowait()
                except queue.Empty:
                    self._guard(self._step, None)
                    continue
                try:
                    if name is _STOP or self._stop.is_set():
                        break
                    self._guard(self._handle, name, args)
                finally:
                    self._queue.task_done()
        finally:
            self._shutdown()

    def _guard(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run one command; an error is shown on the page (and logged), never kills the thread."""
        try:
            fn(*args)
        except Exception as e:
            traceback.print_exc(file=sys.stderr)
            self._set_status(running=False, busy=False, message=f"{type(e).__name__}: {e}")

    def _handle(self, name: str, args: dict[str, Any]) -> None:
        self._set_status(message="")
        if name == "key":
            self._set_status(driver="human", running=False)
            self._step(self.keyboard.action(args["key"]))
        elif name == "step":
            self._set_status(driver="policy", running=False)
            self._step(None)
        elif name in ("run", "handback"):
            self._set_status(driver="policy", running=True)
        elif name == "pause":
            self._set_status(running=False)
        elif name == "takeover":
            self._set_status(driver="human", running=False)
        elif name == "reset":
            self._reset(args.get("episode", self.seed), args.get("task", self.task))
        elif name == "next":
            self._reset(self.seed + 1, self.task)
        elif name == "next_scene":
            if self.kind != "nav":
                raise ValueError("next_scene: LIBERO has tasks, not scenes; reset with a task instead")
            per = int(getattr(self.env.unwrapped, "episodes_per_scene", 1))
            self._reset((self.seed // per + 1) * per, None)
        elif name == "record":
            self._record(args["on"])

    def _reset(self, seed: int, task: int | None) -> None:
        if task is not None and self.kind != "libero":
            raise ValueError(f"reset: task picks a LIBERO task; env '{self.env_name}' has none (use episode)")
        self._finish_recording()
        options = {"task_id": task} if task is not None else None
        obs, info = self.env.reset(seed=int(seed), options=options)
        self.seed, self.task = int(seed), task
        self.policy.reset(np.ones(1, dtype=bool))
        self._obs = obs
        self._buffer = RecordedEpisode(self.seed, dict(info.get("identity", {})))
        self._thumbs, self._trajectory = [], []
        episode: dict[str, Any] = {"seed": self.seed, "identity": self._buffer.identity, "kind": self.kind,
                                   "task": self._task_text(obs, info)}
        if self.kind == "nav":
            self._scene = panels.nav_scene(self.env)
            episode["scene"] = self._scene
        with self._lock:
            self._frames_json = []
            self._episode_json = json.dumps(episode)
            self.versions["episode"] += 1
            self._status.update(done=False, running=False, episode=self.versions["episode"])
        self._publish_frame(obs, info, {"actor": "reset", "action": None, "reward": 0.0, "memory": []})

    def _step(self, human_action: Any) -> None:
        if self._status["done"]:
            self._set_status(running=False, message="the episode is over: reset or pick the next episode")
            return
        obs = self._obs
        self._set_status(busy=True)
        t0 = time.perf_counter()
        actions, reads = act_with_trace(self.policy, batch_observations([obs]))
        policy_ms = (time.perf_counter() - t0) * 1e3
        action = actions[0] if human_action is None else human_action
        next_obs, reward, terminated, truncated, info = self.env.step(action)
        self._last_step = time.monotonic()
        assert self._buffer is not None
        self._buffer.add(obs, action, reward, terminated, truncated)
        self._buffer.metrics = {k: float(v) for k, v in info.get("metrics", {}).items()}
        self._obs = next_obs
        start = self._scene["start"] if self._scene else None
        memory = panels.memory_payload(reads[0], self._thumb, start)
        self._publish_frame(next_obs, info, {"actor": "human" if human_action is not None else "policy",
                                             "action": _jsonable_action(action), "reward": float(reward),
                                             "memory": memory})
        done = bool(terminated or truncated)
        self._set_status(busy=False, policy_ms=round(policy_ms, 1), done=done,
                         running=self._status["running"] and not done)
        if done and self._status["recording"]:
            self._commit(self._buffer)

    def _thumb(self, t: int) -> str | None:
        return self._thumbs[t] if 0 <= t < len(self._thumbs) else None

    def _task_text(self, obs: Mapping[str, Any], info: Mapping[str, Any]) -> str:
        if self.kind == "libero":
            return str(obs.get("instruction", info.get("task", "")))
        return panels.nav_task_text(self.env, obs)

    def _publish_frame(self, obs: Mapping[str, Any], info: Mapping[str, Any], step: dict[str, Any]) -> None:
        k = len(self._thumbs)
        metrics = {key: round(float(v), 4) for key, v in info.get("metrics", {}).items()}
        frame: dict[str, Any] = {"k": k, "episode": self.versions["episode"], "metrics": metrics,
                                 "task": self._task_text(obs, info), **step}
        if self.kind == "nav":
            u = self.env.unwrapped
            frame["images"] = panels.nav_images(self.env, obs)
            pose = panels.agent_pose(self.env)
            self._trajectory.append(pose[:2])
            frame.update(pose=pose, trajectory=list(self._trajectory), phase=int(info.get("phase", 1)))
            if "depth" in obs:
                frame["cloud"] = panels.depth_points(obs["depth"], obs["rgb"], pose, u.sensor_cfg.hfov_deg,
                                                     u.agent_cfg.camera_height, u.sensor_cfg.max_depth)
            self._thumbs.append(panels.thumbnail(obs["rgb"]))
        else:
            frame["images"] = panels.libero_images(obs)
            frame["robot"] = panels.libero_state(obs)
            frame["success"] = bool(info.get("is_success", False))
            cams = [v for key, v in obs.items() if key.endswith("_rgb")]
            self._thumbs.append(panels.thumbnail(cams[0]) if cams else "")
        text = json.dumps(frame)
        with self._lock:
            self._frames_json.append(text)
            self.versions["frame"] += 1
            self._status["frame"] = k
        self._notify()

    def _set_status(self, **changes: Any) -> None:
        with self._lock:
            self._status.update(changes)
            self.versions["status"] += 1
        self._notify()

    def _notify(self) -> None:
        for listener in self._listeners:
            listener()

    # ------------------------------------------------------------------ recording
    def _record(self, on: bool) -> None:
        if on:
            self._set_status(recording=True, message="recording: this episode (from its reset) and the next ones")
            if self._status["done"] and self._buffer is not None:
                self._commit(self._buffer)
        else:
            self._finish_recording()
            self._set_status(recording=False)

    def _finish_recording(self) -> None:
        """Commit the running episode (cut where it is) when recording is on and it has steps."""
        if self._status["recording"] and self._buffer is not None and len(self._buffer):
            self._commit(self._buffer)

    def _commit(self, buf: RecordedEpisode) -> None:
        if buf.committed is not None:
            return
        index = self.recorder.commit(buf)
        with self._lock:
            recorded = [*self._status["recorded"], index]
        self._set_status(recorded=recorded, message=f"recorded episode {index} ({len(buf)} steps) in "
                                                    f"{self.recorder.dataset_dir}")

    def _shutdown(self) -> None:
        try:
            self._finish_recording()
        except Exception:
            traceback.print_exc(file=sys.stderr)
        finally:
            self._closed = True
            self.recorder.close()
            self.env.close()
