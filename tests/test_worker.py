"""The out-of-process worker stays hostable by a bare simulator interpreter."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embodied.envs.scenes import generate_scene
from embodied.envs.sim.remote import RemoteBackend, RemoteBackendError
from embodied.envs.sim.types import AgentConfig, SensorConfig

ENVS = Path(__file__).parents[1] / "embodied" / "envs"
WORKER_SIDE = [ENVS / "worker.py", *sorted((ENVS / "sim").glob("*.py"))]


@pytest.mark.parametrize("path", WORKER_SIDE, ids=lambda p: p.name)
def test_worker_side_is_python39_syntax(path: Path) -> None:
    ast.parse(path.read_text(), feature_version=(3, 9))


def test_worker_side_imports_nothing_but_numpy() -> None:
    """With torch, gymnasium, scipy, trimesh and mujoco unimportable, the worker still loads
    its protocol, the plain types, the scene description and the habitat backend module,
    as Python loads a script's neighbours (no package of `embodied` is run)."""
    code = f"""
import sys
for name in ("torch", "gymnasium", "scipy", "skfmm", "trimesh", "mujoco", "transformers", "open3d"):
    sys.modules[name] = None
sys.path.insert(0, {str(ENVS)!r})
import worker
from sim.types import AgentConfig, SensorConfig
from sim.scene import Scene
import sim.habitat_backend, sim.backend
assert not any(m == "embodied" or m.startswith("embodied.") for m in sys.modules), "ran the embodied package"
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


def test_remote_errors_carry_the_worker_traceback() -> None:
    backend = RemoteBackend("mujoco", AgentConfig(), SensorConfig(width=16, height=16))
    try:
        with pytest.raises(RemoteBackendError, match="set_agent_pose"):
            backend.set_agent_pose(np.zeros(3), 0.0)  # no scene loaded yet
        backend.load_scene(generate_scene(3))  # the worker keeps serving after an error
        rng_a, rng_b = np.random.default_rng(0), np.random.default_rng(0)
        p = backend.sample_navigable_point(rng_a)
        assert backend.is_navigable(p)
        # the generator's state came back: the next draw matches a local generator's second draw
        rng_b.random(), rng_b.random()
        assert rng_a.bit_generator.state != np.random.default_rng(0).bit_generator.state
    finally:
        backend.close()


def test_dead_worker_is_reported() -> None:
    backend = RemoteBackend("mujoco", AgentConfig(), SensorConfig(width=16, height=16), python="/bin/false")
    with pytest.raises(RemoteBackendError, match="exited"):
        backend.load_scene(generate_scene(3))
    backend.close()


def _script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "python"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def shm_names(monkeypatch) -> list[str]:
    """Names of the shared memory blocks the client creates during the test."""
    from multiprocessing import shared_memory

    names: list[str] = []
    original = shared_memory.SharedMemory

    class Recording(original):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if kwargs.get("create"):
                names.append(self.name)

    monkeypatch.setattr(shared_memory, "SharedMemory", Recording)
    return names


def _released(names: list[str]) -> bool:
    return bool(names) and not any(Path("/dev/shm", n.lstrip("/")).exists() for n in names)


def test_hung_worker_times_out_and_is_killed(tmp_path, shm_names) -> None:
    backend = RemoteBackend("mujoco", AgentConfig(), SensorConfig(width=16, height=16),
                            python=_script(tmp_path, "exec sleep 60"), timeout=0.5)
    with pytest.raises(RemoteBackendError, match=r"did not answer 'init' within 0.5 s"):
        backend.load_scene(generate_scene(3))
    assert backend._proc is None and _released(shm_names)


def test_dead_worker_reports_exit_code_and_stderr(tmp_path, shm_names) -> None:
    python = _script(tmp_path, "echo 'simulator exploded: no EGL device' >&2; exit 3")
    backend = RemoteBackend("mujoco", AgentConfig(), SensorConfig(width=16, height=16), python=python)
    with pytest.raises(RemoteBackendError, match=r"(?s)exited with code 3.*simulator exploded: no EGL device"):
        backend.load_scene(generate_scene(3))
    assert _released(shm_names)


def test_close_releases_shared_memory_after_the_worker_died(shm_names) -> None:
    backend = RemoteBackend("mujoco", AgentConfig(), SensorConfig(width=16, height=16))
    backend.load_scene(generate_scene(3))
    backend._proc.kill()
    backend._proc.wait()
    with pytest.raises(RemoteBackendError, match="exited with code -9"):
        backend.get_agent_pose()
    backend.close()
    assert _released(shm_names)
