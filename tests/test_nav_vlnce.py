"""A hand-made R2R-CE split in the exact VLN-CE layout, run end to end on a procedural house
exported for it: Y-up positions, quaternion rotations, padded instruction tokens and a
vocabulary, a `_gt` file with dense `locations`, `actions` and `forward_steps`."""

from __future__ import annotations

import gzip
import json
import math

import numpy as np
import pytest

import embodied
from embodied.envs.nav import metrics as M
from embodied.envs.nav.episodes import load_ground_truth
from embodied.envs.nav.geometry import resample_path
from embodied.envs.scenes import generate_scene, write_scene_files
from embodied.envs.sim.navgrid import NavGrid

SEED = 100_004
WORDS = ["<PAD>", "<UNK>", "walk", "to", "the", "goal", "and", "stop"]


def yup(p) -> list[float]:
    """Our Z-up (x, y, z) as habitat's Y-up (x, z, -y)."""
    return [float(p[0]), float(p[2]), -float(p[1])]


def yaw_quaternion(yaw: float) -> list[float]:
    """habitat [x, y, z, w] of a toolkit yaw: a rotation of yaw - pi/2 about +Y."""
    t = yaw - math.pi / 2
    return [0.0, math.sin(t / 2), 0.0, math.cos(t / 2)]


def episode_pair(grid: NavGrid, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    while True:
        start, goal = grid.sample_navigable_point(rng), grid.sample_navigable_point(rng)
        path = grid.shortest_path(start, goal)
        d = grid.geodesic_distance(start, goal)
        if 4.0 < d < 8.0 and len(path) >= 3:  # a path that turns: sparse and dense references differ
            return start, goal, path


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """`val_unseen.json.gz` + `val_unseen_gt.json.gz` written by hand, and the scene folder."""
    root = tmp_path_factory.mktemp("r2r")
    (scene_id,) = write_scene_files([SEED], root / "scenes" / "procedural")
    scene_id = f"procedural/{scene_id}"
    grid = NavGrid(generate_scene(SEED))
    rng = np.random.default_rng(0)
    episodes, gt, truth = [], {}, {}
    for k, radius in enumerate([3.0, 9.0]):
        start, goal, path = episode_pair(grid, rng)
        dense = resample_path(path, 0.25)
        tokens = [2, 3, 4, 5, 6, 7] + [0] * 194  # padded to 200 as in R2R-CE
        episodes.append({
            "episode_id": 11 + k, "trajectory_id": 4332 + k, "scene_id": scene_id,
            "start_position": yup(start), "start_rotation": yaw_quaternion(0.3),
            "info": {"geodesic_distance": grid.geodesic_distance(start, goal)},
            "goals": [{"position": yup(goal), "radius": radius}],
            "instruction": {"instruction_text": "Walk to the goal and stop.", "instruction_tokens": tokens},
            "reference_path": [yup(start), yup(path[len(path) // 2]), yup(goal)],
        })
        gt[str(11 + k)] = {"locations": [yup(p) for p in dense], "actions": [1] * (len(dense) - 1) + [0],
                           "forward_steps": len(dense) - 1}
        truth[k] = {"start": start, "goal": goal, "dense": dense}
    vocab = {"word_list": WORDS, "word2idx_dict": {w: i for i, w in enumerate(WORDS)},
             "itos": WORDS, "stoi": {w: i for i, w in enumerate(WORDS)}, "num_vocab": len(WORDS),
             "UNK_INDEX": 1, "PAD_INDEX": 0}
    with gzip.open(root / "val_unseen.json.gz", "wt") as f:
        json.dump({"episodes": episodes, "instruction_vocab": vocab}, f)
    with gzip.open(root / "val_unseen_gt.json.gz", "wt") as f:
        json.dump(gt, f)
    return root, truth


def test_ground_truth_parser(split) -> None:
    root, truth = split
    gt = load_ground_truth(root / "val_unseen_gt.json.gz")
    assert sorted(gt) == ["11", "12"]
    np.testing.assert_allclose(gt["11"].locations, truth[0]["dense"], atol=1e-9)  # Y-up converted back
    assert gt["11"].forward_steps == len(truth[0]["dense"]) - 1 and gt["11"].actions[-1] == 0


def test_real_layout_runs_end_to_end_and_scores_ndtw_on_dense_locations(split) -> None:
    root, truth = split
    env = embodied.envs.make("vln", episodes=str(root / "val_unseen.json.gz"), scenes_dir=str(root / "scenes"),
                             expert=True, resolution=32)
    obs, _ = env.reset(seed=0)
    assert obs["instruction"] == "Walk to the goal and stop."
    np.testing.assert_allclose(env.unwrapped.backend.get_agent_pose().position, truth[0]["start"], atol=1e-6)
    positions, done = [env.unwrapped.backend.get_agent_pose().position], False
    while not done:
        obs, _, terminated, truncated, info = env.step(obs["expert_action"])
        positions.append(env.unwrapped.backend.get_agent_pose().position)
        done = terminated or truncated
    metrics = info["metrics"]
    assert terminated and metrics["success"] == 1.0
    episode = env.unwrapped.episode
    dense_ndtw = M.ndtw(np.array(positions), truth[0]["dense"], 3.0)
    sparse_ndtw = M.ndtw(np.array(positions), episode.reference_path, 3.0)
    assert metrics["ndtw"] == pytest.approx(dense_ndtw, abs=1e-9)
    assert abs(dense_ndtw - sparse_ndtw) > 1e-3  # the two references really score differently
    env.close()


def test_success_radius_is_the_episodes(split) -> None:
    """Episode 12's goal radius is 9 m, more than its start-to-goal distance: STOP at the start
    succeeds, which the class-wide 3 m radius would not allow."""
    root, _ = split
    env = embodied.envs.make("vln", episodes=str(root / "val_unseen.json.gz"), scenes_dir=str(root / "scenes"),
                             resolution=32)
    env.reset(seed=1)
    assert env.unwrapped.episode.success_distance == 9.0
    _, _, terminated, _, info = env.step(0)
    assert terminated and info["metrics"]["success"] == 1.0 and info["metrics"]["distance_to_goal"] > 3.0
    env.close()


def test_trajectories_read_through_the_dataset_api(split) -> None:
    from embodied.data.reader import open_dataset

    root, truth = split
    src = open_dataset(root / "val_unseen.json.gz")
    assert src.num_episodes == 2 and src.tasks == ["Walk to the goal and stop."]
    ep = src.read(0)
    n = len(truth[0]["dense"])
    assert len(ep["action"]) == n and ep["action"][-1] == 0 and (ep["action"][:-1] == 1).all()
    np.testing.assert_allclose(ep["obs"]["position"], truth[0]["dense"], atol=1e-5)  # Y-up converted to Z-up
    assert ep["terminated"][-1] and not ep["terminated"][:-1].any()
    assert list(ep["timestep"]) == list(range(n)) and src.episode_info(1)["episode_id"] == "12"
    part = src.read(1, frames=np.array([2, 3]), keys=["position"])
    assert set(part["obs"]) == {"position"} and list(part["timestep"]) == [2, 3]
