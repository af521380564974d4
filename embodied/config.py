"""Typed (structured) configs registered in Hydra's ConfigStore, and config helpers.

The typed schemas make Hydra reject a misspelt key (`eval.episods=5`) instead of
silently ignoring it. The `env`, `policy` and `memory` groups are open: each entry is a
registry `name` plus that component's constructor options, which the registries check
themselves (an unknown option fails with the list of accepted ones).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

CONFIG_PATH = "pkg://embodied.conf"


@dataclass
class EvalConfig:
    episodes: int = 10
    seed: int = 0
    num_envs: int = 1
    vectorization: str = "sync"  # sync | async
    output_dir: str = "${hydra:runtime.output_dir}"


def register_configs() -> None:
    """Register the structured schemas; call before `@hydra.main` runs (idempotent)."""
    from embodied.train.config import TrainConfig

    ConfigStore.instance().store(group="eval", name="eval_schema", node=EvalConfig)
    ConfigStore.instance().store(group="train", name="train_schema", node=TrainConfig)


def component_kwargs(cfg: DictConfig | None) -> tuple[str, dict[str, Any]]:
    """Split a component config (`{name: ..., **options}`) into its name and options."""
    if cfg is None:
        raise ValueError("component config is missing")
    options = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(options, dict)
    if "name" not in options:
        raise ValueError(f"component config needs a 'name' key; got keys {sorted(options)}")
    name = options.pop("name")
    return str(name), {str(k): v for k, v in options.items()}
