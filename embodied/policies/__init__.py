"""Policies: the `Policy` contract, a registry by name, baselines and learning policies.

    policy = embodied.policies.make("random", action_space=env.single_action_space, seed=0)
    policy = embodied.policies.make("gru", observation_space=venv.single_observation_space,
                                    action_space=venv.single_action_space, dim=64)
    policy = embodied.policies.from_pretrained("outputs/ckpt")
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from embodied.policies.base import ObsBatch, Policy, batch_size
from embodied.policies.baselines import EXPERT_KEY, ExpertPolicy, RandomPolicy
from embodied.policies.hcam_agent import HCAMAgentPolicy
from embodied.policies.janus_vln import JanusVLNPolicy
from embodied.policies.map_agent import MapAgentPolicy
from embodied.policies.memory_vla import MemoryVLAPolicy
from embodied.policies.pretrained import CONFIG_NAME, PolicyConfig, PretrainedPolicy
from embodied.policies.recurrent import GRUPolicy, MemorylessPolicy
from embodied.registry import Registry

POLICIES: Registry[Policy] = Registry("policy")
POLICIES.register("random")(RandomPolicy)
POLICIES.register("expert")(ExpertPolicy)

# Learning policies: `make` builds them from the environment's spaces; `from_pretrained`
# finds the class from the "type" in config.json.
PRETRAINED: dict[str, type[PretrainedPolicy]] = {}


def register_pretrained(cls: type[PretrainedPolicy]) -> type[PretrainedPolicy]:
    PRETRAINED[cls.name] = cls
    POLICIES.register(cls.name)(cls.build)
    return cls


for _cls in (MemorylessPolicy, GRUPolicy, HCAMAgentPolicy, MapAgentPolicy, MemoryVLAPolicy, JanusVLNPolicy):
    register_pretrained(_cls)


def make(name: str, **kwargs: Any) -> Policy:
    """Build the policy registered under `name`; an unknown name lists the valid ones."""
    return POLICIES.make(name, **kwargs)


def from_pretrained(directory: str | os.PathLike) -> PretrainedPolicy:
    """Load a policy saved with `save_pretrained` (config.json + model.safetensors)."""
    directory = Path(directory)
    config = json.loads((directory / CONFIG_NAME).read_text())
    kind = config.pop("type", None)
    if kind not in PRETRAINED:
        raise ValueError(f"{directory / CONFIG_NAME}: unknown policy type '{kind}'; known: {sorted(PRETRAINED)}")
    return PRETRAINED[kind].from_config_dir(directory, config)


def names() -> list[str]:
    return POLICIES.names()


__all__ = [
    "EXPERT_KEY",
    "POLICIES",
    "PRETRAINED",
    "ExpertPolicy",
    "GRUPolicy",
    "MemorylessPolicy",
    "ObsBatch",
    "Policy",
    "PolicyConfig",
    "PretrainedPolicy",
    "RandomPolicy",
    "batch_size",
    "from_pretrained",
    "make",
    "names",
    "register_pretrained",
]
