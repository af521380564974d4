"""`rollout`: run a policy for N episodes in a (vector) environment and collect metrics.

The loop keeps the policy's rows aligned with the environments under every Gymnasium
autoreset mode, and pauses environments that have no episode left (telling the policy
which rows to drop), as habitat-baselines' evaluator does.

Determinism: with `AutoresetMode.DISABLED` (what `embodied.envs.make_vec` builds)
episode k is always reset with seed `seed + k`, whichever environment runs it and
whenever it finishes, so the same seed gives the same episodes and the same metrics
for any number of environments. Under NEXT_STEP / SAME_STEP the environments reset
themselves from their own RNG; results are still repeatable for a fixed `num_envs`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

if TYPE_CHECKING:
    from embodied.policies.base import Policy
from gymnasium.vector import AutoresetMode, SyncVectorEnv, VectorEnv

METRICS_KEY = "metrics"  # envs report running metrics in info["metrics"] (a dict of floats)


@dataclass
class EpisodeRecord:
    """One finished episode: its identity, length, return and the env's final metrics."""

    episode: int
    seed: int | None
    env_index: int
    steps: int
    episode_return: float
    metrics: dict[str, float] = field(default_factory=dict)

    def as_row(self) -> dict[str, Any]:
        return {
            "episode": self.episode,
            "seed": self.seed,
            "env_index": self.env_index,
            "steps": self.steps,
            "return": self.episode_return,
            **self.metrics,
        }


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

    def __init__(self, n_episodes: int, seed: int, num_envs: int, seeded: bool) -> None:
        self.n_episodes, self.seed, self.seeded = n_episodes, seed, seeded
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
        return self.seed + k if self.seeded else None

    def exhausted(self) -> bool:
        return self.next_index >= self.n_episodes

    def finish(self, env_index: int, info: dict[str, Any]) -> EpisodeRecord:
        k = self.current[env_index]
        metrics = {name: float(v) for name, v in info.get(METRICS_KEY, {}).items()}
        return EpisodeRecord(
            episode=k,
            seed=self.seed + k if self.seeded else None,
            env_index=env_index,
            steps=int(self.steps[env_index]),
            episode_return=float(self.returns[env_index]),
            metrics=metrics,
        )


def rollout(
    env: gym.Env | VectorEnv,
    policy: Policy,
    n_episodes: int,
    seed: int = 0,
    pause_action: Any = None,
    on_episode: Callable[[EpisodeRecord], None] | None = None,
) -> list[EpisodeRecord]:
    """Run `policy` for `n_episodes` episodes and return their records, sorted by episode.

    `on_episode` is called with each record as soon as its episode ends (in finishing
    order), so a caller can write results incrementally and lose nothing on a crash.

    `pause_action` is sent to paused environments (their results are ignored); it defaults
    to a seeded sample of the action space.
    """
    if n_episodes < 1:
        raise ValueError(f"n_episodes must be >= 1, got {n_episodes}")
    venv = as_vector_env(env)
    mode = venv.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
    num_envs = venv.num_envs
    episodes = _Episodes(n_episodes, seed, num_envs, seeded=mode == AutoresetMode.DISABLED)
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
            obs = _reset_disabled(venv, obs, episodes, restarting, sorted(set(to_pause + idle_done)), seed)
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
    venv: VectorEnv, obs: Any, episodes: _Episodes, restarting: list[int], idle: list[int], seed: int
) -> Any:
    """Reset finished envs by mask: restarted ones with their episode's seed, idle (paused)
    ones with any seed: they are stepped but ignored, and DISABLED forbids stepping a done env."""
    to_reset = restarting + idle
    if not to_reset:
        return obs
    mask = np.zeros(venv.num_envs, dtype=bool)
    mask[to_reset] = True
    seeds = [seed + episodes.current[i] if i in restarting else None for i in range(venv.num_envs)]
    new_obs, _ = venv.reset(seed=seeds, options={"reset_mask": mask})
    return new_obs
