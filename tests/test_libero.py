"""embodied/Libero-v0: protocol, validation, HDF5 reader and (when LIBERO is installed) the simulator."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import embodied.envs.libero as libero_pkg
from embodied.data.libero_hdf5 import read_libero_hdf5
from embodied.envs.libero import PROTOCOLS, SUITES, get_protocol, libero_available
from embodied.envs.libero.env import INSTRUCTION_CHARSET, LiberoEnv, quat2axisangle
from embodied.envs.libero.expert import ExpertError, in_carry_corridor, pick_place_goals

needs_libero = pytest.mark.skipif(not libero_available(),
                                  reason="LIBERO not installed (pip install embodied[libero])")


# --------------------------------------------------------------------------- no simulator needed
def test_gym_id_registered() -> None:
    assert libero_pkg.GYM_ID in gym.registry
    assert gym.spec(libero_pkg.GYM_ID).entry_point == "embodied.envs.libero.env:LiberoEnv"


def test_protocol_tables() -> None:
    ov, lr = PROTOCOLS["openvla"], PROTOCOLS["lerobot"]
    assert dict(ov.max_steps) == {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300,
                                  "libero_10": 520, "libero_90": 400}
    assert dict(lr.max_steps) == {**ov.max_steps, "libero_spatial": 280}
    for p in (ov, lr):
        assert (p.num_steps_wait, p.num_init_states, p.resolution) == (10, 50, 256)
        assert set(p.max_steps) == set(SUITES)
        with pytest.raises(dataclasses.FrozenInstanceError):
            p.num_steps_wait = 3  # type: ignore[misc]
    assert "openvla" in str(ov) and "220" in str(ov)
    with pytest.raises(ValueError, match="protocol must be one of"):
        get_protocol("octo")


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"suite": "libero_100"}, "suite must be one of"),
    ({"task_id": 10}, r"task_id must be an int in \[0, 9\]"),
    ({"suite": "libero_90", "task_id": 90}, r"task_id must be an int in \[0, 89\]"),
    ({"resolution": 8}, "resolution must be"),
    ({"cameras": ("front",)}, r"cameras must be one of \['agentview', 'wrist'\]"),
    ({"cameras": ("agentview", "agentview")}, "without repeats"),
    ({"protocol": "octo"}, r"protocol must be one of \['lerobot', 'openvla'\]"),
])
def test_kwargs_validated_with_field_and_allowed_values(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LiberoEnv(**kwargs)


def test_missing_libero_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from embodied.envs.libero import _loader

    monkeypatch.setattr(_loader, "libero_available", lambda: False)
    with pytest.raises(ImportError, match=r"pip install embodied\[libero\]"):
        LiberoEnv()


def test_quat2axisangle() -> None:
    assert np.allclose(quat2axisangle(np.array([0, 0, 0, 1.0])), 0)
    q = np.array([1.0, 0, 0, 0])  # 180 deg about x (xyzw)
    assert np.allclose(quat2axisangle(q), [math.pi, 0, 0])


def _write_demo_file(path: Path, lengths: list[int], instruction: str) -> None:
    import h5py

    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["problem_info"] = json.dumps({"problem_name": "libero_tabletop_manipulation",
                                                 "language_instruction": instruction})
        for i, t in enumerate(lengths):
            g = data.create_group(f"demo_{i}")
            g.attrs["num_samples"] = t
            g.create_dataset("actions", data=np.full((t, 7), i, dtype=np.float64))
            g.create_dataset("dones", data=np.eye(1, t, t - 1, dtype=np.uint8)[0])
            g.create_dataset("states", data=np.zeros((t, 110)))
            obs = g.create_group("obs")
            img = np.zeros((t, 8, 8, 3), dtype=np.uint8)
            img[:, 0, 0] = 255  # top-left marker, as stored (upside down)
            obs.create_dataset("agentview_rgb", data=img)
            obs.create_dataset("eye_in_hand_rgb", data=img)
            obs.create_dataset("ee_pos", data=np.ones((t, 3)))
            obs.create_dataset("gripper_states", data=np.zeros((t, 2)))


def test_read_libero_hdf5(tmp_path: Path) -> None:
    path = tmp_path / "pick_up_the_ketchup_and_place_it_in_the_basket_demo.hdf5"
    lengths = [5, 3, 4, 2, 6, 3, 2, 2, 2, 2, 7]  # 11 demos: demo_10 must come after demo_9
    _write_demo_file(path, lengths, "pick up the ketchup and place it in the basket")
    eps = list(read_libero_hdf5(path))
    assert [e["name"] for e in eps] == [f"demo_{i}" for i in range(11)]
    for i, (ep, t) in enumerate(zip(eps, lengths)):
        assert ep["instruction"] == "pick up the ketchup and place it in the basket"
        assert ep["actions"].shape == (t, 7) and np.all(ep["actions"] == i)
        assert ep["obs"]["agentview_rgb"].shape == (t, 8, 8, 3)
        assert ep["obs"]["ee_pos"].shape == (t, 3)
        assert ep["dones"][-1] == 1
        # upright=True rotates 180 deg: the stored top-left marker ends bottom-right
        assert np.all(ep["obs"]["agentview_rgb"][:, -1, -1] == 255)
        assert np.all(ep["obs"]["eye_in_hand_rgb"][:, 0, 0] == 0)
    raw = next(read_libero_hdf5(path, upright=False))
    assert np.all(raw["obs"]["agentview_rgb"][:, 0, 0] == 255)
    lean = next(read_libero_hdf5(path, load_images=False))
    assert "agentview_rgb" not in lean["obs"] and "ee_pos" in lean["obs"]


def test_read_libero_hdf5_instruction_from_filename(tmp_path: Path) -> None:
    import h5py

    path = tmp_path / "KITCHEN_SCENE3_turn_on_the_stove_demo.hdf5"
    with h5py.File(path, "w") as f:
        f.create_group("data").create_group("demo_0").create_dataset("actions", data=np.zeros((2, 7)))
    (ep,) = list(read_libero_hdf5(path))
    assert ep["instruction"] == "turn on the stove"
    with h5py.File(tmp_path / "bad.hdf5", "w") as f:
        f.create_group("other")
    with pytest.raises(ValueError, match="no 'data' group"):
        next(read_libero_hdf5(tmp_path / "bad.hdf5"))


# --------------------------------------------------------------------------- real simulator
@pytest.fixture(scope="module")
def env() -> Any:
    if not libero_available():
        pytest.skip("LIBERO not installed (pip install embodied[libero])")
    e = LiberoEnv(suite="libero_object", task_id=0, resolution=128)
    yield e
    e.close()


def _project(env: LiberoEnv, point: np.ndarray, cam: str = "agentview") -> tuple[float, float]:
    """Pinhole projection of a world point to (row, col) of an *upright* image (MuJoCo camera: -z forward, +y up)."""
    sim = env.sim.env.sim
    cid = sim.model.camera_name2id(cam)
    pos, rot = np.array(sim.data.cam_xpos[cid]), np.array(sim.data.cam_xmat[cid]).reshape(3, 3)
    p = rot.T @ (point - pos)
    f = 0.5 * env.resolution / math.tan(math.radians(sim.model.cam_fovy[cid]) / 2)
    return env.resolution / 2 - f * p[1] / -p[2], env.resolution / 2 + f * p[0] / -p[2]


@pytest.mark.libero
@needs_libero
def test_reset_spaces_reproducible_and_upright(env: LiberoEnv) -> None:
    obs, info = env.reset(seed=0, options={"init_state": 3})
    assert env.observation_space.contains(obs), {k: getattr(v, "shape", v) for k, v in obs.items()}
    assert obs["agentview_rgb"].shape == (128, 128, 3) and obs["agentview_rgb"].dtype == np.uint8
    assert obs["state"].shape == (8,) and obs["state"].dtype == np.float32
    assert obs["instruction"] == "pick up the alphabet soup and place it in the basket"
    assert set(obs["instruction"]) <= set(INSTRUCTION_CHARSET)
    assert info["init_state"] == 3 and info["is_success"] is False and info["metrics"]["success"] == 0.0
    assert info["task"] == env.task_name and info["settings"].protocol.name == "openvla"
    assert info["settings"].max_steps == 280

    obs2, _ = env.reset(seed=123, options={"init_state": 3})  # the seed does not change the init state
    for k in ("agentview_rgb", "wrist_rgb", "state"):
        assert np.array_equal(obs[k], obs2[k]), k
    _, info3 = env.reset(seed=57)  # without options: seed % 50
    assert info3["init_state"] == 7

    # Upright: remove the target can and check where the image changes against its projection.
    env.reset(options={"init_state": 0})
    inner = env.sim.env
    can = np.array(inner.sim.data.body_xpos[inner.obj_body_id["alphabet_soup_1"]])
    state = env.get_sim_state()
    with_can = env.set_sim_state(state)["agentview_rgb"].astype(int)
    jid = inner.sim.model.joint_name2id(inner.objects_dict["alphabet_soup_1"].joints[0])
    moved = state.copy()
    moved[1 + inner.sim.model.jnt_qposadr[jid] + 2] -= 5.0  # flattened state = [time, qpos, qvel]
    without = env.set_sim_state(moved)["agentview_rgb"].astype(int)
    diff = np.abs(with_can - without).sum(-1) > 30
    assert diff.sum() > 10, "the can should be visible in agentview"
    rows, cols = np.nonzero(diff)
    r, c = _project(env, can)
    # Rows: the can is where a pinhole camera puts it vertically (a missing flip would put it at 127 - r).
    assert abs(rows.mean() - r) < 12, (rows.mean(), r)
    assert abs(rows.mean() - (127 - r)) > abs(rows.mean() - r)
    # Columns: the protocol's 180° rotation (OpenVLA/LeRobot datasets) mirrors left-right relative to
    # the physical camera (glReadPixels only flips rows); pin that convention down.
    assert abs(cols.mean() - (127 - c)) < 12, (cols.mean(), 127 - c)


@pytest.mark.libero
@needs_libero
def test_expert_policy_solves_libero_object_task_through_rollout() -> None:
    """The scripted expert, exposed as the privileged `expert_action` observation, played by
    the generic `expert` policy through the evaluation loop."""
    import embodied
    from embodied.evaluate import rollout

    env = embodied.envs.make("libero", suite="libero_object", task_id=0, resolution=64, cameras=["agentview"],
                             fast_render=True, expert=True)
    assert env.observation_space["expert_action"].shape == (7,)
    (record,) = rollout(env, embodied.policies.make("expert"), n_episodes=1, seed=0)
    env.close()
    assert record.metrics["success"] == 1.0, record.as_row()
    assert record.steps < 280


@pytest.mark.libero
@needs_libero
def test_episode_does_not_depend_on_the_episodes_before_it() -> None:
    """Init state i gives the same episode first or after others: the fixtures LIBERO re-places on
    every reset, the solver warm start and the gripper command must not carry over. The reset leaves
    the caller's numpy global RNG as it was."""
    import embodied

    env = embodied.envs.make("libero", suite="libero_spatial", task_id=2, cameras=(), fast_render=True)

    def episode(i: int, steps: int = 25) -> np.ndarray:
        obs, _ = env.reset(seed=i, options={"init_state": i})
        states = [obs["state"]]
        for _ in range(steps):
            obs, *_ = env.step(env.unwrapped.expert_action())
            states.append(obs["state"])
        return np.stack(states)

    np.random.seed(123)
    caller_rng = np.random.get_state()
    first = episode(4)
    assert np.array_equal(np.random.get_state()[1], caller_rng[1])
    episode(3, steps=60)  # leaves the gripper closed and the bowl moved
    again = episode(4)
    env.close()
    np.testing.assert_array_equal(first, again)


def test_carry_corridor_counts_only_footprints_the_path_moves_towards() -> None:
    start, end = np.array([0.0, 0.0]), np.array([0.4, 0.0])
    box = lambda x0, x1, y0, y1: (np.array([x0, y0]), np.array([x1, y1]))  # noqa: E731
    assert in_carry_corridor(*box(0.15, 0.25, 0.05, 0.3), start, end)  # beside the middle of the path
    assert in_carry_corridor(*box(0.35, 0.5, -0.3, -0.08), start, end)  # beside the target
    assert not in_carry_corridor(*box(-0.3, -0.05, -0.2, 0.2), start, end)  # behind the start
    assert not in_carry_corridor(*box(-0.1, 0.05, 0.04, 0.3), start, end)  # beside the start, left behind
    assert not in_carry_corridor(*box(0.15, 0.25, 0.2, 0.4), start, end)  # 20 cm off the path


def _expert_episode(suite: str, task_id: int, init_state: int) -> tuple[bool, dict[str, Any]]:
    """One episode of the scripted expert from an init state that is not already a success. Physics only
    (the expert reads poses, not images). Returns (terminated, last info)."""
    import embodied

    env = embodied.envs.make("libero", suite=suite, task_id=task_id, cameras=(), fast_render=True)
    env.reset(seed=0, options={"init_state": init_state})
    assert not env.unwrapped.success
    done, info = False, {}
    while not done:
        _, _, terminated, truncated, info = env.step(env.unwrapped.expert_action())
        done = terminated or truncated
    env.close()
    return terminated, info


def _env_with_goal(goal_state: list[list[str]]) -> Any:
    """The one attribute path `pick_place_goals` reads: env.sim.env.parsed_problem (LIBERO's BDDL parse)."""
    problem = SimpleNamespace(parsed_problem={"goal_state": goal_state})
    return SimpleNamespace(sim=SimpleNamespace(env=problem))


def test_pick_place_goals_keep_the_bddl_order_and_refuse_other_predicates() -> None:
    goals = [["In", "cream_cheese_1", "basket_1_contain_region"], ["in", "butter_1", "basket_1_contain_region"]]
    assert pick_place_goals(_env_with_goal(goals)) == [("cream_cheese_1", "basket_1_contain_region"),
                                                       ("butter_1", "basket_1_contain_region")]
    with pytest.raises(ExpertError, match="turnon"):
        pick_place_goals(_env_with_goal([["turnon", "flat_stove_1"], ["on", "moka_pot_1", "flat_stove_1"]]))
    with pytest.raises(ExpertError):
        pick_place_goals(_env_with_goal([]))


@pytest.mark.libero
@needs_libero
@pytest.mark.parametrize("task_id, init_state", [
    (4, 1),  # a mug onto each plate: two `on` goals in turn, each mug pinched at its rim
    (1, 4),  # cream cheese and butter into the basket: the first grasp, beside the milk carton, closes
             # on nothing; the lift leaves the box behind and the expert approaches again
])
def test_expert_solves_two_object_libero_10_tasks(task_id: int, init_state: int) -> None:
    """libero_10's two-object goals are solved one after the other."""
    terminated, info = _expert_episode("libero_10", task_id, init_state)
    assert info["is_success"] and terminated, info  # the simulator's check holds only with both placed
    assert info["steps"] < 520  # the libero_10 limit of both protocols


@pytest.mark.libero
@needs_libero
@pytest.mark.parametrize("task_id, init_state", [
    (3, 2),  # bowl on the cookie box
    (6, 0),  # bowl beside the cabinet: the carry height must ignore the cabinet the path leaves behind
    (9, 1),  # bowl on the cabinet: the hand stalls short of the travel height above it and must descend
])
def test_expert_rim_grasps_a_bowl_onto_the_plate_in_libero_spatial(task_id: int, init_state: int) -> None:
    """libero_spatial moves hollow bowls: the expert pinches the rim (a centre grasp holds nothing)."""
    terminated, info = _expert_episode("libero_spatial", task_id, init_state)
    assert info["is_success"] and terminated, info
    assert info["steps"] < 220  # the openvla protocol's libero_spatial limit


@pytest.mark.libero
@needs_libero
def test_async_vector_env_two_workers() -> None:
    venv = gym.vector.AsyncVectorEnv(
        [lambda: gym.make(libero_pkg.GYM_ID, suite="libero_object", task_id=1, resolution=64,
                          cameras=("agentview",), fast_render=True) for _ in range(2)],
        context="forkserver", shared_memory=False, autoreset_mode=gym.vector.AutoresetMode.DISABLED)
    try:
        obs, info = venv.reset(seed=[4, 5])
        assert list(info["init_state"]) == [4, 5]
        assert obs["agentview_rgb"].shape == (2, 64, 64, 3)
        assert list(obs["instruction"]) == ["pick up the cream cheese and place it in the basket"] * 2
        actions = np.zeros((2, 7), np.float32)
        actions[:, 6] = -1
        for _ in range(3):
            obs, _, term, trunc, info = venv.step(actions)
        assert obs["state"].shape == (2, 8) and not term.any() and not trunc.any()
        assert list(info["steps"]) == [3, 3]
    finally:
        venv.close()


@pytest.mark.libero
@needs_libero
def test_instruction_charset_covers_every_suite() -> None:
    import contextlib
    import io

    from embodied.envs.libero._loader import import_libero
    from embodied.envs.libero.env import MAX_INSTRUCTION_CHARS

    benchmark, _ = import_libero()
    for suite in SUITES:
        with contextlib.redirect_stdout(io.StringIO()):
            bm = benchmark.get_benchmark(suite)(task_order_index=0)
        assert bm.get_num_tasks() == libero_pkg.NUM_TASKS[suite]
        for i in range(bm.get_num_tasks()):
            text = bm.get_task(i).language
            assert set(text) <= set(INSTRUCTION_CHARSET) and len(text) <= MAX_INSTRUCTION_CHARS, text
