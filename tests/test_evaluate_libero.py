"""embodied-eval on LIBERO suites: the plan covers every task x init state, the task switches per
episode, and the per-task / suite summaries and the protocol reach the outputs. Physics only
(no cameras) and a few init states: the real simulator is slow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

import embodied
from embodied.conf import register_configs
from embodied.envs.libero import libero_available
from embodied.evaluate import grouped
from embodied.evaluate.run import evaluate, make_plan

pytestmark = [pytest.mark.libero, pytest.mark.skipif(not libero_available(), reason="LIBERO not installed")]


def cfg(*overrides: str):
    register_configs()
    with initialize_config_module("embodied.conf", version_base="1.3"):
        return compose("evaluate", overrides=["env=libero", *overrides])


def test_suite_plan_is_every_task_times_every_init_state() -> None:
    c = cfg("env.task_id=null")
    plan = make_plan("libero", {"suite": "libero_object", "task_id": None}, c.eval)
    assert len(plan.specs) == 10 * 50
    assert plan.specs[0].options == {"task_id": 0, "init_state": 0}
    assert plan.specs[-1].options == {"task_id": 9, "init_state": 49}
    one = make_plan("libero", {"suite": "libero_object", "task_id": 4}, cfg("eval.init_states=3").eval)
    assert [s.options for s in one.specs] == [{"task_id": 4, "init_state": i} for i in range(3)]
    env = embodied.envs.make("libero", suite="libero_object", task_id=0, cameras=(), fast_render=True)
    groups = [s.group for s in grouped(plan.specs, env)]  # a task's simulator is built on one env
    assert groups == [f"libero_object/task-{k // 50}" for k in range(500)]
    env.close()
    with pytest.raises(ValueError, match=r"eval.init_states=\[50\]"):
        make_plan("libero", {"suite": "libero_object"}, cfg("eval.init_states=[50]").eval)
    with pytest.raises(ValueError, match="make 500 episodes"):
        make_plan("libero", {"suite": "libero_object", "task_id": None}, cfg("eval.episodes=501").eval)


@pytest.mark.slow
def test_suite_run_reports_per_task_with_the_protocol(tmp_path: Path) -> None:
    summary = evaluate(cfg("policy=expert", "env.task_id=null", "eval.tasks=[0,1]", "eval.init_states=[0,2]",
                           "env.cameras=[]", "env.fast_render=true", "eval.progress=false", "eval.videos=0",
                           f"output_dir={tmp_path}"))
    rows = [json.loads(line) for line in (tmp_path / "episodes.jsonl").read_text().splitlines()]
    assert [(r["episode"], r["init_state"]) for r in sorted(rows, key=lambda r: r["episode"])] == [
        (0, 0), (1, 2), (2, 0), (3, 2)]
    tasks = [r["task"] for r in sorted(rows, key=lambda r: r["episode"])]
    assert tasks[0] == tasks[1] != tasks[2] == tasks[3]  # the env switched task between episodes 1 and 2
    assert all(r["instruction"] and r["success"] in (0.0, 1.0) and 1 <= r["steps"] <= 280 for r in rows)
    assert list(summary["per_task"]) == [tasks[0], tasks[2]]
    assert summary["per_task"][tasks[0]]["success"]["n"] == 2
    assert summary["suite"]["name"] == "libero_object" and summary["suite"]["success"]["n"] == 4
    protocol = summary["protocol"]
    assert protocol["max_steps"] == 280 and protocol["wait_steps"] == 10 and protocol["init_states"] == [0, 2]
    assert protocol["reset_settings"]["protocol"]["name"] == "openvla"
    assert protocol["packages"]["robosuite"]
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["per_task"] == summary["per_task"]
