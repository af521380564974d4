"""Common base class for every memory in `embodied.memory`.

Conventions shared by all memories (see `docs/memory.md`):

* **Batched over environments.** Every piece of per-environment state is a tensor whose first axis is the
  environment axis B (entries, counters, timesteps, caches). Nothing loops over environments or over
  stored entries on the hot path.
* **State = registered "state tensors".** A memory declares its per-environment tensors with
  `_add_state(name, tensor, fill)`. They are ordinary persistent buffers, so `state_dict()` carries them
  (with the current batch size) and `.to(device)` moves them. `load_state_dict` accepts state tensors of a
  different batch size (or, for growing tables, a different length) and adopts their shape.
* **`reset(mask)`** refills the rows of the flagged environments with each tensor's fill value;
  **`prune(keep)`** index-selects every state tensor along the env axis (a bool mask or a LongTensor of
  indices of the environments to keep, in the order they should end up).
* **`read(...)` returns a `ReadResult(output, trace)`**; the trace is a dict of tensors describing what was
  looked at (indices, weights, occupancy), for viewers, logs and tests.
* **Stop-gradient.** `detach_writes=True` (the default everywhere) stores detached copies, so no gradient
  reaches stored memory; this matches HCAM (DeepMind), MemoryVLA and JanusVLN. Set it to False to let
  gradients flow through entries written inside the current autograd graph (SAT-style); the caller then
  owns truncation (call `detach_()` to cut the graph, e.g. at every training window boundary).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn


@dataclass
class ReadResult:
    """What a read returns: the output tensor and a trace of what the read looked at."""

    output: Tensor
    trace: dict[str, Any] = field(default_factory=dict)


def as_keep_index(keep: Tensor, batch_size: int) -> Tensor:
    """Turn a bool keep-mask [B] or an index tensor into a LongTensor of row indices."""
    keep = torch.as_tensor(keep)
    if keep.dtype == torch.bool:
        if keep.shape != (batch_size,):
            raise ValueError(f"keep mask must have shape ({batch_size},), got {tuple(keep.shape)}")
        return keep.nonzero().flatten()
    return keep.long().flatten()


def sinusoid(positions: Tensor, dim: int, min_timescale: float = 1.0, max_timescale: float = 1e4) -> Tensor:
    """Sinusoidal encoding [..., dim] of (float) positions [...]: sine half then cosine half."""
    if dim % 2:
        raise ValueError(f"sinusoidal encodings need an even width, got {dim}")
    half = dim // 2
    log_inc = math.log(max_timescale / min_timescale) / max(half - 1, 1)
    timescales = min_timescale * torch.exp(log_inc * torch.arange(half, device=positions.device, dtype=torch.float32))
    ang = positions.float().unsqueeze(-1) / timescales
    return torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1)


class Memory(nn.Module):
    """Base class: batched per-environment state with reset / prune / state round-trip.

    Subclasses implement `write(...)`, `read(...) -> ReadResult` and usually `step(...)` (one rollout step)
    and `sequence(...)` (a whole window at once, equal to calling `step` T times).
    """

    def __init__(self, batch_size: int, detach_writes: bool = True) -> None:
        super().__init__()
        self._batch_size = int(batch_size)
        self.detach_writes = bool(detach_writes)
        self._state_fill: dict[str, float | int | bool] = {}
        self._state_dim: dict[str, int] = {}

    # ----------------------------------------------------------------- state tensors
    def _add_state(self, name: str, tensor: Tensor, fill: float | int | bool = 0, env_dim: int = 0) -> None:
        """Register a per-environment state tensor (env axis `env_dim`) with its reset value."""
        self.register_buffer(name, tensor.fill_(fill) if tensor.numel() else tensor, persistent=True)
        self._state_fill[name] = fill
        self._state_dim[name] = env_dim

    def state_names(self) -> list[str]:
        return list(self._state_fill)

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def device(self) -> torch.device:
        for name in self._state_fill:
            return getattr(self, name).device
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    def _rows(self, mask: Tensor) -> Tensor:
        mask = torch.as_tensor(mask, device=self.device)
        if mask.dtype != torch.bool:
            mask = torch.zeros(self.batch_size, dtype=torch.bool, device=self.device).index_fill_(
                0, mask.long().flatten(), True
            )
        if mask.shape != (self.batch_size,):
            raise ValueError(f"reset mask must have shape ({self.batch_size},), got {tuple(mask.shape)}")
        return mask

    @torch.no_grad()
    def reset(self, mask: Tensor | None = None) -> None:
        """Clear the rows of the environments flagged in `mask` [B] bool (None: all rows)."""
        if mask is None:
            mask = torch.ones(self.batch_size, dtype=torch.bool, device=self.device)
        mask = self._rows(mask)
        for name, fill in self._state_fill.items():
            buf: Tensor = getattr(self, name)
            d = self._state_dim[name]
            shape = [1] * buf.dim()
            shape[d] = -1
            setattr(self, name, torch.where(mask.view(shape), torch.full_like(buf, fill), buf))

    def prune(self, keep: Tensor) -> None:
        """Keep only the given environments' rows (bool mask [B] or indices), e.g. when envs pause."""
        idx = as_keep_index(keep, self.batch_size).to(self.device)
        for name in self._state_fill:
            buf: Tensor = getattr(self, name)
            setattr(self, name, buf.index_select(self._state_dim[name], idx))
        self._batch_size = int(idx.numel())

    @torch.no_grad()
    def resize(self, batch_size: int) -> None:
        """Give the memory `batch_size` empty environment rows (all rows cleared, weights untouched).

        `prune` can only select existing rows; a rollout with a different number of environments (or a
        training window of B episodes) needs new rows. Every registered state tensor is re-allocated with
        `batch_size` rows along its env axis, filled with its reset value, so the memory then equals a
        freshly built one of that batch size with the same weights.

        A memory that keeps per-environment state outside registered state tensors (it overrides `prune`
        and `reset`) is resized through those: its rows are index-selected to the new count, then all are
        reset. Such a memory can only grow from at least one row.
        """
        n = int(batch_size)
        if n < 0:
            raise ValueError(f"batch_size must be >= 0, got {n}")
        if type(self).prune is Memory.prune and type(self).reset is Memory.reset:
            for name, fill in self._state_fill.items():
                buf: Tensor = getattr(self, name)
                shape = list(buf.shape)
                shape[self._state_dim[name]] = n
                setattr(self, name, torch.full(shape, fill, dtype=buf.dtype, device=buf.device))
            self._batch_size = n
            return
        if n and not self.batch_size:
            raise ValueError(f"{type(self).__name__} keeps custom state and has no row to grow from")
        self.prune(torch.zeros(n, dtype=torch.long, device=self.device))
        self.reset()
        self._batch_size = n

    def detach_(self) -> None:
        """Cut the autograd graph through every state tensor (truncation point for `detach_writes=False`)."""
        for name in self._state_fill:
            setattr(self, name, getattr(self, name).detach())

    def _store(self, x: Tensor) -> Tensor:
        return x.detach() if self.detach_writes else x

    # ----------------------------------------------------------------- state dict
    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # Adopt the shapes of saved state tensors (another batch size, a grown table).
        sizes = set()
        for name in self._state_fill:
            key = prefix + name
            if key in state_dict:
                src = state_dict[key]
                cur = getattr(self, name)
                setattr(self, name, torch.empty(src.shape, dtype=cur.dtype, device=cur.device))
                sizes.add(src.shape[self._state_dim[name]] if src.dim() else None)
        sizes.discard(None)
        bkey = prefix + "_batch_size_"
        if bkey in state_dict:
            self._batch_size = int(state_dict[bkey])
        elif len(sizes) == 1:
            self._batch_size = int(sizes.pop())
        if bkey in state_dict:
            state_dict = dict(state_dict)
            state_dict.pop(bkey)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        if bkey in unexpected_keys:
            unexpected_keys.remove(bkey)

    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "_batch_size_"] = torch.tensor(self._batch_size)

    def memory_state(self) -> dict[str, Tensor]:
        """Only the per-environment state tensors (no parameters), e.g. to pause/resume an episode."""
        return {k: v for k, v in self.state_dict().items() if k.rsplit(".", 1)[-1] in self._state_fill}

    def extra_repr(self) -> str:
        return f"batch_size={self.batch_size}, detach_writes={self.detach_writes}"


def masked_softmax(logits: Tensor, mask: Tensor | None, dim: int = -1) -> Tensor:
    """Softmax that gives exactly zero weight to masked-out positions and all-zero rows when nothing is valid."""
    if mask is None:
        return torch.softmax(logits, dim=dim)
    logits = logits.masked_fill(~mask, float("-inf"))
    any_valid = mask.any(dim=dim, keepdim=True)
    logits = torch.where(any_valid, logits, torch.zeros_like(logits))
    return torch.softmax(logits, dim=dim) * any_valid
