"""What a policy's memories read at one step, on request: the memories' `ReadResult.trace`s per row.

    actions, traces = act_with_trace(policy, obs)   # traces[r] = {read name: MemoryRead} for row r
    actions = policy.act(obs)                       # unchanged, and no slower: nothing is kept

Memories return a trace with every read (`embodied.memory.base.ReadResult`); the policies drop it,
because a rollout needs only the output. A viewer or a debugging script asks for it explicitly with
`act_with_trace`: for that one call a `TraceSink` is attached to the policy as a plain attribute
(never a submodule, buffer or rollout state, so nothing lands in a checkpoint or survives the call),
and each memory call site of the policy hands its trace to `PretrainedPolicy.note_read`, which is a
single `is None` test when nobody asked. Policies without memories (random, expert, memoryless) give
empty traces.

A read's name says where it happened (`layer0`, `memory`, `dual_kv`, ...); its `kind` names the
mechanism (`hcam`, `pcmb`, `events`, `place`, `dual_kv`, `voxel_map`, `gru`), which tells a reader
which trace keys to expect (docs/viewer.md lists them); `facts` are constants of the memory a reader
needs to interpret the trace (HCAM's chunk size, a bank's capacity).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from embodied.policies.base import ObsBatch, Policy, batch_size

KINDS = ("hcam", "pcmb", "events", "place", "dual_kv", "voxel_map", "gru")


@dataclass
class MemoryRead:
    """One memory read of one row: the mechanism, its trace as numpy arrays, and its constants."""

    kind: str
    trace: dict[str, np.ndarray]
    facts: dict[str, float | int] = field(default_factory=dict)


class TraceSink:
    """Collects the traces the policy notes during one `act` call (batched over rows)."""

    def __init__(self) -> None:
        self.reads: dict[str, tuple[str, dict[str, Any], dict[str, float | int]]] = {}

    def add(self, name: str, kind: str, trace: Mapping[str, Any], facts: Mapping[str, float | int] | None) -> None:
        if kind not in KINDS:
            raise ValueError(f"trace kind must be one of {list(KINDS)}, got {kind!r}")
        if name in self.reads:
            raise ValueError(f"memory read '{name}' noted twice in one act(); give each call site its own name")
        # detach + cpu now: the policy may overwrite its state tensors in place after this call
        self.reads[name] = (kind, {k: _to_numpy(v) for k, v in trace.items() if v is not None}, dict(facts or {}))

    def rows(self, n: int) -> list[dict[str, MemoryRead]]:
        """Split every batched trace into the n rows of the act() call."""
        out: list[dict[str, MemoryRead]] = [{} for _ in range(n)]
        for name, (kind, trace, facts) in self.reads.items():
            for r in range(n):
                out[r][name] = MemoryRead(kind, {k: _row(v, r, n, f"{name}.{k}") for k, v in trace.items()}, facts)
        return out


def _to_numpy(value: Any) -> Any:
    if torch.is_tensor(value):
        return value.detach().cpu().numpy()
    if isinstance(value, list | tuple):  # per-row values of different lengths (a voxel map's points)
        return [_to_numpy(v) for v in value]
    return np.asarray(value)


def _row(value: Any, r: int, n: int, what: str) -> np.ndarray:
    if isinstance(value, list):
        if len(value) != n:
            raise ValueError(f"trace {what}: a per-row list needs {n} entries, got {len(value)}")
        return np.asarray(value[r])
    if value.ndim == 0 or value.shape[0] != n:
        raise ValueError(f"trace {what}: expected a leading batch axis of {n}, got shape {value.shape}")
    return value[r]


@contextmanager
def tracing(policy: Policy) -> Iterator[TraceSink]:
    """Attach a fresh `TraceSink` to `policy` for the duration of the block."""
    sink = TraceSink()
    previous = getattr(policy, "trace_sink", None)
    object.__setattr__(policy, "trace_sink", sink)  # a plain attribute, even on an nn.Module
    try:
        yield sink
    finally:
        object.__setattr__(policy, "trace_sink", previous)


def act_with_trace(policy: Policy, obs: ObsBatch) -> tuple[np.ndarray, list[dict[str, MemoryRead]]]:
    """`policy.act(obs)` plus, per row, what each of its memories read at this step (read-then-write:
    the trace describes the memory as it was before this step's write)."""
    with tracing(policy) as sink:
        actions = policy.act(obs)
    return actions, sink.rows(batch_size(obs))
