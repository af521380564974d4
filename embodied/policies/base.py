"""The policy contract used by every rollout, evaluation and viewer loop.

A policy acts for a batch of environments at once. Row r of every batched input and of
the policy's own state (memory banks, recurrent state, action-chunk queues) belongs to
the r-th *active* environment. The loop keeps the rows aligned with two calls:

- `reset(mask)`: the environments flagged in `mask` start a new episode; clear their rows.
- `on_envs_pause(idx)`: the environments at rows `idx` have no more episodes; drop those
  rows (the rows after them move up), as habitat-baselines' evaluator does.

A policy may declare `independent_rows = True`: it keeps no rollout state and the action of a
row depends on that row's observation alone, bit for bit whatever else is in the batch (the
expert reads its action from the observation). The rollout loop then calls `act` with only the
environments whose step has returned instead of waiting for every one. A learned policy does not
declare it: batched float kernels can round differently at another batch size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

ObsBatch = dict[str, np.ndarray]


@runtime_checkable
class Policy(Protocol):
    def reset(self, mask: np.ndarray) -> None:
        """Clear the state of the rows where `mask` (bool, shape [n_active]) is True."""

    def on_envs_pause(self, idx: Sequence[int]) -> None:
        """Drop the state rows `idx` of environments that stop for good."""

    def act(self, obs: ObsBatch) -> np.ndarray:
        """Return one action per row of `obs` (a dict of arrays with a leading batch axis)."""


def batch_size(obs: Any) -> int:
    """Number of rows in a batched observation (dict/tuple of arrays or one array)."""
    while isinstance(obs, dict | tuple | list):
        obs = next(iter(obs.values())) if isinstance(obs, dict) else obs[0]
    return len(obs)
