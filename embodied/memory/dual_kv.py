"""dual_kv: JanusVLN's dual implicit memory (Zeng et al., arXiv 2509.22548), batched.

Two streaming encoders, a semantic one and a spatial-geometric one, process one frame of P tokens per step.
Every attention layer of each encoder keeps a key/value cache of the first `n_initial` (8) frames and the
last `n_recent` (48) frames; the current frame attends to the cached frames and to itself, then the cache
drops the frame that fell out of the recent window (JanusVLN `StartRecentKVCache`: trim after attending).
The memory *is* these caches: its size and the cost of a step are constant however long the episode is.

`StartRecentLayer` is a `transformers` `DynamicLayer` subclass and `StartRecentCache` a `Cache`, so the same
cache can serve as `past_key_values` of a Hugging Face model (see the caveats in `StartRecentLayer`). That is
how JanusVLN keeps its semantic memory: `DualKV(semantic_cache=False)` runs the semantic encoder per frame
and `embodied.policies.janus_vln` keeps the semantic stream's history in its causal LM's own start+recent
cache (with a never-evicted `[bos; instruction]` prefix), while the spatial encoder keeps its own cache.

Storage per layer: preallocated `keys/values [B, H, S*P, hd]` with S = n_initial + n_recent + 1 frame slots;
slots 0..n_initial-1 hold the first frames, the other n_recent+1 slots are a ring buffer of the most recent
frames; `slot_frame [B, S]` gives each slot's episode frame index (-1 = empty). Rows fill and reset
independently; attention masks come from `slot_frame`.

Stop-gradient: encoders are usually frozen (JanusVLN). With `detach_writes=True` cached keys/values are
stored detached, so gradients reach the encoders only through the current frame. `episode` (whole episodes,
blockwise over the start+recent band of each frame) is the training pass with gradients into every frame.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.cache_utils import Cache, DynamicLayer

from embodied.memory import MEMORIES
from embodied.memory.base import Memory, ReadResult, scan
from embodied.memory.state import TensorState

_LAYER_FIELDS = ("keys", "values", "slot_frame", "frames_seen", "prefix_mask")


class StartRecentLayer(DynamicLayer):
    """KV cache of one attention layer keeping the first `n_initial` and last `n_recent` frames.

    A frame is `tokens_per_frame` tokens (P); every `update` brings one frame per row (or, in Hugging Face
    use with P=1, q tokens that must not wrap the ring: the first prompt must fit in the cache, and then one
    token per step). `update` returns the filled slots (with the current frame) and `valid_mask()` the
    per-row mask [B, S*P]. As `past_key_values` of a HF model: `get_seq_length` is the number of tokens seen
    (so RoPE positions stay absolute) and `get_mask_sizes` describes the filled slots. Left padding is not
    supported after eviction (pad tokens would become kept "initial" tokens).

    `block` (in `new_state`): frames one update may bring in a causal LM (a training pass streaming a block
    of frames per call); the ring then has n_recent + block slots, so a block's writes never overwrite a
    frame that one of its queries still sees, and `next_attention_mask` selects each query frame's own
    start+recent window by frame index. Rollouts use block 1 (the ring overwrite is the eviction).

    With `prefix_tokens` > 0 the storage starts with a prefix region (a causal LM's `[bos; instruction]`)
    that is written once per episode (`begin_prefix`, then one `update` of exactly that many tokens) and
    never evicted; `prefix_mask` [B, prefix] marks its valid (non-padding) tokens. `next_attention_mask`
    gives the explicit per-row mask of the next update, so rows at different steps (and reset
    independently) can share one batched call with explicit `position_ids`.

    Writes are in place when `store_detached` (rollouts); otherwise out of place, so that a training pass
    can backpropagate through the frames it streamed (earlier attention reads stay valid for autograd).
    """

    is_sliding = False
    is_croppable = False

    def __init__(self, n_initial: int = 8, n_recent: int = 48, tokens_per_frame: int = 1,
                 prefix_tokens: int = 0) -> None:
        super().__init__()
        for name in _LAYER_FIELDS:  # held by the attached state (DynamicLayer sets keys/values to None)
            self.__dict__.pop(name, None)
        self.n_initial, self.n_recent, self.P, self.prefix = n_initial, n_recent, tokens_per_frame, prefix_tokens
        self.slots, self.block = n_initial + n_recent + 1, 1
        self.active: Tensor | None = None
        self.pending_prefix: Tensor | None = None  # [B, prefix] validity of the prefix the next update writes
        self.store_detached = True

    @staticmethod
    def new_state(batch: int, heads: int, head_dim: int, n_initial: int, n_recent: int, tokens_per_frame: int,
                  dtype: torch.dtype, device: Any, prefix_tokens: int = 0, block: int = 1) -> TensorState:
        """An empty layer cache as a `TensorState` (keys, values, slot_frame, frames_seen, prefix_mask)."""
        slots = n_initial + n_recent + block
        tokens = prefix_tokens + slots * tokens_per_frame
        state = TensorState(batch)
        state.add("keys", torch.empty(batch, heads, tokens, head_dim, dtype=dtype, device=device))
        state.add("values", torch.empty(batch, heads, tokens, head_dim, dtype=dtype, device=device))
        state.add("slot_frame", torch.empty(batch, slots, dtype=torch.long, device=device), -1)
        state.add("frames_seen", torch.empty(batch, dtype=torch.long, device=device), 0)
        state.add("prefix_mask", torch.empty(batch, prefix_tokens, dtype=torch.bool, device=device), False)
        return state

    def attach(self, state: TensorState) -> None:
        """Make this layer a view of `state`: updates are written back to it."""
        self.__dict__["state"] = state
        self.dtype, self.device = state.keys.dtype, state.keys.device
        self.slots = int(state.slot_frame.shape[1])  # the state's own block size
        self.block = self.slots - self.n_initial - self.n_recent
        self.is_initialized = True

    def __getattr__(self, name: str) -> Any:  # keys / values / slot_frame / frames_seen of an attached state
        state = self.__dict__.get("state")
        if name in _LAYER_FIELDS:
            return None if state is None else state[name]
        raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        state = self.__dict__.get("state")
        if state is not None and name in _LAYER_FIELDS:
            setattr(state, name, value)
        else:
            object.__setattr__(self, name, value)

    def allocate(self, batch: int, heads: int, head_dim: int, dtype: torch.dtype, device: Any) -> None:
        self.attach(self.new_state(batch, heads, head_dim, self.n_initial, self.n_recent, self.P, dtype, device,
                                   self.prefix))

    def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:
        B, H, _, hd = key_states.shape
        self.allocate(B, H, hd, key_states.dtype, key_states.device)

    def slot_of(self, frame: Tensor) -> Tensor:
        ring = self.n_initial + (frame - self.n_initial) % (self.n_recent + self.block)
        return torch.where(frame < self.n_initial, frame, ring)

    def _put(self, tok: Tensor, k: Tensor, v: Tensor, active: Tensor) -> None:
        """Write k/v [B, H, n, hd] at storage tokens `tok` [B, n] of the active rows."""
        B, H, n, hd = k.shape
        idx = tok[:, None, :, None].expand(B, H, n, hd)
        a = active[:, None, None, None]
        for name, new in (("keys", k), ("values", v)):
            old = getattr(self, name)
            new = torch.where(a, new.to(old.dtype), old.gather(2, idx))
            if self.store_detached:
                old.scatter_(2, idx, new)
            else:
                setattr(self, name, old.scatter(2, idx, new))

    def _write_frame(self, k: Tensor, v: Tensor, active: Tensor) -> None:
        B, _H, P, _hd = k.shape
        rows = torch.arange(B, device=k.device)
        f = self.frames_seen
        slot = self.slot_of(f)
        self._put(self.prefix + slot[:, None] * P + torch.arange(P, device=k.device)[None], k, v, active)
        self.slot_frame[rows, slot] = torch.where(active, f, self.slot_frame[rows, slot])
        self.frames_seen = f + active.long()

    def _write_prefix(self, k: Tensor, v: Tensor, active: Tensor, valid: Tensor) -> None:
        B, _H, n, _hd = k.shape
        if n != self.prefix:
            raise ValueError(f"the prefix update brings {n} tokens, the cache holds prefix_tokens={self.prefix}")
        self._put(torch.arange(n, device=k.device).expand(B, n), k, v, active)
        self.prefix_mask = torch.where(active[:, None], valid.to(self.prefix_mask.device), self.prefix_mask)

    def _active(self, batch: int) -> Tensor:
        return self.active if self.active is not None else torch.ones(batch, dtype=torch.bool, device=self.device)

    def update(self, key_states: Tensor, value_states: Tensor, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if self.store_detached:
            key_states, value_states = key_states.detach(), value_states.detach()
        B, _, q, _ = key_states.shape
        active = self._active(B)
        if self.pending_prefix is not None:
            self._write_prefix(key_states, value_states, active, self.pending_prefix)
            self.pending_prefix = None
        else:
            P = self.P
            if q % P:
                raise ValueError(f"update brings {q} tokens, not a multiple of tokens_per_frame={P}")
            for i in range(q // P):  # one frame per step in rollouts; several only for a HF prompt
                k, v = key_states[:, :, i * P : (i + 1) * P], value_states[:, :, i * P : (i + 1) * P]
                self._write_frame(k, v, active)
        n = self.prefix + self.filled_tokens()
        return self.keys[:, :, :n], self.values[:, :, :n]

    def filled_tokens(self) -> int:
        """Frame tokens in the filled slot prefix (slots fill in order, so the filled ones are a prefix)."""
        return int(min(int(self.frames_seen.max()), self.slots)) * self.P

    def valid_mask(self) -> Tensor:
        """[B, prefix + filled_tokens] bool: which returned tokens belong to the row's prefix and kept frames."""
        n = self.filled_tokens() // self.P
        return torch.cat([self.prefix_mask, (self.slot_frame[:, :n] >= 0).repeat_interleave(self.P, dim=1)], 1)

    def next_attention_mask(self, query_tokens: int) -> Tensor:
        """[B, q, kv] bool: what each query token of the next `update` may attend to in a causal LM (computed
        before the update: Hugging Face models take the mask before they write the cache).

        Prefix update (after `begin_prefix`): the earlier valid prefix tokens and itself (a padding token
        attends to itself only, so it stays finite; it is masked for every later query). Frame update (1 to
        `block` frames): the valid prefix, then for each query frame i the held frames j <= i with
        j < n_initial or j >= i - n_recent, the tokens of its own frame up to itself."""
        B, q, dev = self.frames_seen.shape[0], query_tokens, self.frames_seen.device
        i = torch.arange(q, device=dev)[:, None]
        if self.pending_prefix is not None:
            j = torch.arange(self.prefix, device=dev)[None]
            prefix = (j <= i) & self.pending_prefix[:, None, :].to(dev) | (j == i)
            frames = torch.zeros(B, q, self.filled_tokens(), dtype=torch.bool, device=dev)
            return torch.cat([prefix, frames], -1)
        k = q // self.P
        if q % self.P or not 1 <= k <= self.block:
            raise ValueError(f"a frame update brings 1..block={self.block} frames of tokens_per_frame={self.P} "
                             f"tokens, not {q} tokens")
        active = self._active(B)
        frame = self.frames_seen[:, None] + torch.arange(k, device=dev)[None]  # [B, k] the frames written
        slot = self.slot_of(frame)
        written = torch.where(active[:, None], frame, self.slot_frame.gather(1, slot))
        slot_frame = self.slot_frame.scatter(1, slot, written)  # as it will be after the update
        n = int(min(int((self.frames_seen + active.long() * k).max()), self.slots))
        token = torch.arange(n * self.P, device=dev)
        held = slot_frame[:, token // self.P][:, None, :]  # [B, 1, n*P] frame of each key
        qf = frame[:, i[:, 0] // self.P][:, :, None]  # [B, q, 1] frame of each query token
        seen = (held >= 0) & (held <= qf) & ((held < self.n_initial) | (held >= qf - self.n_recent))
        causal = (held < qf) | ((token % self.P)[None, None, :] <= (i[:, 0] % self.P)[None, :, None])
        return torch.cat([self.prefix_mask[:, None, :].expand(B, q, self.prefix), seen & causal], -1)

    def get_seq_length(self) -> int:
        if not self.is_initialized:
            return 0
        prefix = self.prefix if bool(self.prefix_mask.any()) else 0
        return prefix + int(self.frames_seen.max()) * self.P

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        seen = self.get_seq_length()
        kv_length = min(seen + query_length, self.get_max_length())
        return kv_length, seen + query_length - kv_length

    def get_max_length(self) -> int:
        return self.prefix + self.slots * self.P

    def reset_rows(self, mask: Tensor) -> None:
        if self.is_initialized:
            self.state.reset(mask)

    def reset(self) -> None:
        if self.is_initialized:
            self.state.reset()

    def batch_select_indices(self, indices: Tensor) -> None:
        if self.is_initialized:
            self.state.select(indices)

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("a start+recent cache is not croppable")

    def kept_frames(self) -> Tensor:
        """[B, S] episode frame index held in each slot (-1 empty)."""
        return self.slot_frame.clone()


class StartRecentCache(Cache):
    """A `transformers` Cache of `StartRecentLayer`s (one per attention layer)."""

    def __init__(self, num_layers: int, n_initial: int = 8, n_recent: int = 48, tokens_per_frame: int = 1,
                 prefix_tokens: int = 0) -> None:
        super().__init__(layers=[StartRecentLayer(n_initial, n_recent, tokens_per_frame, prefix_tokens)
                                 for _ in range(num_layers)])

    @classmethod
    def over(cls, states: list[TensorState], n_initial: int, n_recent: int, tokens_per_frame: int,
             prefix_tokens: int = 0) -> StartRecentCache:
        """A cache whose layers are views of existing layer states (`StartRecentLayer.new_state`): the
        rollout state stays in the caller's `TensorState`, the cache object is rebuilt per call."""
        cache = cls(len(states), n_initial, n_recent, tokens_per_frame, prefix_tokens)
        for layer, state in zip(cache.layers, states):
            layer.attach(state)
        return cache

    def layer_states(self) -> list[TensorState]:
        return [layer.state for layer in self.layers]

    def set_active(self, active: Tensor | None) -> None:
        for layer in self.layers:
            layer.active = active

    def set_detached(self, detached: bool) -> None:
        """Rollouts store detached, in place; a training pass stores out of place to backpropagate."""
        for layer in self.layers:
            layer.store_detached = detached

    def begin_prefix(self, valid: Tensor) -> None:
        """The next update of every layer writes the prefix ([B, prefix_tokens] validity) of the active rows."""
        for layer in self.layers:
            layer.pending_prefix = valid

    def reset_rows(self, mask: Tensor) -> None:
        for layer in self.layers:
            layer.reset_rows(mask)


def start_recent_band(frames: int, n_initial: int, n_recent: int, device: Any = None) -> tuple[Tensor, Tensor]:
    """The frames a start+recent cache holds when frame i attends, for i < `frames`: indices [T, W] (clamped
    into range) and validity [T, W], W = n_initial + n_recent + 1 (frame j is held iff j <= i and
    (j < n_initial or j >= i - n_recent)). A blockwise pass gathers these W frames per query frame, so a whole
    episode costs O(T * W) attention, never a [T*P, T*P] mask."""
    i = torch.arange(frames, device=device)[:, None]
    initial = torch.arange(n_initial, device=device)[None].expand(frames, -1)
    recent = i - n_recent + torch.arange(n_recent + 1, device=device)[None]  # i - n_recent .. i
    idx = torch.cat([initial, recent], 1)
    valid = torch.cat([initial <= i, recent >= n_initial], 1)  # recent < n_initial: counted as initial
    return idx.clamp(0, max(frames - 1, 0)), valid & (idx >= 0)


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

    def forward(self, tokens: Tensor, cache: StartRecentCache | None) -> Tensor:
        """[B, P, Din] -> [B, P, dim]; `cache=None`: attention within the frame only (a per-frame encoder,
        as JanusVLN's semantic ViT; the frames may then be any leading batch)."""
        B, P, _ = tokens.shape
        H, dh = self.heads, self.dim // self.heads
        x = self.inp(tokens) + self.pos
        for i in range(len(self.qkv)):
            q, k, v = self.qkv[i](self.ln1[i](x)).view(B, P, 3, H, dh).permute(2, 0, 3, 1, 4)
            if cache is None:
                att = F.scaled_dot_product_attention(q, k, v)
            else:
                kc, vc = cache.update(k, v, i)
                mask = cache.layers[i].valid_mask()[:, None, None, :]
                att = F.scaled_dot_product_attention(q, kc, vc, attn_mask=mask)
            x = x + self.proj[i](att.transpose(1, 2).reshape(B, P, self.dim))
            x = x + self.mlp[i](self.ln2[i](x))
        return x

    def episode(self, tokens: Tensor, n_initial: int, n_recent: int) -> Tensor:
        """Whole episodes [B, T, P, Din] (each from its first frame) -> [B, T, P, dim] in one blockwise pass:
        frame i's tokens attend to the start+recent band a streaming cache would hold at step i
        (`start_recent_band`), with gradients into every frame. Same weights and function as `forward`."""
        B, T, P, _ = tokens.shape
        H, dh = self.heads, self.dim // self.heads
        idx, valid = start_recent_band(T, n_initial, n_recent, tokens.device)
        mask = valid.repeat_interleave(P, dim=1)[:, None, :]  # [T, 1, W*P]
        x = self.inp(tokens) + self.pos
        for i in range(len(self.qkv)):
            q, k, v = self.qkv[i](self.ln1[i](x)).view(B, T, P, 3, H, dh).permute(3, 0, 4, 1, 2, 5)
            kb, vb = k[:, :, idx].flatten(3, 4), v[:, :, idx].flatten(3, 4)  # [B, H, T, W*P, dh]
            att = F.scaled_dot_product_attention(q, kb, vb, attn_mask=mask)  # [B, H, T, P, dh]
            x = x + self.proj[i](att.permute(0, 2, 3, 1, 4).reshape(B, T, P, self.dim))
            x = x + self.mlp[i](self.ln2[i](x))
        return x


@MEMORIES.register("dual_kv")
class DualKV(Memory):
    """Dual implicit KV memory: semantic and spatial-geometric streaming encoders with start+recent caches.

    Args:
        semantic_dim / spatial_dim: input token widths of the two encoders.
        dim: encoder width.  tokens_per_frame: P.  layers / heads: per encoder.
        n_initial / n_recent: frames kept (8 / 48).  fusion_weight: lambda in S + lambda*MLP(G) (0.2).
        semantic_cache: False makes the semantic encoder per-frame (JanusVLN's ViT) with no cache of its
            own: the consumer keeps the semantic history (`janus_vln`: in its causal LM's KV cache).

    The caches are the state: `initial_state(B)` holds one child per encoder layer (`semantic_0`, ...,
    `spatial_0`, ...) with `keys`/`values` [B, H, S*P, hd], `slot_frame` [B, S] and `frames_seen` [B];
    during a call the cache layers are views of it (`StartRecentCache.over`).

    API: `step(semantic[B,P,Ds], spatial[B,P,Dg], state, active[B]|None) -> ReadResult` encodes the frame
    against the cached frames (read), caches it (write) and returns the fused features [B,P,dim];
    `read(semantic, spatial, state)` does the same without caching the frame; `write` = `step`;
    `sequence(semantic[B,T,P,Ds], spatial[B,T,P,Dg], state, reset[B,T]|None)`.
    Trace: semantic / spatial features, `kept_frames` [B,S] (episode frame index per cache slot),
    `occupancy` [B] frames held.
    """

    def __init__(
        self,
        semantic_dim: int = 32,
        spatial_dim: int = 32,
        dim: int = 32,
        tokens_per_frame: int = 4,
        layers: int = 2,
        heads: int = 2,
        n_initial: int = 8,
        n_recent: int = 48,
        fusion_weight: float = 0.2,
        detach_writes: bool = True,
        semantic_cache: bool = True,
    ) -> None:
        super().__init__(detach_writes)
        self.dim, self.P, self.heads, self.num_layers = dim, tokens_per_frame, heads, layers
        self.semantic_cache = semantic_cache
        self.n_initial, self.n_recent, self.fusion_weight = n_initial, n_recent, fusion_weight
        self.semantic = StreamingEncoder(semantic_dim, dim, layers, heads, tokens_per_frame)
        self.spatial = StreamingEncoder(spatial_dim, dim, layers, heads, tokens_per_frame)
        self.merger = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> TensorState:
        device = self.device if device is None else torch.device(device)
        state = TensorState(batch_size)
        for stream in self.cached_streams():
            for i in range(self.num_layers):
                state.add_child(f"{stream}_{i}", StartRecentLayer.new_state(
                    batch_size, self.heads, self.dim // self.heads, self.n_initial, self.n_recent, self.P,
                    torch.float32, device))
        return state

    def cached_streams(self) -> tuple[str, ...]:
        return ("semantic", "spatial") if self.semantic_cache else ("spatial",)

    def _cache(self, state: TensorState, stream: str) -> StartRecentCache:
        cache = StartRecentCache.over([state[f"{stream}_{i}"] for i in range(self.num_layers)],
                                      self.n_initial, self.n_recent, self.P)
        for layer in cache.layers:
            layer.store_detached = self.detach_writes
        return cache

    def _encode(self, semantic: Tensor, spatial: Tensor, state: TensorState, active: Tensor | None) -> ReadResult:
        caches = {n: self._cache(state, n) for n in self.cached_streams()}
        for c in caches.values():
            c.set_active(active)
        s = self.semantic(semantic, caches.get("semantic"))
        g = self.spatial(spatial, caches["spatial"])
        out = s + self.fusion_weight * self.merger(g)
        lay = caches["spatial"].layers[0]
        trace = {
            "semantic": s,
            "spatial": g,
            "kept_frames": lay.kept_frames(),
            "occupancy": (lay.slot_frame >= 0).sum(1),
        }
        return ReadResult(out, trace)

    def step(self, semantic: Tensor, spatial: Tensor, state: TensorState, active: Tensor | None = None) -> ReadResult:
        return self._encode(semantic, spatial, state, active)

    def write(self, semantic: Tensor, spatial: Tensor, state: TensorState, active: Tensor | None = None
              ) -> ReadResult:
        return self.step(semantic, spatial, state, active)

    def read(self, semantic: Tensor, spatial: Tensor, state: TensorState) -> ReadResult:
        """The step's output without caching the frame (the state is left as it was)."""
        return self._encode(semantic, spatial, state.clone(), None)

    def sequence(self, semantic: Tensor, spatial: Tensor, state: TensorState, reset: Tensor | None = None
                 ) -> ReadResult:
        """A window of frames, one frame after another (each frame attends causally to the cache, as in
        JanusVLN training, which feeds frames one at a time with a fresh cache). Inherently sequential as
        written (the cache evicts); `episode` is the equivalent blockwise pass over whole episodes."""

        def one(i: int) -> ReadResult:
            if reset is not None:
                state.reset(reset[:, i])
            return self.step(semantic[:, i], spatial[:, i], state)

        return scan(one, semantic.shape[1])

    def episode(self, semantic: Tensor, spatial: Tensor) -> Tensor:
        """Whole episodes from their first frame, [B, T, P, D] each -> fused [B, T, P, dim], blockwise
        (`StreamingEncoder.episode`: no [T*P, T*P] mask); gradients reach every frame's keys and values.
        Equals `sequence` from an empty state."""
        s = (self.semantic.episode(semantic, self.n_initial, self.n_recent) if self.semantic_cache
             else self.semantic(semantic.flatten(0, 1), None).view(*semantic.shape[:3], self.dim))
        g = self.spatial.episode(spatial, self.n_initial, self.n_recent)
        return s + self.fusion_weight * self.merger(g)
