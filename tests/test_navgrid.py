"""Occupancy grid, geodesics, shortest paths and the oracle expert (no rendering)."""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pytest

from embodied.envs.scenes import generate_scene, split_scene_seeds
from embodied.envs.sim.follower import GreedyFollower
from embodied.envs.sim.navgrid import NavGrid, box_distance
from embodied.envs.sim.types import Action, AgentConfig, AgentPose


@pytest.fixture(scope="module")
def grid() -> NavGrid:
    return NavGrid(generate_scene(100_001))


def test_navigable_points_clear_of_geometry(grid):
    rng = np.random.default_rng(0)
    pts = np.array([grid.sample_navigable_point(rng) for _ in range(2000)])
    assert all(grid.is_navigable(p) for p in pts[:200])
    assert box_distance(pts, grid.boxes).min() >= grid.radius - 1e-6
    for b in grid.boxes[:20]:  # box centres are never navigable
        assert not grid.is_navigable(np.array([b[0], b[1], 0.0]))


def test_geodesic_distance_properties(grid):
    rng = np.random.default_rng(1)
    for _ in range(30):
        a, b = grid.sample_navigable_point(rng), grid.sample_navigable_point(rng)
        d = grid.geodesic_distance(a, b)
        assert np.isfinite(d)
        assert d >= np.linalg.norm(a - b) - 0.03
        assert abs(d - grid.geodesic_distance(b, a)) < 0.1 + 0.02 * d  # near symmetric
    a = grid.sample_navigable_point(rng)
    assert grid.geodesic_distance(a, a) < 0.05
    assert math.isinf(grid.geodesic_distance(a, np.array([-50.0, -50.0, 0.0])))


def test_geodesic_straight_line_in_open_space(grid):
    """Between two points with a clear line of sight the geodesic is the straight line."""
    rng = np.random.default_rng(2)
    checked = 0
    while checked < 20:
        a, b = grid.sample_navigable_point(rng), grid.sample_navigable_point(rng)
        if grid.segment_free(a, b, grid.navigable) and np.linalg.norm(a - b) > 1.0:
            assert abs(grid.geodesic_distance(a, b) - np.linalg.norm(a - b)) < 0.02 * np.linalg.norm(a - b) + 0.03
            checked += 1


def test_geodesic_is_cached_and_fast(grid):
    rng = np.random.default_rng(3)
    a, b = grid.sample_navigable_point(rng), grid.sample_navigable_point(rng)
    grid.geodesic_distance(a, b)
    t = time.perf_counter()
    for _ in range(1000):
        grid.geodesic_distance(a, b)
    assert (time.perf_counter() - t) / 1000 < 200e-6


def test_shortest_path(grid):
    rng = np.random.default_rng(4)
    for _ in range(20):
        a, b = grid.sample_navigable_point(rng), grid.sample_navigable_point(rng)
        path = grid.shortest_path(a, b)
        assert path.shape[1] == 3 and len(path) >= 2
        np.testing.assert_allclose(path[0], a)
        np.testing.assert_allclose(path[-1], b)
        for p, q in itertools.pairwise(path):
            assert grid.segment_free(p, q)
        length = np.linalg.norm(np.diff(path, axis=0), axis=1).sum()
        d = grid.geodesic_distance(a, b)
        assert 0.97 * d - 0.05 <= length <= 1.05 * d + 0.15  # FMM vs string pulling: a few % apart


def test_try_move_sliding_and_blocking(grid):
    rng = np.random.default_rng(5)
    p = grid.sample_navigable_point(rng)[:2]
    wall = np.array([grid.boxes[0, 0], grid.boxes[0, 1]])  # centre of some wall: blocked
    d = wall - p
    end, collided = grid.try_move(p, d, allow_sliding=False)
    assert collided and np.allclose(end, p)
    end, collided = grid.try_move(p, d, allow_sliding=True)
    assert collided and grid.is_free(end)


def run_expert(grid: NavGrid, cfg: AgentConfig, start: np.ndarray, yaw: float, goal: np.ndarray,
               stop_radius: float, max_steps: int = 800) -> float:
    """Roll the follower out with the grid's motion model; returns the final geodesic distance."""
    follower = GreedyFollower(grid, cfg)
    pos = start[:2].copy()
    for _ in range(max_steps):
        act = follower.next_action(AgentPose(np.array([pos[0], pos[1], 0.0]), yaw), goal, stop_radius)
        if act == Action.STOP:
            break
        if act == Action.MOVE_FORWARD:
            disp = cfg.forward_step * np.array([math.cos(yaw), math.sin(yaw)])
            pos, _ = grid.try_move(pos, disp, cfg.allow_sliding)
        else:
            yaw += math.radians(cfg.turn_angle_deg) * (1 if act == Action.TURN_LEFT else -1)
    return grid.geodesic_distance(pos, goal)


@pytest.mark.parametrize("turn", [15.0, 30.0])
def test_expert_reaches_goals(turn):
    """>= 98% of 100 random goals across several unseen houses (STOP within 0.2 m)."""
    cfg = AgentConfig(turn_angle_deg=turn)
    reached = total = 0
    for seed in split_scene_seeds("val_unseen", 5):
        grid = NavGrid(generate_scene(seed))
        rng = np.random.default_rng(seed)
        for _ in range(20):
            a, b = grid.sample_navigable_point(rng), grid.sample_navigable_point(rng)
            d = run_expert(grid, cfg, a, float(rng.uniform(-math.pi, math.pi)), b, stop_radius=0.2)
            reached += d <= 0.2
            total += 1
    assert reached / total >= 0.98, f"{reached}/{total}"


def test_goal_set_distance_is_the_nearest_goal(grid):
    rng = np.random.default_rng(5)
    goals = np.array([grid.sample_navigable_point(rng) for _ in range(6)])
    for _ in range(10):
        a = grid.sample_navigable_point(rng)
        single = min(grid.geodesic_distance(a, g) for g in goals)
        assert grid.geodesic_distance(a, goals) == pytest.approx(single, abs=0.03)


def test_field_cache_keeps_the_recently_used(monkeypatch):
    """LRU, not FIFO: a goal asked about every step survives a stream of other goals."""
    grid = NavGrid(generate_scene(100_001), cache_size=3)
    computed = []
    original = grid._compute_field
    monkeypatch.setattr(grid, "_compute_field", lambda g: computed.append(1) or original(g))
    rng = np.random.default_rng(6)
    here, hot = grid.sample_navigable_point(rng), grid.sample_navigable_point(rng)
    grid.geodesic_distance(here, hot)
    for _ in range(10):
        grid.geodesic_distance(here, grid.sample_navigable_point(rng))
        grid.geodesic_distance(here, hot)
    assert len(computed) == 11  # the hot goal's field was computed once
