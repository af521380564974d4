"""`EnvPool`: N environments driven one by one, in this process or one worker process each.

Gymnasium's vector envs step every sub-env together; an evaluator needs more:

- step a *subset* (an env with no episode left is paused: LIBERO physics costs as much as a
  real step, so it must not be simulated for nothing);
- let one env reset while the others keep stepping (resets are most of a navigation run:
  waiting for the slowest env each step wastes the other cores);
- survive a worker that crashes or hangs (a deadline per command; the worker is restarted);
- move frames without pickling them through a pipe: every `Box` observation goes through a
  shared-memory block per env (this also sidesteps gymnasium 1.4's broken shared-memory `Text`:
  text and other small values travel through the pipe).

`EnvPool` is also a Gymnasium `VectorEnv` with autoreset DISABLED (`reset(options={"reset_mask"})`,
`step(actions)` steps every env), so code written for Gymnasium vector envs runs unchanged.
The per-env API (`send_reset`, `send_step`, `poll`) is what `embodied.evaluate.rollout` uses.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing import shared_memory
from multiprocessing.connection import Connection, wait
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv

VECTORIZATION = ("sync", "async")
_WHOLE = ""  # the key of a non-Dict Box observation


@dataclass
class Result:
    """What one env returned for its last command. `kind` is "reset", "step" or "error" (the worker
    died, hung past the deadline or raised: it has been restarted, its episode must be re-run)."""

    index: int
    kind: str
    obs: Any = None
    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    error: str = ""


class WorkerError(RuntimeError):
    """An env failed inside `EnvPool.reset`/`step` (the Gymnasium API has no way to re-run it)."""


def _shm_keys(space: gym.Space) -> dict[str, spaces.Box]:
    if isinstance(space, spaces.Box):
        return {_WHOLE: space}
    if isinstance(space, spaces.Dict):
        return {k: s for k, s in space.spaces.items() if isinstance(s, spaces.Box)}
    return {}


def _split(obs: Any, keys: dict[str, spaces.Box], views: dict[str, np.ndarray]) -> Any:
    """Write the Box parts of `obs` into shared memory; return what must go through the pipe."""
    if _WHOLE in keys:
        views[_WHOLE][...] = obs
        return None
    rest = {}
    for k, v in obs.items():
        if k in keys:
            views[k][...] = v
        else:
            rest[k] = v
    return rest


def _join(rest: Any, keys: dict[str, spaces.Box], views: dict[str, np.ndarray], order: list[str]) -> Any:
    """The full observation, in the space's key order: copies of the shared-memory parts (the worker
    overwrites them) and the rest."""
    if _WHOLE in keys:
        return views[_WHOLE].copy()
    return {k: views[k].copy() if k in keys else rest[k] for k in order if k in keys or k in rest}


def _attach(specs: dict[str, tuple[str, tuple[int, ...], str]]) -> tuple[list[Any], dict[str, np.ndarray]]:
    blocks, views = [], {}
    for key, (name, shape, dtype) in specs.items():
        # forkserver workers share the parent's resource tracker, so attaching registers nothing new
        # and the parent's unlink stays the only one.
        block = shared_memory.SharedMemory(name=name)
        blocks.append(block)
        views[key] = np.ndarray(shape, dtype=dtype, buffer=block.buf)
    return blocks, views


def _identity(env: gym.Env, info: dict[str, Any]) -> dict[str, Any]:
    """Add the scene, instruction (VLN's, ObjectRecall's question) and tour length of a navigation
    episode to the reset info (the tasks keep the episode on `env.episode`), so evaluation records
    can name them."""
    episode = getattr(env.unwrapped, "episode", None)
    extra = {}
    if getattr(episode, "scene_id", None) is not None and "scene" not in info:
        extra["scene"] = episode.scene_id
    if getattr(episode, "instruction", None) and "instruction" not in info:
        extra["instruction"] = episode.instruction
    if getattr(episode, "tour_actions", None) and "tour_steps" not in info:
        extra["tour_steps"] = len(episode.tour_actions)
    return {**info, **extra} if extra else info


def _worker(index: int, env_fn: Callable[[], gym.Env], conn: Connection, specs: dict, keys: dict) -> None:
    # Ctrl-C / SIGTERM go to the parent, which stops the run and closes us; a parent that dies closes
    # the pipe, and we exit on EOF.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    blocks, views = _attach(specs)
    env = None
    try:
        while True:
            cmd, args = conn.recv()
            if cmd == "close":
                break
            try:
                if env is None:
                    env = env_fn()
                if cmd == "make":
                    conn.send(("make", None, 0.0, False, False, {}))
                elif cmd == "reset":
                    obs, info = env.reset(seed=args[0], options=args[1])
                    conn.send(("reset", _split(obs, keys, views), 0.0, False, False, _identity(env, info)))
                elif cmd == "step":
                    obs, reward, term, trunc, info = env.step(args)
                    conn.send(("step", _split(obs, keys, views), float(reward), bool(term), bool(trunc), info))
                else:
                    raise ValueError(f"unknown command {cmd!r}")
            except Exception:
                conn.send(("error", traceback.format_exc(), 0.0, False, False, {}))
    except (EOFError, KeyboardInterrupt):
        pass
    finally:
        if env is not None:
            env.close()
        conn.close()
        for block in blocks:
            block.close()


class _SyncSlot:
    """One env in this process: commands run when sent; `poll` hands the result back."""

    def __init__(self, index: int, env_fn: Callable[[], gym.Env]) -> None:
        self.index, self.env_fn = index, env_fn
        self.env: gym.Env | None = None
        self.result: Result | None = None

    def send(self, cmd: str, args: Any) -> None:
        try:
            if self.env is None:
                self.env = self.env_fn()
            if cmd == "make":
                self.result = Result(self.index, "make")
            elif cmd == "reset":
                obs, info = self.env.reset(seed=args[0], options=args[1])
                self.result = Result(self.index, "reset", obs, info=_identity(self.env, info))
            else:
                obs, reward, term, trunc, info = self.env.step(args)
                self.result = Result(self.index, "step", obs, float(reward), bool(term), bool(trunc), info)
        except Exception:
            self.result = Result(self.index, "error", error=traceback.format_exc())
            self.restart()

    def restart(self) -> None:
        if self.env is not None:
            self.env.close()
        self.env = None

    def close(self) -> None:
        self.restart()


class _AsyncSlot:
    """One env in a worker process, with its shared-memory frames and a deadline per command."""

    def __init__(self, index: int, env_fn: Callable[[], gym.Env], ctx: Any, space: gym.Space) -> None:
        keys = _shm_keys(space)
        self.index, self.env_fn, self.ctx, self.keys = index, env_fn, ctx, keys
        self.order = list(space.spaces) if isinstance(space, spaces.Dict) else []
        self.blocks = {}
        self.views = {}
        for key, space in keys.items():
            nbytes = max(1, int(np.prod(space.shape)) * np.dtype(space.dtype).itemsize)
            block = shared_memory.SharedMemory(create=True, size=nbytes)
            self.blocks[key] = block
            self.views[key] = np.ndarray(space.shape, dtype=space.dtype, buffer=block.buf)
        self.specs = {k: (b.name, keys[k].shape, np.dtype(keys[k].dtype).str) for k, b in self.blocks.items()}
        self.pending: str | None = None
        self.deadline = float("inf")
        self._start()

    def _start(self) -> None:
        self.conn, child = self.ctx.Pipe()
        self.process = self.ctx.Process(target=_worker, args=(self.index, self.env_fn, child, self.specs, self.keys),
                                        daemon=True, name=f"embodied-env-{self.index}")
        self.process.start()
        child.close()

    def send(self, cmd: str, args: Any, timeout: float | None) -> None:
        self.pending = cmd
        self.deadline = time.monotonic() + timeout if timeout else float("inf")
        with contextlib.suppress(BrokenPipeError, OSError):  # already dead: `receive` reports it
            self.conn.send((cmd, args))

    def receive(self) -> Result:
        """The result of the pending command (call when the pipe is readable)."""
        self.pending = None
        try:
            kind, rest, reward, term, trunc, info = self.conn.recv()
        except (EOFError, OSError):
            code = self.process.exitcode if not self.process.is_alive() else "?"
            self.restart()
            return Result(self.index, "error", error=f"env worker {self.index} died (exit code {code})")
        if kind == "error":
            self.restart()
            return Result(self.index, "error", error=rest)
        if kind == "make":
            return Result(self.index, "make")
        return Result(self.index, kind, _join(rest, self.keys, self.views, self.order), reward, term, trunc, info)

    def expire(self) -> Result:
        self.pending = None
        self.restart()
        return Result(self.index, "error", error=f"env worker {self.index} did not answer within the timeout")

    def restart(self) -> None:
        self._stop()
        self._start()

    def _stop(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=10)
        self.conn.close()

    def close(self) -> None:
        if self.process.is_alive():
            try:
                self.conn.send(("close", None))
                self.process.join(timeout=10)
            except (BrokenPipeError, OSError):
                pass
        self._stop()
        for block in self.blocks.values():
            block.close()
            block.unlink()


class EnvPool(VectorEnv):
    """`num_envs` environments built by `env_fns`, stepped individually (see the module doc).

    `timeout` (seconds, async only) bounds every command; a worker past it, or one that died, is
    restarted and reported as an "error" result. Sync envs that raise are rebuilt the same way.
    """

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]], vectorization: str = "sync",
                 timeout: float | None = None, probe: gym.Env | None = None) -> None:
        if vectorization not in VECTORIZATION:
            raise ValueError(f"vectorization must be one of {list(VECTORIZATION)}, got '{vectorization}'")
        if not env_fns:
            raise ValueError("env_fns must hold at least one environment factory")
        # The spaces come from `probe` or a throwaway env (simulators build their GL context lazily, on
        # the first reset, so building one here costs little and opens nothing that a fork could break).
        owned = probe is None
        probe = env_fns[0]() if probe is None else probe
        self.single_observation_space = probe.observation_space
        self.single_action_space = probe.action_space
        self.metadata = {**probe.metadata, "autoreset_mode": AutoresetMode.DISABLED}
        self.render_mode = probe.render_mode
        if owned:
            probe.close()
        self.num_envs = len(env_fns)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)
        self.vectorization, self.timeout = vectorization, timeout
        if vectorization == "sync":
            self._slots: list[Any] = [_SyncSlot(i, fn) for i, fn in enumerate(env_fns)]
        else:
            # forkserver: forking a process that holds a live EGL context hangs (docs/architecture.md).
            ctx = mp.get_context("forkserver")
            self._slots = [_AsyncSlot(i, fn, ctx, self.single_observation_space) for i, fn in enumerate(env_fns)]
        self._closed = False

    @classmethod
    def of(cls, env: gym.Env) -> EnvPool:
        """A one-env sync pool around an existing env (which the pool does not close)."""
        pool = cls([lambda: env], probe=env)
        pool._slots[0].env = env
        pool._closed = True  # the caller owns `env`
        return pool

    # ------------------------------------------------------------------ per-env API
    def send_reset(self, i: int, seed: int | None = None, options: dict[str, Any] | None = None) -> None:
        self._send(i, "reset", (seed, options))

    def send_step(self, i: int, action: Any) -> None:
        self._send(i, "step", action)

    def _send(self, i: int, cmd: str, args: Any) -> None:
        slot = self._slots[i]
        if self.vectorization == "sync":
            slot.send(cmd, args)
        else:
            if slot.pending is not None:
                raise RuntimeError(f"env {i} still has a '{slot.pending}' command in flight")
            slot.send(cmd, args, self.timeout)

    def prepare(self) -> None:
        """Build every env now (workers import and construct in parallel) instead of on its first reset:
        construction errors surface here, and timings after this exclude start-up."""
        for i in range(self.num_envs):
            self._send(i, "make", None)
        self._gather(range(self.num_envs))

    def pending(self) -> list[int]:
        """Envs with a command whose result has not been collected."""
        if self.vectorization == "sync":
            return [s.index for s in self._slots if s.result is not None]
        return [s.index for s in self._slots if s.pending is not None]

    def poll(self, wait_for: Sequence[int] = (), timeout: float | None = None) -> list[Result]:
        """Collect finished commands: every result already in, waiting until all of `wait_for` have
        answered (or, with `wait_for` empty, until at least one has) or `timeout` seconds passed."""
        if self.vectorization == "sync":
            out = [s.result for s in self._slots if s.result is not None]
            for s in self._slots:
                s.result = None
            return out
        results: list[Result] = []
        need = set(wait_for)
        end = time.monotonic() + timeout if timeout is not None else float("inf")
        while True:
            now = time.monotonic()
            for s in self._slots:
                if s.pending is not None and s.deadline <= now:
                    results.append(s.expire())
                    need.discard(s.index)
            busy = {s.conn: s for s in self._slots if s.pending is not None}
            satisfied = not need if wait_for else bool(results)
            if satisfied or not busy or now >= end:
                for conn in wait(list(busy), timeout=0) if busy else []:  # whatever else is in already
                    results.append(busy[conn].receive())
                return results
            budget = min(min(s.deadline for s in busy.values()), end) - now
            for conn in wait(list(busy), timeout=None if budget == float("inf") else budget):
                results.append(busy[conn].receive())
                need.discard(busy[conn].index)

    def worker_pids(self) -> list[int | None]:
        """The worker processes' ids (None for sync envs): to watch them, or to kill one in a test."""
        if self.vectorization == "sync":
            return [None] * self.num_envs
        return [s.process.pid for s in self._slots]

    def sub_env(self, i: int) -> gym.Env | None:
        """The in-process env i (sync only; None before its first reset or for async envs)."""
        return self._slots[i].env if self.vectorization == "sync" else None

    # ------------------------------------------------------------------ Gymnasium VectorEnv API
    def reset(self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None):
        options = dict(options or {})
        mask = np.asarray(options.pop("reset_mask", np.ones(self.num_envs, dtype=bool)), dtype=bool)
        if seed is None or isinstance(seed, (int, np.integer)):
            seeds = [None if seed is None else int(seed) + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
        indices = [i for i in range(self.num_envs) if mask[i]]
        for i in indices:
            self.send_reset(i, seeds[i], options or None)
        results = self._gather(indices)
        if not hasattr(self, "_last"):
            self._last = [None] * self.num_envs
            self._last_info: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for r in results:
            self._last[r.index], self._last_info[r.index] = r.obs, r.info
        return self._batch([self._last[i] for i in range(self.num_envs)]), self._batch_info(
            {r.index: r.info for r in results})

    def step(self, actions: Any):
        for i in range(self.num_envs):
            self.send_step(i, actions[i])
        results = sorted(self._gather(range(self.num_envs)), key=lambda r: r.index)
        for r in results:
            self._last[r.index] = r.obs
        obs = self._batch([r.obs for r in results])
        return (obs, np.array([r.reward for r in results]), np.array([r.terminated for r in results]),
                np.array([r.truncated for r in results]), self._batch_info({r.index: r.info for r in results}))

    def _gather(self, indices: Sequence[int]) -> list[Result]:
        results = self.poll(wait_for=list(indices))
        failed = [r for r in results if r.kind == "error"]
        if failed:
            raise WorkerError(f"env {failed[0].index} failed:\n{failed[0].error}")
        return results

    def _batch(self, observations: list[Any]) -> Any:
        return batch_observations(observations)

    def _batch_info(self, infos: dict[int, dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for i, info in infos.items():
            out = self._add_info(out, info, i)
        return out

    def close_extras(self, **kwargs: Any) -> None:
        if self._closed:
            return
        self._closed = True
        for slot in self._slots:
            slot.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown: the workers are daemons and die with us
            self.close()


def batch_observations(observations: Sequence[Any]) -> Any:
    """Stack per-env observations: arrays along a new first axis, strings into an object array. One
    observation becomes a batch of one without a copy (a view: the rollout loop acts on single envs as
    they return, and copying their frames cost more than the expert's act), so treat batches as
    read-only."""
    first = observations[0]
    if isinstance(first, dict):
        return {k: batch_observations([o[k] for o in observations]) for k in first}
    if isinstance(first, str):
        return np.array(list(observations), dtype=object)
    if len(observations) == 1:
        return np.asarray(first)[None]
    return np.stack([np.asarray(o) for o in observations])


def worker_count_hint() -> int:
    """Cores this process may use (what `num_envs` should not exceed for simulator-bound envs)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
