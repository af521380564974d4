"""Baselines that need no training: `random` and `expert`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from embodied.policies.base import ObsBatch, batch_size

EXPERT_KEY = "expert_action"


class RandomPolicy:
    """Samples uniformly from the action space; seeded, so rollouts repeat exactly."""

    def __init__(self, action_space: gym.Space, seed: int = 0, **_: Any) -> None:
        self.action_space = action_space
        self.action_space.seed(seed)

    def reset(self, mask: np.ndarray) -> None:  # stateless
        pass

    def on_envs_pause(self, idx: Sequence[int]) -> None:  # stateless
        pass

    def act(self, obs: ObsBatch) -> np.ndarray:
        return np.stack([self.action_space.sample() for _ in range(batch_size(obs))])


class ExpertPolicy:
    """Plays the environment's oracle action.

    Environments built with `expert=True` add the privileged observation
    `expert_action` (the shortest-path follower's or scripted expert's next action).
    Keeping the oracle in the observation, not in a back channel to the simulator, means
    it works unchanged in vector envs, in other processes and in data collection.
    """

    def __init__(self, **_: Any) -> None:
        pass

    def reset(self, mask: np.ndarray) -> None:
        pass

    def on_envs_pause(self, idx: Sequence[int]) -> None:
        pass

    def act(self, obs: ObsBatch) -> np.ndarray:
        if EXPERT_KEY not in obs:
            raise KeyError(
                f"the expert policy needs the '{EXPERT_KEY}' observation; build the env with expert=True "
                f"(observation keys present: {sorted(obs)})"
            )
        return np.asarray(obs[EXPERT_KEY])
