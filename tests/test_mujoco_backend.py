"""MuJoCo backend: sensors, metric depth, semantics, collisions, lazy GL, expert in the loop."""

from __future__ import annotations

import math
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import pytest

from embodied.envs.scenes import Box, Room, Scene, generate_scene
from embodied.envs.sim.backend import NavBackend
from embodied.envs.sim.mujoco_backend import MujocoBackend
from embodied.envs.sim.navgrid import box_distance
from embodied.envs.sim.types import Action, AgentConfig, SensorConfig


def empty_room(size: float = 6.0) -> Scene:
    """One square room with walls centred on its edges (inner faces at 0.05 and size - 0.05)."""
    t, h = 0.1, 2.5
    walls = [Box((size / 2, 0.0, h / 2), (size + t, t, h)), Box((size / 2, size, h / 2), (size + t, t, h)),
             Box((0.0, size / 2, h / 2), (t, size + t, h)), Box((size, size / 2, h / 2), (t, size + t, h))]
    room = Room(1, "living room", [(0.0, 0.0), (size, 0.0), (size, size), (0.0, size)])
    return Scene(seed=-1, bounds=(0.0, 0.0, size, size), wall_height=h, wall_thickness=t, rooms=[room], walls=walls)


@pytest.fixture(scope="module")
def scene() -> Scene:
    return generate_scene(100_002)


@pytest.fixture(scope="module")
def backend(scene):
    b = MujocoBackend(sensors=SensorConfig(semantic=True))
    b.load_scene(scene)
    yield b
    b.close()


def test_protocol_and_lazy_gl(scene):
    b = MujocoBackend()
    assert isinstance(b, NavBackend)
    b.load_scene(scene)
    assert b._gl_ctx is None  # nothing GL before the first render: safe to fork
    model = b.model
    b.load_scene(scene)
    b.load_scene(generate_scene(scene.seed))  # equal scene: no rebuild
    assert b.model is model
    b.render()
    assert b._gl_ctx is not None
    b.close()


def test_frame_shapes_and_dtypes(backend):
    f = backend.render()
    s = backend.sensors
    assert f.rgb.shape == (s.height, s.width, 3) and f.rgb.dtype == np.uint8
    assert f.depth.shape == (s.height, s.width, 1) and f.depth.dtype == np.float32
    assert f.semantic_object.shape == (s.height, s.width) and f.semantic_object.dtype == np.int32
    assert f.semantic_category.shape == (s.height, s.width) and f.semantic_category.dtype == np.int32
    assert s.min_depth <= f.depth.min() and f.depth.max() <= s.max_depth
    assert f.rgb.std() > 1.0


def test_rgb_only_and_non_square():
    b = MujocoBackend(sensors=SensorConfig(width=96, height=64, depth=False, hfov_deg=79.0))
    b.load_scene(empty_room())
    f = b.render()
    assert f.rgb.shape == (64, 96, 3) and f.depth is None and f.semantic_object is None
    b.close()


@pytest.mark.parametrize(("x", "yaw", "expected"), [(1.0, math.pi, 0.95), (3.0, 0.0, 2.95), (2.0, math.pi / 2, 3.95)])
def test_depth_is_metres(x, yaw, expected):
    b = MujocoBackend(sensors=SensorConfig(width=64, height=64))
    b.load_scene(empty_room())
    b.set_agent_pose(np.array([x, 2.0, 0.0]), yaw)
    d = b.render().depth[..., 0]
    assert abs(float(d[32, 32]) - expected) < 0.03  # within 3 cm facing a wall
    b.close()


def test_depth_clipped_to_max():
    b = MujocoBackend(sensors=SensorConfig(width=32, height=32, max_depth=1.5))
    b.load_scene(empty_room())
    b.set_agent_pose(np.array([3.0, 3.0, 0.0]), 0.0)
    assert float(b.render().depth.max()) == pytest.approx(1.5)
    b.close()


def test_semantic_ids_match_scene(backend, scene):
    """Ids in the images belong to the scene, categories agree, and objects in front are seen."""
    ids = {o.id: o.category_id for o in scene.objects}
    seen = 0
    tried = 0
    for o in scene.objects:
        for theta in np.linspace(0, 2 * math.pi, 8, endpoint=False):
            reach = max(o.size[0], o.size[1]) / 2 + 0.7
            p = np.array([o.position[0] + reach * math.cos(theta), o.position[1] + reach * math.sin(theta), 0.0])
            if backend.is_navigable(p):
                break
        else:
            continue
        tried += 1
        backend.set_agent_pose(p, theta + math.pi)  # face the object
        f = backend.render()
        present = set(np.unique(f.semantic_object).tolist()) - {0}
        assert present <= set(ids)
        for oid in present:
            assert set(np.unique(f.semantic_category[f.semantic_object == oid]).tolist()) == {ids[oid]}
        assert np.all(f.semantic_category[f.semantic_object == 0] == 0)
        seen += o.id in present
    assert tried >= 5 and seen >= 0.9 * tried


def check_clear(scene: Scene, positions: np.ndarray, radius: float) -> None:
    from embodied.envs.sim.navgrid import obstacle_boxes

    d = box_distance(positions, obstacle_boxes(scene))
    assert d.min() >= radius - 1e-6, f"agent overlaps geometry by {radius - d.min():.4f} m"


@pytest.mark.parametrize("sliding", [True, False])
def test_random_action_fuzz_never_enters_obstacles(sliding):
    """10,000 random actions (with teleports) never bring the agent's cylinder into a wall or object."""
    scene = generate_scene(100_003)
    b = MujocoBackend(agent=AgentConfig(allow_sliding=sliding))
    b.load_scene(scene)
    rng = np.random.default_rng(0)
    positions, collisions, moved = [], 0, 0.0
    for step in range(10_000):
        if step % 250 == 0:
            b.set_agent_pose(b.sample_navigable_point(rng), float(rng.uniform(-math.pi, math.pi)))
        action = int(rng.choice([1, 1, 1, 2, 3]))
        out = b.apply_action(action)
        collisions += out.collided
        moved += out.moved
        assert out.moved <= b.agent.forward_step + 1e-9
        positions.append(b.get_agent_pose().position)
    check_clear(scene, np.array(positions), b.agent.radius)
    assert collisions > 50 and moved > 100  # it did bump into things and still travelled
    b.close()


def test_turns_and_stop(backend):
    backend.set_agent_pose(backend.sample_navigable_point(np.random.default_rng(1)), 0.0)
    p0 = backend.get_agent_pose()
    backend.apply_action(Action.TURN_LEFT)
    assert backend.get_agent_pose().yaw == pytest.approx(math.radians(15))
    backend.apply_action(Action.TURN_RIGHT)
    backend.apply_action(Action.TURN_RIGHT)
    assert backend.get_agent_pose().yaw == pytest.approx(-math.radians(15))
    out = backend.apply_action(Action.STOP)
    assert not out.collided and out.moved == 0
    np.testing.assert_allclose(backend.get_agent_pose().position, p0.position)


def test_expert_in_the_loop(backend):
    """The backend's oracle drives the real backend to goals, rendering along the way."""
    rng = np.random.default_rng(2)
    for _ in range(3):
        start, goal = backend.sample_navigable_point(rng), backend.sample_navigable_point(rng)
        backend.set_agent_pose(start, 0.0)
        for step in range(600):
            a = backend.next_action(goal, 0.2)
            if a == Action.STOP:
                break
            backend.apply_action(a)
            if step % 25 == 0:
                backend.render()
        assert backend.geodesic_distance(backend.get_agent_pose().position, goal) <= 0.2
