"""The Gymnasium navigation tasks on the embedded MuJoCo backend."""

from __future__ import annotations

import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import embodied
from embodied.envs.nav.episodes import load_episodes, save_episodes
from embodied.envs.sim.types import Action
from embodied.evaluate import rollout, summarize

TASKS = ["pointnav", "objectnav", "vln", "objectrecall"]
SMALL = {"resolution": 32}


@pytest.mark.parametrize("task", TASKS)
def test_check_env_and_registered_id(task: str) -> None:
    env = embodied.envs.make(task, **SMALL)
    check_env(env.unwrapped, skip_render_check=True)
    gym_id = embodied.envs.ENV_IDS[task]
    assert gym.make(gym_id, **SMALL).spec.id == gym_id
    env.close()


@pytest.mark.parametrize("task", TASKS)
def test_same_seed_same_episode_and_observations(task: str) -> None:
    def run() -> tuple:
        env = embodied.envs.make(task, **SMALL)
        obs, _ = env.reset(seed=5)
        frames = [obs["rgb"].copy()]
        for a in [1, 2, 1, 3, 1]:
            obs, *_ = env.step(a)
            frames.append(obs["rgb"].copy())
        ep = env.unwrapped.episode
        env.close()
        return ep.episode_id, ep.start_position, ep.goals, ep.instruction, np.stack(frames)

    a, b = run(), run()
    assert a[:4] == b[:4]
    np.testing.assert_array_equal(a[4], b[4])


@pytest.mark.parametrize("task", TASKS)
def test_expert_solves_the_task(task: str) -> None:
    venv = embodied.envs.make_vec(task, num_envs=1, expert=True, **SMALL)
    records = rollout(venv, embodied.policies.make("expert"), n_episodes=12, seed=100)
    stats = summarize(records)
    assert stats["success"]["mean"] >= 11 / 12, [r.as_row() for r in records if not r.metrics["success"]]
    assert stats["spl"]["mean"] > 0.6


def test_random_policy_rarely_succeeds_at_object_recall() -> None:
    venv = embodied.envs.make_vec("objectrecall", num_envs=1, **SMALL)
    policy = embodied.policies.make("random", action_space=venv.single_action_space, seed=0)
    records = rollout(venv, policy, n_episodes=8, seed=0)
    assert summarize(records)["success"]["mean"] <= 0.25


def test_object_recall_ignores_actions_during_the_tour() -> None:
    def tour(action: int) -> list[np.ndarray]:
        env = embodied.envs.make("objectrecall", **SMALL)
        obs, _ = env.reset(seed=3)
        seen = []
        while obs["phase"] == 0:
            assert "ignored" in obs["instruction"]
            obs, *_ = env.step(action)
            seen.append(obs["rgb"])
        assert "shown" in obs["instruction"]
        env.close()
        return seen

    a, b = tour(Action.STOP), tour(Action.TURN_LEFT)
    assert len(a) == len(b) > 0
    np.testing.assert_array_equal(np.stack(a), np.stack(b))


def test_truncation_and_stop() -> None:
    env = embodied.envs.make("pointnav", max_episode_steps=3, **SMALL)
    env.reset(seed=0)
    outcomes = [env.step(Action.TURN_LEFT)[2:4] for _ in range(3)]
    assert outcomes == [(False, False), (False, False), (False, True)]
    env.reset(seed=0)
    _, _, terminated, truncated, info = env.step(Action.STOP)
    assert terminated and not truncated
    assert info["metrics"]["success"] == 0.0  # the goal is at least 1 m away


def test_a_step_limit_above_the_default_reaches_the_env() -> None:
    # gym.make(id, max_episode_steps=n) keeps n for its own TimeLimit and builds the env with
    # its default of 500: an ObjectRecall tour of 8 objects (up to 700 steps) never got its question.
    env = embodied.envs.make("pointnav", max_episode_steps=520, **SMALL)
    assert env.unwrapped.max_episode_steps == 520
    env.reset(seed=0)
    truncated = [env.step(Action.TURN_LEFT)[3] for _ in range(520)]
    assert not any(truncated[:-1]) and truncated[-1]
    env.close()


def test_episode_files_round_trip(tmp_path) -> None:
    env = embodied.envs.make("vln", **SMALL)
    episodes = []
    for seed in range(3):
        env.reset(seed=seed)
        episodes.append(env.unwrapped.episode)
    path = save_episodes(episodes, tmp_path, "val_unseen")
    assert (tmp_path / "val_unseen_gt.json.gz").exists()
    loaded = load_episodes(path)
    assert [e.instruction for e in loaded] == [e.instruction for e in episodes]
    np.testing.assert_allclose(loaded[1].reference_path, episodes[1].reference_path)
    replay = embodied.envs.make("vln", episodes=str(path), **SMALL)
    assert [replay.unwrapped.episode_group(k) for k in range(3)] == [e.scene_id for e in episodes]
    obs, _ = replay.reset(seed=1)
    assert obs["instruction"] == episodes[1].instruction
    np.testing.assert_allclose(replay.unwrapped.backend.get_agent_pose().position, episodes[1].start_position)


def test_reads_habitat_yup_episode_files(tmp_path) -> None:
    import gzip
    import json

    raw = {"episodes": [{"episode_id": 7, "trajectory_id": 1, "scene_id": "mp3d/x/x.glb",
                         "start_position": [1.0, 0.2, -2.0], "start_rotation": [0, 0, 0, 1],
                         "info": {"geodesic_distance": 4.5}, "goals": [{"position": [3.0, 0.2, -5.0], "radius": 3.0}],
                         "instruction": {"instruction_text": "Walk ahead.", "instruction_tokens": [1, 2]},
                         "reference_path": [[1.0, 0.2, -2.0], [3.0, 0.2, -5.0]]}]}
    with gzip.open(tmp_path / "val_unseen.json.gz", "wt") as f:
        json.dump(raw, f)
    (ep,) = load_episodes(tmp_path / "val_unseen.json.gz")
    assert ep.start_position == [1.0, 2.0, 0.2]  # (x, y, z)_Y-up -> (x, -z, y)_Z-up
    assert ep.goals == [[3.0, 5.0, 0.2]]
    assert ep.start_yaw == pytest.approx(np.pi / 2)  # habitat identity faces -Z = our +Y
    assert ep.instruction == "Walk ahead." and ep.geodesic_distance == 4.5


def test_bad_options_name_the_allowed_values() -> None:
    with pytest.raises(ValueError, match="split must be one of"):
        embodied.envs.make("pointnav", split="test_unseen")
    with pytest.raises(TypeError, match="accepted options"):
        embodied.envs.make("pointnav", resolutoin=64)
    with pytest.raises(ValueError, match=r"backend\.name must be one of"):
        embodied.envs.make("pointnav", backend={"name": "unity"}).reset(seed=0)
    env = embodied.envs.make("pointnav", **SMALL)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action must be in"):
        env.step(7)


def test_async_vector_env_rollout() -> None:
    venv = embodied.envs.make_vec("pointnav", num_envs=2, vectorization="async", expert=True, **SMALL)
    records = rollout(venv, embodied.policies.make("expert"), n_episodes=3, seed=0)
    venv.close()
    sync = rollout(embodied.envs.make_vec("pointnav", num_envs=1, expert=True, **SMALL),
                   embodied.policies.make("expert"), n_episodes=3, seed=0)
    assert [r.comparable() for r in records] == [r.comparable() for r in sync]


def test_out_of_process_backend_gives_the_same_observations() -> None:
    def run(backend) -> list[dict]:
        env = embodied.envs.make("objectnav", semantic=True, backend=backend, **SMALL)
        obs, _ = env.reset(seed=2)
        out = [obs]
        for a in [1, 1, 2, 1, 3, 1, 1]:
            out.append(env.step(a)[0])
        env.close()
        return out

    local = run("mujoco")
    remote = run({"name": "mujoco", "python": sys.executable})
    for a, b in zip(local, remote, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=key)


@pytest.mark.parametrize("task", TASKS)
def test_expert_runs_out_of_process(task: str) -> None:
    """`expert=True` (and ObjectRecall's tour) need only the backend protocol: through the
    out-of-process worker the expert gives exactly the in-process episodes and succeeds."""
    def run(backend) -> list[dict]:
        venv = embodied.envs.make_vec(task, num_envs=1, expert=True, backend=backend, **SMALL)
        records = rollout(venv, embodied.policies.make("expert"), n_episodes=3, seed=7)
        venv.close()
        return [r.comparable() for r in records]

    local = run("mujoco")
    remote = run({"name": "mujoco", "python": sys.executable})
    assert remote == local
    assert all(row["success"] == 1.0 for row in remote), remote


def test_episodes_share_a_house_and_reuse_what_it_built() -> None:
    env = embodied.envs.make("pointnav", episodes_per_scene=4, **SMALL)
    env.reset(seed=0)
    backend, model, grid = env.unwrapped.backend, env.unwrapped.backend.model, env.unwrapped.backend.navgrid
    scenes = []
    for seed in range(4):
        env.reset(seed=seed)
        scenes.append(env.unwrapped.episode.scene_id)
        assert env.unwrapped.backend.model is model and env.unwrapped.backend.navgrid is grid
    assert len(set(scenes)) == 1
    env.reset(seed=4)  # the next group of seeds draws its own house, in the same backend
    assert env.unwrapped.episode.scene_id != scenes[0] and env.unwrapped.backend is backend
    with pytest.raises(ValueError, match="episodes_per_scene must be >= 1"):
        embodied.envs.make("pointnav", episodes_per_scene=0)


def test_unreachable_goal_gives_finite_metrics(tmp_path) -> None:
    """A goal off the navigable floor: distances fall back to straight lines, the episode
    reports `unreachable`, and the metrics are plain JSON (no Infinity)."""
    import json

    env = embodied.envs.make("pointnav", **SMALL)
    env.reset(seed=0)
    episode = env.unwrapped.episode
    episode.goals = [[-40.0, -40.0, 0.0]]
    path = save_episodes([episode], tmp_path, "val_unseen")
    replay = embodied.envs.make("pointnav", episodes=str(path), **SMALL)
    replay.reset(seed=0)
    _, _, _, _, info = replay.step(Action.MOVE_FORWARD)
    metrics = info["metrics"]
    assert metrics["unreachable"] == 1.0 and np.isfinite(metrics["distance_to_goal"])
    assert metrics["distance_to_goal"] > 40.0
    json.dumps(metrics, allow_nan=False)


def test_objectnav_success_rules() -> None:
    env = embodied.envs.make("objectnav", **SMALL)
    env.reset(seed=1)
    ep, scene, clearance = env.unwrapped.episode, env.unwrapped.scene, env.unwrapped.agent_cfg.radius + 0.1
    assert ep.success_distance == 0.1
    from embodied.envs.nav.geometry import footprint_distance

    instances = [scene.object_by_id(i) for i in ep.target_object_ids]
    gaps = np.min([footprint_distance(o, np.asarray(ep.goals)) for o in instances], axis=0)
    assert gaps.min() >= clearance - 1e-9 and gaps.max() <= clearance + 1.0 + 1e-9  # a band of view points
    assert len(ep.goals) > 16 * len(instances)  # dense, not a ring
    loose = embodied.envs.make("objectnav", success_rule="near_object", **SMALL)
    loose.reset(seed=1)
    assert loose.unwrapped.episode.success_distance == 1.0
    with pytest.raises(ValueError, match=r"success_rule must be one of \['view_points', 'near_object'\]"):
        embodied.envs.make("objectnav", success_rule="touch")
