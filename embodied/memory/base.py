"""Common base class for every memory in `embodied.memory`.

Conventions shared by all memories (see `docs/memory.md`):

* **Weights in the module, episode state outside it.** A memory module holds only weights (and
  constant buffers): `state_dict()` never carries memory contents. Per-environment state lives in a
  `TensorState` (`embodied.memory.state`) that the caller creates with
  `memory.initial_state(batch_size, device)` and passes to every call; the call updates it in place.
  `state.reset(mask)` clears environments, `state.select(keep)` drops paused ones, `state.clone()`
  snapshots an episode, `state.detach_()` cuts the autograd graph.
* **Batched over environments.** Every state tensor has an environment axis (first by default).
  Nothing loops over environments or over stored entries on the hot path, and nothing creates a host
  tensor per step: the hot paths build their tensors on the state's device.
* **One step contract.** `step(x, state, ...) -> ReadResult` reads the memory as it was before this
  step and then writes the step (read-then-write); `sequence(xs, state, ..., reset=None)` returns the
  `ReadResult` that T calls of `step` would return, stacked on a time axis (axis 1), with `reset[b, t]`
  clearing row b before step t. `read(query, state)` never changes the state.
* **`ReadResult(output, trace)`**; the trace is a dict of tensors describing what was looked at
  (indices, weights, occupancy), for viewers, logs and tests.
* **Stop-gradient.** `detach_writes=True` (the default everywhere) stores detached copies, so no gradient
  reaches stored memory; this matches HCAM (DeepMind), MemoryVLA and JanusVLN. Set it to False to let
  gradients flow through entries written inside the current autograd graph (SAT-style); the caller then
  owns truncation (`state.detach_()`, e.g. at every training window boundary).

Inside a call, the subclass reads and assigns its state tensors as attributes (`self.acc`,
`self.n_acc = ...`): `Memory` routes the names declared with `_add_state` to the state bound for the
duration of the call (`bound(state)`), so the module itself never holds them.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from embodied.memory.state import TensorState

F_ = TypeVar("F_", bound=Callable[..., Any])


@dataclass
class ReadResult:
    """What a read returns: the output tensor and a trace of what the read looked at."""

    output: Any
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
    """Sinusoidal encoding [..., dim] of (float) positions [...]: sine half then cosine half, timescales
    spaced geometrically from `min_timescale` to `max_timescale`."""
    if dim % 2:
        raise ValueError(f"sinusoidal encodings need an even width, got {dim}")
    half = dim // 2
    log_inc = math.log(max_timescale / min_timescale) / max(half - 1, 1)
    timescales = min_timescale * torch.exp(log_inc * torch.arange(half, device=positions.device, dtype=torch.float32))
    ang = positions.float().unsqueeze(-1) / timescales
    return torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1)


def uses_state(fn: F_) -> F_:
    """Decorate a public memory method with a `state` parameter: the state is bound for the call."""
    index = list(inspect.signature(fn).parameters).index("state")

    @functools.wraps(fn)
    def wrapper(self: Memory, *args: Any, **kwargs: Any) -> Any:
        state = kwargs["state"] if "state" in kwargs else args[index - 1] if len(args) >= index else None
        if not isinstance(state, TensorState):
            raise TypeError(f"{type(self).__name__}.{fn.__name__}: state must be a TensorState from "
                            f"initial_state(batch_size), got {type(state).__name__}")
        with self.bound(state):
            return fn(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


@dataclass
class _StateSpec:
    shape: tuple[int, ...]  # without the environment axis
    dtype: torch.dtype
    fill: float | int | bool
    env_dim: int


class Memory(nn.Module):
    """Base class: weights in the module, per-environment state in a `TensorState` passed to each call.

    Subclasses declare their state tensors in `__init__` with `_add_state(name, shape, dtype, fill)` and
    implement `write(...)`, `read(...) -> ReadResult`, `step(...)` and `sequence(...)`, each taking the
    state and decorated with `uses_state`.
    """

    def __init__(self, detach_writes: bool = True) -> None:
        super().__init__()
        self.detach_writes = bool(detach_writes)
        self.__dict__["_state_spec"] = {}
        self.__dict__["_bound"] = None

    # ----------------------------------------------------------------- state
    def _add_state(self, name: str, shape: tuple[int, ...] = (), dtype: torch.dtype = torch.float32,
                   fill: float | int | bool = 0, env_dim: int = 0) -> None:
        """Declare a per-environment state tensor: `shape` without the environment axis, which
        `initial_state` inserts at `env_dim`; `fill` is its empty (reset) value."""
        self._state_spec[name] = _StateSpec(tuple(int(s) for s in shape), dtype, fill, env_dim)

    def state_names(self) -> list[str]:
        return list(self._state_spec)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> TensorState:
        """An empty state of `batch_size` environment rows (on `device`, default the weights' device)."""
        device = self.device if device is None else torch.device(device)
        state = TensorState(batch_size)
        for name, s in self._state_spec.items():
            shape = list(s.shape)
            shape.insert(s.env_dim, batch_size)
            state.add(name, torch.empty(shape, dtype=s.dtype, device=device), s.fill, s.env_dim)
        return state

    @contextmanager
    def bound(self, state: TensorState) -> Iterator[TensorState]:
        """Route this memory's state names to `state` for the duration of the block."""
        previous = self.__dict__["_bound"]
        self.__dict__["_bound"] = state
        try:
            yield state
        finally:
            self.__dict__["_bound"] = previous

    @property
    def state(self) -> TensorState:
        st = self.__dict__.get("_bound")
        if st is None:
            raise RuntimeError(f"{type(self).__name__}: no state bound; pass the TensorState from initial_state()")
        return st

    def __getattr__(self, name: str) -> Any:
        spec = self.__dict__.get("_state_spec")
        if spec is not None and name in spec:
            return self.state[name]
        return super().__getattr__(name)

    def __setattr__(self, name: str, value: Any) -> None:
        spec = self.__dict__.get("_state_spec")
        if spec is not None and name in spec:
            setattr(self.state, name, value)
        else:
            super().__setattr__(name, value)

    @property
    def batch_size(self) -> int:
        """Rows of the bound state."""
        return self.state.batch_size

    @property
    def device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        st = self.__dict__.get("_bound")
        return st.device if st is not None else torch.device("cpu")

    def _reset_rows(self, mask: Tensor) -> None:
        """Clear the flagged rows of the bound state (inside `sequence`)."""
        self.state.reset(mask)

    def _store(self, x: Tensor) -> Tensor:
        return x.detach() if self.detach_writes else x

    def extra_repr(self) -> str:
        return f"detach_writes={self.detach_writes}, state={self.state_names()}"


def scan(step: Callable[[int], ReadResult], T: int) -> ReadResult:
    """Stack T step results on a time axis (axis 1): outputs (a tensor or a tuple of tensors) and traces."""
    results = [step(i) for i in range(T)]
    first = results[0].output
    if isinstance(first, tuple):
        out: Any = tuple(torch.stack([r.output[j] for r in results], 1) for j in range(len(first)))
    else:
        out = torch.stack([r.output for r in results], 1)
    trace = {k: torch.stack([r.trace[k] for r in results], 1) for k in results[0].trace}
    return ReadResult(out, trace)


def masked_softmax(logits: Tensor, mask: Tensor | None, dim: int = -1) -> Tensor:
    """Softmax that gives exactly zero weight to masked-out positions and all-zero rows when nothing is valid."""
    if mask is None:
        return torch.softmax(logits, dim=dim)
    logits = logits.masked_fill(~mask, float("-inf"))
    any_valid = mask.any(dim=dim, keepdim=True)
    logits = torch.where(any_valid, logits, torch.zeros_like(logits))
    return torch.softmax(logits, dim=dim) * any_valid
