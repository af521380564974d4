"""The Habitat backend on real habitat-sim, in this interpreter or in the one named by
`EMBODIED_HABITAT_PYTHON` (e.g. a conda env): skipped, with the reason, where it is absent."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import embodied
from embodied.envs.sim.types import Action

HABITAT_PYTHON = os.environ.get("EMBODIED_HABITAT_PYTHON", sys.executable)


def _habitat_version() -> str | None:
    probe = subprocess.run([HABITAT_PYTHON, "-c", "import habitat_sim; print(habitat_sim.__version__)"],
                           capture_output=True, text=True)
    return probe.stdout.strip() if probe.returncode == 0 else None


VERSION = _habitat_version()
pytestmark = [
    pytest.mark.habitat,
    pytest.mark.skipif(
        VERSION is None,
        reason=f"habitat_sim is not importable by {HABITAT_PYTHON} "
        "(install it with conda and set EMBODIED_HABITAT_PYTHON; docs/habitat.md)",
    ),
]
BACKEND = {"name": "habitat", "python": HABITAT_PYTHON}
TASKS = ["pointnav", "objectnav", "vln", "objectrecall"]


@pytest.mark.parametrize("task", TASKS)
def test_expert_succeeds_on_habitat(task: str) -> None:
    venv = embodied.envs.make_vec(task, expert=True, resolution=64, backend=BACKEND)
    records = embodied.evaluate.rollout(venv, embodied.policies.make("expert"), n_episodes=5, seed=0)
    assert np.mean([r.metrics["success"] for r in records]) >= 0.8


def test_geodesic_distances_agree_with_mujoco() -> None:
    """Same procedural house, same start and goal: the two backends' geodesic start-to-goal
    distances agree within 5%, and the expert succeeds on both."""
    mujoco_env = embodied.envs.make("pointnav", expert=True, resolution=64)
    habitat_env = embodied.envs.make("pointnav", expert=True, resolution=64, backend=BACKEND)
    for seed in range(5):
        mujoco_env.reset(seed=seed)
        episode = mujoco_env.unwrapped.episode
        start, goal = np.asarray(episode.start_position), np.asarray(episode.goals[0])
        d_mujoco = mujoco_env.unwrapped.backend.geodesic_distance(start, goal)
        hb = habitat_env.unwrapped.backend
        hb.load_scene(mujoco_env.unwrapped.scene)
        d_habitat = hb.geodesic_distance(start, goal)
        assert abs(d_habitat - d_mujoco) <= 0.05 * d_mujoco, (seed, d_mujoco, d_habitat)
        for env in (mujoco_env, habitat_env):
            obs, _ = env.reset(seed=seed)
            done = False
            while not done:
                obs, _, terminated, truncated, info = env.step(obs["expert_action"])
                done = terminated or truncated
            assert info["metrics"]["success"] == 1.0


def test_habitat_sensors_and_semantic_ids() -> None:
    env = embodied.envs.make("objectnav", semantic=True, resolution=64, backend=BACKEND)
    obs, _ = env.reset(seed=0)
    assert obs["rgb"].shape == (64, 64, 3) and obs["rgb"].dtype == np.uint8
    assert obs["depth"].dtype == np.float32 and 0 < obs["depth"].max() <= 10
    scene_ids = {o.id for o in env.unwrapped.scene.objects} | {0}
    assert set(np.unique(obs["semantic"])) <= scene_ids
    env.step(Action.MOVE_FORWARD)
