"""Hydra's config tree (`pkg://embodied.conf`: the YAML groups beside this file) and the typed
schemas the entry points register before Hydra composes a config."""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from embodied.config import EvalConfig
from embodied.train.config import TrainConfig


def register_configs() -> None:
    """Register the structured schemas; call before `@hydra.main` runs (idempotent)."""
    ConfigStore.instance().store(group="eval", name="eval_schema", node=EvalConfig)
    ConfigStore.instance().store(group="train", name="train_schema", node=TrainConfig)
