"""Baselines that need no training: `random` and `expert`."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import gymnasium as gym
import numpy as np

from embodied.policies.base import ObsBatch, batch_size

EXPERT_KEY = "expert_action"


class RandomPolicy:
    """Samples uniformly from the action space with its own seeded copy of the space, so the
    samples depend on `seed` alone (nobody else seeding the env's space changes them)."""

    def __init__(self, action_space: gym.Space, seed: int = 0, observation_space: gym.Space | None = None) -> None:
        self.action_space = copy.deepcopy(action_space)
        self.action_space.seed(int(seed))

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
    The spaces are accepted (every policy is built from the env's spaces) and checked.
    """

    independent_rows = True  # stateless, row by row: rollouts act on each env as soon as it is ready

    def __init__(self, observation_space: gym.Space | None = None, action_space: gym.Space | None = None) -> None:
        if isinstance(observation_space, gym.spaces.Dict) and EXPERT_KEY not in observation_space.spaces:
            raise ValueError(f"the expert policy needs the '{EXPERT_KEY}' observation; build the env with "
                             f"expert=True (observation keys: {sorted(observation_space.spaces)})")

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
