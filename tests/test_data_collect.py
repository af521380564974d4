"""`embodied-collect` on the real simulators, and interrupt-and-resume of a real subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from embodied.data import DatasetError, open_dataset
from embodied.data.collect import collect
from embodied.envs.libero import libero_available

ROOT = Path(__file__).resolve().parents[1]
NAV = {"resolution": 16, "expert": True}


def check_whole_episodes(src) -> list[int]:
    """Every episode ends exactly at its last frame (terminated or truncated) and its seed
    appears once; returns the seeds in commit order."""
    seeds = []
    for e in range(src.num_episodes):
        ep = src.read(e, keys=[])
        done = ep["terminated"] | ep["truncated"]
        assert done[-1] and not done[:-1].any(), f"episode {e} is not whole"
        assert ep["timestep"].tolist() == list(range(src.episode_lengths[e]))
        seeds.append(src.episode_info(e)["seed"])
    assert len(seeds) == len(set(seeds)), f"duplicate seeds {seeds}"
    return seeds


def committed(out: Path) -> int:
    try:
        return json.loads((out / "meta/info.json").read_text())["total_episodes"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


def start_collect(out: Path, episodes: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    cmd = [sys.executable, "-c", "from embodied.cli import collect_main; collect_main()", "env=pointnav",
           "env.resolution=16", f"collect.episodes={episodes}", "collect.progress=false", f"output_dir={out}"]
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(out: Path, proc: subprocess.Popen, at_least: int, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while committed(out) < at_least:
        assert proc.poll() is None, f"collect exited early: {proc.communicate()[0][-2000:]}"
        assert time.time() < deadline, "collect too slow"
        time.sleep(0.05)


def data_files(out: Path) -> int:
    return len(list((out / "data").glob("chunk-*/file-*.parquet")))


def test_interrupt_then_resume_keeps_whole_episodes_without_duplicates(tmp_path: Path) -> None:
    out, n = tmp_path / "ds", 6
    proc = start_collect(out, n)
    wait_for(out, proc, 2)
    proc.send_signal(signal.SIGTERM)
    text = proc.communicate(timeout=120)[0]
    assert proc.returncode == 143, text[-2000:]
    assert "interrupted" in text
    src = open_dataset(out)
    first = check_whole_episodes(src)
    assert 2 <= len(first) < n and data_files(out) == len(first)

    proc = start_collect(out, n)  # resumes; killed outright this time
    wait_for(out, proc, len(first) + 1)
    proc.kill()
    proc.wait(timeout=60)
    second = check_whole_episodes(open_dataset(out))
    assert second[: len(first)] == first and len(second) > len(first)

    proc = start_collect(out, n)  # completes
    text = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, text[-2000:]
    src = open_dataset(out)
    final = check_whole_episodes(src)
    assert sorted(final) == list(range(n)) and final[: len(second)] == second
    assert data_files(out) == n  # nothing left of the killed run's unfinished episode
    info = json.loads((out / "meta/info.json").read_text())
    assert info["total_episodes"] == n and info["total_frames"] == int(src.episode_lengths.sum())

    # the same episodes as one uninterrupted run: seed k -> the same actions and depth
    ref = tmp_path / "ref"
    collect("pointnav", {**NAV}, "expert", {}, ref, episodes=n, progress=False)
    ref_src = open_dataset(ref)
    by_seed = {src.episode_info(e)["seed"]: e for e in range(n)}
    for e in range(n):
        a, b = ref_src.read(e), src.read(by_seed[ref_src.episode_info(e)["seed"]])
        assert np.array_equal(a["action"], b["action"]) and np.array_equal(a["obs"]["depth"], b["obs"]["depth"])


def test_rerun_with_other_settings_is_refused(tmp_path: Path) -> None:
    collect("pointnav", NAV, "expert", {}, tmp_path, episodes=1, progress=False)
    with pytest.raises(DatasetError, match=r"collected with .* use the same policy and seed"):
        collect("pointnav", NAV, "expert", {}, tmp_path, episodes=2, seed=5, progress=False)
    with pytest.raises(DatasetError, match=r"env .* differs"):
        collect("pointnav", {**NAV, "resolution": 32}, "expert", {}, tmp_path, episodes=2, progress=False)
    r = collect("pointnav", NAV, "expert", {}, tmp_path, episodes=1, progress=False)
    assert r.committed == 0 and r.total == 1  # already complete
    # DAgger-style aggregation: another policy object, fresh seeds, appended
    from embodied.policies import make

    r = collect("pointnav", NAV, "random", {}, tmp_path, episodes=1, seed=50, progress=False,
                policy=make("random", action_space=gym.spaces.Discrete(4), seed=0))
    src = open_dataset(tmp_path)
    assert r.committed == 1 and src.num_episodes == 2 and src.episode_info(1)["seed"] == 50
    r = collect("pointnav", NAV, "random", {"seed": 1}, tmp_path, episodes=1, seed=60, append=True, progress=False)
    assert r.committed == 1 and open_dataset(tmp_path).episode_info(2)["seed"] == 60


def test_objectrecall_tour_then_question(tmp_path: Path) -> None:
    r = collect("objectrecall", NAV, "expert", {}, tmp_path, episodes=1, progress=False)
    assert r.committed == 1 and r.success == 1.0
    src = open_dataset(tmp_path)
    ep = src.read(0)
    phase, text = ep["obs"]["phase"], ep["obs"]["instruction"]
    assert phase[0] == 0 and phase[-1] == 1 and len(set(text)) == 2 == len(src.tasks)
    assert len(set(text[phase == 0])) == 1 and len(set(text[phase == 1])) == 1  # the task changes with the phase
    assert np.array_equal(ep["action"][phase == 1], ep["expert_action"][phase == 1])
    assert src.episode_info(0)["scene"].startswith("procedural:") and src.episode_info(0)["init_state"] == 0


def test_vln_async_two_envs(tmp_path: Path) -> None:
    r = collect("vln", {**NAV, "max_episode_steps": 60}, "expert", {}, tmp_path, episodes=3, num_envs=2,
                vectorization="async", seed=10, progress=False)
    assert r.committed == 3
    src = open_dataset(tmp_path)
    assert sorted(check_whole_episodes(src)) == [10, 11, 12]
    for e in range(3):
        ep = src.read(e)
        assert len(set(ep["obs"]["instruction"])) == 1 and ep["obs"]["rgb"].shape[1:] == (16, 16, 3)
        assert src.episode_info(e)["episode_id"] == f"val_unseen-{src.episode_info(e)['seed']}"


@pytest.mark.libero
@pytest.mark.slow
@pytest.mark.skipif(not libero_available(), reason="LIBERO not installed (pip install embodied[libero])")
def test_libero_scripted_expert(tmp_path: Path) -> None:
    opts = {"suite": "libero_object", "task_id": 0, "resolution": 32, "fast_render": True, "expert": True}
    r = collect("libero", opts, "expert", {}, tmp_path, episodes=1, seed=3, progress=False)
    assert r.committed == 1 and r.success == 1.0
    src = open_dataset(tmp_path)
    assert set(src.observation_space.spaces) == {"agentview_rgb", "wrist_rgb", "state", "instruction"}
    assert src.fps == 20 and src.action_space.shape == (7,)
    ep = src.read(0)
    assert ep["terminated"][-1] and ep["obs"]["agentview_rgb"].shape[1:] == (32, 32, 3)
    assert np.allclose(ep["action"], np.clip(ep["expert_action"], -1, 1), atol=1e-6)
    info = src.episode_info(0)
    assert info["init_state"] == 3 and info["scene"].startswith("libero_object/")
    assert src.tasks == [ep["obs"]["instruction"][0]]
