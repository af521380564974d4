"""Aggregate per-episode records into means with 95% confidence intervals, per group and overall.

Rates (metrics named `*success*` whose values are all 0 or 1) get the Wilson score interval,
which stays inside [0, 1] and is honest at 0% or 100% with few episodes; other metrics get the
normal approximation (1.96 * std / sqrt(n)).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from embodied.evaluate.rollout import EpisodeRecord

Z95 = 1.959963984540054


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval (low, high) for `successes` out of `n`."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _values(record: EpisodeRecord) -> dict[str, float]:
    out = {"steps": float(record.steps), "return": float(record.episode_return), **record.metrics}
    if record.success is not None:
        out["success"] = float(record.success)
    return out


def describe(values: Sequence[float], rate: bool = False) -> dict[str, Any]:
    """{"mean", "ci95" (half-width), "low", "high", "n", "interval"} of one metric; `rate`: a 0/1
    outcome, given the Wilson interval."""
    v = np.asarray(values, dtype=np.float64)
    n, mean = len(v), float(v.mean())
    if rate and np.all((v == 0) | (v == 1)):
        low, high = wilson(float(v.sum()), n)
        return {"mean": mean, "ci95": (high - low) / 2, "low": low, "high": high, "n": n, "interval": "wilson"}
    half = Z95 * float(v.std(ddof=1)) / math.sqrt(n) if n > 1 else 0.0
    return {"mean": mean, "ci95": half, "low": mean - half, "high": mean + half, "n": n, "interval": "normal"}


def summarize(records: Sequence[EpisodeRecord]) -> dict[str, dict[str, Any]]:
    """{metric: {"mean", "ci95", "low", "high", "n", "interval"}} over episodes."""
    if not records:
        return {}
    rows = [_values(r) for r in records]
    names = list(dict.fromkeys(k for row in rows for k in row))
    return {name: describe([row[name] for row in rows if name in row], rate="success" in name) for name in names}


def summarize_groups(
    records: Sequence[EpisodeRecord], key: Callable[[EpisodeRecord], str | None]
) -> dict[str, dict[str, dict[str, Any]]]:
    """`summarize` per group (e.g. per LIBERO task), groups in order of first appearance by episode."""
    groups: dict[str, list[EpisodeRecord]] = {}
    for r in sorted(records, key=lambda r: r.episode):
        name = key(r)
        if name is not None:
            groups.setdefault(str(name), []).append(r)
    return {name: summarize(rs) for name, rs in groups.items()}


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
