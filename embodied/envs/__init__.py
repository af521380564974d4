"""Environments: Gymnasium tasks over pluggable simulator backends.

    env = embodied.envs.make("pointnav", split="val_unseen")          # one gymnasium.Env
    venv = embodied.envs.make_vec("vln", num_envs=4, vectorization="async")

Names map to registered Gymnasium ids (`embodied/PointNav-v0`, ...); `make` checks the
options against the environment's constructor and names the accepted ones on a typo.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

import gymnasium as gym
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv, VectorEnv

from embodied.envs.vector import VECTORIZATION, EnvPool
from embodied.registry import Registry, check_kwargs

# name -> Gymnasium id; the id's entry point is the class whose options `make` checks.
ENV_IDS: dict[str, str] = {}
ENVS: Registry[gym.Env] = Registry("environment")
GYM_MAKE_ARGS = ("max_episode_steps",)  # gym.make takes these for itself: they reach the env through the spec


def register(name: str, gym_id: str, entry_point: str, **defaults: Any) -> None:
    """Register a Gymnasium id and its short name for `make`."""
    if gym_id not in gym.registry:
        gym.register(id=gym_id, entry_point=entry_point, kwargs=defaults)
    ENV_IDS[name] = gym_id
    ENVS.register(name)(partial(_make_gym, gym_id))


def _entry_point(gym_id: str) -> Any:
    spec = gym.spec(gym_id)
    if callable(spec.entry_point):
        return spec.entry_point
    module, attr = spec.entry_point.split(":")
    return getattr(__import__(module, fromlist=[attr]), attr)


def _make_gym(gym_id: str, **kwargs: Any) -> gym.Env:
    check_kwargs(_entry_point(gym_id), kwargs, what=f"environment '{gym_id}'")
    # `gym.make(id, max_episode_steps=n)` keeps n for its own TimeLimit wrapper and never hands it to
    # the env: it goes in through the spec. The other options go through `make` as they are (the spec's
    # kwargs are deep-copied: a user's scene source object would be copied).
    spec = gym.spec(gym_id)
    taken = {k: kwargs.pop(k) for k in GYM_MAKE_ARGS if k in kwargs}
    return gym.make(dataclasses.replace(spec, kwargs={**spec.kwargs, **taken}), **kwargs)


def make(name: str, **kwargs: Any) -> gym.Env:
    """Build one environment by short name (`pointnav`, `objectnav`, `vln`, `objectrecall`, `libero`)."""
    return ENVS.make(name, **kwargs)


def make_vec(
    name: str,
    num_envs: int = 1,
    vectorization: str = "sync",
    autoreset_mode: AutoresetMode = AutoresetMode.DISABLED,
    timeout: float | None = None,
    **kwargs: Any,
) -> VectorEnv:
    """Build `num_envs` copies as a vector env.

    With autoreset DISABLED (the default) this is an `EnvPool` (embodied/envs/vector.py): a
    Gymnasium VectorEnv whose envs can also be stepped and reset one by one, with frames in shared
    memory, a `timeout` (seconds, async) per command and restarted workers. The evaluation loop
    resets finished envs with a per-episode seed, which makes episodes independent of finishing
    order. Other autoreset modes give Gymnasium's own Sync/AsyncVectorEnv. `async` uses the
    `forkserver` start method: simulators create their GL context lazily inside the worker, and
    forking a live EGL context hangs (see docs/architecture.md).
    """
    if vectorization not in VECTORIZATION:
        raise ValueError(f"vectorization must be one of {list(VECTORIZATION)}, got '{vectorization}'")
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    ENVS.get(name)  # fail early, listing valid names
    check_kwargs(_entry_point(ENV_IDS[name]), kwargs, what=f"environment '{ENV_IDS[name]}'")
    fns = [partial(make, name, **kwargs) for _ in range(num_envs)]
    if autoreset_mode == AutoresetMode.DISABLED:
        return EnvPool(fns, vectorization=vectorization, timeout=timeout)
    if vectorization == "sync":
        return SyncVectorEnv(fns, autoreset_mode=autoreset_mode)
    # Text observations (instructions) are broken with shared memory in gymnasium 1.4.
    return AsyncVectorEnv(fns, context="forkserver", shared_memory=False, autoreset_mode=autoreset_mode)


def names() -> list[str]:
    return ENVS.names()


def _register_builtin() -> None:
    nav = "embodied.envs.nav"
    register("pointnav", "embodied/PointNav-v0", f"{nav}.pointnav:PointNavEnv")
    register("objectnav", "embodied/ObjectNav-v0", f"{nav}.objectnav:ObjectNavEnv")
    register("vln", "embodied/VLN-v0", f"{nav}.vln:VLNEnv")
    register("objectrecall", "embodied/ObjectRecall-v0", f"{nav}.objectrecall:ObjectRecallEnv")
    register("libero", "embodied/Libero-v0", "embodied.envs.libero.env:LiberoEnv")


_register_builtin()

__all__ = ["ENVS", "ENV_IDS", "EnvPool", "make", "make_vec", "names", "register"]
