"""HCAM: Hierarchical Chunk Attention Memory (Lampinen et al., 2021, arXiv 2105.14039).

Follows DeepMind's `htm_attention.py`:

* memory = completed chunks of C steps; a chunk's summary key is the plain mean of its C vectors;
* read: project the query (no bias), score every chunk summary (scaled by 1/sqrt(F)), keep the top-k
  chunks per query, softmax over those k only, attend inside each selected chunk with multi-head attention
  whose query is the raw query vector and whose keys/values are the chunk contents plus a within-chunk
  sinusoidal position encoding (positions C-1 .. 0, min timescale 2, max 1e4), and return the
  chunk-weight-weighted sum of the per-chunk outputs;
* keys and contents are stop-gradiented (`detach_writes=True`, DeepMind and lucidrains behaviour).

Efficiency (the known port bug): the ports expand memory to [B, M, Q, C, D] before selecting chunks. Here
the selected chunks are index-gathered ([B, Q, k, C, D], never M), and the projections are moved onto the
query side: chunk scores use `(W_k^T W_q q) . key` and in-chunk logits use `(W_k,h^T W_q,h q) . content`, and
values are projected after the attention-weighted sum, so memory contents are never projected. A step costs
O(M*D + k*C*D*H) instead of O(M*C*D) for full attention.

Rollouts (no autograd, one query per row) take `HCAMAttention.read_one`: at batch sizes of a rollout a step is
bound by memory traffic (each [F,D] weight is read once per step) and by per-op dispatch, not by arithmetic. So
the memory keeps `projected_keys` [B,M,E] = keys mapped through the fused chunk-score matrix W_k^T W_q / sqrt(F),
updated by `write` one chunk at a time and rebuilt in full only when the weights change (an optimizer step,
`load_state_dict`): chunk scores are then one matrix-vector product over M*E numbers with no weight matrix.
Training reads (autograd on) always score through the weights, so chunk_q and chunk_k get gradients.

Layout: `contents [B, M, C, D]` is a ring buffer of the last `max_chunks` chunks of the current episode
(oldest overwritten first); `acc [B, C, D]` is the chunk being filled; a row's episode step is
`n_chunks * C + n_acc`. Streaming `step` reads the completed chunks first and then writes the step
(read-before-write; the current, incomplete chunk is what the `HCAMLayer`'s local self-attention
covers). `sequence` gives the same outputs for a whole window at once, with causal chunk masks and
episode masks (`reset[b, t]`: episode starts at t).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from embodied.memory import MEMORIES
from embodied.memory.base import Memory, ReadResult, masked_softmax, uses_state
from embodied.memory.state import TensorState


def chunk_position_encoding(chunk_size: int, dim: int, device: torch.device | None = None) -> Tensor:
    """DeepMind's in-chunk encoding (`get_position_encodings`): positions C-1 .. 0, inverse frequencies
    1 / 1e4^(j/D) for j = 0, 2, .., D-2 (`min_timescale=2.0` is the step of that range), sine half then
    cosine half."""
    if dim % 2:
        raise ValueError(f"the in-chunk position encoding needs an even width, got {dim}")
    pos = torch.arange(chunk_size - 1, -1, -1, device=device, dtype=torch.float32)
    inv_freq = 1.0 / (1e4 ** (torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim))
    ang = pos[:, None] * inv_freq[None]
    return torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1)


INITS = ("torch", "deepmind")


def deepmind_init_(linear: nn.Linear) -> None:
    """DeepMind's MultiheadAttention initialiser (`init_std=2.`: TF's variance_scaling_initializer(2.0,
    'normal')): a normal truncated at two standard deviations, std sqrt(2 / fan_in) / 0.8796 (TF's
    correction for the truncation), zero biases."""
    std = math.sqrt(2.0 / linear.in_features) / 0.87962566103423978
    with torch.no_grad():
        nn.init.trunc_normal_(linear.weight, std=std, a=-2 * std, b=2 * std)
        if linear.bias is not None:
            linear.bias.zero_()


def _as_dtype(x: Tensor, dtype: torch.dtype) -> Tensor:
    """`x.to(dtype)` without dispatching an op when it is already that dtype (the rollout hot path)."""
    return x if x.dtype == dtype else x.to(dtype)


class HCAMAttention(nn.Module):
    """The HCAM read: top-k chunk selection, then attention inside the selected chunks.

    Args:
        query_dim: E, width of the queries.
        memory_dim: D, width of stored vectors (must be even if `position_encoding`).
        feature_dim: F, width of the projections and of the output (divisible by `heads`).
        heads: H.
        topk: k, chunks read per query.
        chunk_size: C (for the position encoding).
        position_encoding: add the in-chunk sinusoid to the chunk contents (keys and values).
        init: "torch" (PyTorch's Linear default) or "deepmind" (`deepmind_init_`).

    The in-chunk projections q, k, v, o have biases, as DeepMind's multi-head attention; the chunk-score
    projections chunk_q, chunk_k have none.
    """

    def __init__(
        self,
        query_dim: int,
        memory_dim: int,
        feature_dim: int,
        heads: int = 4,
        topk: int = 4,
        chunk_size: int = 16,
        position_encoding: bool = True,
        init: str = "torch",
    ) -> None:
        super().__init__()
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        if feature_dim % heads:
            raise ValueError(f"feature_dim {feature_dim} not divisible by heads {heads}")
        self.query_dim, self.memory_dim, self.feature_dim = query_dim, memory_dim, feature_dim
        self.heads, self.topk, self.chunk_size = heads, topk, chunk_size
        self.position_encoding = position_encoding
        self.chunk_q = nn.Linear(query_dim, feature_dim, bias=False)
        self.chunk_k = nn.Linear(memory_dim, feature_dim, bias=False)
        self.q = nn.Linear(query_dim, feature_dim)
        self.k = nn.Linear(memory_dim, feature_dim)
        self.v = nn.Linear(memory_dim, feature_dim)
        self.o = nn.Linear(feature_dim, feature_dim)
        if init == "deepmind":
            for lin in (self.chunk_q, self.chunk_k, self.q, self.k, self.v, self.o):
                deepmind_init_(lin)
        pe = chunk_position_encoding(chunk_size, memory_dim) if position_encoding else torch.zeros(0)
        self.register_buffer("pe", pe, persistent=False)
        self.register_buffer("_zero", torch.zeros(()), persistent=False)

    def chunk_scores(self, queries: Tensor, keys: Tensor) -> Tensor:
        """[B,Q,E] x [B,M,D] -> [B,Q,M]: (W_q q).(W_k key)/sqrt(F), computed as (W_k^T W_q q).key."""
        if torch.is_grad_enabled():
            qk = (self.chunk_q(queries) * (1.0 / math.sqrt(self.feature_dim))) @ self.chunk_k.weight  # [B,Q,D]
        else:  # inference: one [D,E] matrix instead of two, rebuilt whenever either weight changes
            qk = F.linear(queries, self._fused_chunk_weight())
        # keys @ qk^T reads every key row contiguously (a matrix-vector product per row of B)
        return torch.bmm(keys.to(qk.dtype), qk.transpose(1, 2)).transpose(1, 2)

    def _fused_chunk_weight(self) -> Tensor:
        """W_k^T W_q / sqrt(F) as a [D,E] matrix, cached and keyed on `fused_weight_version()`."""
        key = self.fused_weight_version()
        if getattr(self, "_fused_key", None) != key:
            wq, wk = self.chunk_q.weight, self.chunk_k.weight
            self._fused = (wk.t() @ wq) * (1.0 / math.sqrt(self.feature_dim))
            self._fused_key = key
        return self._fused

    def fused_weight_version(self) -> tuple:
        """Identifies the current chunk-score weights: storage, in-place version counters (an optimizer step
        or `load_state_dict` bumps them), dtype and device. Cheap: no arithmetic."""
        wq, wk = self.chunk_q.weight, self.chunk_k.weight
        return (wq.data_ptr(), wq._version, wk.data_ptr(), wk._version, wq.dtype, wq.device)

    def project_keys(self, keys: Tensor) -> Tensor:
        """keys [...,D] -> [...,E] such that score = projected . query equals `chunk_scores` (inference only)."""
        return keys.to(self.chunk_q.weight.dtype) @ self._fused_chunk_weight()

    def forward(
        self,
        queries: Tensor,
        keys: Tensor,
        contents: Tensor,
        chunk_mask: Tensor | None = None,
        content_mask: Tensor | None = None,
    ) -> ReadResult:
        """queries [B,Q,E], keys [B,M,D], contents [B,M,C,D], chunk_mask [B,Q,M] or [B,M] bool (True = may
        be read), content_mask [B,M,C] bool (valid positions inside chunks; None = all valid).

        Returns output [B,Q,F] (zero where no chunk is readable) and trace {indices [B,Q,k], weights [B,Q,k]}.
        """
        B, Q, _ = queries.shape
        M = keys.shape[1]
        H, Fd = self.heads, self.feature_dim
        dh = Fd // H
        scores = self.chunk_scores(queries, keys)
        if chunk_mask is not None and chunk_mask.dim() == 2:
            chunk_mask = chunk_mask[:, None, :].expand(B, Q, M)
        k = min(self.topk, M)
        if k == 0:
            z = queries.new_zeros(B, Q, Fd)
            e = torch.zeros(B, Q, 0, dtype=torch.long, device=queries.device)
            return ReadResult(z, {"indices": e, "weights": z[..., :0]})
        # An unreadable chunk scores the dtype's lowest finite value (not -inf, so a row with nothing
        # readable keeps a finite softmax) and top-k picks it last.
        lowest = torch.finfo(scores.dtype).min
        masked = scores if chunk_mask is None else torch.where(chunk_mask, scores, lowest)
        top, idx = masked.topk(k, dim=-1)  # [B,Q,k]
        sel_valid = top > lowest
        # softmax over the k selected only; unreadable picks get exactly zero weight (all-zero rows if none)
        weights = torch.softmax(top, dim=-1) * sel_valid
        if content_mask is None:
            out = self._read_selected(queries, contents, idx, weights)
            return ReadResult(out, {"indices": idx, "weights": weights, "selected_valid": sel_valid})
        bidx = torch.arange(B, device=queries.device)[:, None, None]
        chunks = contents[bidx, idx]  # [B,Q,k,C,D] index gather, never [B,M,Q,C,D]
        if self.position_encoding:
            chunks = chunks + self.pe.to(chunks.dtype)
        # Per-head query moved into memory space: (W_k,h^T (W_q,h q + b_q,h)) / sqrt(dh). The key bias adds
        # b_k,h . q_h to every logit of a chunk, a constant the in-chunk softmax ignores.
        qh = self.q(queries).view(B, Q, H, dh)
        qk = torch.einsum("bqhe,hed->bqhd", qh, self.k.weight.view(H, dh, -1)) / math.sqrt(dh)
        logits = torch.einsum("bqhd,bqkcd->bqkhc", qk, chunks)
        cmask = content_mask[bidx, idx][:, :, :, None, :]  # [B,Q,k,1,C]
        attn = masked_softmax(logits, cmask)
        ctx = torch.einsum("bqkhc,bqkcd->bqkhd", attn, chunks)
        ctx = torch.einsum("bqk,bqkhd->bqhd", weights, ctx)  # chunk-weighted sum before projecting values
        # value and output biases count with the weight actually read (1, or 0 where nothing is readable)
        mass = torch.einsum("bqk,bqkhc->bqh", weights, attn)
        vals = torch.einsum("bqhd,hed->bqhe", ctx, self.v.weight.view(H, dh, -1)) + mass[..., None] * self.v.bias.view(
            H, dh)
        out = F.linear(vals.reshape(B, Q, Fd), self.o.weight) + weights.sum(-1, keepdim=True) * self.o.bias
        return ReadResult(out, {"indices": idx, "weights": weights, "selected_valid": sel_valid})

    def read_one(
        self, query: Tensor, projected_keys: Tensor, contents: Tensor, chunk_mask: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The rollout read: one query per row, no autograd, every in-chunk position valid. Same result as
        `forward(query[:, None], keys, contents, chunk_mask)` (up to float rounding) in fewer ops and without
        the chunk-score weights: at rollout batch sizes a step is bound by memory traffic and per-op
        dispatch, not arithmetic.

        query [B,E], projected_keys [B,M,E] = `project_keys(keys)`, contents [B,M,C,D], chunk_mask [B,M] bool.
        Returns output [B,F], indices [B,k], weights [B,k], selected_valid [B,k].
        """
        B, M = chunk_mask.shape
        k = min(self.topk, M)
        scores = torch.bmm(_as_dtype(projected_keys, query.dtype), query[:, :, None]).view(B, M)
        lowest = torch.finfo(scores.dtype).min  # as in `forward`: unreadable chunks are picked last
        top, idx = torch.where(chunk_mask, scores, lowest).topk(k, dim=-1)
        sel_valid = top > lowest
        weights = torch.softmax(top, dim=-1) * sel_valid
        return self._read_selected(query, contents, idx, weights), idx, weights, sel_valid

    def _read_selected(self, queries: Tensor, contents: Tensor, idx: Tensor, weights: Tensor) -> Tensor:
        """Attention inside the selected chunks (all positions valid) for n = B*Q query rows: queries [B,(Q,)E],
        idx and weights [B,(Q,)k] -> [B,(Q,)F].

        A few batched matmuls, no einsum dispatch; the chunk weights are folded into the in-chunk attention
        weights before the single attention-weighted sum over the k*C gathered steps, and values are
        projected after it. Every weight matrix is read once per step."""
        k, H, Fd = idx.shape[-1], self.heads, self.feature_dim
        dh = Fd // H
        B, M, C, D = contents.shape
        n = idx.numel() // k
        flat = idx.reshape(-1)
        if B > 1:  # row b's chunk m sits at b*M + m of the flattened contents
            flat = flat + (torch.arange(B, device=idx.device) * M).repeat_interleave(n // B * k)
        chunks = contents.reshape(B * M, C, D).index_select(0, flat)  # index gather, never [B,M,Q,C,D]
        if self.position_encoding:
            chunks += _as_dtype(self.pe, chunks.dtype)  # in place on the gathered copy
        chunks = chunks.view(n, k * C, D)
        qh = F.linear(queries, self.q.weight, self.q.bias).view(n, H, dh).transpose(0, 1)  # [H,n,dh]
        # [n,H,D] = W_k,h^T W_q,h q / sqrt(dh); beta=0 ignores the (0-dim) input, alpha applies the scale
        qk = torch.baddbmm(self._zero, qh, self.k.weight.view(H, dh, D), beta=0.0, alpha=1.0 / math.sqrt(dh))
        qk = qk.transpose(0, 1)
        logits = torch.bmm(qk, chunks.transpose(1, 2)).view(n, H, k, C)
        attn = torch.softmax(logits, dim=-1) * weights.reshape(n, 1, k, 1)  # in-chunk softmax x chunk weight
        ctx = torch.bmm(attn.view(n, H, k * C), chunks)  # [n,H,D]: chunk-weighted sum before projecting values
        # W_v,h @ ctx_h^T reads the weight rows contiguously; [H,dh,n] -> [n,H*dh] is a view when n == 1
        vals = torch.bmm(self.v.weight.view(H, dh, D), ctx.permute(1, 2, 0)).permute(2, 0, 1)
        # biases weighted by the chunk weight read (1, or 0 where nothing is readable: zero output)
        mass = weights.reshape(n, k).sum(-1, keepdim=True)
        vals = vals.reshape(n, Fd) + mass * self.v.bias
        out = torch.addmm(self.o.bias[None] * mass, vals, self.o.weight.t())
        return out.view(*queries.shape[:-1], Fd)


@MEMORIES.register("hcam")
class HCAM(Memory):
    """HCAM memory over a stream of D-vectors, batched over B environments.

    Args:
        dim: D, width of written vectors (even when `position_encoding`).
        chunk_size: C.
        topk: k chunks read per query.
        heads: attention heads inside chunks.
        max_chunks: ring-buffer capacity M in chunks (oldest chunk of the episode overwritten first).
        query_dim: E (default D).
        feature_dim: F, output width (default D).
        position_encoding: add the within-chunk sinusoid (DeepMind default True; SAT uses False).
        detach_writes: store detached vectors (stop-gradient; default True).
        init: "torch" or "deepmind" initialisation of the attention projections.

    API (state = `initial_state(B)`): `write(x[B,D], state, active[B]|None)`;
    `read(query[B,E] or [B,Q,E], state) -> ReadResult(out [B,(Q,)F], trace)`; `step(x, state, query=None)`
    = read then write; `sequence(xs[B,T,D], state, reset=None, queries=None)` = T steps at once.
    """

    def __init__(
        self,
        dim: int = 64,
        chunk_size: int = 16,
        topk: int = 4,
        heads: int = 4,
        max_chunks: int = 256,
        query_dim: int | None = None,
        feature_dim: int | None = None,
        position_encoding: bool = True,
        detach_writes: bool = True,
        init: str = "torch",
    ) -> None:
        super().__init__(detach_writes)
        self.dim, self.chunk_size, self.max_chunks = dim, chunk_size, max_chunks
        self.query_dim = query_dim or dim
        self.feature_dim = feature_dim or dim
        self.attention = HCAMAttention(
            self.query_dim, dim, self.feature_dim, heads, topk, chunk_size, position_encoding, init
        )
        M, C = max_chunks, chunk_size
        self._add_state("contents", (M, C, dim))
        self._add_state("keys", (M, dim))
        # keys mapped through the fused chunk-score weight, kept up to date by `write` so an inference read
        # scores the chunks without reading a weight matrix; valid while state.meta["projected_for"] names
        # the current weights (None: rebuilt in full at the next inference read). Zero rows stay consistent
        # with zero keys, so resets and row selection keep it valid.
        self._add_state("projected_keys", (M, self.query_dim))
        self._add_state("chunk_valid", (M,), torch.bool, False)
        self._add_state("chunk_ord", (M,), torch.long, -1)
        self._add_state("chunk_t", (M,), torch.long, -1)
        self._add_state("acc", (C, dim))
        self._add_state("n_acc", (), torch.long)
        self._add_state("n_chunks", (), torch.long)

    @property
    def _projected_for(self) -> tuple | None:
        return self.state.meta.get("projected_for")

    @_projected_for.setter
    def _projected_for(self, version: tuple | None) -> None:
        self.state.meta["projected_for"] = version

    # ------------------------------------------------------------------ streaming
    @uses_state
    def write(self, x: Tensor, state: TensorState, active: Tensor | None = None) -> dict[str, Tensor]:
        """Append one step x [B,D]; rows with active=False neither write nor advance."""
        C, M = self.chunk_size, self.max_chunks
        x = _as_dtype(self._store(x) if x.requires_grad else x, self.acc.dtype)
        rows = self._row_index()
        n = self.n_acc  # always in [0, C) between calls
        if active is None:  # the common rollout case: as few ops as possible, most steps complete no chunk
            self.acc[rows, n] = x
            completes = n == C - 1
            self.n_acc = n + 1
        else:
            self.acc[rows, n] = torch.where(active[:, None], x, self.acc[rows, n])
            completes = active & (n == C - 1)
            self.n_acc = n + active
        if bool(completes.any()):
            done = completes.nonzero().flatten()
            slot = self.n_chunks[done] % M
            chunk = self.acc[done]
            key = chunk.mean(dim=1)
            self.contents[done, slot] = chunk
            self.keys[done, slot] = key
            self._project_written_keys(done, slot, key)
            self.chunk_valid[done, slot] = True
            self.chunk_ord[done, slot] = self.n_chunks[done]
            self.chunk_t[done, slot] = self.n_chunks[done] * C  # episode step of the chunk's first entry
            self.acc[done] = 0.0
            self.n_acc[done] = 0
            self.n_chunks = self.n_chunks + completes
        return {"chunk_written": completes}

    @property
    def t(self) -> Tensor:
        """[B] steps written in each row's current episode (every step fills one accumulator slot)."""
        return self.n_chunks * self.chunk_size + self.n_acc

    def _row_index(self) -> Tensor:
        """arange(B) on the state's device, cached (batch size and device change only on prune/resize/to)."""
        rows = getattr(self, "_rows_cache", None)
        if rows is None or rows.numel() != self.batch_size or rows.device != self.acc.device:
            rows = self._rows_cache = torch.arange(self.batch_size, device=self.acc.device)
        return rows

    def _project_written_keys(self, rows: Tensor, slots: Tensor, keys: Tensor) -> None:
        """Keep `projected_keys` in step with a chunk write, or mark it stale if the weights changed."""
        if self._projected_for is None:
            return
        if self._projected_for != self.attention.fused_weight_version():
            self._projected_for = None
            return
        with torch.no_grad():
            self.projected_keys[rows, slots] = self.attention.project_keys(keys).to(self.projected_keys.dtype)

    def _current_projected_keys(self) -> Tensor:
        """`projected_keys`, rebuilt from all keys when the weights changed since it was last kept up to date."""
        version = self.attention.fused_weight_version()
        if self._projected_for != version:
            self.projected_keys = self.attention.project_keys(self.keys).to(self.projected_keys.dtype)
            self._projected_for = version
        return self.projected_keys

    @uses_state
    def read(self, query: Tensor, state: TensorState) -> ReadResult:
        """query [B,E] or [B,Q,E] over the completed chunks of each row's current episode."""
        if query.dim() == 2 and not torch.is_grad_enabled():
            # Rollouts: scores through the projected keys (same as through the weights up to float rounding,
            # one weight matrix fewer per step) and the single-query read.
            out, idx, weights, sel_valid = self.attention.read_one(
                query, self._current_projected_keys(), self.contents, self.chunk_valid
            )
            trace = {"indices": idx, "weights": weights, "selected_valid": sel_valid}
            trace["chunk_start_t"] = self.chunk_t.gather(1, idx)
            trace["occupancy"] = self.chunk_valid.sum(1)
            return ReadResult(out, trace)
        squeeze = query.dim() == 2
        q = query[:, None] if squeeze else query
        r = self.attention(q, self.keys, self.contents, self.chunk_valid)
        tr = dict(r.trace)
        idx = tr["indices"]
        tr["chunk_start_t"] = self.chunk_t.gather(1, idx.reshape(idx.shape[0], -1)).view_as(idx)
        tr["occupancy"] = self.chunk_valid.sum(1)
        out = r.output[:, 0] if squeeze else r.output
        if squeeze:
            tr = {k: v[:, 0] if torch.is_tensor(v) and v.dim() == 3 else v for k, v in tr.items()}
        return ReadResult(out, tr)

    @uses_state
    def step(self, x: Tensor, state: TensorState, query: Tensor | None = None,
             active: Tensor | None = None) -> ReadResult:
        """Read the completed chunks with `query` (default x), then write x."""
        r = self.read(x if query is None else query, state)
        r.trace.update(self.write(x, state, active))
        return r

    # ------------------------------------------------------------------ sequence mode
    def timeline(self, T: int, reset: Tensor | None) -> dict[str, Tensor]:
        """Per (b, t) episode bookkeeping for a window of T steps starting from the current state."""
        B, C, dev = self.batch_size, self.chunk_size, self.device
        tt = torch.arange(T, device=dev).expand(B, T)
        if reset is None:
            reset = torch.zeros(B, T, dtype=torch.bool, device=dev)
        ep_start = torch.where(reset.to(dev), tt, torch.full_like(tt, -1)).cummax(dim=1).values
        carried = ep_start < 0
        n0 = self.n_acc[:, None]
        i_t = torch.where(carried, n0 + tt, tt - ep_start)  # index in the chunk phase
        return {"tt": tt, "ep_start": ep_start, "carried": carried, "i_t": i_t, "pos": i_t % C, "reset": reset}

    def stream(self, xs: Tensor) -> Tensor:
        """cat(accumulator right-aligned in C slots, xs) -> [B, C+T, D]; xs[t] sits at index C+t."""
        C = self.chunk_size
        j = torch.arange(C, device=xs.device)
        src = j[None] - (C - self.n_acc[:, None])  # [B,C]
        ok = src >= 0
        acc = self.acc.gather(1, src.clamp(min=0)[..., None].expand(-1, -1, self.dim))
        acc = acc * ok[..., None]
        return torch.cat([acc.to(xs.dtype), xs], dim=1)

    @uses_state
    def sequence(self, xs: Tensor, state: TensorState, reset: Tensor | None = None,
                 queries: Tensor | None = None) -> ReadResult:
        """Process a window: xs [B,T,D] written, queries [B,T,E] or [B,T,Q,E] (default xs) read,
        reset [B,T] bool (episode starts at t: memory cleared before step t). Equals T calls of
        `step` (with `state.reset(reset[:, t])` before each); updates the state the same way. A real
        parallel mode: every read of the window runs as one masked attention call."""
        B, T, _D = xs.shape
        C, M = self.chunk_size, self.max_chunks
        if queries is None:
            queries = xs
        squeeze = queries.dim() == 3
        q = queries[:, :, None] if squeeze else queries
        Q = q.shape[2]
        tl = self.timeline(T, reset)
        tt, ep_start, carried, i_t = tl["tt"], tl["ep_start"], tl["carried"], tl["i_t"]
        S = self.stream(self._store(xs))
        completes = (i_t % C) == C - 1
        windows = S.unfold(1, C, 1)[:, 1:].permute(0, 1, 3, 2)  # [B,T,C,D]: S[t+1 .. t+C]
        cum = completes.long().cumsum(1)
        cum_before_ep = torch.where(
            carried, torch.zeros_like(cum), (cum - completes.long()).gather(1, ep_start.clamp(min=0))
        )
        in_ep = cum - cum_before_ep  # completions in this episode up to and including t
        base = torch.where(carried, self.n_chunks[:, None], torch.zeros_like(cum))
        count_before = base + in_ep - completes.long()
        # compact the new chunks of the window
        Mn = max(1, (T + C - 1) // C)
        order = torch.where(completes, tt, tt + T).argsort(dim=1)[:, :Mn]
        sel_valid = completes.gather(1, order)
        bidx = torch.arange(B, device=xs.device)[:, None]
        new_contents = windows[bidx, order]  # [B,Mn,C,D]
        new_keys = new_contents.mean(dim=2)
        new_ord = (base + in_ep - 1).gather(1, order)
        new_ep = ep_start.gather(1, order)
        ep_t = torch.where(carried, self.t[:, None] + tt, tt - ep_start)
        new_t = ep_t.gather(1, order) - (C - 1)
        # masks [B,T,M+Mn]
        lo = (count_before - M)[..., None]
        m_old = self.chunk_valid[:, None, :] & carried[..., None] & (self.chunk_ord[:, None, :] >= lo)
        m_new = (
            sel_valid[:, None, :]
            & (order[:, None, :] < tt[..., None])
            & (new_ep[:, None, :] == ep_start[..., None])
            & (new_ord[:, None, :] >= lo)
        )
        keys = torch.cat([self.keys.to(xs.dtype), new_keys], 1)
        contents = torch.cat([self.contents.to(xs.dtype), new_contents], 1)
        mask = torch.cat([m_old, m_new], -1)
        mask_q = mask[:, :, None].expand(B, T, Q, -1).reshape(B, T * Q, -1)
        r = self.attention(q.reshape(B, T * Q, -1), keys, contents, mask_q)
        idx = r.trace["indices"].view(B, T, Q, -1)
        all_t = torch.cat([self.chunk_t, new_t], 1)
        trace: dict[str, Any] = {
            "indices": idx,
            "weights": r.trace["weights"].view(B, T, Q, -1),
            "selected_valid": r.trace["selected_valid"].view(B, T, Q, -1),
            "chunk_start_t": all_t[bidx[..., None], idx.view(B, T * Q, -1)].view(B, T, Q, -1),
            "occupancy": mask.sum(-1),
            "chunk_written": completes,
        }
        out = r.output.view(B, T, Q, -1)
        if squeeze:
            out = out[:, :, 0]
            trace = {k: (v[:, :, 0] if v.dim() == 4 else v) for k, v in trace.items()}
        self._commit(tl, S, completes, order, sel_valid, new_contents, new_keys, new_ord, new_ep, new_t, base, in_ep)
        return ReadResult(out, trace)

    def _commit(
        self,
        tl: dict[str, Tensor],
        S: Tensor,
        completes: Tensor,
        order: Tensor,
        sel_valid: Tensor,
        new_contents: Tensor,
        new_keys: Tensor,
        new_ord: Tensor,
        new_ep: Tensor,
        new_t: Tensor,
        base: Tensor,
        in_ep: Tensor,
    ) -> None:
        B, T = completes.shape
        C, M = self.chunk_size, self.max_chunks
        ep_last = tl["ep_start"][:, -1]
        self._reset_rows(tl["reset"].any(1))
        final_count = base[:, -1] + in_ep[:, -1]
        keep = sel_valid & (new_ep == ep_last[:, None]) & (new_ord >= (final_count - M)[:, None])
        slot = torch.where(keep, new_ord % M, torch.full_like(new_ord, M))
        bidx = torch.arange(B, device=S.device)[:, None]

        def put(buf: Tensor, val: Tensor) -> Tensor:
            ext = torch.cat([buf, buf[:, :1]], 1)
            ext[bidx, slot] = val.to(buf.dtype)
            return ext[:, :M].contiguous()  # contiguous state: rollout reads gather from it without copying

        self.contents = put(self.contents, new_contents)
        self.keys = put(self.keys, new_keys)
        self.chunk_valid = put(self.chunk_valid, torch.ones_like(sel_valid))
        self.chunk_ord = put(self.chunk_ord, new_ord)
        self.chunk_t = put(self.chunk_t, new_t)
        self._projected_for = None  # the window wrote keys without projecting them
        n_final = (tl["i_t"][:, -1] + 1) % C
        j = torch.arange(C, device=S.device)
        src = (C + T - n_final)[:, None] + j[None]
        acc = S.gather(1, src.clamp(max=C + T - 1)[..., None].expand(-1, -1, self.dim))
        self.acc = (acc * (j[None] < n_final[:, None])[..., None]).to(self.acc.dtype)
        self.n_acc = n_final
        self.n_chunks = final_count


class _LocalAttention(nn.Module):
    """Multi-head attention of each step over a window of keys [B,T,W,D] with a validity mask [B,T,W]."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.o = nn.Linear(dim, dim)

    def forward(self, x: Tensor, window: Tensor, valid: Tensor) -> Tensor:
        B, T, W, D = window.shape
        H = self.heads
        q = self.q(x).view(B, T, H, 1, D // H)
        k, v = self.kv(window).view(B, T, W, 2, H, D // H).permute(3, 0, 1, 4, 2, 5)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=valid[:, :, None, None, :])
        return self.o(out.reshape(B, T, D))

    def one(self, x: Tensor, window: Tensor, valid: Tensor) -> Tensor:
        """The rollout form of `forward` for one step per row: x [B,D], window [B,W,D], valid [B,W] -> [B,D].

        Projections on the query side (as `HCAMAttention`): logits (W_k,h^T q_h) . w_j (the key bias adds a
        per-head constant the softmax ignores) and values W_v,h (sum_j a_j w_j) + b_v,h (the weights sum to
        1: x itself is always valid), so the window is never projected: O(W*D*H) instead of O(W*D^2)."""
        B, _W, D = window.shape
        H = self.heads
        dh = D // H
        wk, wv = self.kv.weight[:D].view(H, dh, D), self.kv.weight[D:].view(H, dh, D)
        qh = self.q(x).view(B, H, dh).transpose(0, 1)  # [H,B,dh]
        qk = torch.bmm(qh, wk).transpose(0, 1) * (1.0 / math.sqrt(dh))  # [B,H,D]
        logits = torch.bmm(qk, window.transpose(1, 2))  # [B,H,W]
        attn = torch.softmax(logits.masked_fill(~valid[:, None, :], float("-inf")), dim=-1)
        ctx = torch.bmm(attn, window)  # [B,H,D]
        vals = torch.bmm(wv, ctx.permute(1, 2, 0)).permute(2, 0, 1).reshape(B, D) + self.kv.bias[D:]
        return self.o(vals)


@MEMORIES.register("hcam_layer")
class HCAMLayer(Memory):
    """HCAM transformer layer (pre-LayerNorm, as SAT's `HCAMLayer`):

        x <- x + LocalSelfAttn(LN x)     over the current, incomplete chunk (this layer's accumulator) + x
        x <- x + HCAM(LN x)              over the completed chunks of this layer's memory
        x <- x + MLP(LN x)

    The layer stores its own input x (the residual stream entering the layer) in its memory. A policy
    stacks several layers (the paper uses four); each keeps its own memory (its own state).
    `step(x[B,D], state) -> ReadResult(out[B,D], trace)`; `sequence(xs[B,T,D], state, reset[B,T]|None)`.

    `step` is the rollout path: the local attention reads the accumulator and x ([B, C+1, D]), the HCAM
    read scores the M chunk summaries and attends inside k chunks, and the write appends x; nothing else
    depends on how full the memory is. `sequence` is the training path (one masked attention per window).
    """

    def __init__(
        self,
        dim: int = 64,
        heads: int = 4,
        topk: int = 4,
        chunk_size: int = 16,
        max_chunks: int = 256,
        mlp_ratio: int = 4,
        position_encoding: bool = True,
        detach_writes: bool = True,
        init: str = "torch",
    ) -> None:
        super().__init__(detach_writes)
        self.memory = HCAM(
            dim, chunk_size, topk, heads, max_chunks,
            position_encoding=position_encoding, detach_writes=detach_writes, init=init,
        )  # fmt: skip
        self.ln1, self.ln2, self.ln3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.local = _LocalAttention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> TensorState:
        """The layer's state is its HCAM memory's."""
        return self.memory.initial_state(batch_size, self.device if device is None else device)

    def _local(self, xs: Tensor, tl: dict[str, Tensor]) -> Tensor:
        C = self.memory.chunk_size
        S = self.ln1(self.memory.stream(xs))
        windows = S.unfold(1, C, 1)[:, 1:].permute(0, 1, 3, 2)  # window of t ends with x_t
        j = torch.arange(C, device=xs.device)
        valid = j[None, None, :] >= (C - 1 - tl["pos"])[..., None]
        return self.local(S[:, C:], windows, valid)

    def write(self, x: Tensor, state: TensorState, active: Tensor | None = None) -> dict[str, Tensor]:
        return self.memory.write(x, state, active)

    def read(self, query: Tensor, state: TensorState) -> ReadResult:
        return self.memory.read(query, state)

    def step(self, x: Tensor, state: TensorState) -> ReadResult:
        """One step for every row: local attention over [accumulator; x], HCAM read, write x, MLP."""
        C = self.memory.chunk_size
        window = torch.cat([state.acc.to(x.dtype), x[:, None]], dim=1)  # [B, C+1, D]; x sits at index C
        slots = self._slots(C + 1, x.device)
        valid = (slots[None] < state.n_acc[:, None]) | (slots[None] == C)  # the filled accumulator + x
        h = self.ln1(window)
        x1 = x + self.local.one(h[:, C], h, valid)
        r = self.memory.step(x, state, query=self.ln2(x1))
        x2 = x1 + r.output
        return ReadResult(x2 + self.mlp(self.ln3(x2)), r.trace)

    def _slots(self, n: int, device: torch.device) -> Tensor:
        """arange(n) on `device`, cached: the hot path creates no tensor per step."""
        cache = self.__dict__.setdefault("_slot_cache", {})
        key = (n, device)
        if key not in cache:
            cache[key] = torch.arange(n, device=device)
        return cache[key]

    def sequence(self, xs: Tensor, state: TensorState, reset: Tensor | None = None) -> ReadResult:
        with self.memory.bound(state):
            tl = self.memory.timeline(xs.shape[1], reset)
            x1 = xs + self._local(xs, tl)
        r = self.memory.sequence(xs, state, reset, queries=self.ln2(x1))
        x2 = x1 + r.output
        x3 = x2 + self.mlp(self.ln3(x2))
        return ReadResult(x3, r.trace)
