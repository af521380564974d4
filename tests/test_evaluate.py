"""embodied-eval: checkpoint refusal, strict options, plans, resume after SIGTERM, restarted workers,
the CLI end to end. Everything runs the real navigation env (small frames) and real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_module
from interrupt import sigterm_after

import embodied
from embodied.conf import register_configs
from embodied.envs.nav.episodes import save_episodes
from embodied.evaluate import RolloutObserver, rollout
from embodied.evaluate.run import evaluate, make_plan
from embodied.policies import RandomPolicy
from embodied.policies.loading import build_policy

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"resolution": 16, "max_episode_steps": 60}


def cfg(*overrides: str):
    register_configs()
    with initialize_config_module("embodied.conf", version_base="1.3"):
        return compose("evaluate", overrides=list(overrides))


def spaces():
    env = embodied.envs.make("pointnav", **SMALL)
    return env.observation_space, env.action_space


# ----------------------------------------------------------------------------- policies
def test_learning_policy_without_checkpoint_is_refused_and_loads_from_one(tmp_path: Path) -> None:
    obs_space, act_space = spaces()
    with pytest.raises(ValueError, match="no checkpoint was given"):
        build_policy({"name": "gru", "dim": 16, "checkpoint": None, "untrained": False}, obs_space, act_space)
    trained = build_policy({"name": "gru", "dim": 16, "untrained": True}, obs_space, act_space)
    trained.save_pretrained(tmp_path / "ckpt")
    loaded = build_policy({"name": "gru", "dim": 16, "checkpoint": str(tmp_path / "ckpt")}, obs_space, act_space)
    for (k, a), (_, b) in zip(trained.state_dict().items(), loaded.state_dict().items()):
        assert a.equal(b), k
    with pytest.raises(ValueError, match="holds a 'gru' policy, not 'memoryless'"):
        build_policy({"name": "memoryless", "checkpoint": str(tmp_path / "ckpt")}, obs_space, act_space)
    with pytest.raises(ValueError, match="loads no checkpoint"):
        build_policy({"name": "random", "checkpoint": str(tmp_path / "ckpt")}, obs_space, act_space)


@pytest.mark.parametrize("name", ["random", "expert", "gru"])
def test_misspelt_policy_option_is_an_error_naming_the_accepted_ones(name: str) -> None:
    obs_space, act_space = spaces()
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['sed'\]; accepted options"):
        build_policy({"name": name, "sed": 3, "untrained": name == "gru"}, obs_space, act_space)


def test_cli_config_with_misspelt_option_fails_before_running(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="sed"):
        evaluate(cfg("policy=random", "+policy.sed=3", f"output_dir={tmp_path}", "env.resolution=16"))
    with pytest.raises(TypeError, match="resolutoin"):
        evaluate(cfg("policy=random", "+env.resolutoin=3", f"output_dir={tmp_path / 'b'}"))
    assert not (tmp_path / "episodes.jsonl").exists()


def test_random_policy_follows_its_own_seed() -> None:
    _, act_space = spaces()

    def actions(seed: int) -> list[int]:
        policy = RandomPolicy(act_space, seed=seed)
        act_space.seed(99)  # what a loop seeding the env's space did to the policy before
        return [int(a) for a in policy.act({"x": np.zeros((20, 1))})]

    assert actions(3) == actions(3)
    assert actions(3) != actions(4)


# ----------------------------------------------------------------------------- plans
def test_episode_file_runs_every_episode_once_and_never_wraps(tmp_path: Path) -> None:
    env = embodied.envs.make("pointnav", **SMALL)
    episodes = []
    for s in range(3):
        env.reset(seed=s)
        episodes.append(env.unwrapped.episode)
    path = save_episodes(episodes, tmp_path, "val_unseen")
    plan = make_plan("pointnav", {"episodes": str(path)}, cfg("eval.seed=5").eval)
    assert [(s.index, s.seed) for s in plan.specs] == [(0, 0), (1, 1), (2, 2)]
    with pytest.raises(ValueError, match=r"eval.episodes=5, but the episodes of .* make 3 episodes"):
        make_plan("pointnav", {"episodes": str(path)}, cfg("eval.episodes=5").eval)
    venv = embodied.envs.make_vec("pointnav", num_envs=2, expert=True, episodes=str(path), **SMALL)
    records = rollout(venv, embodied.policies.make("expert"), episodes=plan.specs)
    assert [r.identity["episode_id"] for r in records] == [e.episode_id for e in episodes]


# ----------------------------------------------------------------------------- pausing, workers
class _Counting(RolloutObserver):
    def __init__(self) -> None:
        self.steps: dict[int, int] = {}

    def step(self, env_index, spec, action, obs, info) -> None:
        self.steps[env_index] = self.steps.get(env_index, 0) + 1


def test_paused_envs_are_not_stepped() -> None:
    """3 envs, 2 episodes: env 2 never runs; env 1 is not stepped after its episode ends."""
    venv = embodied.envs.make_vec("pointnav", num_envs=3, expert=True, **SMALL)
    seen = _Counting()
    records = rollout(venv, embodied.policies.make("expert"), n_episodes=2, observer=seen)
    assert 2 not in seen.steps
    for r in records:
        assert seen.steps[r.env_index] == r.steps
        assert venv.sub_env(r.env_index).unwrapped.steps == r.steps  # the simulator agrees
    assert venv.sub_env(2) is None  # never even built


class _Sabotage(RolloutObserver):
    """At step 5 of episode 1, kill (SIGKILL) or freeze (SIGSTOP) its env's worker process, once."""

    def __init__(self, venv, sig: int) -> None:
        self.venv, self.sig, self.done = venv, sig, False

    def step(self, env_index, spec, action, obs, info) -> None:
        if not self.done and spec.index == 1 and info["steps"] == 5:
            self.done = True
            os.kill(self.venv.worker_pids()[env_index], self.sig)


@pytest.mark.timeout(180)  # a hung worker that is never timed out would hang the test
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "hung"])
def test_failed_env_worker_is_restarted_and_its_episode_rerun_once(sig: int) -> None:
    reference = rollout(embodied.envs.make_vec("pointnav", expert=True, **SMALL), embodied.policies.make("expert"),
                        n_episodes=4)
    venv = embodied.envs.make_vec("pointnav", num_envs=2, vectorization="async", timeout=5.0, expert=True, **SMALL)
    try:
        written = []
        records = rollout(venv, embodied.policies.make("expert"), n_episodes=4, on_episode=written.append,
                          observer=_Sabotage(venv, sig))
    finally:
        venv.close()
    assert [r.episode for r in sorted(written, key=lambda r: r.episode)] == [0, 1, 2, 3]  # once each
    assert [r.restarts for r in records] == [0, 1, 0, 0]
    assert [r.comparable() for r in records] == [r.comparable() for r in reference]


# ----------------------------------------------------------------------------- the command
def _eval_cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-c", "from embodied.cli import eval_main; eval_main()", "env=pointnav",
            "policy=expert", "env.resolution=16", "env.max_episode_steps=60", "eval.videos=1",
            "eval.progress=false", f"output_dir={out}", *extra]


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_cli_end_to_end_outputs(tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = subprocess.run(_eval_cmd(out, "eval.episodes=3", "eval.num_envs=2", "eval.vectorization=async"),
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "expert @ pointnav" in done.stdout and "3/3 episodes (complete)" in done.stdout
    rows = _lines(out / "episodes.jsonl")
    assert sorted(r["episode"] for r in rows) == [0, 1, 2]
    for row in rows:
        assert {"episode_id", "scene", "seed", "success", "steps", "wall_time", "metrics"} <= set(row)
        assert row["scene"].startswith("procedural:") and row["wall_time"] > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["overall"]["success"]["interval"] == "wilson"
    assert summary["protocol"]["max_steps"] == 60 and summary["protocol"]["resolution"] == 16
    assert summary["protocol"]["packages"]["gymnasium"]
    assert (out / "videos" / "episode_000000.gif").stat().st_size > 0
    assert not (out / "videos" / "episode_000001.gif").exists()
    # another run in the same directory is refused, not mixed in
    other = subprocess.run(_eval_cmd(out, "eval.episodes=3", "eval.seed=1"), cwd=ROOT,
                           env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
    assert other.returncode != 0 and "holds another run" in other.stderr


def test_sigterm_mid_run_then_resume_gives_one_record_per_episode(tmp_path: Path) -> None:
    out, n = tmp_path / "run", 40
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(_eval_cmd(out, f"eval.episodes={n}", "eval.num_envs=2", "eval.vectorization=async"),
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = out / "episodes.jsonl"
    err = sigterm_after(proc, log, 3)
    assert proc.returncode == 130, err
    before = _lines(log)
    assert 3 <= len(before) < n, "the interrupt must land mid-run"
    assert json.loads((out / "summary.json").read_text())["status"] == "interrupted"
    done = subprocess.run(_eval_cmd(out, f"eval.episodes={n}", "eval.num_envs=2", "eval.vectorization=async"),
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    after = _lines(log)
    assert sorted(r["episode"] for r in after) == list(range(n))  # each exactly once
    assert after[: len(before)] == before  # nothing written before the interrupt changed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["episodes"] == n
