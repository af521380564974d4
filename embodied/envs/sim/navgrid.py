"""2D occupancy grid of a scene: collisions, geodesic distances, shortest paths.

The grid is the single source of truth for where the agent may stand. Obstacles are
inflated by the agent radius plus half a cell diagonal, so *any* point inside a free cell
is at least `radius` away from every wall and object (not only the cell centre): moves
checked against the grid can never put the agent's cylinder into geometry.

Geodesic distances come from scikit-fmm (fast marching, no 8-connected grid bias). A field
belongs to a goal set (one point, or all view points of an object) and is kept in an LRU
cache, because the task layer asks for the distance to the same goals every step and
episodes in one house keep coming back to the same objects.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import TYPE_CHECKING

import numpy as np
import skfmm
from scipy import ndimage

from .backend import as_goals

if TYPE_CHECKING:
    from .scene import Scene


def obstacle_boxes(scene: Scene) -> np.ndarray:
    """(N, 5) array of [cx, cy, half_x, half_y, yaw] footprints of walls and objects."""
    rows = [(w.position[0], w.position[1], w.size[0] / 2, w.size[1] / 2, 0.0) for w in scene.walls]
    rows += [(o.position[0], o.position[1], o.size[0] / 2, o.size[1] / 2, o.yaw) for o in scene.objects]
    return np.asarray(rows, dtype=np.float64).reshape(-1, 5)


def box_distance(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(P, B) distance from 2D points to box footprints (0 inside); exact, used by tests and rasterising."""
    d = points[:, None, :2] - boxes[None, :, :2]
    c, s = np.cos(boxes[:, 4]), np.sin(boxes[:, 4])
    lx = np.abs(d[..., 0] * c + d[..., 1] * s) - boxes[:, 2]
    ly = np.abs(-d[..., 0] * s + d[..., 1] * c) - boxes[:, 3]
    return np.hypot(np.maximum(lx, 0.0), np.maximum(ly, 0.0))


def rasterize(boxes: np.ndarray, bounds: tuple[float, float, float, float], cell: float,
              inflate: float) -> tuple[np.ndarray, np.ndarray]:
    """Free-space mask (nx, ny) and grid origin; cells within `inflate` of a box or off the floor are blocked."""
    xmin, ymin, xmax, ymax = bounds
    origin = np.array([xmin - cell, ymin - cell])
    nx, ny = math.ceil((xmax - xmin) / cell) + 2, math.ceil((ymax - ymin) / cell) + 2
    xs = origin[0] + (np.arange(nx) + 0.5) * cell
    ys = origin[1] + (np.arange(ny) + 0.5) * cell
    free = np.zeros((nx, ny), dtype=bool)
    ix = (xs > xmin) & (xs < xmax)
    iy = (ys > ymin) & (ys < ymax)
    free[np.ix_(ix, iy)] = True
    for b in boxes:
        reach = math.hypot(b[2], b[3]) + inflate
        i0, i1 = np.searchsorted(xs, [b[0] - reach, b[0] + reach])
        j0, j1 = np.searchsorted(ys, [b[1] - reach, b[1] + reach])
        if i0 >= i1 or j0 >= j1:
            continue
        gx, gy = np.meshgrid(xs[i0:i1], ys[j0:j1], indexing="ij")
        pts = np.stack([gx.ravel(), gy.ravel()], axis=1)
        hit = box_distance(pts, b[None])[:, 0] <= inflate
        free[i0:i1, j0:j1] &= ~hit.reshape(gx.shape)
    return free, origin


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of `mask` (4-connectivity: no diagonal pinholes)."""
    labels, n = ndimage.label(mask)
    if n == 0:
        return mask.copy()
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    return labels == int(np.argmax(counts))


_MISSING = object()
_WINDOW = np.mgrid[-3:4, -3:4].reshape(2, 1, -1)  # cell offsets around a goal: its circle and neighbours
_DI = np.array([[0, 1, 0, 1]])
_DJ = np.array([[0, 0, 1, 1]])


class NavGrid:
    """Inflated occupancy grid of one scene with cached geodesic fields."""

    def __init__(self, scene: Scene, radius: float = 0.18, cell: float = 0.05, snap_radius: float = 0.5,
                 cache_size: int = 128):
        self.scene_seed = scene.seed
        self.radius, self.cell, self.snap_radius = radius, cell, snap_radius
        self.boxes = obstacle_boxes(scene)
        self.free, self.origin = rasterize(self.boxes, scene.bounds, cell, radius + cell * math.sqrt(0.5))
        self.navigable = largest_component(self.free)
        self.shape = self.free.shape
        self._nav_cells = np.argwhere(self.navigable)
        self._fields: OrderedDict[bytes, np.ndarray | None] = OrderedDict()
        self._cache_size = cache_size
        self._snap_idx: np.ndarray | None = None
        self._r0 = 0.75 * cell

    # ------------------------------------------------------------------ cells
    def to_cell(self, p: np.ndarray) -> tuple[int, int]:
        return int((p[0] - self.origin[0]) // self.cell), int((p[1] - self.origin[1]) // self.cell)

    def cell_centre(self, i: int, j: int) -> np.ndarray:
        return self.origin + (np.array([i, j]) + 0.5) * self.cell

    def lookup(self, mask: np.ndarray, pts: np.ndarray) -> np.ndarray:
        """Vectorised mask lookup. Clipping is safe: the one-cell border of the grid is off the floor."""
        idx = ((pts[..., :2] - self.origin) // self.cell).astype(np.int64)
        return mask.ravel()[np.ravel_multi_index((idx[..., 0], idx[..., 1]), self.shape, mode="clip")]

    def is_free(self, p: np.ndarray) -> bool:
        """The agent may stand here (any component)."""
        i, j = self.to_cell(p)
        return 0 <= i < self.shape[0] and 0 <= j < self.shape[1] and bool(self.free[i, j])

    def is_navigable(self, p: np.ndarray) -> bool:
        """Free and in the main connected component (reachable from everywhere else)."""
        i, j = self.to_cell(p)
        return 0 <= i < self.shape[0] and 0 <= j < self.shape[1] and bool(self.navigable[i, j])

    def sample_navigable_point(self, rng: np.random.Generator) -> np.ndarray:
        i, j = self._nav_cells[rng.integers(len(self._nav_cells))]
        xy = self.origin + (np.array([i, j]) + rng.uniform(0.05, 0.95, size=2)) * self.cell
        return np.array([xy[0], xy[1], 0.0])

    # ------------------------------------------------------------------ motion
    def segment_free(self, p: np.ndarray, q: np.ndarray, mask: np.ndarray | None = None) -> bool:
        return self._max_travel(p[:2], q[:2] - p[:2], self.free if mask is None else mask) >= 1.0

    def _max_travel(self, p: np.ndarray, d: np.ndarray, mask: np.ndarray) -> float:
        """Largest fraction of displacement `d` from `p` that stays on free cells (half-cell sub-steps).

        Scalar loop on purpose: for ~10 sub-steps it is several times faster than numpy.
        """
        n = max(1, math.ceil(math.hypot(d[0], d[1]) / (0.5 * self.cell)))
        ox, oy, c = float(self.origin[0]), float(self.origin[1]), self.cell
        nx, ny = self.shape
        px, py, dx, dy = float(p[0]), float(p[1]), float(d[0]), float(d[1])
        for k in range(1, n + 1):
            t = k / n
            i, j = int((px + t * dx - ox) // c), int((py + t * dy - oy) // c)
            if not (0 <= i < nx and 0 <= j < ny and mask[i, j]):
                return (k - 1) / n
        return 1.0

    def try_move(self, p: np.ndarray, d: np.ndarray, allow_sliding: bool = True) -> tuple[np.ndarray, bool]:
        """Where a move by `d` from `p` ends and whether it collided.

        Moves stay on the main component (`navigable`), so the agent can never squeeze through
        a diagonal pinhole into a pocket from which the goal would be unreachable (an infinite
        distance to goal). Blocked without sliding: the agent stays put (habitat's behaviour). With sliding it
        takes the longest free travel among the full move and its x-only / y-only parts,
        which lets it glide along walls instead of sticking to them.
        """
        p2, d2 = np.asarray(p[:2], dtype=np.float64), np.asarray(d[:2], dtype=np.float64)
        if self._max_travel(p2, d2, self.navigable) >= 1.0:
            return p2 + d2, False
        if not allow_sliding:
            return p2.copy(), True
        best, best_len = np.zeros(2), 0.0
        for cand in (d2, np.array([d2[0], 0.0]), np.array([0.0, d2[1]])):
            step = self._max_travel(p2, cand, self.navigable) * cand
            if (length := math.hypot(step[0], step[1])) > best_len + 1e-12:
                best, best_len = step, length
        return p2 + best, True

    # ------------------------------------------------------------------ geodesics
    def _snap(self, p: np.ndarray) -> np.ndarray | None:
        """`p` itself if navigable; None in an isolated pocket; else the nearest navigable cell centre in reach."""
        i, j = self.to_cell(p)
        if 0 <= i < self.shape[0] and 0 <= j < self.shape[1]:
            if self.navigable[i, j]:
                return p
            if self.free[i, j]:
                return None
        if self._snap_idx is None:
            self._snap_idx = ndimage.distance_transform_edt(~self.navigable, return_distances=False,
                                                            return_indices=True)
        i, j = min(max(i, 0), self.shape[0] - 1), min(max(j, 0), self.shape[1] - 1)
        q = self.cell_centre(int(self._snap_idx[0, i, j]), int(self._snap_idx[1, i, j]))
        return q if np.hypot(*(q - p[:2])) <= self.snap_radius else None

    def distance_field(self, goals: np.ndarray) -> np.ndarray | None:
        """Geodesic distance (m) from every cell centre to the nearest of `goals` (inf where
        unreachable), or None when no goal is on the main component; LRU-cached per goal set."""
        g = as_goals(goals)
        key = g[:, :2].round(4).tobytes()
        field = self._fields.get(key, _MISSING)
        if field is not _MISSING:
            self._fields.move_to_end(key)
            return field
        snapped = [q for q in (self._snap(p) for p in g) if q is not None]
        field = self._compute_field(np.asarray(snapped)[:, :2]) if snapped else None
        self._fields[key] = field
        if len(self._fields) > self._cache_size:
            self._fields.popitem(last=False)
        return field

    def _compute_field(self, goals: np.ndarray) -> np.ndarray:
        """Fast marching from circles of radius r0 around the goals. Only the sign of phi and
        its values next to the zero contour matter to skfmm, so phi is exact in a small
        window around each goal and a positive constant elsewhere: the cost is the march
        alone, whatever the number of goals."""
        phi = np.full(self.shape, 1.0)
        # every goal's (2w+1)^2 window of cells at once: exact circle distances, min-combined
        cells = np.floor((goals - self.origin) / self.cell).astype(np.int64)
        ii = (cells[:, :1] + _WINDOW[0]).clip(0, self.shape[0] - 1)
        jj = (cells[:, 1:] + _WINDOW[1]).clip(0, self.shape[1] - 1)
        xs, ys = self.origin[0] + (ii + 0.5) * self.cell, self.origin[1] + (jj + 0.5) * self.cell
        local = np.hypot(xs - goals[:, :1], ys - goals[:, 1:]) - self._r0
        np.minimum.at(phi, (ii.ravel(), jj.ravel()), np.minimum(local, 1.0).ravel())
        dist = skfmm.distance(np.ma.MaskedArray(phi, ~self.navigable), dx=self.cell)
        return np.ma.filled(dist, np.inf).astype(np.float32) + np.float32(self._r0)

    def field_at(self, field: np.ndarray, pts: np.ndarray) -> np.ndarray:
        """Bilinear interpolation of a field at (K, 2+) points, ignoring unreachable corners."""
        pts = np.atleast_2d(pts)
        u = (pts[:, :2] - self.origin) / self.cell - 0.5
        i0 = np.floor(u)
        f = u - i0
        i0 = i0.astype(np.int64)
        flat = np.ravel_multi_index((i0[:, :1] + _DI, i0[:, 1:] + _DJ), self.shape, mode="clip")
        w = np.where(_DI, f[:, :1], 1 - f[:, :1]) * np.where(_DJ, f[:, 1:], 1 - f[:, 1:]) + 1e-9
        v = field.ravel()[flat]
        ok = v < np.inf
        w = w * ok
        wsum = w.sum(axis=1)
        out = np.where(ok, v, 0.0)
        out = (out * w).sum(axis=1) / np.maximum(wsum, 1e-12)
        # points off the main component are unreachable, whatever their neighbours say
        return np.where((wsum > 0) & self.lookup(self.navigable, pts), out, np.inf)

    def _value_at(self, field: np.ndarray, x: float, y: float) -> float:
        """Scalar `field_at` for one navigable point (the per-step hot path: ~µs)."""
        u, v = (x - self.origin[0]) / self.cell - 0.5, (y - self.origin[1]) / self.cell - 0.5
        i0, j0 = math.floor(u), math.floor(v)
        fu, fv = u - i0, v - j0
        num = den = 0.0
        for di, dj, w in ((0, 0, (1 - fu) * (1 - fv)), (1, 0, fu * (1 - fv)), (0, 1, (1 - fu) * fv), (1, 1, fu * fv)):
            i, j = min(max(i0 + di, 0), self.shape[0] - 1), min(max(j0 + dj, 0), self.shape[1] - 1)
            val = field[i, j]
            if val < math.inf:
                num += (w + 1e-9) * val
                den += w + 1e-9
        return num / den if den > 0 else math.inf

    def geodesic_distance(self, a: np.ndarray, goals: np.ndarray) -> float:
        field = self.distance_field(goals)
        return math.inf if field is None else self.distance_in(field, a)

    def distance_in(self, field: np.ndarray, a: np.ndarray) -> float:
        """A field's value at point `a` (snapped onto the main component; inf in a pocket)."""
        a2 = self._snap(a)
        return math.inf if a2 is None else self._value_at(field, float(a2[0]), float(a2[1]))

    def shortest_path(self, a: np.ndarray, goals: np.ndarray) -> np.ndarray:
        """(N, 3) waypoints from a to the nearest goal: steepest descent over cells, then
        line-of-sight shortcutting. An empty (0, 3) array when no goal is reachable from a.
        """
        g = as_goals(goals)
        field = self.distance_field(g)
        a2 = self._snap(np.asarray(a, dtype=np.float64))
        if field is None or a2 is None or not np.isfinite(self.field_at(field, a2[None])[0]):
            return np.zeros((0, 3))
        cells = self._descend(field, self.to_cell(a2))
        pts = [np.asarray(a[:2], dtype=np.float64)] + [self.cell_centre(i, j) for i, j in cells]
        end = pts[-1]
        pts.append(g[int(np.argmin(np.hypot(g[:, 0] - end[0], g[:, 1] - end[1])))][:2])
        pts = self._shortcut(pts)
        return np.array([[p[0], p[1], 0.0] for p in pts])

    def _descend(self, field: np.ndarray, start: tuple[int, int]) -> list[tuple[int, int]]:
        i, j = start
        out = [(i, j)]
        for _ in range(self.shape[0] * self.shape[1]):
            if field[i, j] <= self._r0 + 1e-9:
                break
            best = (field[i, j], i, j)
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    ii, jj = i + di, j + dj
                    if 0 <= ii < self.shape[0] and 0 <= jj < self.shape[1] and field[ii, jj] < best[0]:
                        best = (field[ii, jj], ii, jj)
            if (best[1], best[2]) == (i, j):
                break
            i, j = best[1], best[2]
            out.append((i, j))
        return out

    def _shortcut(self, pts: list[np.ndarray]) -> list[np.ndarray]:
        """Greedy string pulling: jump to the farthest waypoint in straight navigable sight,
        found by doubling the jump and then bisecting (O(log n) sight checks a jump; sight
        along a descent path is monotone but for rare grazing corners)."""
        out, k, last = [pts[0]], 0, len(pts) - 1
        while k < last:
            seen, step = k + 1, 1  # the next waypoint is always in sight (adjacent cells)
            while seen < last and self.segment_free(pts[k], pts[min(k + 2 * step, last)], self.navigable):
                seen, step = min(k + 2 * step, last), 2 * step
            blocked = min(k + 2 * step, last) if seen < last else last + 1
            while blocked - seen > 1:
                mid = (seen + blocked) // 2
                if self.segment_free(pts[k], pts[mid], self.navigable):
                    seen = mid
                else:
                    blocked = mid
            out.append(pts[seen])
            k = seen
        return out
