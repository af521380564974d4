"""Typed (structured) configs that `embodied.conf.register_configs` puts in Hydra's ConfigStore,
and config helpers.

The typed schemas make Hydra reject a misspelt key (`eval.episods=5`) instead of
silently ignoring it. The `env`, `policy` and `memory` groups are open: each entry is a
registry `name` plus that component's constructor options, which the registries check
themselves (an unknown option fails with the list of accepted ones).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

CONFIG_PATH = "pkg://embodied.conf"


@dataclass
class RayConfig:
    address: str | None = None  # an existing cluster ("auto", "ray://host:10001"); null: start a local one
    num_cpus: int | None = None  # CPUs of the local cluster (null: all)
    workers: int = 2  # actors, each with eval.num_envs envs and its own policy
    cpus_per_worker: float = 1.0
    chunk: int = 4  # episodes per task handed to an actor
    max_retries: int = 3  # times a chunk is rescheduled after losing its actor


@dataclass
class EvalConfig:
    episodes: int | None = None  # null: every episode of env.episodes / of the LIBERO suite; 10 procedural
    seed: int = 0  # episode k is reset with seed + k
    num_envs: int = 1
    vectorization: str = "sync"  # sync | async
    backend: str = "local"  # local | ray
    tasks: Any = None  # LIBERO: null = env.task_id (all tasks when that is null) | list of task ids
    init_states: Any = None  # LIBERO: null = the protocol's 50 | n (the first n) | list of indices
    worker_timeout: float | None = 600.0  # seconds an async env worker may take per step/reset
    max_restarts: int = 2  # re-runs of one episode after its env worker died or hung
    videos: int = 2  # film episodes 0..videos-1
    video_fps: int = 10
    progress: bool = True
    ray: RayConfig = field(default_factory=RayConfig)


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
