"""Each navigation metric on a trajectory computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from embodied.envs.nav import metrics as M

# An L-shaped walk: (0,0) -> (1,0) -> (1,0) [a turn in place] -> (1,1) -> (1,2)
TRAJ = np.array([[0, 0, 0], [1, 0, 0], [1, 0, 0], [1, 1, 0], [1, 2, 0]], dtype=float)
GOAL = np.array([1.0, 3.0, 0.0])
DIST = [float(np.linalg.norm(p - GOAL)) for p in TRAJ]  # open floor: geodesic = Euclidean


def test_path_length_counts_euclidean_steps() -> None:
    assert M.path_length(TRAJ) == pytest.approx(3.0)
    assert M.path_length(TRAJ[:1]) == 0.0


def test_success_needs_stop_and_distance() -> None:
    assert M.success(True, 2.9, 3.0) == 1.0
    assert M.success(False, 0.1, 3.0) == 0.0  # out of steps next to the goal is a failure
    assert M.success(True, 3.0, 3.0) == 0.0  # strictly below the threshold


def test_oracle_success_is_sticky_minimum() -> None:
    assert M.oracle_success([5.0, 0.5, 5.0], 1.0) == 1.0
    assert M.oracle_success([5.0, 1.5, 5.0], 1.0) == 0.0


def test_spl_hand_computed() -> None:
    # shortest 2.5 m, travelled 3 m -> 2.5 / 3
    assert M.spl(1.0, 2.5, 3.0) == pytest.approx(2.5 / 3.0)
    assert M.spl(1.0, 2.5, 2.0) == pytest.approx(1.0)  # shorter than geodesic (within radius)
    assert M.spl(0.0, 2.5, 3.0) == 0.0


def test_dedupe_and_dtw_by_hand() -> None:
    q = M.dedupe_positions(TRAJ)
    assert len(q) == 4  # the repeated (1,0) is dropped
    ref = np.array([[0, 0, 0], [1, 1, 0], [1, 2, 0]], dtype=float)
    # Optimal alignment: (0,0)-(0,0)=0, (1,0)-(0,0)=1 or (1,0)-(1,1)=1, (1,1)-(1,1)=0, (1,2)-(1,2)=0 -> 1
    assert M.dtw(q, ref) == pytest.approx(1.0)
    assert M.ndtw(TRAJ, ref, 3.0) == pytest.approx(math.exp(-1.0 / (3 * 3.0)))
    assert M.ndtw(ref, ref, 3.0) == pytest.approx(1.0)


def test_episode_metrics_bundle() -> None:
    ref = np.array([[0, 0, 0], [1, 1, 0], [1, 2, 0]], dtype=float)
    out = M.episode_metrics(TRAJ, DIST, called_stop=True, shortest_distance=float(np.linalg.norm(GOAL)),
                            success_distance=3.0, reference_path=ref)
    assert out["distance_to_goal"] == pytest.approx(1.0)
    assert out["success"] == 1.0 and out["oracle_success"] == 1.0
    assert out["path_length"] == pytest.approx(3.0)
    assert out["spl"] == pytest.approx(1.0)  # travelled 3 m < geodesic sqrt(10): capped at 1
    assert out["sdtw"] == pytest.approx(out["ndtw"])
    failed = M.episode_metrics(TRAJ, DIST, called_stop=False, shortest_distance=3.16, success_distance=3.0,
                               reference_path=ref)
    assert failed["success"] == 0.0 and failed["spl"] == 0.0 and failed["sdtw"] == 0.0
    assert failed["oracle_success"] == 1.0
