"""Recorded episodes and episode-aligned training windows.

An `Episode` holds the observations a policy saw and the actions it took, step by step.
Memory policies train on ordered windows of one episode (never shuffled frames), so
`episode_windows` cuts windows that start at an episode's first step and pads them
with a mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

if TYPE_CHECKING:
    from embodied.policies.base import Policy



@dataclass
class Episode:
    obs: dict[str, np.ndarray]  # key -> [T, ...] (text: object array of str)
    actions: np.ndarray  # [T, ...]
    metrics: dict[str, float] = field(default_factory=dict)
    seed: int | None = None

    def __len__(self) -> int:
        return len(self.actions)


def collect_episodes(env: gym.Env, policy: Policy, n_episodes: int, seed: int = 0) -> list[Episode]:
    """Run `policy` in one env for `n_episodes` (episode k with seed `seed + k`) and record
    every (observation, action) pair; privileged keys such as `expert_action` are kept so
    the data can be relabelled later."""
    episodes = []
    for k in range(n_episodes):
        obs, _ = env.reset(seed=seed + k)
        policy.reset(np.ones(1, dtype=bool))
        steps: list[dict[str, Any]] = []
        actions = []
        done, info = False, {}
        while not done:
            batch = {key: _batch1(v) for key, v in obs.items()}
            action = policy.act(batch)[0]
            steps.append(obs)
            actions.append(action)
            obs, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
        episodes.append(Episode(_stack(steps), np.asarray(actions), dict(info.get("metrics", {})), seed + k))
    return episodes


def episode_windows(episodes: list[Episode], window: int | None = None) -> dict[str, Any]:
    """A batch of windows, one per episode, from each episode's first step, padded to a
    common length T: {"obs": {k: [B, T, ...]}, "actions": [B, T, ...], "mask": [B, T]}."""
    length = window or max(len(e) for e in episodes)
    mask = np.zeros((len(episodes), length), dtype=bool)
    obs: dict[str, list] = {k: [] for k in episodes[0].obs}
    actions = []
    for i, ep in enumerate(episodes):
        n = min(len(ep), length)
        mask[i, :n] = True
        for k in obs:
            obs[k].append(_pad(ep.obs[k][:n], length))
        actions.append(_pad(ep.actions[:n], length))
    return {"obs": {k: np.stack(v) for k, v in obs.items()}, "actions": np.stack(actions), "mask": mask}


def normalization_stats(episodes: list[Episode], keys: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Mean and std of vector observations over all recorded steps."""
    out = {}
    for key in keys:
        values = np.concatenate([np.asarray(e.obs[key], dtype=np.float64).reshape(len(e), -1) for e in episodes])
        out[key] = (values.mean(0), values.std(0) + 1e-6)
    return out


def _batch1(value: Any) -> np.ndarray:
    if isinstance(value, str):
        return np.array([value], dtype=object)
    return np.asarray(value)[None]


def _stack(steps: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    out = {}
    for key in steps[0]:
        values = [s[key] for s in steps]
        out[key] = np.array(values, dtype=object) if isinstance(values[0], str) else np.stack(values)
    return out


def _pad(x: np.ndarray, length: int) -> np.ndarray:
    if len(x) == length:
        return x
    pad = np.repeat(x[-1:], length - len(x), axis=0)  # repeat the last step; masked out anyway
    return np.concatenate([x, pad])
