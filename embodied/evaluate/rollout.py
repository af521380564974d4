"""`rollout`: run a policy for N episodes in a (vector) environment and collect records.

The loop keeps the policy's rows aligned with the environments: on every reset the rows of the
envs that start an episode are reset; an env with no episode left is paused (the policy drops its
row, as habitat-baselines' evaluator does) and is never stepped again.

On an `EnvPool` (what `embodied.envs.make_vec` builds) the envs run decoupled: an env that is
resetting does not hold the others back. A policy acts on every active row at once (its contract);
a resetting env's row gets its last observation and its action is dropped: that row is reset before
its new episode's first observation, so the extra calls change nothing. A policy that declares
`independent_rows` (no rollout state, each row's action a function of its own observation: the
expert) is instead called with just the envs whose step has returned, so no env waits for the
slowest step of a round.

Determinism: episode k is reset with its spec's seed (`seed + k` by default), whichever env runs
it and whenever it finishes, so the same seed gives the same episodes and, for a policy whose rows
do not interact, the same records for any number of envs. Gymnasium vector envs under NEXT_STEP /
SAME_STEP reset themselves from their own RNG; results are then repeatable for a fixed `num_envs`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

if TYPE_CHECKING:
    from embodied.policies.base import Policy
from gymnasium.vector import AutoresetMode, SyncVectorEnv, VectorEnv

from embodied.envs.vector import EnvPool, Result, batch_observations

METRICS_KEY = "metrics"  # envs report running metrics in info["metrics"] (a dict of floats)
# Reset-info keys that identify an episode; they are copied into its record.
IDENTITY_KEYS = ("episode_id", "scene", "task", "instruction", "init_state", "tour_steps")


@dataclass(frozen=True)
class EpisodeSpec:
    """What one episode is: its index in the run, its reset seed and its reset options. `group` names
    what it shares with other episodes (a house, a LIBERO task): a pool keeps a group on one env."""

    index: int
    seed: int | None
    options: dict[str, Any] | None = None
    group: Hashable | None = None


def grouped(specs: Sequence[EpisodeSpec], env: gym.Env) -> list[EpisodeSpec]:
    """The specs with their `group` from the env's `episode_group(seed, options)`, where the env has one
    (the navigation tasks: the house; LIBERO: the task). Groups change which env runs an episode, never
    its record."""
    group_of = getattr(env.unwrapped, "episode_group", None)
    if group_of is None:
        return list(specs)
    return [dataclasses.replace(s, group=group_of(s.seed, s.options)) for s in specs]


def episode_plan(n_episodes: int, seed: int = 0) -> list[EpisodeSpec]:
    """Episodes 0..n-1 with seeds seed+k: the default plan."""
    if n_episodes < 1:
        raise ValueError(f"n_episodes must be >= 1, got {n_episodes}")
    return [EpisodeSpec(k, seed + k) for k in range(n_episodes)]


@dataclass
class EpisodeRecord:
    """One finished episode: its identity, length, return, final metrics and wall time."""

    episode: int
    seed: int | None
    env_index: int
    steps: int
    episode_return: float
    metrics: dict[str, float] = field(default_factory=dict)
    identity: dict[str, Any] = field(default_factory=dict)  # IDENTITY_KEYS found in the reset info
    success: float | None = None
    wall_time: float = 0.0
    restarts: int = 0  # times its env worker failed and the episode was re-run

    def as_row(self) -> dict[str, Any]:
        return {
            "episode": self.episode,
            "seed": self.seed,
            "env_index": self.env_index,
            **{k: self.identity.get(k) for k in IDENTITY_KEYS},
            "success": self.success,
            "steps": self.steps,
            "return": self.episode_return,
            "wall_time": self.wall_time,
            "restarts": self.restarts,
            "metrics": dict(self.metrics),
        }

    def comparable(self) -> dict[str, Any]:
        """The row without what depends on timing or placement (wall time, env index, restarts):
        equal across runs, env counts and backends for a deterministic policy."""
        row = self.as_row()
        for key in ("wall_time", "env_index", "restarts"):
            row.pop(key)
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> EpisodeRecord:
        return cls(episode=int(row["episode"]), seed=row["seed"], env_index=int(row["env_index"]),
                   steps=int(row["steps"]), episode_return=float(row["return"]), metrics=dict(row["metrics"]),
                   identity={k: row.get(k) for k in IDENTITY_KEYS if row.get(k) is not None},
                   success=row.get("success"), wall_time=float(row.get("wall_time", 0.0)),
                   restarts=int(row.get("restarts", 0)))


class RolloutObserver:
    """Hooks into the loop (videos, progress); every method is optional. Called in the loop's thread:
    keep them cheap and hand heavy work to another thread."""

    def episode_start(self, env_index: int, spec: EpisodeSpec, obs: Any, info: dict[str, Any]) -> None:
        pass

    def step(self, env_index: int, spec: EpisodeSpec, action: Any, obs: Any, info: dict[str, Any]) -> None:
        pass

    def episode_end(self, record: EpisodeRecord) -> None:
        pass


def as_vector_env(env: gym.Env | VectorEnv) -> VectorEnv:
    """Wrap a single env into a one-env `SyncVectorEnv` with autoreset disabled."""
    if isinstance(env, VectorEnv):
        return env
    return SyncVectorEnv([lambda: env], autoreset_mode=AutoresetMode.DISABLED)


def info_row(info: dict[str, Any], i: int) -> dict[str, Any]:
    """Un-batch row i of a vector env's info dict (arrays with `_key` presence masks)."""
    row: dict[str, Any] = {}
    for key, value in info.items():
        if key.startswith("_"):
            continue
        present = info.get(f"_{key}")
        if present is not None and not present[i]:
            continue
        row[key] = info_row(value, i) if isinstance(value, dict) else value[i]
    return row


def _select(obs: Any, rows: list[int]) -> Any:
    """The rows of a batched observation. Gymnasium batches a Text space as a tuple of str;
    policies get it as an object array, like every other key."""
    if isinstance(obs, dict):
        return {k: _select(v, rows) for k, v in obs.items()}
    if isinstance(obs, tuple) and all(isinstance(v, str) for v in obs):
        return np.array([obs[r] for r in rows], dtype=object)
    if isinstance(obs, tuple):
        return tuple(_select(v, rows) for v in obs)
    return obs[rows]


class _Episodes:
    """Hands out episode indices and seeds, and tracks each env's running episode."""

    def __init__(self, specs: list[EpisodeSpec], num_envs: int, seeded: bool) -> None:
        self.specs, self.n_episodes, self.seeded = specs, len(specs), seeded
        self.next_index = 0
        self.current = [-1] * num_envs
        self.steps = np.zeros(num_envs, dtype=np.int64)
        self.returns = np.zeros(num_envs, dtype=np.float64)

    def start(self, env_index: int) -> int | None:
        """Assign the next episode to env `env_index`; return its seed (None if unseeded)."""
        k = self.next_index
        self.next_index += 1
        self.current[env_index] = k
        self.steps[env_index] = 0
        self.returns[env_index] = 0.0
        return self.seed_of(k)

    def seed_of(self, k: int) -> int | None:
        return self.specs[k].seed if self.seeded else None

    def exhausted(self) -> bool:
        return self.next_index >= self.n_episodes

    def finish(self, env_index: int, info: dict[str, Any]) -> EpisodeRecord:
        k = self.current[env_index]
        metrics = {name: float(v) for name, v in info.get(METRICS_KEY, {}).items()}
        return EpisodeRecord(
            episode=self.specs[k].index,
            seed=self.seed_of(k),
            env_index=env_index,
            steps=int(self.steps[env_index]),
            episode_return=float(self.returns[env_index]),
            metrics=metrics,
            success=_success(metrics, info),
        )


def rollout(
    env: gym.Env | VectorEnv,
    policy: Policy,
    n_episodes: int | None = None,
    seed: int = 0,
    pause_action: Any = None,
    on_episode: Callable[[EpisodeRecord], None] | None = None,
    episodes: Sequence[EpisodeSpec] | None = None,
    max_restarts: int = 2,
    observer: RolloutObserver | None = None,
) -> list[EpisodeRecord]:
    """Run `policy` for `n_episodes` episodes (or the given `episodes` specs) and return their
    records, sorted by episode.

    `on_episode` is called with each record as soon as its episode ends (in finishing order), so a
    caller can write results incrementally and lose nothing on a crash. On an `EnvPool`, an env
    worker that dies or hangs is restarted and its episode re-run from its reset, at most
    `max_restarts` times per episode (then a `RuntimeError`); the record is produced once.

    `pause_action` only matters for Gymnasium vector envs, which must step every env: it is sent to
    paused ones (their results are ignored) and defaults to a seeded sample of the action space.
    """
    if episodes is None:
        if n_episodes is None:
            raise ValueError("give n_episodes or episodes")
        specs = episode_plan(n_episodes, seed)
    else:
        specs = list(episodes)
        if not specs:
            raise ValueError("episodes is empty: nothing to run")
    if isinstance(env, EnvPool):
        return _rollout_pool(env, policy, specs, on_episode, max_restarts, observer or RolloutObserver())
    if not isinstance(env, VectorEnv):
        return _rollout_pool(EnvPool.of(env), policy, specs, on_episode, max_restarts,
                             observer or RolloutObserver())
    if any(s.options for s in specs):
        raise ValueError("per-episode reset options need an EnvPool (embodied.envs.make_vec); got a "
                         f"{type(env).__name__}")
    return _rollout_gym_vector(env, policy, specs, seed, pause_action, on_episode)


@dataclass
class _Run:
    spec: EpisodeSpec
    start: float
    steps: int = 0
    ret: float = 0.0
    identity: dict[str, Any] = field(default_factory=dict)
    resetting: bool = True
    last_action: Any = None


def _identity(info: dict[str, Any], obs: Any) -> dict[str, Any]:
    out = {k: _plain(info[k]) for k in IDENTITY_KEYS if info.get(k) is not None}
    if "instruction" not in out and isinstance(obs, dict) and isinstance(obs.get("instruction"), str):
        out["instruction"] = obs["instruction"]
    return out


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _success(metrics: dict[str, float], info: dict[str, Any]) -> float | None:
    if "success" in metrics:
        return float(metrics["success"])
    if "is_success" in info:
        return float(bool(info["is_success"]))
    return None


class _Queue:
    """The episodes still to start, in plan order. An env that frees up takes the next episode of the
    group it was running, else the first episode of a group no other env is running, else the first
    left (the tail: envs share a group rather than idle). Each house or task is then built on as few
    envs as possible; with two envs stepping the same houses in lock-step, each built every house."""

    def __init__(self, specs: list[EpisodeSpec]) -> None:
        self.specs = list(specs)

    def __bool__(self) -> bool:
        return bool(self.specs)

    def take(self, previous: Hashable | None, running: set[Hashable]) -> EpisodeSpec:
        if previous is not None:
            for j, s in enumerate(self.specs):
                if s.group == previous:
                    return self.specs.pop(j)
        for j, s in enumerate(self.specs):
            if s.group is None or s.group not in running:
                return self.specs.pop(j)
        return self.specs.pop(0)


def _rollout_pool(
    pool: EnvPool,
    policy: Policy,
    specs: list[EpisodeSpec],
    on_episode: Callable[[EpisodeRecord], None] | None,
    max_restarts: int,
    observer: RolloutObserver,
) -> list[EpisodeRecord]:
    queue = _Queue(specs)
    # A policy whose rows are independent (`Policy.independent_rows`) acts on each env as soon as that
    # env's step is back; any other policy acts on every active row at once, once all steps are back.
    free = bool(getattr(policy, "independent_rows", False))
    runs: list[_Run | None] = [None] * pool.num_envs
    last_obs: list[Any] = [None] * pool.num_envs
    restarts: dict[int, int] = {}
    records: list[EpisodeRecord] = []

    def start(i: int, spec: EpisodeSpec) -> None:
        runs[i] = _Run(spec, time.perf_counter())
        pool.send_reset(i, spec.seed, spec.options)

    def start_next(i: int) -> None:
        previous = runs[i].spec.group if runs[i] is not None else None
        running = {r.spec.group for j, r in enumerate(runs) if r is not None and j != i and j in active}
        start(i, queue.take(previous, running))

    active = list(range(pool.num_envs))  # active[row] = env index
    for i in range(pool.num_envs):
        if queue:
            start_next(i)
    policy.reset(np.ones(pool.num_envs, dtype=bool))
    _pause(policy, active, [i for i in range(pool.num_envs) if runs[i] is None])
    try:
        while active:
            if free:  # whatever is in: an env acts again as soon as its own step returns
                results = pool.poll()
            else:
                results = pool.poll(wait_for=[i for i in active if not runs[i].resetting])
            results += pool.poll(timeout=0)  # resets a sync pool ran while we handled the steps
            new_rows, to_pause, fresh = [], [], []  # fresh: envs holding an observation to act on
            for r in results:
                i, run = r.index, runs[r.index]
                if r.kind == "error":
                    k = run.spec.index
                    restarts[k] = restarts.get(k, 0) + 1
                    if restarts[k] > max_restarts:
                        raise RuntimeError(f"episode {k} failed {restarts[k]} times; last error:\n{r.error}")
                    start(i, run.spec)  # re-run from its reset: nothing of the failed try is kept
                    continue
                last_obs[i] = r.obs
                if r.kind == "reset":
                    run.resetting, run.identity = False, _identity(r.info, r.obs)
                    new_rows.append(i)
                    fresh.append(i)
                    observer.episode_start(i, run.spec, r.obs, r.info)
                    continue
                run.steps += 1
                run.ret += r.reward
                observer.step(i, run.spec, run.last_action, r.obs, r.info)
                if r.terminated or r.truncated:
                    record = _finish(i, run, r, restarts.get(run.spec.index, 0))
                    records.append(record)
                    observer.episode_end(record)
                    if on_episode is not None:
                        on_episode(record)
                    if queue:
                        start_next(i)
                    else:
                        to_pause.append(i)
                else:
                    fresh.append(i)
            _pause(policy, active, to_pause)
            if new_rows:
                policy.reset(np.array([i in new_rows for i in active], dtype=bool))
            if free:
                acting = [i for i in active if i in fresh]
            elif any(not runs[i].resetting for i in active) and all(last_obs[i] is not None for i in active):
                acting = active  # every row, in step (a resetting env's action is dropped below)
            else:
                continue  # nothing to step, or a first reset still out: wait for it
            if not acting:
                continue
            actions = policy.act(batch_observations([last_obs[i] for i in acting]))
            for row, i in enumerate(acting):
                if not runs[i].resetting:
                    runs[i].last_action = actions[row]
                    pool.send_step(i, actions[row])
    finally:
        pool.poll(wait_for=pool.pending(), timeout=5.0)  # an interrupt: drain what is in flight
    records.sort(key=lambda r: r.episode)
    return records


def _finish(i: int, run: _Run, r: Result, restarts: int) -> EpisodeRecord:
    metrics = {name: float(v) for name, v in r.info.get(METRICS_KEY, {}).items()}
    return EpisodeRecord(episode=run.spec.index, seed=run.spec.seed, env_index=i, steps=run.steps,
                         episode_return=run.ret, metrics=metrics, identity=run.identity,
                         success=_success(metrics, r.info), wall_time=time.perf_counter() - run.start,
                         restarts=restarts)


def _rollout_gym_vector(
    venv: VectorEnv,
    policy: Policy,
    specs: list[EpisodeSpec],
    seed: int,
    pause_action: Any,
    on_episode: Callable[[EpisodeRecord], None] | None,
) -> list[EpisodeRecord]:
    """The loop for Gymnasium vector envs: every env is stepped each time (paused ones with
    `pause_action`), as their API requires."""
    n_episodes = len(specs)
    mode = venv.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
    num_envs = venv.num_envs
    episodes = _Episodes(specs, num_envs, seeded=mode == AutoresetMode.DISABLED)
    if pause_action is None:
        venv.single_action_space.seed(seed)
        pause_action = venv.single_action_space.sample()

    seeds = [episodes.start(i) if i < n_episodes else None for i in range(num_envs)]
    obs, _ = venv.reset(seed=[seed + i if s is None else s for i, s in enumerate(seeds)])
    active = list(range(num_envs))  # active[row] = env index
    policy.reset(np.ones(num_envs, dtype=bool))
    if n_episodes < num_envs:
        _pause(policy, active, list(range(n_episodes, num_envs)))

    records: list[EpisodeRecord] = []
    resetting_next_step: set[int] = set()  # NEXT_STEP: envs whose next step is a reset
    while active:
        actions = [pause_action] * num_envs
        for row, action in enumerate(policy.act(_select(obs, active))):
            actions[active[row]] = action
        obs, reward, terminated, truncated, info = venv.step(np.stack(actions))

        just_reset = resetting_next_step & set(active)
        resetting_next_step.clear()
        for i in active:
            if i not in just_reset:  # the step that performs a NEXT_STEP reset is not an episode step
                episodes.steps[i] += 1
                episodes.returns[i] += float(reward[i])

        done = [i for i in active if (terminated[i] or truncated[i]) and i not in just_reset]
        finished_info = info.get("final_info", info) if mode == AutoresetMode.SAME_STEP else info
        restarting: list[int] = [i for i in just_reset]
        to_pause: list[int] = []
        for i in done:
            records.append(episodes.finish(i, info_row(finished_info, i)))
            if on_episode is not None:
                on_episode(records[-1])
            if episodes.exhausted():
                to_pause.append(i)
            else:
                episodes.start(i)
                restarting.append(i)

        _pause(policy, active, to_pause)
        if mode == AutoresetMode.NEXT_STEP:
            # The env resets on the next step and ignores that action; the policy's rows are
            # cleared after that step, once the new episode's first observation is in hand.
            resetting_next_step.update(i for i in restarting if i not in just_reset)
            restarting = [i for i in restarting if i in just_reset]
        elif mode == AutoresetMode.DISABLED:
            idle_done = [i for i in range(num_envs) if i not in active and (terminated[i] or truncated[i])]
            obs = _reset_disabled(venv, obs, episodes, restarting, sorted(set(to_pause + idle_done)))
        if restarting:
            policy.reset(np.array([i in restarting for i in active], dtype=bool))
    records.sort(key=lambda r: r.episode)
    return records


def _pause(policy: Policy, active: list[int], env_indices: list[int]) -> None:
    if not env_indices:
        return
    rows = [active.index(i) for i in env_indices]
    policy.on_envs_pause(rows)
    for i in env_indices:
        active.remove(i)


def _reset_disabled(
    venv: VectorEnv, obs: Any, episodes: _Episodes, restarting: list[int], idle: list[int]
) -> Any:
    """Reset finished envs by mask: restarted ones with their episode's seed, idle (paused)
    ones with any seed: they are stepped but ignored, and DISABLED forbids stepping a done env."""
    to_reset = restarting + idle
    if not to_reset:
        return obs
    mask = np.zeros(venv.num_envs, dtype=bool)
    mask[to_reset] = True
    seeds = [episodes.seed_of(episodes.current[i]) if i in restarting else None for i in range(venv.num_envs)]
    new_obs, _ = venv.reset(seed=seeds, options={"reset_mask": mask})
    return new_obs
