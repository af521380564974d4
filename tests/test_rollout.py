"""The rollout loop keeps policy rows aligned with environments in every autoreset mode."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from embodied.evaluate import format_table, rollout, summarize
from embodied.policies import RandomPolicy

MODES = [AutoresetMode.DISABLED, AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP]


class TrackingPolicy:
    """A deterministic CartPole controller that records what each row saw since its reset.

    `history[row]` is the list of observations fed to that row in the current episode.
    Every finished history is kept in `episodes` so tests can check alignment.
    """

    def __init__(self) -> None:
        self.history: list[list[np.ndarray]] = []
        self.finished: list[list[np.ndarray]] = []
        self.pauses: list[list[int]] = []

    def reset(self, mask: np.ndarray) -> None:
        if not self.history:
            self.history = [[] for _ in mask]
        for row in np.flatnonzero(mask):
            if self.history[row]:
                self.finished.append(self.history[row])
            self.history[row] = []

    def on_envs_pause(self, idx) -> None:
        self.pauses.append(list(idx))
        for row in sorted(idx, reverse=True):
            self.finished.append(self.history.pop(row))

    def act(self, obs: np.ndarray) -> np.ndarray:
        assert len(obs) == len(self.history), "policy rows and active envs out of step"
        for row, o in enumerate(obs):
            self.history[row].append(o.copy())
        return (obs[:, 2] + 0.3 * obs[:, 3] > 0).astype(np.int64)


def make_vec(n: int, mode: AutoresetMode) -> SyncVectorEnv:
    return SyncVectorEnv([lambda: gym.make("CartPole-v1", max_episode_steps=60)] * n, autoreset_mode=mode)


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.name)
@pytest.mark.parametrize("num_envs", [1, 3])
def test_rollout_counts_and_alignment(mode: AutoresetMode, num_envs: int) -> None:
    policy = TrackingPolicy()
    records = rollout(make_vec(num_envs, mode), policy, n_episodes=5, seed=7)
    assert [r.episode for r in records] == list(range(5))
    assert all(1 <= r.steps <= 60 for r in records)
    # every env ends paused exactly once; the policy never acted on more rows than active envs
    assert sum(len(p) for p in policy.pauses) == num_envs
    # Each policy episode history starts with a reset observation (|x| small, CartPole init is U(-.05,.05))
    # and is as long as the episode (NEXT_STEP adds the one ignored act on the terminal obs).
    extra = 1 if mode == AutoresetMode.NEXT_STEP else 0
    lengths = sorted(len(h) for h in policy.finished if h)
    for h in policy.finished:
        if h:
            assert np.all(np.abs(h[0]) <= 0.05 + 1e-6)
    expected = sorted(r.steps + extra for r in records)
    # the last episode of each env is not followed by a reset, so no extra act there
    assert len(lengths) >= len(expected) - num_envs
    assert sum(lengths) <= sum(expected) + num_envs


def test_disabled_mode_is_seed_stable_across_num_envs() -> None:
    one = rollout(make_vec(1, AutoresetMode.DISABLED), TrackingPolicy(), n_episodes=6, seed=3)
    three = rollout(make_vec(3, AutoresetMode.DISABLED), TrackingPolicy(), n_episodes=6, seed=3)
    assert [(r.seed, r.steps, r.episode_return) for r in one] == [
        (r.seed, r.steps, r.episode_return) for r in three
    ]


def test_disabled_first_observation_is_the_seeded_reset() -> None:
    policy = TrackingPolicy()
    rollout(make_vec(2, AutoresetMode.DISABLED), policy, n_episodes=4, seed=11)
    firsts = {tuple(np.round(h[0], 6)) for h in policy.finished if h}
    expected = set()
    for k in range(4):
        obs, _ = gym.make("CartPole-v1").reset(seed=11 + k)
        expected.add(tuple(np.round(obs, 6)))
    assert firsts == expected


def test_single_env_and_random_policy_repeat_exactly() -> None:
    def run() -> list:
        env = gym.make("CartPole-v1", max_episode_steps=40)
        policy = RandomPolicy(env.action_space, seed=0)
        return [r.comparable() for r in rollout(env, policy, n_episodes=3, seed=0)]

    assert run() == run()


def test_summary_table() -> None:
    records = rollout(make_vec(2, AutoresetMode.DISABLED), TrackingPolicy(), n_episodes=4, seed=0)
    stats = summarize(records)
    assert stats["steps"]["n"] == 4
    assert stats["steps"]["mean"] == pytest.approx(np.mean([r.steps for r in records]))
    table = format_table({"tracking": stats})
    assert "steps" in table and "tracking" in table


def test_bad_episode_count() -> None:
    with pytest.raises(ValueError, match="n_episodes"):
        rollout(make_vec(1, AutoresetMode.DISABLED), TrackingPolicy(), n_episodes=0)


# ----------------------------------------------------------------------------- EnvPool (make_vec's vector env)
def _pool(n: int, vectorization: str):
    from functools import partial

    from embodied.envs.vector import EnvPool

    return EnvPool([partial(gym.make, "CartPole-v1", max_episode_steps=60)] * n, vectorization=vectorization)


@pytest.mark.parametrize("vectorization", ["sync", "async"])
def test_env_pool_rows_stay_aligned_and_records_match_one_env(vectorization: str) -> None:
    one = rollout(_pool(1, "sync"), TrackingPolicy(), n_episodes=7, seed=5)
    policy = TrackingPolicy()
    pool = _pool(3, vectorization)
    try:
        many = rollout(pool, policy, n_episodes=7, seed=5)
    finally:
        pool.close()
    assert [r.comparable() for r in many] == [r.comparable() for r in one]
    assert sum(len(p) for p in policy.pauses) == 3
    firsts = {tuple(np.round(h[0], 6)) for h in policy.finished if h}
    expected = {tuple(np.round(gym.make("CartPole-v1").reset(seed=5 + k)[0], 6)) for k in range(7)}
    assert firsts == expected  # every row's episode starts at its own seeded reset


def test_env_pool_is_a_gymnasium_vector_env_with_reset_masks() -> None:
    pool = _pool(2, "async")
    try:
        obs, _ = pool.reset(seed=[1, 2])
        assert obs.shape == (2, 4)
        np.testing.assert_allclose(obs[1], gym.make("CartPole-v1").reset(seed=2)[0], rtol=1e-6)
        obs2, reward, term, trunc, _ = pool.step(np.array([0, 1]))
        assert obs2.shape == (2, 4) and reward.tolist() == [1.0, 1.0] and not term.any() and not trunc.any()
        obs3, _ = pool.reset(seed=[None, 9], options={"reset_mask": np.array([False, True])})
        np.testing.assert_allclose(obs3[0], obs2[0])  # env 0 untouched
        np.testing.assert_allclose(obs3[1], gym.make("CartPole-v1").reset(seed=9)[0], rtol=1e-6)
    finally:
        pool.close()


@pytest.mark.parametrize("vectorization", ["sync", "async"])
def test_objectrecall_records_name_the_question_and_the_tour(vectorization: str) -> None:
    """An ObjectRecall record carries its question (the reset observation still shows the tour
    instruction), so success can be broken down by question type from episodes.jsonl."""
    from functools import partial

    import embodied
    from embodied.envs.vector import EnvPool

    make = partial(embodied.envs.make, "objectrecall", resolution=16, split="val_unseen", max_episode_steps=5)
    pool = EnvPool([make, make], vectorization=vectorization)
    try:
        records = rollout(pool, RandomPolicy(pool.single_action_space, seed=0), n_episodes=3, seed=0)
    finally:
        pool.close()
    probe = make()
    for r in records:
        probe.reset(seed=r.seed)
        assert r.identity["instruction"] == probe.unwrapped.episode.instruction != ""
        assert r.identity["tour_steps"] == len(probe.unwrapped.episode.tour_actions) > 0
    probe.close()


def test_a_house_stays_on_one_env_and_records_do_not_change() -> None:
    """Episodes grouped by house (habitat-lab's scene grouping): with 2 envs each house is built on one
    env, apart from the tail, where an env shares a house rather than idle. Without groups the two
    envs take alternate episodes and both build every house. The records are the same either way."""
    from functools import partial

    import embodied
    from embodied.envs.vector import EnvPool
    from embodied.evaluate import episode_plan, grouped

    make = partial(embodied.envs.make, "pointnav", resolution=16, split="val_unseen", episodes_per_scene=3,
                   expert=True)
    probe = make()
    specs = grouped(episode_plan(12, seed=0), probe)
    probe.close()
    assert [s.group for s in specs] == [f"val_unseen/house-draw-{k // 3}" for k in range(12)]

    def run(plan):
        pool = EnvPool([make, make], vectorization="sync")
        try:
            return rollout(pool, embodied.policies.make("expert"), episodes=plan)
        finally:
            pool.close()

    records = run(specs)
    envs_of = {g: {r.env_index for r, s in zip(records, specs) if s.group == g} for g in {s.group for s in specs}}
    assert sum(len(e) for e in envs_of.values()) <= len(envs_of) + 1, envs_of
    scenes = {g: {r.identity["scene"] for r, s in zip(records, specs) if s.group == g} for g in envs_of}
    assert all(len(v) == 1 for v in scenes.values()), scenes  # a group is one house
    assert [r.comparable() for r in records] == [r.comparable() for r in run(episode_plan(12, seed=0))]


class _TimedEnv(gym.Env):
    """A 4-step episode whose steps take `delay` seconds: two of them make one env slow, one fast."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, delay: float) -> None:
        self.delay, self.t = delay, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        import time

        time.sleep(self.delay)
        self.t += 1
        return np.full(1, self.t / 4, np.float32), 1.0, self.t >= 4, False, {}


class _RowwisePolicy:
    """Stateless, row by row: declares `independent_rows`, so the loop may act on a subset of rows."""

    independent_rows = True

    def __init__(self) -> None:
        self.batch_sizes: list[int] = []

    def reset(self, mask: np.ndarray) -> None:
        pass

    def on_envs_pause(self, idx) -> None:
        pass

    def act(self, obs: np.ndarray) -> np.ndarray:
        self.batch_sizes.append(len(obs))
        return np.zeros(len(obs), dtype=np.int64)


def test_a_policy_with_independent_rows_acts_on_each_env_as_its_step_returns() -> None:
    """With one env ten times slower than the other, the fast env runs its episodes while the slow one
    is still on its first: nobody waits for the slowest step of a round. In lock-step (a policy without
    `independent_rows`) both envs finish their first episodes in the same round."""
    from functools import partial

    from embodied.envs.vector import EnvPool

    def finishing_order(policy) -> list[int]:
        pool = EnvPool([partial(_TimedEnv, 0.4), partial(_TimedEnv, 0.0)], vectorization="async")
        order: list[int] = []
        try:
            rollout(pool, policy, n_episodes=5, seed=0, on_episode=lambda r: order.append(r.env_index))
        finally:
            pool.close()
        return order

    free = _RowwisePolicy()
    assert finishing_order(free)[:4] == [1, 1, 1, 1]  # episodes 1-4 on the fast env before the slow one's 0
    assert min(free.batch_sizes) == 1
    lockstep = _RowwisePolicy()
    lockstep.independent_rows = False
    assert finishing_order(lockstep)[:2] in ([0, 1], [1, 0])


def test_expert_records_do_not_depend_on_acting_in_step() -> None:
    """The expert acts on each env as it is ready; its records on 2 worker processes equal one env's."""
    from functools import partial

    import embodied
    from embodied.envs.vector import EnvPool

    make = partial(embodied.envs.make, "pointnav", resolution=16, split="val_unseen", expert=True)
    runs = []
    for n, vectorization in ((1, "sync"), (2, "async")):
        pool = EnvPool([make] * n, vectorization=vectorization)
        try:
            runs.append(rollout(pool, embodied.policies.make("expert"), n_episodes=6, seed=3))
        finally:
            pool.close()
    assert [r.comparable() for r in runs[1]] == [r.comparable() for r in runs[0]]
    assert all(r.success == 1.0 for r in runs[0])
