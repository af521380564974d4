"""Learning policies: save/load round trips, row independence, and overfitting expert data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from training import train

import embodied
from embodied.data import collect_episodes, episode_windows, normalization_stats
from embodied.evaluate import rollout

LEARNING = ["memoryless", "gru"]
ENV_KW = {"resolution": 16, "max_episode_steps": 60}
# The overfitting test reads depth and the goal sensors: enough to imitate the expert, and
# cheap enough on a CPU (the RGB path is exercised by the rollout and save/load tests).
FIT_KEYS = ["depth", "pointgoal", "gps", "compass"]


@pytest.fixture(scope="module")
def expert_data():
    env = embodied.envs.make("pointnav", expert=True, **ENV_KW)
    episodes = collect_episodes(env, embodied.policies.make("expert"), n_episodes=4, seed=0)
    return env.observation_space, env.action_space, episodes


def build(name: str, expert_data, **kw):
    obs_space, act_space, episodes = expert_data
    policy = embodied.policies.make(name, observation_space=obs_space, action_space=act_space, dim=64, **kw)
    policy.set_normalization(normalization_stats(episodes, ["pointgoal", "gps", "compass"]))
    return policy


def replay_actions(policy, episode) -> np.ndarray:
    """The policy's actions along a recorded episode (teacher forcing)."""
    policy.reset(np.ones(1, dtype=bool))
    acts = []
    for t in range(len(episode)):
        acts.append(policy.act({k: v[t : t + 1] for k, v in episode.obs.items()})[0])
    return np.asarray(acts)


@pytest.mark.parametrize("name", LEARNING)
def test_overfits_expert_episodes(name: str, expert_data) -> None:
    policy = build(name, expert_data, obs_keys=FIT_KEYS)
    episodes = expert_data[2]
    first, last = train(policy, episode_windows(episodes), steps=100, lr=3e-3)
    assert last < 0.25 * first
    agree = np.concatenate([replay_actions(policy, ep) == ep.actions for ep in episodes])
    assert agree.mean() >= 0.9, agree.mean()


@pytest.mark.parametrize("name", LEARNING)
def test_save_load_reproduces_actions(name: str, expert_data, tmp_path) -> None:
    policy = build(name, expert_data, seed=3)
    policy.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "config.json", "model.safetensors", "policy_preprocessor.json", "policy_preprocessor.safetensors"]
    loaded = embodied.policies.from_pretrained(tmp_path)
    ep = expert_data[2][0]
    np.testing.assert_array_equal(replay_actions(policy, ep), replay_actions(loaded, ep))
    for key, value in policy.state_dict().items():
        torch.testing.assert_close(value, loaded.state_dict()[key])


def test_gru_reset_of_one_row_leaves_the_others() -> None:
    venv = embodied.envs.make_vec("pointnav", num_envs=3, **ENV_KW)
    obs, _ = venv.reset(seed=0)
    policy = embodied.policies.make("gru", observation_space=venv.single_observation_space,
                                    action_space=venv.single_action_space, dim=32)
    policy.reset(np.ones(3, dtype=bool))
    for _ in range(3):
        policy.act(obs)
    before = policy.rollout_state.hidden.clone()
    assert before.abs().sum() > 0
    policy.reset(np.array([False, True, False]))
    torch.testing.assert_close(policy.rollout_state.hidden[[0, 2]], before[[0, 2]])
    assert torch.all(policy.rollout_state.hidden[1] == 0)
    policy.on_envs_pause([0])
    torch.testing.assert_close(policy.rollout_state.hidden[1], before[2])


@pytest.mark.parametrize("name", LEARNING)
def test_runs_full_episodes_through_rollout(name: str) -> None:
    venv = embodied.envs.make_vec("objectnav", num_envs=2, **ENV_KW)
    policy = embodied.policies.make(name, observation_space=venv.single_observation_space,
                                    action_space=venv.single_action_space, dim=32,
                                    texts=["Find a chair.", "Find a lamp."])
    records = rollout(venv, policy, n_episodes=3, seed=0)
    assert len(records) == 3 and all(r.steps >= 1 for r in records)
