"""Aggregate per-episode records into means with 95% confidence intervals."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from embodied.evaluate.rollout import EpisodeRecord

_NOT_METRICS = ("episode", "seed", "env_index")


def summarize(records: Sequence[EpisodeRecord]) -> dict[str, dict[str, float]]:
    """{metric: {"mean", "ci95", "n"}} over episodes; ci95 is the normal-approximation
    half-width (1.96 * std / sqrt(n)), the figure LIBERO-style reports need."""
    if not records:
        return {}
    rows = [r.as_row() for r in records]
    names = [k for k in rows[0] if k not in _NOT_METRICS]
    out: dict[str, dict[str, float]] = {}
    for name in names:
        values = np.array([row[name] for row in rows if name in row], dtype=np.float64)
        std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        out[name] = {"mean": float(values.mean()), "ci95": 1.96 * std / math.sqrt(len(values)), "n": len(values)}
    return out


def format_table(results: dict[str, dict[str, dict[str, float]]], metrics: Sequence[str] | None = None) -> str:
    """A plain-text table: one row per run (e.g. policy name), one column per metric."""
    runs = list(results)
    if metrics is None:
        seen: dict[str, Any] = {}
        for run in runs:
            seen.update(dict.fromkeys(results[run]))
        metrics = list(seen)
    header = ["run", *metrics]
    body = [
        [run] + [
            f"{results[run][m]['mean']:.3f} ± {results[run][m]['ci95']:.3f}" if m in results[run] else "-"
            for m in metrics
        ]
        for run in runs
    ]
    widths = [max(len(str(row[c])) for row in [header, *body]) for c in range(len(header))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)) for row in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
