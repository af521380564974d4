"""`memory_vla` without LIBERO: a small continuous-control env (a point reaching a target that
only the first frame shows), the bank's real timesteps in training, save/load and rollouts."""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

import embodied
import embodied.memory as em
from embodied.evaluate import rollout

H = 16


class ReachEnv(gym.Env):
    """A point in [-1, 1]^2 moves by its 2-D action (x 0.2); the target is drawn in the first
    frame only, so a policy must remember it. Success: within 0.15 of the target."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(self, max_steps: int = 12) -> None:
        self.observation_space = spaces.Dict({
            "image": spaces.Box(0, 255, (H, H, 3), np.uint8),
            "state": spaces.Box(-1.0, 1.0, (2,), np.float32),
            "instruction": spaces.Text(32, charset="abcdefghijklmnopqrstuvwxyz "),
        })
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.max_steps = max_steps

    def _obs(self) -> dict[str, Any]:
        image = np.zeros((H, H, 3), np.uint8)
        if self.t == 0:
            i, j = ((self.target + 1) / 2 * (H - 1)).round().astype(int)
            image[i, j] = 255
        return {"image": image, "state": self.pos.astype(np.float32), "instruction": "reach the target"}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.pos = np.zeros(2)
        self.target = self.np_random.uniform(-0.8, 0.8, 2)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.pos = np.clip(self.pos + 0.2 * np.clip(action, -1, 1), -1, 1)
        self.t += 1
        success = float(np.linalg.norm(self.pos - self.target) < 0.15)
        return self._obs(), success, bool(success), self.t >= self.max_steps, {"metrics": {"success": success}}


def make_policy(env: ReachEnv, **kw: Any) -> Any:
    return embodied.policies.make("memory_vla", observation_space=env.observation_space,
                                  action_space=env.action_space, texts=["reach the target"], retrieval_layers=1,
                                  obs_keys=["image", "state", "instruction"], chunk=2, **kw)


def batch_of(policy: Any, env: ReachEnv, t: int, first_step: int) -> dict[str, Any]:
    """A [1, t] training batch of distinct random frames whose timesteps start at `first_step`."""
    rng = np.random.default_rng(0)
    frames = [{k: "reach the target" if k == "instruction" else rng.uniform(s.low, s.high).astype(s.dtype)
               for k, s in env.observation_space.spaces.items()} for _ in range(t)]
    obs = {k: np.stack([f[k] for f in frames])[None] if k != "instruction" else
           np.array([[f[k] for f in frames]], dtype=object) for k in frames[0]}
    actions = torch.rand(1, t, 2, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return {"obs": policy.processor(obs), "action": actions,
            "loss_mask": torch.ones(1, t, dtype=torch.bool),
            "episode_start": torch.tensor([[first_step == 0] + [False] * (t - 1)]),
            "timestep": torch.arange(first_step, first_step + t)[None]}


def test_pcmb_sequence_stamps_entries_with_the_given_timesteps() -> None:
    m = em.make("pcmb", dim=4, n_tokens=1, capacity=8)
    s = m.initial_state(2)
    t = torch.tensor([[57, 58, 59], [3, 9, 20]])  # a window opened mid-episode; a group with gaps
    m.sequence(torch.randn(2, 3, 1, 4), torch.randn(2, 3, 4), s, t=t)
    assert s.per_t[:, :3].tolist() == t.tolist() and s.cog_t[:, :3].tolist() == t.tolist()
    counted = m.initial_state(2)
    m.sequence(torch.randn(2, 3, 1, 4), torch.randn(2, 3, 4), counted)
    assert counted.per_t[:, :3].tolist() == [[0, 1, 2], [0, 1, 2]]  # no t: the bank counts from its state


def test_training_windows_use_their_real_timesteps() -> None:
    env = ReachEnv()
    policy = make_policy(env)
    losses = {}
    for first in (0, 40):
        batch = batch_of(policy, env, 5, first)
        with torch.random.fork_rng():
            torch.manual_seed(0)  # the same diffusion noise for both
            losses[first] = float(policy(batch)["loss"].detach())
    with torch.random.fork_rng():
        torch.manual_seed(0)
        again = float(policy(batch_of(policy, env, 5, 40))["loss"].detach())
    assert again == losses[40]  # deterministic under the same noise ...
    assert losses[0] != losses[40]  # ... and the timesteps reach the bank's time encoding


def test_rollout_save_load_and_per_row_noise(tmp_path) -> None:
    env = ReachEnv()
    policy = make_policy(env, sample_seed=5)
    (record,) = rollout(env, policy, n_episodes=1, seed=0)
    assert 1 <= record.steps <= env.max_steps
    policy.save_pretrained(tmp_path)
    loaded = embodied.policies.from_pretrained(tmp_path)
    again = embodied.policies.from_pretrained(tmp_path)
    obs = {k: np.stack([v, v]) if k != "instruction" else np.array([v, v], dtype=object)
           for k, v in env.reset(seed=1)[0].items()}
    loaded.reset(np.ones(2, dtype=bool))
    again.reset(np.ones(2, dtype=bool))
    a, b = loaded.act(obs), again.act(obs)
    np.testing.assert_array_equal(a, b)  # same checkpoint, same seed: same actions
    assert a.shape == (2, 2) and np.all(np.abs(a) <= 1)
    assert not np.allclose(a[0], a[1])  # two rows, same frame: their own noise
