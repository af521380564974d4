"""`hcam_agent`: the shared observation encoder followed by a stack of HCAM layers.

Each `HCAMLayer` keeps its own chunked episodic memory (the layer's input stream), so the
agent can recall a specific earlier stretch of the episode (e.g. the tour of ObjectRecall)
without attending to every stored step. Acting streams one step at a time through each layer's
fast `step` (local attention over the open chunk, HCAM read of the M chunk summaries and k chunks,
one write: nothing else grows with the episode); the behaviour-cloning loss runs whole windows at
once (`sequence`); both compute the same function, which the tests check.

The rollout state is a `TensorState` with one child per layer (`layer0`, `layer1`, ...: that
layer's HCAM memory); it is never a parameter or buffer, so a checkpoint holds weights only.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from embodied.memory.hcam import HCAMLayer
from embodied.memory.state import TensorState
from embodied.policies.pretrained import PolicyConfig, PretrainedPolicy


@dataclasses.dataclass
class HCAMAgentConfig(PolicyConfig):
    layers: int = 2
    heads: int = 4
    topk: int = 4
    chunk_size: int = 8
    max_chunks: int = 64  # ring buffer per layer: the last max_chunks * chunk_size steps of the episode
    mlp_ratio: int = 2
    init: str = "torch"  # or "deepmind": DeepMind's initialisation of the HCAM attention projections


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
            HCAMLayer(config.dim, heads=config.heads, topk=config.topk, chunk_size=config.chunk_size,
                      max_chunks=config.max_chunks, mlp_ratio=config.mlp_ratio, init=config.init)
            for _ in range(config.layers)
        )
        self.norm = nn.LayerNorm(config.dim)
        out = config.n_actions or config.action_dim
        self.head = nn.Sequential(nn.Linear(config.dim, config.dim), nn.GELU(), nn.Linear(config.dim, out))
        self.value_head = nn.Sequential(nn.Linear(config.dim, config.dim), nn.GELU(), nn.Linear(config.dim, 1))
        self.last_value: torch.Tensor | None = None  # [n_envs] value estimate of the last act()

    def initial_state(self, batch_size: int) -> TensorState:
        state = TensorState(batch_size)
        for i, layer in enumerate(self.layers):
            state.add_child(f"layer{i}", layer.initial_state(batch_size, self.device()))
        return state

    def forward_step(self, feats: torch.Tensor, state: TensorState | None) -> torch.Tensor:
        """One streaming step for every active row: each layer reads its memory, then writes."""
        assert state is not None
        x = feats
        for i, layer in enumerate(self.layers):
            r = layer.step(x, state[f"layer{i}"])
            self.note_read(f"layer{i}", "hcam", r.trace, {"chunk_size": self.config.chunk_size})
            x = r.output
        h = self.norm(x)
        self.last_value = self.value_head(h)[:, 0]
        return self.head(h)

    def forward_window(self, feats: torch.Tensor, episode_start: torch.Tensor | None = None,
                       state: TensorState | None = None) -> torch.Tensor:
        """[B, T, dim] windows -> [B, T, out], continuing `state` (default: empty); `episode_start`
        [B, T] clears a row's memories before the step where a new episode begins."""
        out, _ = self.forward_window_value(feats, episode_start, state)
        return out

    def forward_window_value(self, feats: torch.Tensor, episode_start: torch.Tensor | None = None,
                             state: TensorState | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Action outputs [B, T, out] and values [B, T] over windows."""
        state = state if state is not None else self.initial_state(feats.shape[0])
        reset = None if episode_start is None else episode_start.to(feats.device)
        x = feats
        for i, layer in enumerate(self.layers):
            x = layer.sequence(x, state[f"layer{i}"], reset).output
        h = self.norm(x)
        return self.head(h), self.value_head(h)[..., 0]
