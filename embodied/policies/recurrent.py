"""The `memoryless` and `gru` baselines: the shared encoders with no memory, or a GRU."""

from __future__ import annotations

import torch
from torch import nn

from embodied.memory.state import TensorState
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

    def forward_step(self, feats: torch.Tensor, state: TensorState | None) -> torch.Tensor:
        return self.head(feats)

    def forward_window(self, feats: torch.Tensor, episode_start: torch.Tensor | None = None,
                       state: TensorState | None = None) -> torch.Tensor:
        return self.head(feats)


class GRUPolicy(PretrainedPolicy):
    """A recurrent baseline: one GRU layer over the encoded observations. The hidden state is
    the rollout state `hidden` [rows, dim]; an episode start zeroes it (inside training windows
    too, so a window may span an episode boundary)."""

    name = "gru"

    def __init__(self, config: PolicyConfig) -> None:
        super().__init__(config)
        self.rnn = nn.GRU(config.dim, config.dim, batch_first=True)
        self.head = _head(config)

    def initial_state(self, batch_size: int) -> TensorState:
        device = self.device()
        return TensorState(batch_size).add("hidden", torch.zeros(batch_size, self.config.dim, device=device))

    def forward_step(self, feats: torch.Tensor, state: TensorState | None) -> torch.Tensor:
        assert state is not None
        out, h = self.rnn(feats[:, None], state.hidden[None])
        state.hidden = h[0]
        return self.head(out[:, 0])

    def forward_window(self, feats: torch.Tensor, episode_start: torch.Tensor | None = None,
                       state: TensorState | None = None) -> torch.Tensor:
        """[B, T, dim] -> [B, T, out]. Without episode starts after t = 0 the whole window runs as
        one fused GRU call; otherwise the hidden state is zeroed where an episode begins."""
        b, t = feats.shape[:2]
        state = state if state is not None else self.initial_state(b)
        h = state.hidden
        if episode_start is None or not bool(episode_start[:, 1:].any()):
            if episode_start is not None:
                h = h * (~episode_start[:, :1]).to(h.dtype)
            out, h_last = self.rnn(feats, h[None])
            state.hidden = h_last[0]
            return self.head(out)
        outs = []
        keep = (~episode_start).to(feats.dtype)
        for i in range(t):
            h = h * keep[:, i : i + 1]
            o, h_new = self.rnn(feats[:, i : i + 1], h[None])
            h = h_new[0]
            outs.append(o)
        state.hidden = h
        return self.head(torch.cat(outs, dim=1))
