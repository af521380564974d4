"""`memory_agent`: every memory by name behind the same encoder and head."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors import safe_open

import embodied
from embodied.data import collect_episodes
from embodied.policies.memory_agent import MEMORY_NAMES

torch.set_num_threads(1)
ENV_KW = {"resolution": 16, "max_episode_steps": 30}
KW = {"dim": 32, "heads": 2, "topk": 2, "chunk_size": 3, "capacity": 8, "num_places": 8,
      "obs_keys": ["depth", "pointgoal", "gps", "compass"]}


@pytest.fixture(scope="module")
def data():
    env = embodied.envs.make("pointnav", expert=True, **ENV_KW)
    episodes = collect_episodes(env, embodied.policies.make("expert"), n_episodes=2, seed=0)
    return env.observation_space, env.action_space, episodes


def build(data, memory: str, seed: int = 0):
    obs_space, act_space, _ = data
    return embodied.policies.make("memory_agent", observation_space=obs_space, action_space=act_space,
                                  memory=memory, seed=seed, **KW).eval()


def stream(policy, episode) -> torch.Tensor:
    policy.reset(np.ones(1, dtype=bool))
    out = []
    with torch.no_grad():
        for t in range(len(episode)):
            feats = policy.encode({k: v[t : t + 1] for k, v in episode.obs.items()})
            out.append(policy.forward_step(feats, policy.rollout_state)[0])
    return torch.stack(out)


@pytest.mark.parametrize("memory", MEMORY_NAMES)
def test_window_equals_streaming_and_honours_episode_starts(data, memory: str) -> None:
    policy = build(data, memory, seed=1)
    a, b = data[2]
    assert len(a) > 2 * KW["chunk_size"]
    obs = {k: np.concatenate([a.obs[k], b.obs[k]])[None] for k in a.obs}
    start = torch.zeros(1, len(a) + len(b), dtype=torch.bool)
    start[0, 0] = start[0, len(a)] = True
    with torch.no_grad():
        window = policy.forward_window(policy.encode_window(obs), start)[0]
    torch.testing.assert_close(window[: len(a)], stream(policy, a), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(window[len(a):], stream(policy, b), rtol=1e-4, atol=1e-4)


def test_memory_matters_and_only_the_memory_changes(data) -> None:
    a = data[2][0]
    keys = {}
    for memory in MEMORY_NAMES:
        policy = build(data, memory)
        keys[memory] = {k for k in policy.state_dict() if not k.startswith("memory.")}
        if memory != "none":  # the same step after different histories gives different outputs
            out = stream(policy, a)
            policy.reset(np.ones(1, dtype=bool))
            with torch.no_grad():
                last = {k: v[-1:] for k, v in a.obs.items()}
                fresh = policy.forward_step(policy.encode(last), policy.rollout_state)[0]
            assert not torch.allclose(out[-1], fresh, atol=1e-5), memory
    assert all(k == keys["none"] for k in keys.values())  # encoder, read projection, norm, heads


@pytest.mark.parametrize("memory", ["hcam", "events"])
def test_checkpoint_holds_weights_only_and_reproduces_actions(data, tmp_path, memory: str) -> None:
    policy = build(data, memory, seed=2)
    ep = data[2][0]
    policy.reset(np.ones(1, dtype=bool))
    actions = [policy.act({k: v[t : t + 1] for k, v in ep.obs.items()})[0] for t in range(len(ep))]
    policy.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        saved = set(f.keys())
    leaves = {k.rsplit(".", 1)[-1] for k in policy.rollout_state.tensors()}
    assert saved and not [k for k in saved if k.rsplit(".", 1)[-1] in leaves]
    loaded = embodied.policies.from_pretrained(tmp_path)
    loaded.reset(np.ones(1, dtype=bool))
    again = [loaded.act({k: v[t : t + 1] for k, v in ep.obs.items()})[0] for t in range(len(ep))]
    assert actions == again


def test_bad_memory_name_lists_the_choices(data) -> None:
    with pytest.raises(ValueError, match="memory must be one of"):
        build(data, "lstm")
