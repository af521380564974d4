"""VLA/VLN policies (`memory_vla`, `janus_vln`): save/load, row independence, overfitting expert data,
streaming vs window agreement and rollouts in their environments."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch
from training import train

import embodied
import embodied.memory as em
from embodied.data import Episode, collect_episodes, episode_windows, normalization_stats
from embodied.envs.libero import libero_available
from embodied.evaluate import rollout

VLN_KW = {"resolution": 16, "max_episode_steps": 60}
VLN_KEYS = ["rgb", "depth", "instruction"]
LIBERO_STEPS = 16  # expert steps recorded per LIBERO episode (the start of a pick-and-place)


def replay_actions(policy: Any, episode: Episode) -> np.ndarray:
    """The policy's actions along a recorded episode (teacher forcing), in eval mode (torch's
    MultiheadAttention takes a different, not bit-identical, kernel in eval mode)."""
    policy.eval()
    policy.reset(np.ones(1, dtype=bool))
    return np.asarray([policy.act({k: v[t : t + 1] for k, v in episode.obs.items()})[0] for t in range(len(episode))])


# --------------------------------------------------------------------------------------------- janus_vln
@pytest.fixture(scope="module")
def vln_data():
    env = embodied.envs.make("vln", expert=True, **VLN_KW)
    episodes = collect_episodes(env, embodied.policies.make("expert"), n_episodes=4, seed=0)
    return env.observation_space, env.action_space, episodes


def build_janus(vln_data, **kw: Any) -> Any:
    obs_space, act_space, episodes = vln_data
    texts = [str(e.obs["instruction"][0]) for e in episodes]
    return embodied.policies.make("janus_vln", observation_space=obs_space, action_space=act_space, texts=texts,
                                  obs_keys=VLN_KEYS, max_text_tokens=32, **kw)


def stream_logits(policy: Any, obs: dict[str, np.ndarray], clear_spatial: bool = False) -> torch.Tensor:
    """Step logits [T, n] along one episode's observations, streamed from an empty state (eval mode).
    `clear_spatial`: empty the spatial encoder's caches before every step, so that only the LM's own
    cache can carry the history."""
    policy.eval()
    policy.reset(np.ones(1, dtype=bool))
    out = []
    with torch.no_grad():
        for t in range(len(obs["rgb"])):
            if clear_spatial:
                policy.rollout_state.memory.reset()
            out.append(policy.step_logits({k: v[t : t + 1] for k, v in obs.items()})[0])
    return torch.stack(out)


def with_frame(episode: Episode, t: int, other: Episode, u: int) -> dict[str, np.ndarray]:
    """The episode's observations with frame t's rgb and depth replaced by `other`'s frame u."""
    obs = {k: v.copy() for k, v in episode.obs.items()}
    for k in ("rgb", "depth"):
        assert not np.array_equal(obs[k][t], other.obs[k][u])
        obs[k][t] = other.obs[k][u]
    return obs


def test_janus_streaming_matches_whole_episode_training_pass(vln_data) -> None:
    # Small caches (2 initial + 5 recent frames) so that eviction happens inside the 33-44 step episodes,
    # in the spatial encoder's cache and in the LM's; the training pass (loss) reads window_logits.
    n_init, n_recent = 2, 5
    policy = build_janus(vln_data, n_initial=n_init, n_recent=n_recent)
    episodes = vln_data[2]
    policy.eval()
    with torch.no_grad():
        window = policy.window_logits(episode_windows(episodes)["obs"])
        for i, ep in enumerate(episodes[:2]):
            assert len(ep) > n_init + n_recent + 1
            stream = stream_logits(policy, ep.obs)
            torch.testing.assert_close(stream, window[i, : len(ep)], atol=1e-4, rtol=1e-4)
            state, last = policy.rollout_state, len(ep) - 1
            for layer in (state.lm.layer_0, state.lm.layer_1, state.memory.spatial_0):  # both caches evicted
                assert sorted(layer.slot_frame[0].tolist()) == [0, 1, *range(last - n_recent, last + 1)]


def test_janus_lm_reads_its_own_kv_cache(vln_data, monkeypatch) -> None:
    """The LM gets a start+recent cache as its past key/values, and with the spatial encoder's caches
    emptied before every step the history still changes the action logits: the LM's cache carries it."""
    policy = build_janus(vln_data, n_initial=2, n_recent=5)
    ep, other = vln_data[2][0], vln_data[2][1]
    seen: list[Any] = []
    lm_forward = policy.backbone.lm.forward

    def spy(*args: Any, **kw: Any) -> Any:
        cache = kw.get("cache", kw.get("past_key_values"))
        seen.append(int(cache.layers[0].frames_seen.max()) if isinstance(cache, em.dual_kv.StartRecentCache)
                    else None)
        return lm_forward(*args, **kw)

    monkeypatch.setattr(policy.backbone.lm, "forward", spy)
    t = 6
    obs = {k: v[: t + 1] for k, v in ep.obs.items()}
    base = stream_logits(policy, obs, clear_spatial=True)
    calls, seen[:] = list(seen), []
    changed = stream_logits(policy, {k: v[: t + 1] for k, v in with_frame(ep, t - 1, other, t - 1).items()},
                            clear_spatial=True)
    assert torch.equal(base[: t - 1], changed[: t - 1])
    assert (base[t] - changed[t]).abs().max() > 1e-4  # frame t is the same: only the LM cache differs
    assert calls == [0, *range(t + 1)]  # the prefix, then one call per frame over the frames cached so far


def test_janus_action_depends_on_the_window_not_on_evicted_frames(vln_data) -> None:
    """Step t's logits change when a frame still in the start or recent window changes, and are bit-for-bit
    unchanged when only an evicted frame changes. 'Evicted' counts the history of the kept frames too:
    a kept frame's keys were computed while it attended to its own window, so with E spatial encoder
    layers and L LM layers step t reads frames back to t - (E + L) * n_recent (plus the initial ones)."""
    n_init, n_recent = 2, 3
    policy = build_janus(vln_data, n_initial=n_init, n_recent=n_recent, encoder_layers=1, lm_layers=2)
    ep, other = vln_data[2][0], vln_data[2][2]
    t, evicted = 20, n_init + 1
    assert evicted < t - (1 + 2) * n_recent
    obs = {k: v[: t + 1] for k, v in ep.obs.items()}
    base = stream_logits(policy, obs)

    def alter(frame: int) -> torch.Tensor:
        return stream_logits(policy, {k: v[: t + 1] for k, v in with_frame(ep, frame, other, frame).items()})

    for kept in (0, t - n_recent, t - 1):  # initial window, oldest and newest recent frame
        assert (alter(kept)[t] - base[t]).abs().max() > 1e-4, kept
    gone = alter(evicted)
    assert (gone[evicted + 1] - base[evicted + 1]).abs().max() > 1e-4  # it mattered while it was kept
    assert torch.equal(gone[t], base[t])


def test_janus_training_pass_builds_no_dense_episode_mask(vln_data, monkeypatch) -> None:
    """Every attention of the whole-episode training pass reads a start+recent band, never [T*P, T*P] keys:
    the spatial encoder W*P keys per frame (W = n_initial + n_recent + 1), the LM, streamed in blocks of
    n_recent + 1 frames, prefix + (W + n_recent) * F keys per block."""
    n_init, n_recent = 2, 5
    policy = build_janus(vln_data, n_initial=n_init, n_recent=n_recent)
    windows = episode_windows(vln_data[2])
    T, P, W = windows["obs"]["rgb"].shape[1], policy.tokens_per_frame, n_init + n_recent + 1
    bound = max(W * P, policy.prefix_tokens + (W + n_recent) * policy.lm_frame_tokens)
    assert bound * 2 < T * P
    calls: list[tuple[int, int]] = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: Any = None, **kw: Any) -> Any:
        calls.append((k.shape[-2], 0 if attn_mask is None else attn_mask.shape[-1]))
        return sdpa(q, k, v, attn_mask=attn_mask, **kw)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    policy.loss(windows).backward()
    assert len(calls) >= -(-T // (n_recent + 1)) * policy.config.lm_layers  # the LM streamed through its cache
    assert max(max(c) for c in calls) <= bound, max(calls)


def test_janus_with_a_local_hf_backbone_streams_like_its_training_pass(vln_data, tmp_path) -> None:
    """`backbone=<local dir>`: a tiny random Qwen2 (grouped-query attention, q/k/v biases) and a word-level
    tokenizer written here (nothing downloaded); its own KV cache streams like the training pass, with
    eviction, and the loss backpropagates."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    episodes = vln_data[2][:2]
    words = sorted({w for e in episodes for w in str(e.obs["instruction"][0]).lower().replace(".", " ").split()})
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(["<pad>", "<unk>", *words])}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>").save_pretrained(tmp_path)
    torch.manual_seed(0)
    Qwen2ForCausalLM(Qwen2Config(vocab_size=len(words) + 2, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2)).save_pretrained(tmp_path)
    policy = build_janus(vln_data, backbone=str(tmp_path), n_initial=2, n_recent=5)
    assert policy.backbone.cache_geometry() == (2, 2, 8)
    windows = episode_windows(episodes)
    policy.eval()
    with torch.no_grad():
        window = policy.window_logits(windows["obs"])
        for i, ep in enumerate(episodes):
            assert len(ep) > 2 + 5 + 1
            torch.testing.assert_close(stream_logits(policy, ep.obs), window[i, : len(ep)], atol=1e-4, rtol=1e-4)
    policy.train()
    policy.loss(windows).backward()
    assert policy.backbone.lm.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0


def test_janus_overfits_expert_episodes(vln_data) -> None:
    torch.manual_seed(0)
    policy = build_janus(vln_data, encoder_layers=2)
    episodes = vln_data[2]
    first, last = train(policy, episode_windows(episodes), steps=110, lr=3e-3, cosine=True)
    assert last < 0.3 * first, (first, last)
    agree = np.concatenate([replay_actions(policy, ep) == ep.actions for ep in episodes])
    assert agree.mean() >= 0.9, agree.mean()


def test_janus_save_load_reproduces_actions(vln_data, tmp_path) -> None:
    policy = build_janus(vln_data, seed=3)
    policy.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "config.json", "model.safetensors", "policy_preprocessor.json", "policy_preprocessor.safetensors"]
    loaded = embodied.policies.from_pretrained(tmp_path)
    ep = vln_data[2][0]
    np.testing.assert_array_equal(replay_actions(policy, ep), replay_actions(loaded, ep))
    with torch.no_grad():
        policy.reset(np.ones(1, dtype=bool))
        loaded.reset(np.ones(1, dtype=bool))
        obs = {k: v[:1] for k, v in ep.obs.items()}
        torch.testing.assert_close(policy.step_logits(obs), loaded.step_logits(obs), atol=0, rtol=0)


def stacked_obs(episodes: list[Episode], t: int) -> dict[str, np.ndarray]:
    """Step t of each episode (clamped at its end) as one batch, one row per episode."""
    return {k: np.stack([e.obs[k][min(t, len(e) - 1)] for e in episodes]) for k in episodes[0].obs}


def check_reset_of_one_row(policy: Any, episodes: list[Episode], steps: int = 6) -> None:
    """Resetting row 1 mid-episode leaves rows 0 and 2 acting exactly as without the reset."""
    other = copy.deepcopy(policy)
    for p in (policy, other):
        p.reset(np.ones(3, dtype=bool))
    for t in range(steps):
        if t == 3:
            policy.reset(np.array([False, True, False]))
        a, b = policy.act(stacked_obs(episodes, t)), other.act(stacked_obs(episodes, t))
        np.testing.assert_array_equal(a[[0, 2]], b[[0, 2]])
    policy.on_envs_pause([0])
    other.on_envs_pause([0])
    a, b = policy.act(stacked_obs(episodes[1:], steps)), other.act(stacked_obs(episodes[1:], steps))
    np.testing.assert_array_equal(a[1], b[1])


def test_janus_reset_of_one_row_leaves_the_others(vln_data) -> None:
    check_reset_of_one_row(build_janus(vln_data), vln_data[2][:3])


def test_janus_runs_episodes_through_rollout(vln_data) -> None:
    venv = embodied.envs.make_vec("vln", num_envs=2, resolution=16, max_episode_steps=20)
    policy = embodied.policies.make("janus_vln", observation_space=venv.single_observation_space,
                                    action_space=venv.single_action_space, texts=["go to the kitchen"])
    records = rollout(venv, policy, n_episodes=3, seed=0)
    assert len(records) == 3 and all(1 <= r.steps <= 20 for r in records)


# --------------------------------------------------------------------------------------------- memory_vla
@pytest.fixture(scope="module")
def libero_env():
    if not libero_available():
        pytest.skip("LIBERO not installed (pip install embodied[libero])")
    env = embodied.envs.make("libero", suite="libero_object", task_id=0, resolution=32, fast_render=True)
    yield env
    env.close()


@pytest.fixture(scope="module")
def libero_data(libero_env):
    """The first LIBERO_STEPS steps of the scripted expert from two init states (LIBERO steps at about
    5/s on this machine, so whole 100-200 step demonstrations are too slow for a unit test)."""
    episodes = []
    for init in (0, 1):
        obs, _ = libero_env.reset(seed=init, options={"init_state": init})
        steps, actions = [], []
        for _ in range(LIBERO_STEPS):
            action = np.asarray(libero_env.unwrapped.expert_action(), dtype=np.float32)
            steps.append(obs)
            actions.append(action)
            obs, *_ = libero_env.step(action)
        stacked = {k: (np.array([s[k] for s in steps], dtype=object) if isinstance(steps[0][k], str)
                       else np.stack([s[k] for s in steps])) for k in steps[0]}
        episodes.append(Episode(stacked, np.stack(actions), seed=init))
    return libero_env.observation_space, libero_env.action_space, episodes


def build_vla(libero_data, **kw: Any) -> Any:
    obs_space, act_space, episodes = libero_data
    policy = embodied.policies.make("memory_vla", observation_space=obs_space, action_space=act_space,
                                    texts=[str(episodes[0].obs["instruction"][0])], retrieval_layers=1, **kw)
    policy.set_normalization(normalization_stats(episodes, ["state"]))
    actions = np.concatenate([e.actions for e in episodes])
    policy.set_action_stats(actions.min(0), actions.max(0))
    return policy


def test_memory_vla_overfits_expert_windows(libero_data) -> None:
    torch.manual_seed(0)
    # x0 ("sample") prediction on min-max normalised actions, 4 deterministic DDIM steps at act time
    policy = build_vla(libero_data, diffusion_repeats=2, sample_steps=4)
    episodes = libero_data[2]
    first, last = train(policy, episode_windows(episodes), steps=80, lr=1e-2, warmup=10)
    assert last < 0.3 * first, (first, last)
    err = np.concatenate([np.abs(replay_actions(policy, ep) - ep.actions).max(-1) for ep in episodes])
    assert (err < 0.1).mean() >= 0.9, (err < 0.1).mean()


def test_memory_vla_save_load_reproduces_actions(libero_data, tmp_path) -> None:
    policy = build_vla(libero_data, seed=3, sample_seed=7)
    policy.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "config.json", "model.safetensors", "policy_preprocessor.json", "policy_preprocessor.safetensors"]
    loaded = embodied.policies.from_pretrained(tmp_path)
    ep = libero_data[2][0]
    np.testing.assert_array_equal(replay_actions(policy, ep), replay_actions(loaded, ep))
    for key, value in policy.state_dict().items():
        torch.testing.assert_close(value, loaded.state_dict()[key])


def test_memory_vla_reset_of_one_row_leaves_the_others(libero_data) -> None:
    episodes = libero_data[2]
    check_reset_of_one_row(build_vla(libero_data, chunk=4), [episodes[0], episodes[1], episodes[0]])


def test_memory_vla_runs_a_full_episode_through_rollout(libero_env) -> None:
    """A whole protocol episode (an untrained policy runs to libero_object's 280-step limit)."""
    policy = embodied.policies.make("memory_vla", observation_space=libero_env.observation_space,
                                    action_space=libero_env.action_space, texts=[libero_env.unwrapped.instruction])
    (record,) = rollout(libero_env, policy, n_episodes=1, seed=0)
    limit = libero_env.unwrapped.max_steps
    assert record.steps == limit or record.metrics["success"] == 1.0, record.as_row()
    assert 1 <= record.steps <= limit
