"""events: episodic event memory after EM-LLM (Fountas et al., arXiv 2407.09450), for per-step latents.

* **Segmentation by surprise**: a new event starts at step t when s_t > mean + gamma * std of the surprise
  values of the last `window` steps (gamma = 1.0; at least two values needed), with event lengths clamped
  to [min_event_len, max_event_len] (a full event is closed and a new one opened). The surprise is given by
  the caller (e.g. the NLL of the observation under a world model or policy); without one it defaults to
  1 - cos(x_t, mean of the open event).
* **Representative** of a closed event: the mean of its latents (EM-LLM averages the most-attended keys;
  here every latent counts equally, documented simplification).
* **Two-stage read**: score closed events by q . repr / sqrt(D), keep the `topk`, add their temporal
  neighbours (+-1 .. +-`neighbors` events, the contiguity buffer), sort by time, and attend over the tokens
  of the retrieved events. The open event is not retrieved (it is the local context).
* Storage: `tokens [B, E, max_event_len, D]`, a ring of the last `max_events` events (oldest evicted).
  Training-free (no parameters); writes are detached by default.
* Inherently sequential (whether step t opens an event depends on the surprise history and the event
  lengths so far), so `sequence` scans `step` over the window, vectorised over environments; the tests
  check it against an independent per-environment reference of the segmentation and the read.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from embodied.memory import MEMORIES
from embodied.memory.base import Memory, ReadResult, masked_softmax, scan, uses_state
from embodied.memory.state import TensorState


@MEMORIES.register("events")
class EventMemory(Memory):
    """Args: dim D, max_events E, max_event_len, min_event_len, gamma, window, topk, neighbors.

    API (state = `initial_state(B)`): `write(x[B,D], state, surprise[B]|None, active[B]|None) -> trace`;
    `read(query[B,D], state) -> ReadResult(out[B,D])`; `step(x, state, surprise=None, query=None)` = read
    then write; `sequence(xs[B,T,D], state, surprise[B,T]|None, reset[B,T]|None)`.
    """

    def __init__(
        self,
        dim: int = 64,
        max_events: int = 64,
        max_event_len: int = 16,
        min_event_len: int = 2,
        gamma: float = 1.0,
        window: int = 32,
        topk: int = 4,
        neighbors: int = 1,
        detach_writes: bool = True,
    ) -> None:
        super().__init__(detach_writes)
        self.dim, self.E, self.Lmax, self.Lmin = dim, max_events, max_event_len, min_event_len
        self.gamma, self.window, self.topk, self.neighbors = gamma, window, topk, neighbors
        E = max_events
        self._add_state("tokens", (E, max_event_len, dim))
        self._add_state("ev_len", (E,), torch.long)
        self._add_state("ev_start", (E,), torch.long, -1)
        self._add_state("ev_ord", (E,), torch.long, -1)
        self._add_state("ev_repr", (E, dim))
        self._add_state("ev_closed", (E,), torch.bool, False)
        self._add_state("n_events", (), torch.long)
        self._add_state("cur_sum", (dim,))
        self._add_state("s_hist", (window,))
        self._add_state("s_n", (), torch.long)
        self._add_state("t", (), torch.long)

    def _cur_slot(self) -> Tensor:
        return (self.n_events - 1).clamp(min=0) % self.E

    @uses_state
    def write(self, x: Tensor, state: TensorState, surprise: Tensor | None = None,
              active: Tensor | None = None) -> dict[str, Tensor]:
        B, E, W = self.batch_size, self.E, self.window
        rows = torch.arange(B, device=x.device)
        x = self._store(x)
        if active is None:
            active = torch.ones(B, dtype=torch.bool, device=x.device)
        slot = self._cur_slot()
        cur_len = torch.where(self.n_events > 0, self.ev_len[rows, slot], torch.zeros_like(slot))
        if surprise is None:
            mean = self.cur_sum / cur_len.clamp(min=1)[:, None]
            surprise = torch.where(cur_len > 0, 1 - torch.cosine_similarity(x, mean, dim=-1), 0.0)
        surprise = surprise.to(x.dtype)
        n = self.s_n.clamp(max=W)
        hv = torch.arange(W, device=x.device)[None] < n[:, None]
        mu = (self.s_hist * hv).sum(1) / n.clamp(min=1)
        var = (((self.s_hist - mu[:, None]) * hv) ** 2).sum(1) / (n - 1).clamp(min=1)
        thr = mu + self.gamma * var.sqrt()
        surprising = (n >= 2) & (surprise > thr) & (cur_len >= self.Lmin)
        close = active & (cur_len > 0) & (surprising | (cur_len >= self.Lmax))
        opening = active & ((self.n_events == 0) | close)
        # close the open event
        closed = self.ev_closed.clone()
        closed[rows, slot] = closed[rows, slot] | close
        ev_repr = self.ev_repr.clone()
        ev_repr[rows, slot] = torch.where(
            close[:, None], self.cur_sum / cur_len.clamp(min=1)[:, None], ev_repr[rows, slot]
        )
        # open a new event in the next ring slot (evicting the oldest)
        n_events = self.n_events + opening.long()
        nslot = (n_events - 1).clamp(min=0) % E
        o = opening
        tokens = self.tokens
        tokens[rows[o], nslot[o]] = 0
        ev_len = self.ev_len.clone()
        ev_len[rows, nslot] = torch.where(o, 0, ev_len[rows, nslot])
        closed[rows, nslot] = closed[rows, nslot] & ~o
        ev_start, ev_ord = self.ev_start.clone(), self.ev_ord.clone()
        ev_start[rows, nslot] = torch.where(o, self.t, ev_start[rows, nslot])
        ev_ord[rows, nslot] = torch.where(o, n_events - 1, ev_ord[rows, nslot])
        cur_sum = torch.where(o[:, None], torch.zeros_like(self.cur_sum), self.cur_sum)
        # append x
        pos = ev_len[rows, nslot].clamp(max=self.Lmax - 1)
        a = active
        tokens[rows[a], nslot[a], pos[a]] = x[a]
        ev_len[rows, nslot] += a.long()
        self.cur_sum = cur_sum + x * a[:, None]
        self.ev_len, self.ev_closed, self.ev_repr, self.ev_start, self.ev_ord = (
            ev_len,
            closed,
            ev_repr,
            ev_start,
            ev_ord,
        )
        self.n_events = n_events
        hist = self.s_hist.clone()
        hist[rows, self.s_n % W] = torch.where(a, surprise, hist[rows, self.s_n % W])
        self.s_hist = hist
        self.s_n = self.s_n + a.long()
        self.t = self.t + a.long()
        return {"boundary": opening & (self.n_events > 1), "surprise": surprise, "threshold": thr}

    @uses_state
    def read(self, query: Tensor, state: TensorState) -> ReadResult:
        B, E, D = self.batch_size, self.E, self.dim
        rows = torch.arange(B, device=query.device)
        scores = (self.ev_repr @ query[:, :, None])[..., 0] / math.sqrt(D)  # [B,E]
        scores = scores.masked_fill(~self.ev_closed, float("-inf"))
        k = min(self.topk, E)
        top, sel = scores.topk(k, dim=1)
        sel_ok = torch.isfinite(top)
        sim_mask = torch.zeros(B, E, dtype=torch.bool, device=query.device)
        sim_mask[rows[:, None].expand(-1, k)[sel_ok], sel[sel_ok]] = True
        # contiguity: temporal neighbours of the selected events
        near = torch.arange(1, self.neighbors + 1, device=query.device)
        offs = torch.cat([near, -near])
        nb_ord = self.ev_ord.gather(1, sel)[:, :, None] + offs  # [B,k,2n]
        nb_slot = nb_ord % E
        nb_ok = sel_ok[:, :, None] & (nb_ord >= 0)
        nb_ok = (
            nb_ok & (self.ev_ord[rows[:, None, None], nb_slot] == nb_ord) & self.ev_closed[rows[:, None, None], nb_slot]
        )
        nb_mask = torch.zeros(B, E, dtype=torch.bool, device=query.device)
        bi = rows[:, None, None].expand_as(nb_slot)
        nb_mask[bi[nb_ok], nb_slot[nb_ok]] = True
        nb_mask &= ~sim_mask
        union = sim_mask | nb_mask
        Kr = min(E, k * (1 + 2 * self.neighbors))
        big = torch.iinfo(torch.long).max
        order = torch.where(union, self.ev_ord, torch.full_like(self.ev_ord, big)).argsort(1)[:, :Kr]  # by time
        got = union.gather(1, order)
        toks = self.tokens[rows[:, None], order]  # [B,Kr,L,D]
        tmask = got[..., None] & (
            torch.arange(self.Lmax, device=query.device) < self.ev_len.gather(1, order)[..., None]
        )
        logits = torch.einsum("bd,bkld->bkl", query, toks) / math.sqrt(D)
        w = masked_softmax(logits.reshape(B, -1), tmask.reshape(B, -1)).view_as(logits)
        out = torch.einsum("bkl,bkld->bd", w, toks)
        trace = {
            "event_slots": order,
            "event_valid": got,
            "event_ord": torch.where(got, self.ev_ord.gather(1, order), -1),
            "event_start_t": torch.where(got, self.ev_start.gather(1, order), -1),
            "from_contiguity": nb_mask.gather(1, order) & got,
            "event_weights": w.sum(-1),
            "n_closed": self.ev_closed.sum(1),
        }
        return ReadResult(out, trace)

    @uses_state
    def step(self, x: Tensor, state: TensorState, surprise: Tensor | None = None, query: Tensor | None = None,
             active: Tensor | None = None) -> ReadResult:
        r = self.read(x if query is None else query, state)
        r.trace.update(self.write(x, state, surprise, active))
        return r

    @uses_state
    def sequence(self, xs: Tensor, state: TensorState, surprise: Tensor | None = None,
                 reset: Tensor | None = None) -> ReadResult:
        """Scan the window step by step (segmentation is sequential), vectorised over environments."""

        def one(i: int) -> ReadResult:
            if reset is not None:
                state.reset(reset[:, i])
            return self.step(xs[:, i], state, None if surprise is None else surprise[:, i])

        return scan(one, xs.shape[1])
