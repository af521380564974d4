"""The trained policies shipped in `checkpoints/` (docs/results.md): they load with `from_pretrained`,
are the small policies the results describe, and act in the env they were trained for."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import embodied
from embodied.envs.vector import batch_observations

SHIPPED = Path(__file__).resolve().parent.parent / "checkpoints"
EXPECTED = {"objectrecall32-hcam_agent": "hcam_agent", "objectrecall32-gru": "gru",
            "objectrecall32-memoryless": "memoryless"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_checkpoint_loads_and_acts_deterministically(name: str) -> None:
    directory = SHIPPED / name
    files = sorted(p.name for p in directory.iterdir())
    assert files == ["config.json", "model.safetensors", "policy_preprocessor.json",
                     "policy_preprocessor.safetensors", "train_config.json"], files
    assert sum(p.stat().st_size for p in directory.iterdir()) < 4 * 2**20, "a shipped checkpoint stays a few MB"
    policies = [embodied.policies.from_pretrained(directory) for _ in range(2)]
    assert policies[0].name == EXPECTED[name]
    env = embodied.envs.make("objectrecall", resolution=32, split="val_unseen")
    actions: list[list[int]] = [[], []]
    for policy, acts in zip(policies, actions):
        obs, _ = env.reset(seed=3)
        policy.reset(np.ones(1, dtype=bool))
        for _ in range(40):
            (a,) = policy.act(batch_observations([obs]))
            acts.append(int(a))
            obs, _, terminated, truncated, _ = env.step(a)
            if terminated or truncated:
                break
    env.close()
    assert actions[0] == actions[1], "the same checkpoint and episode give the same actions"
    assert all(env.action_space.contains(a) for a in actions[0])
