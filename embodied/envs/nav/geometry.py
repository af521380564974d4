"""Geometry the tasks share: angles, rooms, view points of objects, start sampling, paths."""

from __future__ import annotations

import math

import numpy as np

from embodied.envs.sim.backend import NavBackend
from embodied.envs.sim.scene import Scene, SceneObject


class NoEpisode(Exception):
    """The scene cannot host this task's episode; the sampler draws another scene."""


def wrap_angle(a: float) -> float:
    return (a + math.pi) % (2 * math.pi) - math.pi


def random_yaw(rng: np.random.Generator) -> float:
    return float(rng.uniform(-math.pi, math.pi))


def as_list(p: np.ndarray) -> list[float]:
    return [float(v) for v in p]


def room_name(scene: Scene, room_id: int) -> str:
    return next(r.name for r in scene.rooms if r.id == room_id)


def room_at(scene: Scene, point: np.ndarray) -> int | None:
    """Id of the room whose polygon contains `point` (ray casting), or None (a doorway)."""
    x, y = float(point[0]), float(point[1])
    for room in scene.rooms:
        poly = room.polygon
        inside = False
        for (x1, y1), (x2, y2) in zip(poly, poly[1:] + poly[:1]):
            if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
                inside = not inside
        if inside:
            return room.id
    return None


def footprint_distance(obj: SceneObject, points: np.ndarray) -> np.ndarray:
    """(K,) distance from 2D points to an object's (yawed) box footprint, 0 inside."""
    d = np.asarray(points, dtype=np.float64)[:, :2] - np.asarray(obj.position[:2])
    c, s = math.cos(obj.yaw), math.sin(obj.yaw)
    lx = np.abs(d[:, 0] * c + d[:, 1] * s) - obj.size[0] / 2
    ly = np.abs(-d[:, 0] * s + d[:, 1] * c) - obj.size[1] / 2
    return np.hypot(np.maximum(lx, 0.0), np.maximum(ly, 0.0))


def object_viewpoints(backend: NavBackend, obj: SceneObject, clearance: float, n: int = 16) -> list[np.ndarray]:
    """Navigable points on a ring `clearance` away from an object's footprint: where an agent
    stands next to it (one batched navigability query)."""
    half = np.asarray(obj.size[:2], dtype=np.float64) / 2
    c, s = math.cos(obj.yaw), math.sin(obj.yaw)
    theta = np.linspace(0, 2 * math.pi, n, endpoint=False)
    d = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    local = np.stack([d[:, 0] * c + d[:, 1] * s, -d[:, 0] * s + d[:, 1] * c], axis=1)  # in the object frame
    # distance from the centre to the box edge along `local`, plus the clearance
    reach = np.minimum(half[0] / np.maximum(np.abs(local[:, 0]), 1e-9),
                       half[1] / np.maximum(np.abs(local[:, 1]), 1e-9)) + clearance
    pts = np.column_stack([obj.position[0] + d[:, 0] * reach, obj.position[1] + d[:, 1] * reach, np.zeros(n)])
    return list(pts[np.asarray(backend.is_navigable(pts), dtype=bool)])


def view_point_band(backend: NavBackend, obj: SceneObject, clearance: float, depth: float,
                    spacing: float = 0.1) -> np.ndarray:
    """(K, 3) navigable lattice points between `clearance` and `clearance + depth` from an
    object's footprint: dense view points in the manner of habitat's ObjectNav goals, so that
    "within 0.1 m of a view point" means "standing in the band"."""
    reach = math.hypot(*obj.size[:2]) / 2 + clearance + depth
    axis = np.arange(-reach, reach + 1e-9, spacing)
    gx, gy = np.meshgrid(obj.position[0] + axis, obj.position[1] + axis, indexing="ij")
    pts = np.column_stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)])
    dist = footprint_distance(obj, pts)
    pts = pts[(dist >= clearance) & (dist <= clearance + depth)]
    if len(pts) == 0:
        return pts
    return pts[np.asarray(backend.is_navigable(pts), dtype=bool)]


def sample_start(rng: np.random.Generator, backend: NavBackend, goals: np.ndarray,
                 min_dist: float, max_dist: float = math.inf) -> tuple[np.ndarray, float]:
    """A navigable start whose geodesic distance to the nearest goal is finite and in range."""
    for _ in range(50):
        start = backend.sample_navigable_point(rng)
        d = backend.geodesic_distance(start, goals)
        if math.isfinite(d) and min_dist <= d <= max_dist:
            return start, d
    raise NoEpisode("no start at the required distance")


def resample_path(path: np.ndarray, spacing: float) -> np.ndarray:
    """Points every `spacing` metres along a polyline (ends included): the dense ground-truth
    locations that nDTW compares against, as VLN-CE's `_gt` files hold."""
    path = np.asarray(path, dtype=np.float64)
    seg = np.linalg.norm(np.diff(path, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    stops = np.append(np.arange(0.0, cum[-1], spacing), cum[-1])
    return np.stack([np.interp(stops, cum, path[:, k]) for k in range(path.shape[1])], axis=1)
