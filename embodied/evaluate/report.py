"""`embodied-report RUN_DIR...`: compare evaluation runs (memory vs memoryless, checkpoints, seeds).

Prints a markdown table (one row per run: success with its Wilson 95% interval, SPL, steps) and
writes a PNG of success against episode length (or, for ObjectRecall, tour length), binned.

    embodied-report outputs/eval/gru outputs/eval/memoryless --out outputs/report
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from embodied.evaluate.rollout import EpisodeRecord
from embodied.evaluate.summary import summarize

COLUMNS = ("success", "spl", "ndtw", "steps")


def run_labels(directories: list[Path]) -> list[str]:
    """A label per run: its directory's name, or as many parent folders as it takes to tell runs with
    the same name apart (`or700/hcam_agent_eval`, `or700s1/hcam_agent_eval`: two seeds)."""
    parts = [d.resolve().parts for d in directories]
    depth = [1] * len(directories)
    while True:
        labels = ["/".join(p[-k:]) for p, k in zip(parts, depth)]
        clashes = {lab for lab in labels if labels.count(lab) > 1}
        if not clashes:
            return labels
        grown = [k + 1 if lab in clashes and k < len(p) else k for p, k, lab in zip(parts, depth, labels)]
        if grown == depth:  # the same directory twice
            raise ValueError(f"embodied-report: the same run is given more than once: {sorted(clashes)}")
        depth = grown


def load_run(directory: Path, label: str | None = None) -> tuple[str, list[EpisodeRecord]]:
    path = directory / "episodes.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{directory} is not an evaluation run: no episodes.jsonl")
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(EpisodeRecord.from_row(json.loads(line)))
        except (json.JSONDecodeError, KeyError):  # a torn last line (the run was killed mid-write)
            continue
    name = label or directory.name
    run = directory / "run.json"
    if run.exists():
        meta = json.loads(run.read_text())
        name = f"{name} ({meta['policy'].get('name')} @ {meta['env']})"
    return name, records


def markdown_table(runs: dict[str, list[EpisodeRecord]]) -> str:
    stats = {name: summarize(records) for name, records in runs.items()}
    columns = [c for c in COLUMNS if any(c in s for s in stats.values())]
    lines = ["| run | episodes | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    for name, s in stats.items():
        cells = []
        for c in columns:
            if c not in s:
                cells.append("-")
            elif s[c]["interval"] == "wilson":
                cells.append(f"{s[c]['mean']:.3f} [{s[c]['low']:.3f}, {s[c]['high']:.3f}]")
            else:
                cells.append(f"{s[c]['mean']:.3f} ± {s[c]['ci95']:.3f}")
        lines.append(f"| {name} | {len(runs[name])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _length(record: EpisodeRecord) -> float:
    """Tour length for ObjectRecall episodes (`tour_steps` in the record), else the episode's steps."""
    return float(record.identity.get("tour_steps") or record.steps)


def plot(runs: dict[str, list[EpisodeRecord]], path: Path, bins: int = 5) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    lengths = np.array([_length(r) for rs in runs.values() for r in rs])
    edges = np.unique(np.quantile(lengths, np.linspace(0, 1, bins + 1))) if len(lengths) else np.array([0, 1])
    for name, records in runs.items():
        x = np.array([_length(r) for r in records])
        y = np.array([r.success or 0.0 for r in records])
        idx = np.clip(np.digitize(x, edges[1:-1]), 0, len(edges) - 2)
        centres = [(edges[b] + edges[b + 1]) / 2 for b in range(len(edges) - 1) if np.any(idx == b)]
        rates = [y[idx == b].mean() for b in range(len(edges) - 1) if np.any(idx == b)]
        ax.plot(centres, rates, marker="o", label=name)
    ax.set_xlabel("episode length (steps; tour steps for ObjectRecall)")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="embodied-report", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="evaluation output directories")
    parser.add_argument("--out", type=Path, default=Path("outputs/report"), help="where report.md and the PNG go")
    parser.add_argument("--bins", type=int, default=5, help="length bins in the plot")
    args = parser.parse_args(argv)
    runs = dict(load_run(d, label) for d, label in zip(args.runs, run_labels(args.runs)))
    table = markdown_table(runs)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.md").write_text(table + "\n")
    png = plot(runs, args.out / "success_vs_length.png", bins=args.bins)
    print(f"plot: {png}")
    return {"table": table, "plot": str(png)}
