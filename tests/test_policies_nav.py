"""Navigation policies with memory: `hcam_agent` (learned, HCAM layers) and `map_agent`
(voxel map + planner). Small resolutions keep the whole file well under 90 s on 2 cores."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from training import train

import embodied
from embodied.data import collect_episodes, episode_windows, normalization_stats
from embodied.evaluate import rollout

ENV_KW = {"resolution": 16, "max_episode_steps": 60}
FIT_KEYS = ["depth", "pointgoal", "gps", "compass"]
HCAM_KW = {"dim": 64, "layers": 2, "heads": 4, "topk": 2, "chunk_size": 8, "max_chunks": 16}


@pytest.fixture(scope="module")
def expert_data():
    env = embodied.envs.make("pointnav", expert=True, **ENV_KW)
    episodes = collect_episodes(env, embodied.policies.make("expert"), n_episodes=4, seed=0)
    return env.observation_space, env.action_space, episodes


def build_hcam(expert_data, **kw):
    obs_space, act_space, episodes = expert_data
    policy = embodied.policies.make("hcam_agent", observation_space=obs_space, action_space=act_space,
                                    **{**HCAM_KW, **kw})
    policy.set_normalization(normalization_stats(episodes, ["pointgoal", "gps", "compass"]))
    return policy


def replay(policy, episode, logits: bool = False) -> np.ndarray:
    """The policy's actions (or outputs) along a recorded episode, streaming (teacher forcing)."""
    policy.reset(np.ones(1, dtype=bool))
    out = []
    with torch.no_grad():
        for t in range(len(episode)):
            step = {k: v[t : t + 1] for k, v in episode.obs.items()}
            if logits:
                out.append(policy.forward_step(policy.encode(step), policy.rollout_state)[0].numpy())
            else:
                out.append(policy.act(step)[0])
    return np.asarray(out)


# ---------------------------------------------------------------------------- hcam_agent
def test_hcam_overfits_expert_episodes(expert_data) -> None:
    policy = build_hcam(expert_data, obs_keys=FIT_KEYS, dim=32)
    episodes = expert_data[2]
    first, last = train(policy, episode_windows(episodes), steps=80, lr=5e-3)
    assert last < 0.25 * first, (first, last)
    agree = np.concatenate([replay(policy, ep) == ep.actions for ep in episodes])
    assert agree.mean() >= 0.9, agree.mean()


def test_hcam_streaming_equals_sequence(expert_data) -> None:
    policy = build_hcam(expert_data, seed=1).eval()
    ep = max(expert_data[2], key=len)
    assert len(ep) > 2 * HCAM_KW["chunk_size"]  # completed chunks are read from memory
    stream = replay(policy, ep, logits=True)
    with torch.no_grad():
        window = policy.forward_window(policy.encode_window({k: v[None] for k, v in ep.obs.items()}))[0].numpy()
    np.testing.assert_allclose(stream, window, atol=1e-4)
    # a loss computed mid-rollout leaves the rollout memories alone
    before = policy.rollout_state.clone()
    policy.loss(episode_windows(expert_data[2]))
    for k, v in before.tensors().items():
        assert torch.equal(v, policy.rollout_state.tensors()[k]), k


def test_hcam_window_honours_episode_starts_inside_it(expert_data) -> None:
    """Two episodes back to back in one window, the second marked by `episode_start`, give the
    outputs of the two episodes run separately."""
    policy = build_hcam(expert_data, seed=2).eval()
    a, b = expert_data[2][0], expert_data[2][1]
    obs = {k: np.concatenate([a.obs[k], b.obs[k]])[None] for k in a.obs}
    start = torch.zeros(1, len(a) + len(b), dtype=torch.bool)
    start[0, len(a)] = True
    with torch.no_grad():
        joint = policy.forward_window(policy.encode_window(obs), start, policy.initial_state(1))[0]
        sep_b = policy.forward_window(policy.encode_window({k: v[None] for k, v in b.obs.items()}))[0]
    torch.testing.assert_close(joint[len(a):], sep_b, rtol=1e-4, atol=1e-5)


def test_hcam_save_load_reproduces_actions(expert_data, tmp_path) -> None:
    policy = build_hcam(expert_data, seed=3)
    ep = expert_data[2][0]
    expected = replay(policy, ep)
    policy.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "config.json", "model.safetensors", "policy_preprocessor.json", "policy_preprocessor.safetensors"]
    loaded = embodied.policies.from_pretrained(tmp_path)
    assert type(loaded).__name__ == "HCAMAgentPolicy" and loaded.config.layers == HCAM_KW["layers"]
    np.testing.assert_array_equal(expected, replay(loaded, ep))
    for key, value in policy.state_dict().items():
        torch.testing.assert_close(value, loaded.state_dict()[key])
    # acting filled the memories; the checkpoint still holds weights only
    assert int(policy.rollout_state.layer0.n_chunks[0]) > 0
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        saved = set(f.keys())
    state_leaves = {k.rsplit(".", 1)[-1] for k in policy.rollout_state.tensors()}
    assert saved and not [k for k in saved if k.rsplit(".", 1)[-1] in state_leaves]


def test_hcam_rows_are_independent() -> None:
    venv = embodied.envs.make_vec("pointnav", num_envs=3, **ENV_KW)
    obs, _ = venv.reset(seed=0)
    policy = embodied.policies.make("hcam_agent", observation_space=venv.single_observation_space,
                                    action_space=venv.single_action_space, **{**HCAM_KW, "dim": 32}).eval()
    policy.reset(np.ones(3, dtype=bool))
    for _ in range(11):  # past one chunk: rows hold completed chunks
        actions = np.asarray(policy.act(obs))
        obs, *_ = venv.step(np.where(actions == 0, 1, actions))  # no STOP: a finished row could not step on
    feats = policy.encode(obs)
    untouched = copy.deepcopy(policy)
    policy.reset(np.array([False, True, False]))
    with torch.no_grad():
        out = policy.forward_step(feats, policy.rollout_state)
        ref = untouched.forward_step(feats, untouched.rollout_state)
    torch.testing.assert_close(out[[0, 2]], ref[[0, 2]])
    assert not torch.allclose(out[1], ref[1])
    assert int(policy.rollout_state.layer0.n_chunks[1]) == 0
    fresh = copy.deepcopy(untouched)
    fresh.reset(np.array([False, True, False]))  # same weights, same reset, no pause
    policy.on_envs_pause([0])
    with torch.no_grad():
        out2, ref2 = policy.forward_step(feats[[1, 2]], policy.rollout_state), fresh.forward_step(
            feats, fresh.rollout_state)
    torch.testing.assert_close(out2, ref2[[1, 2]])
    policy.reset(np.ones(4, dtype=bool))  # a different number of rows: a new rollout state
    assert policy.rollout_state.batch_size == 4


@pytest.mark.parametrize("task", ["pointnav", "objectnav", "vln", "objectrecall"])
def test_hcam_runs_full_episodes_through_rollout(task: str) -> None:
    venv = embodied.envs.make_vec(task, num_envs=2, resolution=16, max_episode_steps=25)
    policy = embodied.policies.make("hcam_agent", observation_space=venv.single_observation_space,
                                    action_space=venv.single_action_space, texts=["Find a chair."],
                                    **{**HCAM_KW, "dim": 32})
    records = rollout(venv, policy, n_episodes=3, seed=0)
    assert len(records) == 3 and all(r.steps >= 1 for r in records)


# ---------------------------------------------------------------------------- map_agent
MAP_ENV = {"resolution": 32, "semantic": True}


def _success(records) -> float:
    return float(np.mean([r.metrics["success"] for r in records]))


def test_map_agent_objectnav_beats_random(capsys) -> None:
    venv = embodied.envs.make_vec("objectnav", num_envs=1, split="val_unseen", max_episode_steps=250, **MAP_ENV)
    policy = embodied.policies.make("map_agent", observation_space=venv.single_observation_space,
                                    action_space=venv.single_action_space)
    n = 6
    ours = _success(rollout(venv, policy, n_episodes=n, seed=0))
    rand = _success(rollout(venv, embodied.policies.make("random", action_space=venv.single_action_space),
                            n_episodes=n, seed=0))
    with capsys.disabled():
        print(f"\nObjectNav val_unseen, {n} episodes: map_agent success {ours:.2f}, random {rand:.2f}")
    assert ours >= rand + 0.3, (ours, rand)


def test_map_agent_objectrecall_in_a_vector_env(capsys) -> None:
    venv = embodied.envs.make_vec("objectrecall", num_envs=2, max_episode_steps=400, **MAP_ENV)
    policy = embodied.policies.make("map_agent", observation_space=venv.single_observation_space,
                                    action_space=venv.single_action_space)
    n = 8  # 4 episodes are too few for the 1/3 bound: one unlucky episode decides it
    records = rollout(venv, policy, n_episodes=n, seed=0)
    assert len(records) == n and {r.env_index for r in records} == {0, 1}
    ours = _success(records)
    with capsys.disabled():
        print(f"\nObjectRecall, {n} episodes (2 envs): map_agent success {ours:.2f}; "
              "a memoryless agent can at best guess one of the 3 shown objects (1/3)")
    assert ours > 1 / 3, ours


def test_map_agent_checkpoint_and_missing_keys(tmp_path) -> None:
    env = embodied.envs.make("objectnav", **MAP_ENV)
    policy = embodied.policies.make("map_agent", observation_space=env.observation_space,
                                    action_space=env.action_space, stop_distance=0.6)
    policy.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    loaded = embodied.policies.from_pretrained(tmp_path)
    assert type(loaded).__name__ == "MapAgentPolicy" and loaded.config.stop_distance == 0.6
    assert tuple(loaded.config.privileged_inputs) == ("semantic_category",)  # declared, kept in the checkpoint
    with pytest.raises(ValueError, match="privileged_inputs"):
        embodied.policies.make("map_agent", observation_space=env.observation_space, action_space=env.action_space,
                               privileged_inputs=[])
    plain = embodied.envs.make("objectnav", resolution=16)
    with pytest.raises(ValueError, match="semantic=True"):
        embodied.policies.make("map_agent", observation_space=plain.observation_space,
                               action_space=plain.action_space)


def recalled_after_tour(policy, env, seed: int):
    """Run one ObjectRecall tour through the policy; return its recalled map object and the target's goals."""
    obs, _ = env.reset(seed=seed)
    policy.reset(np.ones(1, dtype=bool))
    while True:
        policy.act({k: np.asarray([v], dtype=object if isinstance(v, str) else None) for k, v in obs.items()})
        if policy.rows[0].question:
            break
        obs, *_ = env.step(0)
    ep = env.unwrapped.episode  # the target's view points, in the start frame (the agent's gps frame)
    rel = np.asarray(ep.goals)[:, :2] - np.asarray(ep.start_position)[:2]
    c, s = np.cos(-ep.start_yaw), np.sin(-ep.start_yaw)
    return policy.rows[0].target, np.stack([c * rel[:, 0] - s * rel[:, 1], s * rel[:, 0] + c * rel[:, 1]], 1)


def test_map_agent_recalls_objectrecall_targets_from_its_voxel_map() -> None:
    """At the question, the object picked from the voxel map (components of labelled voxels, their colour
    and the tour poses that faced them; no instance ids) stands where the target object is: within 1.5 m
    of the view points around it (a wrong shown object is usually several metres away). Measured: 6 of
    these 8 tours (the former id-keyed records picked the target in 2 of the first 6)."""
    env = embodied.envs.make("objectrecall", split="val_unseen", **MAP_ENV)
    policy = embodied.policies.make("map_agent", observation_space=env.observation_space,
                                    action_space=env.action_space)
    n, hits = 8, 0
    for seed in range(n):
        target, goals = recalled_after_tour(policy, env, seed)
        assert policy.rows[0].tour_poses and (target is None or len(target.cells))
        if target is not None:
            hits += float(np.min(np.hypot(*(goals - target.centre).T))) <= 1.5
    env.close()
    assert hits >= 6, hits
