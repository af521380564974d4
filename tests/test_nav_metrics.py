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


def test_vectorised_dtw_matches_the_textbook_recurrence() -> None:
    rng = np.random.default_rng(0)
    q, r = rng.normal(size=(9, 3)), rng.normal(size=(6, 3))
    acc = np.full((10, 7), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, 10):
        for j in range(1, 7):
            acc[i, j] = np.linalg.norm(q[i - 1] - r[j - 1]) + min(acc[i - 1, j], acc[i, j - 1], acc[i - 1, j - 1])
    assert M.dtw(q, r) == pytest.approx(acc[-1, -1])


@pytest.mark.parametrize("with_reference", [False, True])
def test_running_metrics_equal_the_pure_functions(with_reference: bool) -> None:
    rng = np.random.default_rng(1)
    steps = rng.choice([0.0, 0.25], size=(40, 1)) * rng.normal(size=(40, 3))  # includes standing still
    positions = np.cumsum(np.vstack([np.zeros((1, 3)), steps]), axis=0)
    goal = np.array([2.0, 1.0, 0.0])
    distances = [float(np.linalg.norm(p - goal)) for p in positions]
    reference = positions[::3] + 0.1 if with_reference else None
    running = M.RunningMetrics(positions[0], distances[0], 1.0, reference)
    for p, d in zip(positions[1:], distances[1:]):
        running.add(p, d)
    for stop in (False, True):
        expected = M.episode_metrics(positions, distances, stop, distances[0], 1.0, reference)
        got = running.result(stop)
        assert got.keys() == expected.keys()
        for key in expected:
            assert got[key] == pytest.approx(expected[key]), key
