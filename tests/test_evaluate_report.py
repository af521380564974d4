"""embodied-report over real evaluation runs: the table and the plot."""

from __future__ import annotations

import json
from pathlib import Path

from hydra import compose, initialize_config_module

from embodied.conf import register_configs
from embodied.evaluate.report import main
from embodied.evaluate.run import evaluate


def test_report_compares_two_runs(tmp_path: Path) -> None:
    register_configs()
    runs = []
    for policy in ("expert", "random"):
        out = tmp_path / policy
        with initialize_config_module("embodied.conf", version_base="1.3"):
            cfg = compose("evaluate", overrides=["env=objectrecall", f"policy={policy}", "env.resolution=16",
                                                 "env.max_episode_steps=300", "eval.episodes=3", "eval.videos=0",
                                                 "eval.progress=false", f"output_dir={out}", "env.expert=true"])
        evaluate(cfg)
        runs.append(out)
        rows = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
        assert all(r["tour_steps"] > 0 for r in rows)  # the x axis of the plot for ObjectRecall
    result = main([str(r) for r in runs] + ["--out", str(tmp_path / "report")])
    lines = result["table"].splitlines()
    assert lines[0].startswith("| run | episodes | success")
    assert "expert (expert @ objectrecall) | 3 |" in lines[2] and "random (random @ objectrecall) | 3 |" in lines[3]
    assert "[" in lines[2]  # the Wilson interval
    png = Path(result["plot"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert (tmp_path / "report" / "report.md").read_text().startswith("| run |")
