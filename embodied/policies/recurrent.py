"""The `memoryless` and `gru` baselines: the shared encoders with no memory, or a GRU."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from embodied.policies.pretrained import PolicyConfig, PretrainedPolicy


def _head(config: PolicyConfig) -> nn.Module:
    out = config.n_actions or config.action_dim
    return nn.Sequential(nn.Linear(config.dim, config.dim), nn.GELU(), nn.Linear(config.dim, out))


class MemorylessPolicy(PretrainedPolicy):
    """Acts from the current observation alone: the baseline every memory policy must beat."""

    name = "memoryless"

    def __init__(self, config: PolicyConfig) -> None:
        super().__init__(config)
        self.head = _head(config)

    def reset(self, mask: np.ndarray) -> None:  # no state
        pass

    def on_envs_pause(self, idx: Sequence[int]) -> None:
        pass

    def forward_step(self, feats: torch.Tensor) -> torch.Tensor:
        return self.head(feats)

    def forward_window(self, feats: torch.Tensor) -> torch.Tensor:
        return self.head(feats)


class GRUPolicy(PretrainedPolicy):
    """A recurrent baseline: one GRU layer over the encoded observations. Its hidden state
    has one row per active environment; `reset` zeroes rows and `on_envs_pause` drops them."""

    name = "gru"

    def __init__(self, config: PolicyConfig) -> None:
        super().__init__(config)
        self.rnn = nn.GRU(config.dim, config.dim, batch_first=True)
        self.head = _head(config)
        self.hidden: torch.Tensor | None = None  # [n_envs, dim]

    def reset(self, mask: np.ndarray) -> None:
        mask_t = torch.as_tensor(np.asarray(mask, dtype=bool))
        if self.hidden is None or len(self.hidden) != len(mask_t):
            self.hidden = torch.zeros(len(mask_t), self.config.dim, device=self.device())
        else:
            self.hidden[mask_t.to(self.hidden.device)] = 0.0

    def on_envs_pause(self, idx: Sequence[int]) -> None:
        if self.hidden is not None:
            keep = [i for i in range(len(self.hidden)) if i not in set(idx)]
            self.hidden = self.hidden[keep]

    def forward_step(self, feats: torch.Tensor) -> torch.Tensor:
        if self.hidden is None or len(self.hidden) != len(feats):
            raise RuntimeError("call reset(mask) with one entry per environment before act()")
        out, h = self.rnn(feats[:, None], self.hidden[None])
        self.hidden = h[0]
        return self.head(out[:, 0])

    def forward_window(self, feats: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(feats)
        return self.head(out)
