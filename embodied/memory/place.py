"""place: place-centric episodic memory after the Spatially-Aware Transformer (Cho et al., arXiv 2402.15160).

* Each written entry = feature + [sinusoidal **time embedding** (absolute episode step) ; sinusoidal
  **place embedding** (place id, SAT's `sine1d`)]: the two encodings occupy disjoint halves of the width
  (SAT sums them on the same sinusoid basis, where (t=3, p=5) and (t=5, p=3) encode identically).
* **Place-grouped chunks (SAT-PM-PH)**: at read time the stored entries are ordered by (place, write order),
  each place padded to a multiple of the chunk size C with masked slots, so every chunk holds a single
  place; HCAM (`HCAMAttention`, no in-chunk position encoding, masked-mean chunk keys) selects the top-k
  chunks, i.e. places, and attends inside them.
* **Eviction** when the `capacity` is full (SAT/AMA names): `"fifo"` drops the oldest entry (keeps the
  newest), `"lifo"` keeps the first `capacity` entries (new ones are dropped), `"lvfo"` drops the earliest
  entry of the place with the fewest entries in memory, `"mvfo"` the earliest entry of the place with the most.
* Stop-gradient: SAT removed the detach; here `detach_writes=True` by default, set False for SAT behaviour.
* Inherently sequential (eviction depends on what is stored), so `sequence` scans `step`; the tests check
  it against an independent per-environment reference of the eviction rules and the read.
"""

from __future__ import annotations

import torch
from torch import Tensor

from embodied.memory import MEMORIES
from embodied.memory.base import Memory, ReadResult, scan, sinusoid, uses_state
from embodied.memory.hcam import HCAMAttention
from embodied.memory.state import TensorState

EVICTIONS = ("fifo", "lifo", "lvfo", "mvfo")


@MEMORIES.register("place")
class PlaceMemory(Memory):
    """Args: dim D (even), capacity N entries, num_places P, chunk_size C, topk, heads, eviction.

    API (state = `initial_state(B)`): `write(x[B,D], place[B] long, state, active[B]|None) -> trace`;
    `read(query[B,D] or [B,Q,D], state) -> ReadResult`; `step(x, place, state, query=None)` = read then
    write; `sequence(xs[B,T,D], places[B,T], state, reset[B,T]|None)`.
    """

    def __init__(
        self,
        dim: int = 64,
        capacity: int = 64,
        num_places: int = 16,
        chunk_size: int = 4,
        topk: int = 2,
        heads: int = 2,
        eviction: str = "fifo",
        detach_writes: bool = True,
    ) -> None:
        super().__init__(detach_writes)
        if dim % 2:
            raise ValueError(f"place: dim must be even (sinusoidal encodings), got {dim}")
        if eviction not in EVICTIONS:
            raise ValueError(f"eviction must be one of {EVICTIONS}, got {eviction!r}")
        self.dim, self.capacity, self.num_places, self.C, self.eviction = (
            dim,
            capacity,
            num_places,
            chunk_size,
            eviction,
        )
        self.attention = HCAMAttention(dim, dim, dim, heads, topk, chunk_size, position_encoding=False)
        N = capacity
        self._add_state("mem", (N, dim))
        self._add_state("place", (N,), torch.long, -1)
        self._add_state("mem_t", (N,), torch.long, -1)
        self._add_state("ord", (N,), torch.long, -1)
        self._add_state("valid", (N,), torch.bool, False)
        self._add_state("n_written", (), torch.long)
        self._add_state("t", (), torch.long)

    def encoding(self, place: Tensor, t: Tensor) -> Tensor:
        """[time encoding ; place encoding] [..., D]: separate halves of the width, so no (t, p) pair
        encodes like another (a sum on one basis would make (3, 5) and (5, 3) equal)."""
        dt = 2 * (self.dim // 4)
        return torch.cat([sinusoid(t, dt), sinusoid(place, self.dim - dt)], dim=-1)

    def embed(self, x: Tensor, place: Tensor, t: Tensor) -> Tensor:
        return x + self.encoding(place, t).to(x.dtype)

    @uses_state
    def write(self, x: Tensor, place: Tensor, state: TensorState, active: Tensor | None = None) -> dict[str, Tensor]:
        B, _N, P = self.batch_size, self.capacity, self.num_places
        rows = torch.arange(B, device=x.device)
        if active is None:
            active = torch.ones(B, dtype=torch.bool, device=x.device)
        place = place.long().clamp(0, P - 1)
        big = torch.iinfo(torch.long).max
        full = self.valid.all(1)
        free = (~self.valid).long().argmax(1)
        if self.eviction == "fifo":
            victim = torch.where(self.valid, self.ord, big).argmin(1)
        elif self.eviction == "lifo":
            victim = torch.full_like(free, -1)
        else:
            counts = torch.zeros(B, P, dtype=torch.long, device=x.device)
            counts.scatter_add_(1, self.place.clamp(min=0), self.valid.long())
            if self.eviction == "lvfo":
                target = torch.where(counts > 0, counts, big).argmin(1)
            else:
                target = counts.argmax(1)
            cand = self.valid & (self.place == target[:, None])
            victim = torch.where(cand, self.ord, big).argmin(1)
        slot = torch.where(full, victim, free)
        do = active & (slot >= 0)
        s = slot.clamp(min=0)
        e = self._store(self.embed(x, place, self.t))
        mem = self.mem.clone()
        mem[rows, s] = torch.where(do[:, None], e, mem[rows, s])
        self.mem = mem
        for name, val in (("place", place), ("mem_t", self.t), ("ord", self.n_written)):
            buf = getattr(self, name).clone()
            buf[rows, s] = torch.where(do, val, buf[rows, s])
            setattr(self, name, buf)
        valid = self.valid.clone()
        valid[rows, s] = valid[rows, s] | do
        self.valid = valid
        self.n_written = self.n_written + active.long()
        self.t = self.t + active.long()
        return {"slot": torch.where(do, slot, -1), "evicted": do & full}

    def place_chunks(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Group stored entries into single-place chunks: contents [B,M,C,D], mask [B,M,C], keys [B,M,D],
        chunk place [B,M] (-1 = empty chunk)."""
        B, N, P, C, D = self.batch_size, self.capacity, self.num_places, self.C, self.dim
        dev = self.mem.device
        big = (P + 1) * (N + 1) * 1_000_000
        key = torch.where(self.valid, self.place * (big // (P + 1)) + self.ord, big)
        order = key.argsort(1)
        pl = self.place.gather(1, order)
        ok = self.valid.gather(1, order)
        counts = torch.zeros(B, P, dtype=torch.long, device=dev).scatter_add_(
            1, self.place.clamp(min=0), self.valid.long()
        )
        first = counts.cumsum(1) - counts  # first sorted position of each place
        nchunks = (counts + C - 1) // C
        offset = nchunks.cumsum(1) - nchunks
        pos = torch.arange(N, device=dev)[None].expand(B, N)
        plc = pl.clamp(min=0)
        rank = pos - first.gather(1, plc)
        M = N // C + min(P, N)
        chunk = torch.where(ok, offset.gather(1, plc) + rank // C, M)
        within = rank % C
        rows = torch.arange(B, device=dev)[:, None].expand(B, N)
        contents = self.mem.new_zeros(B, M + 1, C, D)
        mask = torch.zeros(B, M + 1, C, dtype=torch.bool, device=dev)
        cplace = torch.full((B, M + 1), -1, dtype=torch.long, device=dev)
        w = within.clamp(min=0)
        contents[rows, chunk, w] = self.mem.gather(1, order[..., None].expand(-1, -1, D))
        mask[rows, chunk, w] = ok
        cplace[rows, chunk] = torch.where(ok, pl, -1)
        contents, mask, cplace = contents[:, :M], mask[:, :M], cplace[:, :M]
        keys = (contents * mask[..., None]).sum(2) / mask.sum(2, keepdim=True).clamp(min=1)
        return contents, mask, keys, cplace

    @uses_state
    def read(self, query: Tensor, state: TensorState) -> ReadResult:
        squeeze = query.dim() == 2
        q = query[:, None] if squeeze else query
        contents, mask, keys, cplace = self.place_chunks()
        r = self.attention(q, keys, contents, mask.any(2), mask)
        rows = torch.arange(q.shape[0], device=q.device)[:, None, None]
        trace = dict(r.trace)
        trace["chunk_place"] = cplace[rows, trace["indices"]]
        trace["occupancy"] = self.valid.sum(1)
        out = r.output[:, 0] if squeeze else r.output
        if squeeze:
            trace = {k: v[:, 0] if v.dim() == 3 else v for k, v in trace.items()}
        return ReadResult(out, trace)

    @uses_state
    def step(self, x: Tensor, place: Tensor, state: TensorState, query: Tensor | None = None,
             active: Tensor | None = None) -> ReadResult:
        r = self.read(x if query is None else query, state)
        r.trace.update(self.write(x, place, state, active))
        return r

    @uses_state
    def sequence(self, xs: Tensor, places: Tensor, state: TensorState, reset: Tensor | None = None) -> ReadResult:
        """Scan the window step by step (eviction is sequential), vectorised over environments."""

        def one(i: int) -> ReadResult:
            if reset is not None:
                state.reset(reset[:, i])
            return self.step(xs[:, i], places[:, i], state)

        return scan(one, xs.shape[1])
