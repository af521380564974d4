"""Building a backend from its config: `"mujoco"`, or `{"name": ..., "python": ..., **options}`."""

from __future__ import annotations

from typing import Any

from .backend import NavBackend
from .types import AgentConfig, SensorConfig

BACKENDS = ("mujoco", "habitat")


def make_backend(spec: str | dict[str, Any], agent: AgentConfig, sensors: SensorConfig) -> NavBackend:
    """`python` (an interpreter path) hosts the backend in a subprocess (`RemoteBackend`,
    which also takes `timeout`); every other key is an option of the backend class."""
    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    name = spec.pop("name", "mujoco")
    python = spec.pop("python", None)
    if name not in BACKENDS:
        raise ValueError(f"backend.name must be one of {list(BACKENDS)}, got '{name}'")
    if python:
        from .remote import RemoteBackend

        return RemoteBackend(name, agent, sensors, python=python, **spec)
    if "timeout" in spec:
        raise ValueError("backend.timeout applies to an out-of-process backend only: set backend.python too")
    if name == "mujoco":
        from .mujoco_backend import MujocoBackend

        return MujocoBackend(agent, sensors, **spec)
    from .habitat_backend import HabitatBackend

    return HabitatBackend(agent, sensors, **spec)
