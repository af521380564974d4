"""Build the policy a config asks for: from a checkpoint, or fresh (baselines, explicit smoke tests).

    policy = build_policy({"name": "gru", "checkpoint": "outputs/train/x"}, obs_space, action_space)
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import gymnasium as gym

from embodied.policies import POLICIES, PRETRAINED, from_pretrained
from embodied.policies.base import Policy


def _has_weights(policy: Any) -> bool:
    params = getattr(policy, "parameters", None)
    return params is not None and any(p.numel() for p in params())


def build_policy(cfg: dict[str, Any], observation_space: gym.Space, action_space: gym.Space) -> Policy:
    """`cfg` = {"name": ..., "checkpoint": DIR | None, "untrained": bool, **options}.

    A learning policy is loaded with `from_pretrained(checkpoint)`; without a checkpoint it is
    refused (its weights would be random) unless `untrained=True`. Policies without weights
    (random, expert, map_agent) are built from the options and the env's spaces.
    """
    options = dict(cfg)
    if "name" not in options:
        raise ValueError(f"policy config needs a 'name'; got keys {sorted(options)}")
    name = str(options.pop("name"))
    checkpoint = options.pop("checkpoint", None)
    untrained = bool(options.pop("untrained", False))
    POLICIES.get(name)  # unknown names list the valid ones
    if checkpoint is not None:
        if name not in PRETRAINED:
            raise ValueError(f"policy.checkpoint: policy '{name}' loads no checkpoint; policies that do: "
                             f"{sorted(PRETRAINED)}")
        if untrained:
            raise ValueError("policy.untrained=true and policy.checkpoint are exclusive: choose one")
        policy = from_pretrained(checkpoint)
        if policy.name != name:
            raise ValueError(f"policy.checkpoint={checkpoint} holds a '{policy.name}' policy, not '{name}'")
        _check_options(name, options, policy)
        return policy
    if untrained and name not in PRETRAINED:
        raise ValueError(f"policy.untrained: policy '{name}' has no weights to leave untrained")
    if name in PRETRAINED:  # `build` forwards **options to its config: check them against it here
        _check_build_options(name, options)
    policy = POLICIES.make(name, observation_space=observation_space, action_space=action_space, **options)
    if _has_weights(policy) and not untrained:
        raise ValueError(
            f"policy '{name}' is a learning policy and no checkpoint was given: its weights are random. "
            f"Pass policy.checkpoint=DIR (a save_pretrained or training output directory), or "
            f"policy.untrained=true to evaluate it untrained on purpose (smoke tests).")
    return policy


_SET_BY_BUILD = ("obs_spec", "n_actions", "action_dim", "vocab")  # derived from the env's spaces and texts


def _check_build_options(name: str, options: dict[str, Any]) -> None:
    cls = PRETRAINED[name]
    fields = {f.name for f in dataclasses.fields(cls.config_class)}
    accepted = (fields - set(_SET_BY_BUILD)) | {"texts", "obs_keys"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise TypeError(f"policy '{name}': unknown option(s) {unknown}; accepted options: {sorted(accepted)}")


def _check_options(name: str, options: dict[str, Any], policy: Any) -> None:
    """With a checkpoint the saved config decides; an option it does not know is an error, one it
    sets differently is reported (the yaml's defaults need not match what was trained)."""
    config = getattr(policy, "config", None)
    fields = set(getattr(config, "__dataclass_fields__", {}))
    unknown = sorted(set(options) - fields)
    if unknown:
        raise TypeError(f"policy '{name}': unknown option(s) {unknown}; accepted options: {sorted(fields)}")
    differ = {k: (v, getattr(config, k)) for k, v in options.items() if getattr(config, k) != v}
    if differ:
        notes = ", ".join(f"{k}={saved!r} (config: {asked!r})" for k, (asked, saved) in differ.items())
        print(f"policy '{name}': using the checkpoint's {notes}", file=sys.stderr)
