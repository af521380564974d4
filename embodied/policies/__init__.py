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
from embodied.policies.memory_agent import MemoryAgentPolicy
from embodied.policies.memory_vla import MemoryVLAPolicy
from embodied.policies.pretrained import CONFIG_NAME, PolicyConfig, PretrainedPolicy
from embodied.policies.processor import CheckpointError, PolicyProcessor
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


for _cls in (MemorylessPolicy, GRUPolicy, HCAMAgentPolicy, MapAgentPolicy, MemoryVLAPolicy, JanusVLNPolicy,
             MemoryAgentPolicy):
    register_pretrained(_cls)


def make(name: str, **kwargs: Any) -> Policy:
    """Build the policy registered under `name`; an unknown name lists the valid ones."""
    return POLICIES.make(name, **kwargs)


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """The `pretrained_model` directory behind `path`: that directory itself (it holds config.json),
    a training step directory (`<step>/pretrained_model`), or a training output directory
    (`checkpoints/last/pretrained_model`, the newest checkpoint)."""
    path = Path(path)
    for candidate in (path, path / "pretrained_model", path / "checkpoints" / "last" / "pretrained_model"):
        if (candidate / CONFIG_NAME).is_file():
            return candidate
    if not path.exists():
        raise FileNotFoundError(f"policy checkpoint {path}: no such directory")
    raise CheckpointError(
        f"policy checkpoint {path}: no {CONFIG_NAME} in it, in {path / 'pretrained_model'}, or in "
        f"{path / 'checkpoints/last/pretrained_model'} (expected a save_pretrained directory, a training step "
        "directory or a training output_dir)"
    )


def from_pretrained(directory: str | os.PathLike) -> PretrainedPolicy:
    """Load a policy saved with `save_pretrained` or by `embodied-train` (see `resolve_checkpoint`).
    A missing, corrupt or mismatching file raises `CheckpointError` naming it."""
    directory = resolve_checkpoint(directory)
    path = directory / CONFIG_NAME
    try:
        config = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(config).__name__}")
    kind = config.pop("type", None)
    if kind not in PRETRAINED:
        raise CheckpointError(f"{path}: unknown policy type {kind!r}; known: {sorted(PRETRAINED)}")
    return PRETRAINED[kind].from_config_dir(directory, config)


def names() -> list[str]:
    return POLICIES.names()


__all__ = [
    "EXPERT_KEY",
    "POLICIES",
    "PRETRAINED",
    "CheckpointError",
    "ExpertPolicy",
    "GRUPolicy",
    "MemorylessPolicy",
    "ObsBatch",
    "Policy",
    "PolicyConfig",
    "PolicyProcessor",
    "PretrainedPolicy",
    "RandomPolicy",
    "batch_size",
    "from_pretrained",
    "make",
    "names",
    "register_pretrained",
    "resolve_checkpoint",
]
