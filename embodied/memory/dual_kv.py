"""dual_kv: JanusVLN's dual implicit memory (Zeng et al., arXiv 2509.22548), batched.

Two streaming encoders, a semantic one and a spatial-geometric one, process one frame of P tokens per step.
Every attention layer of each encoder keeps a key/value cache of the first `n_initial` (8) frames and the
last `n_recent` (48) frames; the current frame attends to the cached frames and to itself, then the cache
drops the frame that fell out of the recent window (JanusVLN `StartRecentKVCache`: trim after attending).
The memory *is* these caches: its size and the cost of a step are constant however long the episode is.

`StartRecentLayer` is a `transformers` `DynamicLayer` subclass and `StartRecentCache` a `Cache`, so the same
cache can serve as `past_key_values` of a Hugging Face model (see the caveats in `StartRecentLayer`).

Storage per layer: preallocated `keys/values [B, H, S*P, hd]` with S = n_initial + n_recent + 1 frame slots;
slots 0..n_initial-1 hold the first frames, the other n_recent+1 slots are a ring buffer of the most recent
frames; `slot_frame [B, S]` gives each slot's episode frame index (-1 = empty). Rows fill and reset
independently; attention masks come from `slot_frame`.

Stop-gradient: encoders are usually frozen (JanusVLN). With `detach_writes=True` cached keys/values are
stored detached, so gradients reach the encoders only through the current frame.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.cache_utils import Cache, DynamicLayer

from embodied.memory import MEMORIES
from embodied.memory.base import Memory, ReadResult, as_keep_index


class StartRecentLayer(DynamicLayer):
    """KV cache of one attention layer keeping the first `n_initial` and last `n_recent` frames.

    A frame is `tokens_per_frame` tokens (P); every `update` brings one frame per row (or, in Hugging Face
    use with P=1, q tokens that must not wrap the ring: the first prompt must fit in the cache, and then one
    token per step). `update` returns the filled slots (with the current frame) and `valid_mask()` the
    per-row mask [B, S*P]. As `past_key_values` of a HF model: all rows step together (no per-row reset),
    `get_seq_length` is the number of tokens seen (so RoPE positions stay absolute) and
    `get_mask_sizes` describes the filled slots. Left padding is not supported after eviction.
    """

    is_sliding = False
    is_croppable = False

    def __init__(self, n_initial: int = 8, n_recent: int = 48, tokens_per_frame: int = 1) -> None:
        super().__init__()
        self.n_initial, self.n_recent, self.P = n_initial, n_recent, tokens_per_frame
        self.slots = n_initial + n_recent + 1
        self.slot_frame: Tensor | None = None
        self.frames_seen: Tensor | None = None
        self.active: Tensor | None = None
        self.store_detached = True

    def allocate(self, batch: int, heads: int, head_dim: int, dtype: torch.dtype, device: Any) -> None:
        self.dtype, self.device = dtype, device
        self.keys = torch.zeros(batch, heads, self.slots * self.P, head_dim, dtype=dtype, device=device)
        self.values = torch.zeros_like(self.keys)
        self.slot_frame = torch.full((batch, self.slots), -1, dtype=torch.long, device=device)
        self.frames_seen = torch.zeros(batch, dtype=torch.long, device=device)
        self.is_initialized = True

    def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:
        B, H, _, hd = key_states.shape
        self.allocate(B, H, hd, key_states.dtype, key_states.device)

    def slot_of(self, frame: Tensor) -> Tensor:
        ring = self.n_initial + (frame - self.n_initial) % (self.n_recent + 1)
        return torch.where(frame < self.n_initial, frame, ring)

    def _write_frame(self, k: Tensor, v: Tensor, active: Tensor) -> None:
        B, _H, P, _hd = k.shape
        rows = torch.arange(B, device=k.device)
        f = self.frames_seen
        slot = self.slot_of(f)
        tok = slot[:, None] * P + torch.arange(P, device=k.device)[None]  # [B,P]
        kk = self.keys.permute(0, 2, 1, 3)  # [B,S*P,H,hd] view
        vv = self.values.permute(0, 2, 1, 3)
        r = rows[:, None]
        a = active[:, None, None, None]
        kk[r, tok] = torch.where(a, k.permute(0, 2, 1, 3), kk[r, tok])
        vv[r, tok] = torch.where(a, v.permute(0, 2, 1, 3), vv[r, tok])
        self.slot_frame[rows, slot] = torch.where(active, f, self.slot_frame[rows, slot])
        self.frames_seen = f + active.long()

    def update(self, key_states: Tensor, value_states: Tensor, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if self.store_detached:
            key_states, value_states = key_states.detach(), value_states.detach()
        B, _, q, _ = key_states.shape
        active = self.active if self.active is not None else torch.ones(B, dtype=torch.bool, device=self.device)
        P = self.P
        if q % P:
            raise ValueError(f"update brings {q} tokens, not a multiple of tokens_per_frame={P}")
        for i in range(q // P):  # one frame per step in rollouts; several only for a HF prompt
            self._write_frame(key_states[:, :, i * P : (i + 1) * P], value_states[:, :, i * P : (i + 1) * P], active)
        n = self.filled_tokens()
        return self.keys[:, :, :n], self.values[:, :, :n]

    def filled_tokens(self) -> int:
        """Tokens in the filled slot prefix (slots fill in order, so the filled ones are a prefix)."""
        return int(min(int(self.frames_seen.max()), self.slots)) * self.P

    def valid_mask(self) -> Tensor:
        """[B, filled_tokens] bool: which returned tokens belong to the row's kept frames."""
        n = self.filled_tokens() // self.P
        return (self.slot_frame[:, :n] >= 0).repeat_interleave(self.P, dim=1)

    def get_seq_length(self) -> int:
        return 0 if self.frames_seen is None else int(self.frames_seen.max()) * self.P

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        seen = self.get_seq_length()
        kv_length = min(seen + query_length, self.slots * self.P)
        return kv_length, seen + query_length - kv_length

    def get_max_length(self) -> int:
        return self.slots * self.P

    def reset_rows(self, mask: Tensor) -> None:
        if not self.is_initialized:
            return
        self.keys[mask] = 0
        self.values[mask] = 0
        self.slot_frame[mask] = -1
        self.frames_seen[mask] = 0

    def reset(self) -> None:
        if self.is_initialized:
            self.reset_rows(torch.ones_like(self.frames_seen, dtype=torch.bool))

    def batch_select_indices(self, indices: Tensor) -> None:
        if self.is_initialized:
            self.keys, self.values = self.keys[indices], self.values[indices]
            self.slot_frame, self.frames_seen = self.slot_frame[indices], self.frames_seen[indices]

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("a start+recent cache is not croppable")

    def kept_frames(self) -> Tensor:
        """[B, S] episode frame index held in each slot (-1 empty)."""
        return self.slot_frame.clone()


class StartRecentCache(Cache):
    """A `transformers` Cache of `StartRecentLayer`s (one per attention layer)."""

    def __init__(self, num_layers: int, n_initial: int = 8, n_recent: int = 48, tokens_per_frame: int = 1) -> None:
        super().__init__(layers=[StartRecentLayer(n_initial, n_recent, tokens_per_frame) for _ in range(num_layers)])

    def set_active(self, active: Tensor | None) -> None:
        for layer in self.layers:
            layer.active = active

    def reset_rows(self, mask: Tensor) -> None:
        for layer in self.layers:
            layer.reset_rows(mask)


class StreamingEncoder(nn.Module):
    """Small frame-causal transformer: each layer's attention runs the current frame's P tokens over the
    cached frames (no temporal encoding, as VGGT's global attention); a learned per-token position
    embedding stands in for VGGT's 2-D RoPE."""

    def __init__(self, in_dim: int, dim: int, layers: int, heads: int, tokens_per_frame: int) -> None:
        super().__init__()
        self.heads, self.dim = heads, dim
        self.inp = nn.Linear(in_dim, dim)
        self.pos = nn.Parameter(torch.randn(tokens_per_frame, dim) * 0.02)
        self.ln1 = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))
        self.qkv = nn.ModuleList(nn.Linear(dim, 3 * dim) for _ in range(layers))
        self.proj = nn.ModuleList(nn.Linear(dim, dim) for _ in range(layers))
        self.ln2 = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))
        self.mlp = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)) for _ in range(layers)
        )

    def forward(self, tokens: Tensor, cache: StartRecentCache) -> Tensor:
        B, P, _ = tokens.shape
        H, dh = self.heads, self.dim // self.heads
        x = self.inp(tokens) + self.pos
        for i in range(len(self.qkv)):
            q, k, v = self.qkv[i](self.ln1[i](x)).view(B, P, 3, H, dh).permute(2, 0, 3, 1, 4)
            kc, vc = cache.update(k, v, i)
            mask = cache.layers[i].valid_mask()[:, None, None, :]
            att = F.scaled_dot_product_attention(q, kc, vc, attn_mask=mask)
            x = x + self.proj[i](att.transpose(1, 2).reshape(B, P, self.dim))
            x = x + self.mlp[i](self.ln2[i](x))
        return x


@MEMORIES.register("dual_kv")
class DualKV(Memory):
    """Dual implicit KV memory: semantic and spatial-geometric streaming encoders with start+recent caches.

    Args:
        semantic_dim / spatial_dim: input token widths of the two encoders.
        dim: encoder width.  tokens_per_frame: P.  layers / heads: per encoder.
        n_initial / n_recent: frames kept (8 / 48).  fusion_weight: lambda in S + lambda*MLP(G) (0.2).

    API: `write(semantic[B,P,Ds], spatial[B,P,Dg], active[B]|None) -> ReadResult` encodes the frame,
    caches it and returns the fused features [B,P,dim]; `read(semantic, spatial)` does the same without
    caching the frame; `step` = `write`; `sequence(semantic[B,T,P,Ds], spatial[B,T,P,Dg], reset[B,T]|None)`.
    Trace: semantic / spatial features, `kept_frames` [B,S] (episode frame index per cache slot),
    `occupancy` [B] frames held.
    """

    def __init__(
        self,
        semantic_dim: int = 32,
        spatial_dim: int = 32,
        dim: int = 32,
        tokens_per_frame: int = 4,
        batch_size: int = 1,
        layers: int = 2,
        heads: int = 2,
        n_initial: int = 8,
        n_recent: int = 48,
        fusion_weight: float = 0.2,
        detach_writes: bool = True,
    ) -> None:
        super().__init__(batch_size, detach_writes)
        self.dim, self.P, self.heads, self.num_layers = dim, tokens_per_frame, heads, layers
        self.n_initial, self.n_recent, self.fusion_weight = n_initial, n_recent, fusion_weight
        self.semantic = StreamingEncoder(semantic_dim, dim, layers, heads, tokens_per_frame)
        self.spatial = StreamingEncoder(spatial_dim, dim, layers, heads, tokens_per_frame)
        self.merger = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.caches = {"semantic": self._new_cache(), "spatial": self._new_cache()}

    def _new_cache(self) -> StartRecentCache:
        c = StartRecentCache(self.num_layers, self.n_initial, self.n_recent, self.P)
        for layer in c.layers:
            layer.allocate(self.batch_size, self.heads, self.dim // self.heads, torch.float32, self._dev())
            layer.store_detached = self.detach_writes
        return c

    def _dev(self) -> torch.device:
        return self.merger[1].weight.device

    @property
    def device(self) -> torch.device:
        return self._dev()

    def _apply(self, fn: Any, recurse: bool = True) -> DualKV:
        super()._apply(fn, recurse)
        for cache in self.caches.values():
            for layer in cache.layers:
                layer.keys, layer.values = fn(layer.keys), fn(layer.values)
                layer.slot_frame, layer.frames_seen = fn(layer.slot_frame), fn(layer.frames_seen)
                layer.device = layer.keys.device
        return self

    # state round-trip: cache tensors travel in the state dict
    def _layers(self) -> list[tuple[str, StartRecentLayer]]:
        return [(f"{n}.{i}", layer) for n, c in self.caches.items() for i, layer in enumerate(c.layers)]

    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        for name, layer in self._layers():
            for f in ("keys", "values", "slot_frame", "frames_seen"):
                destination[f"{prefix}cache.{name}.{f}"] = getattr(layer, f).clone()

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        for name, layer in self._layers():
            for f in ("keys", "values", "slot_frame", "frames_seen"):
                key = f"{prefix}cache.{name}.{f}"
                if key in state_dict:
                    setattr(layer, f, state_dict[key].clone().to(self._dev()))
        sd = {k: v for k, v in state_dict.items() if not k.startswith(prefix + "cache.")}
        super()._load_from_state_dict(sd, prefix, *args)
        self._batch_size = int(self.caches["semantic"].layers[0].frames_seen.shape[0])

    def reset(self, mask: Tensor | None = None) -> None:
        mask = torch.ones(self.batch_size, dtype=torch.bool, device=self.device) if mask is None else mask
        mask = self._rows(mask)
        for c in self.caches.values():
            c.reset_rows(mask)

    def prune(self, keep: Tensor) -> None:
        idx = as_keep_index(keep, self.batch_size).to(self.device)
        for c in self.caches.values():
            for layer in c.layers:
                layer.batch_select_indices(idx)
        self._batch_size = int(idx.numel())

    def detach_(self) -> None:
        for _, layer in self._layers():
            layer.keys, layer.values = layer.keys.detach(), layer.values.detach()

    def _encode(self, semantic: Tensor, spatial: Tensor, active: Tensor | None, store: bool) -> ReadResult:
        saved = None
        if not store:
            saved = {n: (layer.keys.clone(), layer.values.clone(), layer.slot_frame.clone(), layer.frames_seen.clone())
                     for n, layer in self._layers()}  # fmt: skip
        for c in self.caches.values():
            c.set_active(active)
        s = self.semantic(semantic, self.caches["semantic"])
        g = self.spatial(spatial, self.caches["spatial"])
        out = s + self.fusion_weight * self.merger(g)
        lay = self.caches["spatial"].layers[0]
        trace = {
            "semantic": s,
            "spatial": g,
            "kept_frames": lay.kept_frames(),
            "occupancy": (lay.slot_frame >= 0).sum(1),
        }
        if saved is not None:
            for n, layer in self._layers():
                layer.keys, layer.values, layer.slot_frame, layer.frames_seen = saved[n]
        for c in self.caches.values():
            c.set_active(None)
        return ReadResult(out, trace)

    def write(self, semantic: Tensor, spatial: Tensor, active: Tensor | None = None) -> ReadResult:
        return self._encode(semantic, spatial, active, store=True)

    def read(self, semantic: Tensor, spatial: Tensor) -> ReadResult:
        return self._encode(semantic, spatial, None, store=False)

    def step(self, semantic: Tensor, spatial: Tensor, active: Tensor | None = None) -> ReadResult:
        return self.write(semantic, spatial, active)

    def sequence(self, semantic: Tensor, spatial: Tensor, reset: Tensor | None = None) -> ReadResult:
        """A window of frames, one frame after another (each frame attends causally to the cache, as in
        JanusVLN training, which feeds frames one at a time with a fresh cache)."""
        outs, traces = [], []
        for i in range(semantic.shape[1]):
            if reset is not None:
                self.reset(reset[:, i])
            r = self.step(semantic[:, i], spatial[:, i])
            outs.append(r.output)
            traces.append(r.trace)
        trace = {k: torch.stack([tr[k] for tr in traces], 1) for k in traces[0]}
        return ReadResult(torch.stack(outs, 1), trace)
