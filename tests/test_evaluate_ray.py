"""eval.backend=ray on a local 2-CPU cluster: the same records as the local backend, a worker
killed mid-run has its episodes rescheduled (each written once), and SIGTERM (SLURM's preemption)
stops the driver cleanly, then the run resumes."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from embodied.conf import register_configs
from embodied.evaluate.rollout import EpisodeRecord
from embodied.evaluate.run import Plan, job_spec, make_plan, run_job

ray = pytest.importorskip("ray")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster():
    os.environ["PYTHONPATH"] = f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"  # the actors import us
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _job(*overrides: str) -> tuple[dict, Plan, object]:
    register_configs()
    with initialize_config_module("embodied.conf", version_base="1.3"):
        c = compose("evaluate", overrides=["env=pointnav", "policy=expert", "env.resolution=16",
                                           "env.max_episode_steps=60", "eval.episodes=8", "eval.ray.chunk=2",
                                           *overrides])
    from embodied.config import component_kwargs

    name, kwargs = component_kwargs(c.env)
    plan = make_plan(name, kwargs, c.eval)
    return job_spec(name, plan, {"name": "expert"}, c.eval), plan, c.eval.ray


@pytest.mark.slow
def test_ray_records_equal_the_local_backend(cluster) -> None:
    from embodied.evaluate.ray_backend import run_ray

    job, plan, ray_cfg = _job()
    local = run_job(job, plan.specs, on_episode=None)
    got: list[EpisodeRecord] = []
    run_ray(job, plan.specs, got.append, ray_cfg, run_job)
    got.sort(key=lambda r: r.episode)
    assert [r.comparable() for r in got] == [r.comparable() for r in local]


@pytest.mark.slow
def test_lost_ray_worker_has_its_episodes_rescheduled(cluster, capfd) -> None:
    from embodied.evaluate.ray_backend import run_ray

    job, plan, ray_cfg = _job()
    local = run_job(job, plan.specs, on_episode=None)
    killed: list[int] = []

    def kill_first(actor) -> None:
        if killed:
            return
        killed.append(-1)

        def later() -> None:  # the actor is up once it answers; its first chunk then runs
            pid = ray.get(actor.pid.remote())
            killed[0] = pid
            os.kill(pid, signal.SIGKILL)

        threading.Thread(target=later, daemon=True).start()

    got: list[EpisodeRecord] = []
    run_ray(job, plan.specs, got.append, ray_cfg, run_job, on_start=kill_first)
    assert killed[0] > 0
    assert "worker lost" in capfd.readouterr().err  # the chunk was rescheduled, not silently lost
    assert sorted(r.episode for r in got) == list(range(8))  # each once
    got.sort(key=lambda r: r.episode)
    assert [r.comparable() for r in got] == [r.comparable() for r in local]


@pytest.mark.slow
def test_sigterm_under_the_ray_backend_stops_cleanly_and_resumes(tmp_path: Path) -> None:
    """SLURM's preemption signal reaches the driver after `ray.init` has run, which installs its own
    SIGTERM handler (exit at once, no summary): the evaluator's must stay in place."""
    import json
    import subprocess
    import sys

    from interrupt import sigterm_after

    out, n = tmp_path / "run", 12
    cmd = [sys.executable, "-c", "from embodied.cli import eval_main; eval_main()", "env=pointnav", "policy=expert",
           "env.resolution=16", "env.max_episode_steps=60", "eval.progress=false", "eval.backend=ray",
           "eval.ray.num_cpus=2", "eval.ray.workers=2", "eval.ray.chunk=1", f"eval.episodes={n}", f"output_dir={out}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = out / "episodes.jsonl"
    err = sigterm_after(proc, log, 2)
    assert proc.returncode == 130, err[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and 2 <= summary["episodes"] < n
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert sorted(r["episode"] for r in rows) == list(range(n))  # each exactly once
