"""`memory_agent`: one agent for memory ablations, with the memory chosen by name.

    policy = embodied.policies.make("memory_agent", observation_space=..., action_space=...,
                                    memory="hcam")   # hcam | pcmb | events | place | gru | none

The shared observation encoder gives features f [N, dim]; the memory reads with f and then writes f
(read-then-write, the step contract of `embodied.memory`), giving r [N, dim]; the head sees
LayerNorm(f + W r). Only the memory changes between ablations: encoder, head and training are the same.

* `hcam`: the HCAM memory (`embodied.memory.hcam.HCAM`; chunks of `chunk_size`, `capacity` chunks).
* `pcmb`: MemoryVLA's bank with one perceptual token (f) and one cognitive token (f); r = fused token.
* `events`: EM-LLM-style event memory (surprise = 1 - cos to the open event), `capacity` events.
* `place`: SAT place memory; the place of a step is its GPS cell (`place_cell` metres) hashed into
  `num_places` ids, so it needs a `gps` observation.
* `gru`: a GRU cell (r = the hidden state after the step; the same as the `gru` baseline's recurrence).
* `none`: r = 0 (the `memoryless` baseline's function).

The rollout state is the memory's `TensorState` (child `memory`), never a parameter or buffer.
Training windows run the memory's `sequence` with the window's episode starts (HCAM's is a parallel
pass, the others scan their steps).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor, nn

import embodied.memory as em
from embodied.memory.state import TensorState
from embodied.policies.pretrained import PolicyConfig, PretrainedPolicy

MEMORY_NAMES = ("hcam", "pcmb", "events", "place", "gru", "none")


@dataclasses.dataclass
class MemoryAgentConfig(PolicyConfig):
    memory: str = "hcam"
    heads: int = 4
    topk: int = 4
    chunk_size: int = 8  # hcam: steps per chunk; place: entries per chunk
    capacity: int = 64  # hcam: chunks; pcmb: entries; events: events; place: entries
    num_places: int = 64  # place: place ids
    place_cell: float = 1.0  # place: metres per GPS cell
    gps_key: str = "gps"


class MemoryAgentPolicy(PretrainedPolicy):
    """Encoder -> memory (by name) -> LayerNorm(f + W r) -> action head (+ value head)."""

    name = "memory_agent"
    config_class = MemoryAgentConfig
    config: MemoryAgentConfig

    def __init__(self, config: MemoryAgentConfig) -> None:
        super().__init__(config)
        if config.memory not in MEMORY_NAMES:
            raise ValueError(f"memory_agent: memory must be one of {list(MEMORY_NAMES)}, got {config.memory!r}")
        if config.memory == "place" and config.gps_key not in config.obs_spec:
            raise ValueError(f"memory_agent: memory='place' needs the '{config.gps_key}' observation for its place "
                             f"ids; observations: {sorted(config.obs_spec)}")
        d = config.dim
        self.memory = self._build_memory(config)
        self.read_proj = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d)
        out = config.n_actions or config.action_dim
        self.head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, out))
        self.value_head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, 1))
        self.last_value: Tensor | None = None
        self._places: Tensor | None = None  # [N] or [B, T] place ids of the current call (place memory)

    @staticmethod
    def _build_memory(c: MemoryAgentConfig) -> nn.Module | None:
        if c.memory == "hcam":
            return em.make("hcam", dim=c.dim, chunk_size=c.chunk_size, topk=c.topk, heads=c.heads,
                           max_chunks=c.capacity)
        if c.memory == "pcmb":
            return em.make("pcmb", dim=c.dim, n_tokens=1, capacity=c.capacity, heads=c.heads, retrieval_layers=1)
        if c.memory == "events":
            return em.make("events", dim=c.dim, max_events=c.capacity, topk=c.topk)
        if c.memory == "place":
            return em.make("place", dim=c.dim, capacity=c.capacity, num_places=c.num_places, chunk_size=c.chunk_size,
                           topk=c.topk, heads=c.heads)
        if c.memory == "gru":
            return nn.GRUCell(c.dim, c.dim)
        return None

    # ------------------------------------------------------------------ state
    def initial_state(self, batch_size: int) -> TensorState | None:
        device = self.device()
        if self.memory is None:
            return None
        if isinstance(self.memory, nn.GRUCell):
            mem = TensorState(batch_size).add("hidden", torch.zeros(batch_size, self.config.dim, device=device))
        else:
            mem = self.memory.initial_state(batch_size, device)
        return TensorState(batch_size).add_child("memory", mem)

    # ------------------------------------------------------------------ places (place memory only)
    def place_ids(self, gps: Tensor) -> Tensor:
        """GPS [..., 2] -> place ids [...]: the GPS cell, hashed into `num_places` ids."""
        cell = torch.floor(gps[..., :2].float() / self.config.place_cell).long()
        return (cell[..., 0] * 73856093 + cell[..., 1] * 19349663).remainder(self.config.num_places)

    def encode(self, obs: dict[str, Any]) -> Tensor:
        x = self.preprocess(obs)
        if self.config.memory == "place":
            self._places = self.place_ids(self._raw_gps(x))
        return self.encoder(x)

    def encode_tensors(self, obs: dict[str, Tensor]) -> Tensor:
        if self.config.memory == "place":
            self._places = self.place_ids(self._raw_gps(obs).to(self.device()))
        return super().encode_tensors(obs)

    def _raw_gps(self, x: dict[str, Tensor]) -> Tensor:
        gps = x[self.config.gps_key]
        stats = self.processor.stats.get(self.config.gps_key) if self.processor is not None else None
        if stats is not None:  # the processor normalised it: back to metres
            mean, std = (s.to(gps.device) for s in stats)
            gps = gps * std + mean
        return gps

    # ------------------------------------------------------------------ model
    def _read_step(self, f: Tensor, state: TensorState | None) -> Tensor:
        m = self.memory
        if m is None or state is None:
            return torch.zeros_like(f)
        s, c = state.memory, self.config
        if isinstance(m, nn.GRUCell):
            s.hidden = m(f, s.hidden)
            self.note_read("memory", "gru", {"hidden_norm": s.hidden.norm(dim=-1)})
            return s.hidden
        if c.memory == "pcmb":
            r = m.step(f[:, None], f, s)
            out = r.output[0][:, 0]
        elif c.memory == "place":
            assert self._places is not None
            r = m.step(f, self._places, s)
            out = r.output
        else:
            r = m.step(f, s)
            out = r.output
        self.note_read("memory", c.memory, r.trace, {"chunk_size": c.chunk_size, "capacity": c.capacity})
        return out

    def _read_window(self, f: Tensor, episode_start: Tensor | None, state: TensorState | None) -> Tensor:
        m = self.memory
        if m is None or state is None:
            return torch.zeros_like(f)
        s = state.memory
        if self.config.memory == "hcam":
            return m.sequence(f, s, episode_start).output
        if self.config.memory == "pcmb":
            return m.sequence(f[:, :, None], f, s, episode_start).output[0][:, :, 0]
        if self.config.memory == "events":
            return m.sequence(f, s, None, episode_start).output
        if self.config.memory == "place":
            assert self._places is not None
            return m.sequence(f, self._places, s, episode_start).output
        outs = []  # gru: the recurrence, with the hidden state cleared where an episode starts
        for t in range(f.shape[1]):
            if episode_start is not None:
                s.reset(episode_start[:, t])
            outs.append(self._read_step(f[:, t], state))
        return torch.stack(outs, 1)

    def _decide(self, f: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
        h = self.norm(f + self.read_proj(r))
        return self.head(h), self.value_head(h)[..., 0]

    def forward_step(self, feats: Tensor, state: TensorState | None) -> Tensor:
        out, value = self._decide(feats, self._read_step(feats, state))
        self.last_value = value
        return out

    def forward_window(self, feats: Tensor, episode_start: Tensor | None = None,
                       state: TensorState | None = None) -> Tensor:
        state = state if state is not None else self.initial_state(feats.shape[0])
        start = None if episode_start is None else episode_start.to(feats.device)
        out, _ = self._decide(feats, self._read_window(feats, start, state))
        return out
