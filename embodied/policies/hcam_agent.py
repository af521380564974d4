"""`hcam_agent`: the shared observation encoder followed by a stack of HCAM layers.

Each `HCAMLayer` keeps its own chunked episodic memory (the layer's input stream), so the
agent can recall a specific earlier stretch of the episode (e.g. the tour of ObjectRecall)
without attending to every stored step. Acting streams one step at a time (`step`); the
behaviour-cloning loss runs whole episode windows at once (`sequence`); both compute the
same function, which the tests check.

Memory rows follow the `Policy` contract: row r belongs to the r-th active environment;
`reset(mask)` clears rows (and resizes every memory when the number of rows changes) and
`on_envs_pause(idx)` prunes them. Memory contents are per-episode state, not weights, so
they are left out of `state_dict()` and of the saved checkpoint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from embodied.memory.base import Memory
from embodied.memory.hcam import HCAMLayer
from embodied.policies.pretrained import PolicyConfig, PretrainedPolicy


@dataclasses.dataclass
class HCAMAgentConfig(PolicyConfig):
    layers: int = 2
    heads: int = 4
    topk: int = 4
    chunk_size: int = 8
    max_chunks: int = 64  # ring buffer per layer: the last max_chunks * chunk_size steps of the episode
    mlp_ratio: int = 2


class HCAMAgentPolicy(PretrainedPolicy):
    """Encoder -> `layers` x HCAMLayer -> LayerNorm -> action head (+ a value head for RL)."""

    name = "hcam_agent"
    config_class = HCAMAgentConfig
    config: HCAMAgentConfig

    def __init__(self, config: HCAMAgentConfig) -> None:
        super().__init__(config)
        if config.dim % 2 or config.dim % config.heads:
            raise ValueError(f"hcam_agent: dim {config.dim} must be even and divisible by heads {config.heads}")
        self.layers = nn.ModuleList(
            HCAMLayer(config.dim, batch_size=1, heads=config.heads, topk=config.topk, chunk_size=config.chunk_size,
                      max_chunks=config.max_chunks, mlp_ratio=config.mlp_ratio)
            for _ in range(config.layers)
        )
        self.norm = nn.LayerNorm(config.dim)
        out = config.n_actions or config.action_dim
        self.head = nn.Sequential(nn.Linear(config.dim, config.dim), nn.GELU(), nn.Linear(config.dim, out))
        self.value_head = nn.Sequential(nn.Linear(config.dim, config.dim), nn.GELU(), nn.Linear(config.dim, 1))
        self._rows = 0  # no row has been reset yet: act() before reset() is an error
        self.last_value: torch.Tensor | None = None  # [n_envs] value estimate of the last act()

    # ------------------------------------------------------------------ memory state
    def memories(self) -> list[Memory]:
        return [layer.memory for layer in self.layers]

    def _memory_keys(self) -> set[str]:
        keys = set()
        for i, layer in enumerate(self.layers):
            prefix = f"layers.{i}.memory."
            keys.update(prefix + n for n in layer.memory.state_names())
            keys.add(prefix + "_batch_size_")
        return keys

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        """Weights and normalisation buffers only: memory contents are episode state."""
        state = super().state_dict(*args, **kwargs)
        for key in self._memory_keys():
            state.pop(key, None)
        return state

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Accept checkpoints without memory state (ours) and keep the current memory rows."""
        state = dict(state_dict)
        current = super().state_dict()
        for key in self._memory_keys():
            if key not in state:
                state[key] = current[key]
        return super().load_state_dict(state, strict=strict, assign=assign)

    @contextmanager
    def _scratch_memories(self, batch_size: int) -> Iterator[None]:
        """Run a training window on fresh memories of `batch_size` rows, then put back the
        rollout memories (a loss computed mid-rollout must not disturb acting)."""
        saved = [m.memory_state() for m in self.memories()]
        try:
            for m in self.memories():
                m.resize(batch_size)
            yield
        finally:
            for m, s in zip(self.memories(), saved):
                m.load_state_dict(s, strict=False)

    # ------------------------------------------------------------------ Policy protocol
    def reset(self, mask: np.ndarray) -> None:
        mask_t = torch.as_tensor(np.asarray(mask, dtype=bool), device=self.device())
        if self._rows != len(mask_t):
            for m in self.memories():
                m.resize(len(mask_t))
            self._rows = len(mask_t)
        else:
            for m in self.memories():
                m.reset(mask_t)

    def on_envs_pause(self, idx: Sequence[int]) -> None:
        drop = set(int(i) for i in idx)
        keep = torch.tensor([i for i in range(self._rows) if i not in drop], dtype=torch.long, device=self.device())
        for m in self.memories():
            m.prune(keep)
        self._rows = len(keep)

    # ------------------------------------------------------------------ model
    def _trunk_step(self, feats: torch.Tensor) -> torch.Tensor:
        x = feats
        for layer in self.layers:
            x = layer.step(x).output
        return self.norm(x)

    def _trunk_window(self, feats: torch.Tensor, reset: torch.Tensor | None) -> torch.Tensor:
        x = feats
        for layer in self.layers:
            x = layer.sequence(x, reset).output
        return self.norm(x)

    def forward_step(self, feats: torch.Tensor, state: Any = None) -> torch.Tensor:
        """One streaming step for every active row: read each layer's memory, then write."""
        if self._rows != len(feats):
            raise RuntimeError("call reset(mask) with one entry per environment before act()")
        h = self._trunk_step(feats)
        self.last_value = self.value_head(h)[:, 0]
        return self.head(h)

    def forward_window(self, feats: torch.Tensor, episode_start: torch.Tensor | None = None,
                       state: Any = None) -> torch.Tensor:
        """[B, T, dim] windows -> [B, T, out] on fresh memories (`episode_start` marks episode starts
        inside the window; None: only at t = 0)."""
        out, _ = self.forward_window_value(feats, episode_start)
        return out

    def forward_window_value(self, feats: torch.Tensor, episode_start: torch.Tensor | None = None
                             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Action outputs [B, T, out] and values [B, T] over windows."""
        b, t = feats.shape[:2]
        reset = torch.zeros(b, t, dtype=torch.bool, device=feats.device)
        if episode_start is not None:
            reset |= episode_start.to(feats.device)
        reset[:, 0] = True
        with self._scratch_memories(b):
            h = self._trunk_window(feats, reset)
        return self.head(h), self.value_head(h)[..., 0]
