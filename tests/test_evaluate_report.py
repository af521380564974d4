"""embodied-report over real evaluation runs: the table and the plot."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from embodied.conf import register_configs
from embodied.evaluate.report import main, run_labels
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
    # a second seed's run, in another folder under the same name: both get a row
    seed1 = tmp_path / "seed1" / "expert"
    shutil.copytree(runs[0], seed1)
    result = main([str(r) for r in [*runs, seed1]] + ["--out", str(tmp_path / "report")])
    lines = result["table"].splitlines()
    assert lines[0].startswith("| run | episodes | success")
    assert f"| {tmp_path.name}/expert (expert @ objectrecall) | 3 |" in lines[2]
    assert "| random (random @ objectrecall) | 3 |" in lines[3]
    assert "| seed1/expert (expert @ objectrecall) | 3 |" in lines[4]
    assert "[" in lines[2]  # the Wilson interval
    png = Path(result["plot"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert (tmp_path / "report" / "report.md").read_text().startswith("| run |")


def test_run_labels_tell_runs_of_the_same_name_apart(tmp_path: Path) -> None:
    a, b, c = tmp_path / "or700" / "hcam_eval", tmp_path / "or700s1" / "hcam_eval", tmp_path / "or700" / "gru_eval"
    assert run_labels([a, b, c]) == ["or700/hcam_eval", "or700s1/hcam_eval", "gru_eval"]
    deep = [tmp_path / "x" / "s" / "run", tmp_path / "y" / "s" / "run"]
    assert run_labels(deep) == ["x/s/run", "y/s/run"]
    with pytest.raises(ValueError, match="more than once"):
        run_labels([a, a])
