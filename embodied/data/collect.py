"""`embodied-collect`: roll a policy out in a vector env and record every episode to disk.

    embodied-collect env=pointnav policy=expert collect.episodes=100 collect.num_envs=4 output_dir=DIR

The loop follows `embodied.evaluate.rollout`'s conventions: autoreset DISABLED, finished
envs reset by mask, episode k always reset with seed `seed + k` whichever env runs it, so
the same seed gives the same episodes. Each finished episode is committed on its own
(`DatasetWriter.add_episode`). Re-running the same command on the same output_dir skips
every seed already committed and runs the rest: no duplicate, no half episode. SIGTERM and
Ctrl-C stop after the commits of the current step (an episode still running is dropped).
"""

from __future__ import annotations

import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv, VectorEnv

if TYPE_CHECKING:
    from embodied.policies.base import Policy

from embodied.data.format import DatasetError
from embodied.data.video import VideoSettings
from embodied.data.writer import DatasetWriter, EpisodeBuffer


class EpisodeIdentity(gym.Wrapper):
    """Adds the episode's identity to the reset info: `scene` (a navigation episode's scene
    id, a LIBERO task's suite/name), `init_state` (LIBERO's init-state index; the reset
    seed elsewhere, which alone fixes a navigation episode's start) and `episode_id`."""

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        u = self.env.unwrapped
        episode = getattr(u, "episode", None)
        if episode is not None and hasattr(episode, "scene_id"):
            scene, episode_id = str(episode.scene_id), str(getattr(episode, "episode_id", ""))
        elif hasattr(u, "task_name"):
            scene, episode_id = f"{getattr(u, 'suite', '')}/{u.task_name}", ""
        else:
            scene, episode_id = "", str(info.get("episode_id", ""))
        init_state = info.get("init_state", -1 if seed is None else seed)
        info = {**info, "identity": {"scene": scene, "init_state": int(init_state), "episode_id": episode_id}}
        return obs, info


def _make_env(name: str, kwargs: Mapping[str, Any]) -> gym.Env:
    from embodied import envs

    return EpisodeIdentity(envs.make(name, **kwargs))


def make_recording_vec(name: str, num_envs: int, vectorization: str, **kwargs: Any) -> VectorEnv:
    """`embodied.envs.make_vec`'s vector env (autoreset DISABLED, forkserver, no shared
    memory for text) over envs that report their identity at reset."""
    from embodied import envs

    if vectorization not in envs.VECTORIZATION:
        raise ValueError(f"collect.vectorization must be one of {list(envs.VECTORIZATION)}, got {vectorization!r}")
    envs.ENVS.get(name)  # an unknown name fails here, listing the valid ones
    fns = [partial(_make_env, name, kwargs) for _ in range(num_envs)]
    if vectorization == "sync":
        return SyncVectorEnv(fns, autoreset_mode=AutoresetMode.DISABLED)
    return AsyncVectorEnv(fns, context="forkserver", shared_memory=False, autoreset_mode=AutoresetMode.DISABLED)


def _row(obs: Any, i: int) -> dict[str, Any]:
    """Env i's observation out of a batch (`EpisodeBuffer.add` copies it)."""
    return {k: v[i] for k, v in obs.items()}


def _select(obs: dict[str, Any], rows: list[int]) -> dict[str, Any]:
    return {k: (np.array([v[r] for r in rows], dtype=object) if isinstance(v, tuple) else v[rows])
            for k, v in obs.items()}


def _info_row(info: Mapping[str, Any], i: int) -> dict[str, Any]:
    from embodied.evaluate.rollout import info_row

    return info_row(dict(info), i)


class _StopFlag:
    """SIGTERM / SIGINT set a flag that the loop reads between steps, so a commit in
    progress always finishes."""

    def __init__(self) -> None:
        self.raised = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old[sig] = signal.signal(sig, self._set)
        return self

    def _set(self, signum: int, frame: Any) -> None:
        self.raised = True

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


@dataclass
class CollectResult:
    committed: int  # episodes committed by this run
    total: int  # episodes in the dataset
    success: float  # mean success of this run's episodes (nan when none)
    interrupted: bool
    seconds: float


def collect(
    env_name: str,
    env_options: Mapping[str, Any],
    policy_name: str,
    policy_options: Mapping[str, Any],
    output_dir: str | Path,
    episodes: int,
    seed: int = 0,
    num_envs: int = 1,
    vectorization: str = "sync",
    fps: int | None = None,
    video: VideoSettings | None = None,
    progress: bool = True,
    should_stop: Callable[[], bool] | None = None,
    policy: Policy | None = None,
    append: bool = False,
) -> CollectResult:
    """Record episodes 0..episodes-1 (seeds seed..seed+episodes-1) into the dataset at
    `output_dir`, skipping those already there.

    `policy`: an already built policy to record (DAgger's mixture, say) instead of building
    `policy_name` with `policy_options` (which then only describe it). The caller then owns
    what is appended: a dataset collected by another policy or seed accepts the episodes
    (use fresh seeds each round), as it does with `append=True`."""
    from embodied import policies

    if episodes < 1:
        raise ValueError(f"collect.episodes must be >= 1, got {episodes}")
    if num_envs < 1:
        raise ValueError(f"collect.num_envs must be >= 1, got {num_envs}")
    root = Path(output_dir)
    env_meta = {"name": env_name, "options": dict(env_options)}
    collection = {"policy": {"name": policy_name, "options": dict(policy_options)}, "seed": int(seed)}
    writer: DatasetWriter | None = None
    try:
        if (root / "meta" / "info.json").exists():
            writer = DatasetWriter(root, env=env_meta)
        done = _done_seeds(writer, collection, append or policy is not None, root)
        todo = deque(k for k in range(episodes) if seed + k not in done)
        start = time.time()
        if not todo:
            return CollectResult(0, writer.num_episodes if writer else 0, float("nan"), False, 0.0)
        venv = make_recording_vec(env_name, min(num_envs, len(todo)), vectorization, **env_options)
        try:
            if writer is None:
                writer = DatasetWriter(root, venv.single_observation_space, venv.single_action_space,
                                       fps=fps or int(venv.metadata.get("render_fps", 10)), env=env_meta,
                                       video=video or VideoSettings(), collection=collection)
            if policy is None:
                policy = policies.make(policy_name, observation_space=venv.single_observation_space,
                                       action_space=venv.single_action_space, **policy_options)
            bar = _progress(len(todo), progress)
            with _StopFlag() as flag:
                def stop() -> bool:
                    return flag.raised or bool(should_stop and should_stop())

                successes = _run(venv, policy, writer, todo, seed, stop, bar)
                interrupted = stop()
            if bar is not None:
                bar.close()
        finally:
            venv.close()
        total = writer.num_episodes
    finally:
        if writer is not None:
            writer.close()
    success = float(np.mean(successes)) if successes else float("nan")
    return CollectResult(len(successes), total, success, interrupted, time.time() - start)


def _done_seeds(writer: DatasetWriter | None, collection: Mapping[str, Any], append: bool, root: Path) -> set[int]:
    """Seeds already committed; refuses a dataset collected with another policy or seed
    unless appending."""
    if writer is None:
        return set()
    stored = writer.meta.get("collection")
    if stored is not None and stored != collection and not append:
        raise DatasetError(f"{root / 'meta/embodied.json'}: collected with {stored}, this run asks for "
                           f"{collection}; use the same policy and seed, or another output_dir")
    return {s for s in writer.seeds() if s is not None}


def _run(venv: VectorEnv, policy: Any, writer: DatasetWriter, todo: deque, seed: int, stop: Callable[[], bool],
         bar: Any) -> list[float]:
    n = venv.num_envs
    env_name = str((writer.meta.get("env") or {}).get("name", ""))
    buffers: dict[int, EpisodeBuffer] = {}
    ks = [todo.popleft() for _ in range(n)]
    obs, info = venv.reset(seed=[seed + k for k in ks])
    for i, k in enumerate(ks):
        buffers[i] = EpisodeBuffer(seed + k, _info_row(info, i)["identity"])
    active = list(range(n))
    policy.reset(np.ones(n, dtype=bool))
    venv.single_action_space.seed(seed)
    pause_action = venv.single_action_space.sample()
    successes: list[float] = []
    while active:
        actions = [pause_action] * n
        chosen = policy.act(_select(obs, active))
        for row, i in enumerate(active):
            actions[i] = chosen[row]
        next_obs, reward, terminated, truncated, info = venv.step(np.stack(actions))
        for row, i in enumerate(active):
            buffers[i].add(_row(obs, i), chosen[row], reward[i], terminated[i], truncated[i])
        obs = next_obs
        done = [i for i in active if terminated[i] or truncated[i]]
        restarting, to_pause = [], []
        for i in done:
            buf = buffers.pop(i)
            buf.metrics = {k: float(v) for k, v in _info_row(info, i).get("metrics", {}).items()}
            buf.write(writer, task=env_name)  # the task of envs without an instruction
            successes.append(buf.metrics.get("success", np.nan))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(success=f"{np.nanmean(successes):.2f}" if not np.all(np.isnan(successes)) else "n/a")
            if todo and not stop():
                restarting.append(i)
            else:
                to_pause.append(i)
        if stop():
            break
        if to_pause:
            policy.on_envs_pause([active.index(i) for i in to_pause])
            active = [i for i in active if i not in to_pause]
        idle_done = [i for i in range(n) if i not in active and (terminated[i] or truncated[i])]
        if restarting or idle_done:
            ks = {i: todo.popleft() for i in restarting}
            mask = np.zeros(n, dtype=bool)
            mask[restarting + idle_done] = True
            obs, rinfo = venv.reset(seed=[seed + ks[i] if i in ks else None for i in range(n)],
                                    options={"reset_mask": mask})
            for i in restarting:
                buffers[i] = EpisodeBuffer(seed + ks[i], _info_row(rinfo, i)["identity"])
            if restarting:
                policy.reset(np.array([i in ks for i in active], dtype=bool))
    return successes


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="ep", desc="collect", dynamic_ncols=True, file=sys.stderr)


def _int(section: Any, key: str) -> int:
    value = section[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"collect.{key} must be an int, got {value!r}")
    return value


def main(cfg: Any) -> int:
    """The `embodied-collect` entry point's body (a Hydra config: env, policy, collect, output_dir)."""
    from omegaconf import OmegaConf

    from embodied.config import component_kwargs

    env_name, env_kwargs = component_kwargs(cfg.env)
    policy_name, policy_kwargs = component_kwargs(cfg.policy)
    c = cfg.collect
    video = VideoSettings(**OmegaConf.to_container(c.video, resolve=True))
    result = collect(env_name, env_kwargs, policy_name, policy_kwargs, cfg.output_dir, _int(c, "episodes"),
                     seed=_int(c, "seed"), num_envs=_int(c, "num_envs"), vectorization=str(c.vectorization),
                     fps=None if c.fps is None else _int(c, "fps"), video=video, progress=bool(c.progress))
    state = "interrupted" if result.interrupted else "done"
    print(f"embodied-collect {state}: {result.committed} episodes committed in {result.seconds:.1f} s "
          f"({result.committed / max(result.seconds, 1e-9):.2f} episodes/s), success {result.success:.3f}; "
          f"{result.total} episodes in {cfg.output_dir}")
    return 143 if result.interrupted else 0
