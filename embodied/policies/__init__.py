"""Policies: the `Policy` contract, a registry by name, and the baselines.

    policy = embodied.policies.make("random", action_space=env.single_action_space, seed=0)
"""

from __future__ import annotations

from typing import Any

from embodied.policies.base import ObsBatch, Policy, batch_size
from embodied.policies.baselines import EXPERT_KEY, ExpertPolicy, RandomPolicy
from embodied.registry import Registry

POLICIES: Registry[Policy] = Registry("policy")
POLICIES.register("random")(RandomPolicy)
POLICIES.register("expert")(ExpertPolicy)


def make(name: str, **kwargs: Any) -> Policy:
    """Build the policy registered under `name`; an unknown name lists the valid ones."""
    return POLICIES.make(name, **kwargs)


def names() -> list[str]:
    return POLICIES.names()


__all__ = [
    "EXPERT_KEY",
    "POLICIES",
    "ExpertPolicy",
    "ObsBatch",
    "Policy",
    "RandomPolicy",
    "batch_size",
    "make",
    "names",
]
