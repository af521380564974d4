"""PCMB: MemoryVLA's perceptual-cognitive memory bank (Shi et al., arXiv 2508.19236), batched.

Two banks (perceptual tokens [N, D] per step, one cognitive token [1, Dc] per step), each of capacity L
(16), stored as preallocated tensors `[B, L+1, N, D]` (one spare slot for the entry that triggers
consolidation) with an occupancy count and per-entry absolute timesteps. Per bank and step:

* **read**: the current tokens query the flattened bank [L*N, D] with `retrieval_layers` (2) post-LN
  cross-attention blocks; a sinusoidal timestep encoding (cosine half first, max period 1e4, then
  Linear-SiLU-Linear) of each entry's timestep is added to the **keys only**; an empty bank returns the
  current tokens (openvla branch);
* **fuse**: `g = sigmoid(W[x; H])` (init N(0, 1e-3), so g ~ 0.5), `fused = g*x + (1-g)*H`
  (`fusion="add"`: (x+H)/2);
* **write**: append the raw current tokens (`update_fused=False`, openvla) or the fused ones; when the bank
  holds L+1 entries, consolidate: `"merge"` averages the most similar *adjacent* pair (similarity = mean
  over token positions of the cosine between corresponding tokens; the merged entry keeps the first
  timestep), `"fifo"` drops the oldest entry.

Stop-gradient: entries are stored detached (`detach_writes=True`, as MemoryVLA): gradients flow only
through the current step's retrieval and fusion. `step` = read, fuse, write; `sequence` runs the same
step over a window (consolidation makes the bank state-dependent: inherently sequential, so the window is
scanned step by step, vectorised over environments; the tests check it against an independent reference).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from embodied.memory import MEMORIES
from embodied.memory.base import Memory, ReadResult, masked_softmax, scan, uses_state
from embodied.memory.state import TensorState


def timestep_sinusoid(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """MemoryVLA/DiT timestep embedding: cosine half first, then sine."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    ang = t.float()[..., None] * freqs
    emb = torch.cat([torch.cos(ang), torch.sin(ang)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[..., :1])], dim=-1)
    return emb


class CrossBlock(nn.Module):
    """Post-LN cross-attention block: x = LN(q + Attn(q, mem+PE, mem)); out = LN(x + FFN(x))."""

    def __init__(self, dim: int, heads: int, ffn_ratio: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_ratio * dim), nn.GELU(), nn.Linear(ffn_ratio * dim, dim))

    def forward(self, q: Tensor, key: Tensor, value: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        B, N, D = q.shape
        H, dh = self.heads, D // self.heads
        qh = self.q(q).view(B, N, H, dh).transpose(1, 2)
        kh = self.k(key).view(B, -1, H, dh).transpose(1, 2)
        vh = self.v(value).view(B, -1, H, dh).transpose(1, 2)
        att = masked_softmax(qh @ kh.transpose(-1, -2) / math.sqrt(dh), mask[:, None, None, :])
        x = self.ln1(q + self.o((att @ vh).transpose(1, 2).reshape(B, N, D)))
        return self.ln2(x + self.ffn(x)), att.mean(1)

    def forward_bank(self, q: Tensor, mem: Tensor, pe: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Same result as `forward(q, key=mem + pe per entry, value=mem, mask)` without projecting the bank.

        q [B,N,D], mem [B,L,Nm,D] (entries x tokens), pe [B,L,D] (added to the keys of every token of an
        entry), mask [B,L*Nm]. Logits use (W_k,h^T W_q,h q) . key (the key bias adds a per-query constant,
        which softmax ignores); values are projected after the attention-weighted sum (W_v (sum a m) + b_v,
        exact since the weights of a row with any valid entry sum to 1; fully masked rows are discarded by
        the caller). Chosen when it needs fewer multiply-adds than projecting the L*Nm bank tokens."""
        B, N, D = q.shape
        L, Nm = mem.shape[1], mem.shape[2]
        H, dh = self.heads, D // self.heads
        S = L * Nm
        if 2 * N * D * D + 2 * H * N * S * D >= 2 * S * D * D + 2 * N * S * D:  # bank-side is cheaper
            key = (mem + pe[:, :, None]).reshape(B, S, D)
            return self.forward(q, key, mem.reshape(B, S, D), mask)
        flat = mem.reshape(B, S, D)
        qh = self.q(q).view(B, N, H, dh).transpose(1, 2)  # [B,H,N,dh]
        qk = torch.matmul(qh, self.k.weight.view(H, dh, D)) * (1.0 / math.sqrt(dh))  # [B,H,N,D]
        logits = torch.matmul(qk, flat[:, None].transpose(-1, -2)).view(B, H, N, L, Nm)
        logits = (logits + torch.matmul(qk, pe[:, None].transpose(-1, -2))[..., None]).view(B, H, N, S)
        att = masked_softmax(logits, mask[:, None, None, :])
        ctx = torch.matmul(att, flat[:, None])  # [B,H,N,D]
        vh = torch.matmul(ctx, self.v.weight.view(H, dh, D).transpose(1, 2)) + self.v.bias.view(H, 1, dh)
        x = self.ln1(q + self.o(vh.transpose(1, 2).reshape(B, N, D)))
        return self.ln2(x + self.ffn(x)), att.mean(1)


class BankReader(nn.Module):
    """Retrieval blocks + timestep encoder + gate fusion for one bank."""

    def __init__(self, dim: int, heads: int, layers: int, ffn_ratio: int, fusion: str) -> None:
        super().__init__()
        self.dim, self.fusion = dim, fusion
        self.freq_dim = max(2, dim // 4)
        self.t_mlp = nn.Sequential(nn.Linear(self.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.blocks = nn.ModuleList(CrossBlock(dim, heads, ffn_ratio) for _ in range(layers))
        self.gate = nn.Linear(2 * dim, dim)
        nn.init.normal_(self.gate.weight, std=1e-3)
        nn.init.normal_(self.gate.bias, std=1e-3)

    def forward(self, x: Tensor, mem: Tensor, mem_t: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x [B,N,D], mem [B,L,N,D], mem_t [B,L], valid [B,L] -> fused [B,N,D], retrieved, attn [B,N,L*N]."""
        B, L, N, _ = mem.shape
        pe = self.t_mlp(timestep_sinusoid(mem_t, self.freq_dim))  # [B,L,D], added to keys only
        tok_valid = valid[:, :, None].expand(B, L, N).reshape(B, L * N)
        h, att = x, x.new_zeros(B, x.shape[1], L * N)
        for blk in self.blocks:
            h, att = blk.forward_bank(h, mem, pe, tok_valid)
        empty = ~valid.any(1)
        h = torch.where(empty[:, None, None], x, h)
        if self.fusion == "gate":
            g = torch.sigmoid(self.gate(torch.cat([x, h], dim=-1)))
            fused = g * x + (1 - g) * h
        else:
            fused = (x + h) / 2
        return fused, h, att


def _consolidate(mem: Tensor, mem_t: Tensor, full: Tensor, rule: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Reduce rows with L+1 entries (full [B]) to L entries. Returns mem, mem_t, index [B], similarity [B]."""
    B, L1 = mem.shape[:2]
    L = L1 - 1
    none = torch.full((B,), -1, dtype=torch.long, device=mem.device)
    if not bool(full.any()):  # nothing to consolidate this step
        return mem, mem_t, none, torch.zeros(B, device=mem.device)
    j = torch.arange(L, device=mem.device)
    if rule == "merge":
        a, b = mem[:, :-1], mem[:, 1:]
        sim = torch.cosine_similarity(a, b, dim=-1).mean(-1)  # [B,L] adjacent pairs, mean over tokens
        best, i = sim.max(1)
    else:  # fifo: drop the oldest
        i = torch.full((B,), -1, dtype=torch.long, device=mem.device)
        best = torch.zeros(B, device=mem.device)
    src = j[None] + (j[None] > i[:, None]).long()  # skip entry i+1 (merge) or entry 0 (fifo)
    src = torch.cat([src, torch.full((B, 1), L, device=mem.device, dtype=torch.long)], 1)
    shp = src.view(B, L1, *([1] * (mem.dim() - 2))).expand_as(mem)
    new = mem.gather(1, shp)
    new_t = mem_t.gather(1, src)
    if rule == "merge":
        rows = torch.arange(B, device=mem.device)
        merged = (mem[rows, i] + mem[rows, i + 1]) / 2
        new[rows, i] = merged  # merged entry keeps the first timestep
    new[:, L] = 0
    new_t[:, L] = -1
    if bool(full.all()):
        return new, new_t, i, best
    keep = full.view(B, *([1] * (mem.dim() - 1)))
    return (
        torch.where(keep, new, mem),
        torch.where(full[:, None], new_t, mem_t),
        torch.where(full, i, torch.full_like(i, -1)),
        torch.where(full, best, torch.zeros_like(best)),
    )


@MEMORIES.register("pcmb")
class PCMB(Memory):
    """Perceptual-cognitive memory bank.

    Args:
        dim: D, perceptual token width.  cog_dim: Dc, cognitive token width (default D).
        n_tokens: N perceptual tokens per step.  capacity: L entries per bank (16).
        heads: retrieval attention heads (openvla 1, dexbotic 4).  retrieval_layers: cross-attention blocks (2).
        consolidation: "merge" (merge most similar adjacent pair) or "fifo" (drop oldest).
        fusion: "gate" or "add".  update_fused: write the fused tokens instead of the raw ones.

    API (state = `initial_state(B)`): `read(p[B,N,D], c[B,Dc], state) -> ReadResult(output=(fused_p
    [B,N,D], fused_c [B,Dc]), trace)`; `write(p, c, state, t|None, active|None) -> trace`;
    `step(p, c, state, t=None, active=None)` = read+write; `sequence(p[B,T,N,D], c[B,T,Dc], state, reset, t)`.
    """

    def __init__(
        self,
        dim: int = 64,
        cog_dim: int | None = None,
        n_tokens: int = 16,
        capacity: int = 16,
        heads: int = 1,
        retrieval_layers: int = 2,
        ffn_ratio: int = 4,
        consolidation: str = "merge",
        fusion: str = "gate",
        update_fused: bool = False,
        detach_writes: bool = True,
    ) -> None:
        super().__init__(detach_writes)
        if consolidation not in ("merge", "fifo"):
            raise ValueError(f"consolidation must be 'merge' or 'fifo', got {consolidation!r}")
        if fusion not in ("gate", "add"):
            raise ValueError(f"fusion must be 'gate' or 'add', got {fusion!r}")
        self.dim, self.cog_dim, self.n_tokens, self.capacity = dim, cog_dim or dim, n_tokens, capacity
        self.consolidation, self.update_fused = consolidation, update_fused
        self.per_reader = BankReader(dim, heads, retrieval_layers, ffn_ratio, fusion)
        self.cog_reader = BankReader(self.cog_dim, heads, retrieval_layers, ffn_ratio, fusion)
        L1 = capacity + 1
        self._add_state("per_mem", (L1, n_tokens, dim))
        self._add_state("per_t", (L1,), torch.long, -1)
        self._add_state("cog_mem", (L1, 1, self.cog_dim))
        self._add_state("cog_t", (L1,), torch.long, -1)
        self._add_state("count", (), torch.long)
        self._add_state("t", (), torch.long)

    @uses_state
    def read(self, p: Tensor, c: Tensor, state: TensorState) -> ReadResult:
        L = self.capacity
        c3 = c[:, None] if c.dim() == 2 else c
        valid = torch.arange(L, device=p.device)[None] < self.count[:, None]
        fp, _hp, ap = self.per_reader(p, self.per_mem[:, :L], self.per_t[:, :L], valid)
        fc, _hc, ac = self.cog_reader(c3, self.cog_mem[:, :L], self.cog_t[:, :L], valid)
        B, N = p.shape[:2]
        trace = {
            "per_entry_weights": ap.view(B, N, L, N).sum(-1).mean(1),  # [B,L] attention mass per entry
            "cog_entry_weights": ac.view(B, 1, L, 1).sum(-1).mean(1),
            "per_attention": ap,
            "per_t": self.per_t[:, :L].clone(),
            "cog_t": self.cog_t[:, :L].clone(),
            "occupancy": self.count.clone(),
        }
        return ReadResult((fp, fc[:, 0] if c.dim() == 2 else fc), trace)

    @uses_state
    def write(self, p: Tensor, c: Tensor, state: TensorState, t: Tensor | None = None,
              active: Tensor | None = None) -> dict[str, Tensor]:
        B = self.batch_size
        c3 = c[:, None] if c.dim() == 2 else c
        if active is None:
            active = torch.ones(B, dtype=torch.bool, device=p.device)
        t = self.t if t is None else t.long()
        rows = torch.arange(B, device=p.device)
        n = self.count
        per_mem, cog_mem = self.per_mem.clone(), self.cog_mem.clone()
        per_t, cog_t = self.per_t.clone(), self.cog_t.clone()
        per_mem[rows, n] = torch.where(active[:, None, None], self._store(p), per_mem[rows, n])
        cog_mem[rows, n] = torch.where(active[:, None, None], self._store(c3), cog_mem[rows, n])
        per_t[rows, n] = torch.where(active, t, per_t[rows, n])
        cog_t[rows, n] = torch.where(active, t, cog_t[rows, n])
        count = n + active.long()
        full = count > self.capacity
        self.per_mem, self.per_t, pi, ps = _consolidate(per_mem, per_t, full, self.consolidation)
        self.cog_mem, self.cog_t, ci, cs = _consolidate(cog_mem, cog_t, full, self.consolidation)
        self.count = count - full.long()
        self.t = self.t + active.long()
        return {"per_merge_index": pi, "per_merge_similarity": ps, "cog_merge_index": ci, "cog_merge_similarity": cs}

    @uses_state
    def step(self, p: Tensor, c: Tensor, state: TensorState, t: Tensor | None = None,
             active: Tensor | None = None) -> ReadResult:
        r = self.read(p, c, state)
        if self.update_fused:
            w = self.write(r.output[0], r.output[1], state, t, active)
        else:
            w = self.write(p, c, state, t, active)
        r.trace.update(w)
        return r

    @uses_state
    def sequence(self, p: Tensor, c: Tensor, state: TensorState, reset: Tensor | None = None,
                 t: Tensor | None = None) -> ReadResult:
        """Scan the window step by step (consolidation is sequential), vectorised over environments.
        `t` [B, T]: each frame's timestep in its episode (a training window that starts mid-episode,
        or a group of frames with gaps); without it the bank counts steps from its state."""

        def one(i: int) -> ReadResult:
            if reset is not None:
                state.reset(reset[:, i])
            return self.step(p[:, i], c[:, i], state, t=None if t is None else t[:, i])

        return scan(one, p.shape[1])
