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


def dtw(query: np.ndarray, reference: np.ndarray) -> float:
    """Exact dynamic time warping with Euclidean point cost (O(|Q||R|), rows vectorised)."""
    q, r = np.asarray(query, np.float64), np.asarray(reference, np.float64)
    cost = np.linalg.norm(q[:, None, :] - r[None, :, :], axis=-1)
    acc = np.full((len(q) + 1, len(r) + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, len(q) + 1):
        row = acc[i]
        prev = acc[i - 1]
        for j in range(1, len(r) + 1):
            row[j] = cost[i - 1, j - 1] + min(prev[j], row[j - 1], prev[j - 1])
    return float(acc[-1, -1])


def ndtw(positions: np.ndarray, reference: np.ndarray, success_distance: float) -> float:
    q = dedupe_positions(positions)
    r = np.asarray(reference, np.float64)
    return float(np.exp(-dtw(q, r) / (len(r) * success_distance)))


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
