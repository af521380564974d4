"""Our side of the habitat backend, without habitat-sim: each fix for what a real habitat-sim
0.2.2 build did (issue 14) checked against `tests/fakes/habitat_sim.py`, a test double that
reproduces those behaviours. The real simulator's tests are in `test_habitat.py`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from embodied.envs.scenes import generate_scene
from embodied.envs.sim.remote import RemoteBackend
from embodied.envs.sim.types import Action, AgentConfig, SensorConfig

FAKES = Path(__file__).parent / "fakes"


@pytest.fixture
def habitat(monkeypatch):
    """The habitat backend module over the fake simulator, imported fresh."""
    monkeypatch.syspath_prepend(str(FAKES))
    for name in ("habitat_sim", "quaternion"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import habitat_sim

    from embodied.envs.sim import habitat_backend

    yield habitat_backend, habitat_sim
    monkeypatch.delitem(sys.modules, "habitat_sim", raising=False)


def make_backend(habitat_backend):
    return habitat_backend.HabitatBackend(AgentConfig(), SensorConfig(width=8, height=8))


def test_objects_keep_their_world_placement(habitat) -> None:
    """Meshes are written in world coordinates and added at the identity pose: each object's
    box must come out where the scene puts it, not recentred on the origin."""
    module, _ = habitat
    backend = make_backend(module)
    scene = generate_scene(3)
    backend.load_scene(scene)
    objects = backend.sim.get_rigid_object_manager().objects
    assert [o.semantic_id for o in objects] == [0] + [o.id for o in scene.objects]
    for obj, placed in zip(scene.objects, objects[1:]):
        centre = (placed.aabb[0] + placed.aabb[1]) / 2
        np.testing.assert_allclose(centre, module.zup_to_habitat(obj.position), atol=1e-3)
    x0, y0, x1, y1 = scene.bounds
    rng = np.random.default_rng(0)
    points = np.array([backend.sample_navigable_point(rng) for _ in range(50)])
    assert (points[:, 0] > x0).all() and (points[:, 0] < x1).all()
    assert (points[:, 1] > y0).all() and (points[:, 1] < y1).all()
    backend.close()


def test_second_house_replaces_the_first(habitat) -> None:
    module, _ = habitat
    backend = make_backend(module)
    first, second = generate_scene(3), generate_scene(4)
    backend.load_scene(first)
    backend.load_scene(second)
    ids = [o.semantic_id for o in backend.sim.get_rigid_object_manager().objects]
    assert ids == [0] + [o.id for o in second.objects]
    backend.close()


def test_exported_meshes_are_removed(habitat) -> None:
    module, _ = habitat
    backend = make_backend(module)
    backend.load_scene(generate_scene(3))
    backend.load_scene(generate_scene(4))
    root = Path(backend._tmp)
    assert root.is_dir() and not any(root.rglob("*.glb"))  # each house's files go once it is loaded
    backend.close()
    assert not root.exists()


def test_heights_come_from_habitat(habitat) -> None:
    """A scan's floor at y = 1.3 stays at z = 1.3 in poses, samples and paths; in a procedural
    house, samples on furniture tops are refused."""
    module, sim_module = habitat
    sim_module.FLOOR_Y = 1.3
    backend = make_backend(module)
    backend.load_scene("data/scan/scan.glb")
    rng = np.random.default_rng(0)
    p = backend.sample_navigable_point(rng)
    assert p[2] == pytest.approx(1.3)
    backend.set_agent_pose(p, 0.5)
    pose = backend.get_agent_pose()
    assert pose.position[2] == pytest.approx(1.3) and pose.yaw == pytest.approx(0.5)
    q = backend.sample_navigable_point(rng)
    path = backend.shortest_path(p, q)
    np.testing.assert_allclose(path[:, 2], 1.3, atol=1e-6)
    sim_module.FLOOR_Y = 0.0
    backend.load_scene(generate_scene(3))
    heights = [backend.sample_navigable_point(rng)[2] for _ in range(40)]
    assert max(abs(h) for h in heights) <= module.FLOOR_TOLERANCE
    backend.close()


def test_oracle_is_habitats_follower(habitat) -> None:
    module, _ = habitat
    backend = make_backend(module)
    backend.load_scene(generate_scene(3))
    p = backend.sample_navigable_point(np.random.default_rng(1))
    backend.set_agent_pose(p, 0.0)
    far, near = p + np.array([2.0, 0.0, 0.0]), p + np.array([0.05, 0.0, 0.0])
    assert backend.next_action(np.stack([far, far + 1]), 0.2) == Action.MOVE_FORWARD
    assert backend.next_action(np.stack([far, near]), 0.2) == Action.STOP  # the nearest goal is reached
    backend.close()


def test_simulator_logs_on_fd1_do_not_break_the_protocol(monkeypatch) -> None:
    """The fake simulator writes C++-style log lines straight to file descriptor 1 (at import
    and when a simulator is built), as habitat-sim does; the worker must keep them off the
    reply stream, and they must still reach its stderr."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(FAKES), os.environ.get("PYTHONPATH", "")]))
    backend = RemoteBackend("habitat", AgentConfig(), SensorConfig(width=8, height=8, depth=False),
                            python=sys.executable, timeout=60)
    try:
        scene = generate_scene(3)
        backend.load_scene(scene)
        rng = np.random.default_rng(0)
        p = backend.sample_navigable_point(rng)
        assert backend.is_navigable(p)
        assert np.isfinite(backend.geodesic_distance(p, backend.sample_navigable_point(rng)))
        assert "AttributesManagerBase" in backend._stderr_tail()
    finally:
        backend.close()
