"""Navigation metrics exactly as VLN-CE / habitat define them: pure functions of a trajectory.

Notation: positions p_0..p_T of the agent, d(., g) the geodesic distance to the goal,
d_th the success distance, R the reference path. All distances in metres.

- NE (distance_to_goal): d(p_T, g)
- SR (success): STOP was called and d(p_T, g) < d_th (running out of steps near the goal fails)
- OSR (oracle_success): min_t d(p_t, g) < d_th
- TL (path_length): sum of Euclidean steps ||p_t - p_{t-1}||
- SPL: SR * l / max(l, P), l = geodesic start->goal, P = TL
- nDTW: exp(-DTW(Q, R) / (|R| * d_th)), Q = the positions with consecutive repeats removed
- SDTW: SR * nDTW
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def path_length(positions: np.ndarray) -> float:
    p = np.asarray(positions, dtype=np.float64)
    if len(p) < 2:
        return 0.0
    return float(np.linalg.norm(np.diff(p, axis=0), axis=1).sum())


def success(called_stop: bool, final_distance: float, success_distance: float) -> float:
    return float(bool(called_stop) and final_distance < success_distance)


def oracle_success(distances: Sequence[float], success_distance: float) -> float:
    return float(min(distances) < success_distance)


def spl(succeeded: float, shortest_distance: float, travelled: float) -> float:
    if not succeeded:
        return 0.0
    return float(shortest_distance / max(shortest_distance, travelled, 1e-12))


def dedupe_positions(positions: np.ndarray) -> np.ndarray:
    """Drop consecutive repeats, as VLN-CE's nDTW appends a position only when it changes."""
    p = np.asarray(positions, dtype=np.float64)
    if len(p) < 2:
        return p
    keep = np.concatenate([[True], np.any(np.abs(np.diff(p, axis=0)) > 0, axis=1)])
    return p[keep]


def dtw_row(previous: np.ndarray, point: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """One row of the DTW table: accumulated costs of aligning the query up to `point`
    against each prefix of `reference`, given the previous row (`previous[0]` is the
    virtual column: 0 before the first query point, inf after).

    The recurrence row[j] = c[j] + min(prev[j], prev[j-1], row[j-1]) unrolls, because
    costs are non-negative, to row[j] = C[j] + min_{k<=j}(m[k] - C[k-1]) with C the prefix
    sums of c and m[k] = min(prev[k], prev[k-1]): a cumulative minimum, so one numpy pass.
    """
    cost = np.linalg.norm(reference - point, axis=1)
    m = np.minimum(previous[1:], previous[:-1])
    csum = np.cumsum(cost)
    shifted = np.concatenate([[0.0], csum[:-1]])
    return np.concatenate([[np.inf], csum + np.minimum.accumulate(m - shifted)])


def dtw(query: np.ndarray, reference: np.ndarray) -> float:
    """Exact dynamic time warping with Euclidean point cost (O(|Q||R|), one numpy row a point)."""
    r = np.asarray(reference, np.float64)
    row = np.concatenate([[0.0], np.full(len(r), np.inf)])
    for point in np.asarray(query, np.float64):
        row = dtw_row(row, point, r)
    return float(row[-1])


def ndtw(positions: np.ndarray, reference: np.ndarray, success_distance: float) -> float:
    q = dedupe_positions(positions)
    r = np.asarray(reference, np.float64)
    return float(np.exp(-dtw(q, r) / (len(r) * success_distance)))


class RunningMetrics:
    """`episode_metrics` maintained step by step: O(1) per step, O(|R|) with a reference
    path (one DTW row), instead of recomputing over the whole trajectory every step.
    `tests/test_nav_metrics.py` checks it against the pure functions."""

    def __init__(self, start: np.ndarray, start_distance: float, success_distance: float,
                 reference_path: np.ndarray | None = None) -> None:
        self.success_distance = success_distance
        self.shortest = float(start_distance)
        self.last = np.asarray(start, np.float64).copy()
        self.distance = float(start_distance)
        self.min_distance = float(start_distance)
        self.travelled = 0.0
        self.reference = None if reference_path is None else np.asarray(reference_path, np.float64)
        if self.reference is not None:
            self.row = dtw_row(np.concatenate([[0.0], np.full(len(self.reference), np.inf)]), self.last,
                               self.reference)

    def add(self, position: np.ndarray, distance: float) -> None:
        position = np.asarray(position, np.float64)
        step = float(np.linalg.norm(position - self.last))
        self.travelled += step
        self.distance = float(distance)
        self.min_distance = min(self.min_distance, self.distance)
        if self.reference is not None and np.any(position != self.last):  # nDTW de-duplicates
            self.row = dtw_row(self.row, position, self.reference)
        self.last = position

    def result(self, called_stop: bool) -> dict[str, float]:
        sr = success(called_stop, self.distance, self.success_distance)
        out = {
            "distance_to_goal": self.distance,
            "success": sr,
            "oracle_success": float(self.min_distance < self.success_distance),
            "spl": spl(sr, self.shortest, self.travelled),
            "path_length": self.travelled,
        }
        if self.reference is not None:
            out["ndtw"] = float(np.exp(-self.row[-1] / (len(self.reference) * self.success_distance)))
            out["sdtw"] = sr * out["ndtw"]
        return out


def episode_metrics(
    positions: np.ndarray,
    goal_distances: Sequence[float],
    called_stop: bool,
    shortest_distance: float,
    success_distance: float,
    reference_path: np.ndarray | None = None,
) -> dict[str, float]:
    """All metrics of one (possibly unfinished) episode.

    `goal_distances[t]` is the geodesic distance from p_t to the goal, t = 0..T.
    """
    ne = float(goal_distances[-1])
    tl = path_length(positions)
    sr = success(called_stop, ne, success_distance)
    out = {
        "distance_to_goal": ne,
        "success": sr,
        "oracle_success": oracle_success(goal_distances, success_distance),
        "spl": spl(sr, shortest_distance, tl),
        "path_length": tl,
    }
    if reference_path is not None:
        out["ndtw"] = ndtw(positions, reference_path, success_distance)
        out["sdtw"] = sr * out["ndtw"]
    return out
