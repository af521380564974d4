"""`TensorState`: per-environment rollout state as an explicit object, passed through calls.

Rollout state (memory contents, recurrent hidden state, KV caches, counters) belongs to an
episode, not to the model: it must never be a parameter or buffer (it would land in a
checkpoint and move with `load_state_dict`), and a training window must be able to start from
an empty state while a rollout keeps its own. Like a Hugging Face `Cache`, the state is an
object the caller owns and hands to the module on every call; the module updates it in place.

Every tensor shares one environment axis (`env_dim`, 0 by default) whose length is the number
of rows (active environments). `reset(mask)` refills the flagged rows with each tensor's fill
value; `select(keep)` keeps rows (pausing environments, as the evaluator does). A state may hold
nested states (one per memory layer, say); `reset`/`select`/`to` recurse into them.

    state = TensorState(batch_size=2)
    state.add("hidden", torch.zeros(2, 64))
    state.hidden = new_hidden            # replace a tensor (its shape must keep the env axis)
    state.reset(torch.tensor([True, False]))
    state.select(torch.tensor([1]))      # row 1 only; batch_size is now 1
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class TensorState:
    """Named per-environment tensors (and nested states) with a shared environment axis."""

    def __init__(self, batch_size: int) -> None:
        if batch_size < 0:
            raise ValueError(f"batch_size must be >= 0, got {batch_size}")
        object.__setattr__(self, "_tensors", {})
        object.__setattr__(self, "_fill", {})
        object.__setattr__(self, "_env_dim", {})
        object.__setattr__(self, "_children", {})
        object.__setattr__(self, "batch_size", int(batch_size))
        # Non-tensor facts about the tensors (e.g. which weights a cached projection was made with);
        # copied by clone(), kept by reset/select/to (row operations keep such facts true).
        object.__setattr__(self, "meta", {})

    # ------------------------------------------------------------------ building
    def add(self, name: str, tensor: Tensor, fill: float | int | bool = 0, env_dim: int = 0) -> TensorState:
        """Register `tensor` under `name`, filled with `fill` (also its reset value)."""
        self._check_new(name)
        if tensor.dim() <= env_dim or tensor.shape[env_dim] != self.batch_size:
            raise ValueError(
                f"state '{name}': axis {env_dim} must have the batch size {self.batch_size}, got shape "
                f"{tuple(tensor.shape)}"
            )
        self._tensors[name] = tensor.fill_(fill) if tensor.numel() else tensor
        self._fill[name] = fill
        self._env_dim[name] = env_dim
        return self

    def add_child(self, name: str, child: TensorState) -> TensorState:
        """Nest another state (e.g. one per memory layer); it must have the same batch size."""
        self._check_new(name)
        if child.batch_size != self.batch_size:
            raise ValueError(f"state '{name}': batch size {child.batch_size} != {self.batch_size}")
        self._children[name] = child
        return self

    def _check_new(self, name: str) -> None:
        reserved = name.startswith("_") or name == "meta" or hasattr(type(self), name)
        if name in self._tensors or name in self._children or reserved:
            raise ValueError(f"state name '{name}' is taken or reserved")

    # ------------------------------------------------------------------ access
    def __getattr__(self, name: str) -> Any:
        tensors = object.__getattribute__(self, "_tensors")
        if name in tensors:
            return tensors[name]
        children = object.__getattribute__(self, "_children")
        if name in children:
            return children[name]
        raise AttributeError(f"{type(self).__name__} has no entry '{name}'; entries: {self.names()}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "batch_size":
            raise AttributeError("batch_size changes only through select()")
        if name in self._children:
            if not isinstance(value, TensorState) or value.batch_size != self.batch_size:
                raise ValueError(f"state '{name}' must be replaced by a TensorState of batch size {self.batch_size}")
            self._children[name] = value
            return
        if name not in self._tensors:
            raise AttributeError(f"unknown state entry '{name}' (add it first); entries: {self.names()}")
        d = self._env_dim[name]
        if not isinstance(value, Tensor) or value.dim() <= d or value.shape[d] != self.batch_size:
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"state '{name}': axis {d} must keep the batch size {self.batch_size}, got {shape}")
        self._tensors[name] = value

    def __getitem__(self, name: str) -> Any:
        return getattr(self, name)

    def names(self) -> list[str]:
        return [*self._tensors, *self._children]

    def tensors(self) -> dict[str, Tensor]:
        """Every tensor, nested ones as `child.name`."""
        out = dict(self._tensors)
        for cname, child in self._children.items():
            out.update({f"{cname}.{k}": v for k, v in child.tensors().items()})
        return out

    @property
    def device(self) -> torch.device:
        for t in self.tensors().values():
            return t.device
        return torch.device("cpu")

    # ------------------------------------------------------------------ row operations
    @torch.no_grad()
    def reset(self, mask: Tensor | None = None) -> None:
        """Refill the rows flagged in `mask` ([batch] bool; None: every row) with their fill values."""
        if mask is None:
            mask = torch.ones(self.batch_size, dtype=torch.bool)
        mask = torch.as_tensor(mask, dtype=torch.bool)
        if mask.shape != (self.batch_size,):
            raise ValueError(f"reset mask must have shape ({self.batch_size},), got {tuple(mask.shape)}")
        if mask.device.type == "cpu" and not bool(mask.any()):
            return  # the usual per-step reset(done) with no episode ending: no device work at all
        for name, t in self._tensors.items():
            shape = [1] * t.dim()
            shape[self._env_dim[name]] = -1
            m = mask.to(t.device).view(shape)
            self._tensors[name] = torch.where(m, torch.full_like(t, self._fill[name]), t)
        for child in self._children.values():
            child.reset(mask)

    def select(self, keep: Tensor) -> None:
        """Keep only the given rows (bool mask [batch] or indices, in their new order)."""
        keep = torch.as_tensor(keep)
        if keep.dtype == torch.bool:
            if keep.shape != (self.batch_size,):
                raise ValueError(f"keep mask must have shape ({self.batch_size},), got {tuple(keep.shape)}")
            keep = keep.nonzero().flatten()
        keep = keep.long().flatten()
        if keep.numel() and (int(keep.min()) < 0 or int(keep.max()) >= self.batch_size):
            raise IndexError(f"keep indices must be in [0, {self.batch_size}), got {keep.tolist()}")
        for name, t in self._tensors.items():
            self._tensors[name] = t.index_select(self._env_dim[name], keep.to(t.device))
        for child in self._children.values():
            child.select(keep)
        object.__setattr__(self, "batch_size", int(keep.numel()))

    def to(self, device: torch.device | str) -> TensorState:
        """Move every tensor (in place) and return self."""
        for name, t in self._tensors.items():
            self._tensors[name] = t.to(device)
        for child in self._children.values():
            child.to(device)
        return self

    def detach_(self) -> TensorState:
        """Cut the autograd graph through every tensor (a truncated-BPTT boundary)."""
        for name, t in self._tensors.items():
            self._tensors[name] = t.detach()
        for child in self._children.values():
            child.detach_()
        return self

    def clone(self) -> TensorState:
        out = TensorState(self.batch_size)
        for name, t in self._tensors.items():
            out._tensors[name] = t.clone()
            out._fill[name] = self._fill[name]
            out._env_dim[name] = self._env_dim[name]
        for name, child in self._children.items():
            out.add_child(name, child.clone())
        out.meta.update(self.meta)
        return out

    def __repr__(self) -> str:
        parts = [f"{k}={tuple(v.shape)}" for k, v in self._tensors.items()]
        parts += [f"{k}={v!r}" for k, v in self._children.items()]
        return f"TensorState(batch_size={self.batch_size}, {', '.join(parts)})"
