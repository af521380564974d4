"""Evaluation speed: episodes/hour for 1, 2 and 4 envs on PointNav, ObjectRecall and a LIBERO task,
and the evaluator's overhead over stepping the same envs with the same actions alone.

For each task and env count N the expert policy is evaluated through `rollout` on an `EnvPool`
(sync for N=1, async workers for N>1); its actions are recorded. Then N plain processes, one per
env, replay exactly the episodes each env ran, with the same seeds, options and actions, and
nothing else (no policy, no pool, no records): the time that is the envs' own. Overhead =
evaluator time / replay time - 1. Every measurement runs in a fresh process (cold caches). For
reference, N=2 is also run through Gymnasium's AsyncVectorEnv (lockstep, frames pickled through
pipes), what `make_vec` built before.
CPU seconds per episode (the parent plus its env workers, against the replay processes) are
printed too: on a machine shared with other jobs they are far steadier than wall times.

    python benchmarks/evaluate.py                 # everything (about 10 minutes on 2 cores)
    python benchmarks/evaluate.py --tasks pointnav --episodes 20
    python benchmarks/evaluate.py --acting free lockstep    # the expert acting per env vs in lock-step
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import embodied
from embodied.evaluate import EpisodeSpec, RolloutObserver, episode_plan, grouped, rollout

TASKS: dict[str, dict[str, Any]] = {
    "pointnav": {"env": "pointnav", "kwargs": {"split": "val_unseen", "expert": True}},
    "objectrecall": {"env": "objectrecall", "kwargs": {"split": "val_unseen", "expert": True}},
    # one task, its init states in turn; one agentview camera at 128 with fast rendering
    "libero": {"env": "libero", "kwargs": {"suite": "libero_object", "task_id": 0, "cameras": ["agentview"],
                                           "fast_render": True, "expert": True}},
}


class _Actions(RolloutObserver):
    def __init__(self) -> None:
        self.actions: dict[int, list[Any]] = {}
        self.env_of: dict[int, int] = {}

    def episode_start(self, env_index, spec, obs, info) -> None:
        self.actions[spec.index] = []
        self.env_of[spec.index] = env_index

    def step(self, env_index, spec, action, obs, info) -> None:
        self.actions[spec.index].append(np.asarray(action).copy())


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _replay(name: str, kwargs: dict[str, Any], work: list[tuple[EpisodeSpec, list[Any]]], ready: Any, go: Any,
            out: Any) -> None:
    env = embodied.envs.make(name, **kwargs)
    ready.put(os.getpid())
    go.wait()
    t0, c0 = time.perf_counter(), time.process_time()
    for spec, actions in work:
        env.reset(seed=spec.seed, options=spec.options)
        for a in actions:
            env.step(a)
    out.put((time.perf_counter() - t0, time.process_time() - c0))
    env.close()


def replay_time(name: str, kwargs: dict[str, Any], specs: list[EpisodeSpec], seen: _Actions, n: int
                ) -> tuple[float, float]:
    """Wall time and total CPU time of n processes stepping, with the recorded actions, the episodes
    each env ran."""
    ctx = mp.get_context("forkserver")
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    work = {i: [(s, seen.actions[s.index]) for s in specs if seen.env_of[s.index] == i] for i in range(n)}
    procs = [ctx.Process(target=_replay, args=(name, kwargs, work[i], ready, go, out)) for i in range(n)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get()
    t0 = time.perf_counter()
    go.set()
    cpu = sum(out.get()[1] for _ in procs)
    wall = time.perf_counter() - t0
    for p in procs:
        p.join()
    return wall, cpu


def _call(fn: Any, args: tuple, out: Any) -> None:
    out.put(fn(*args))


def fresh(fn: Any, *args: Any) -> Any:
    """Run fn(*args) in a new process: every measurement starts with cold caches (the navigation
    tasks cache generated houses per process, which would favour whoever ran before)."""
    ctx = mp.get_context("forkserver")
    out = ctx.Queue()
    p = ctx.Process(target=_call, args=(fn, args, out))
    p.start()
    result = out.get()
    p.join()
    return result


class _InStep:
    """The expert without `independent_rows`: the loop acts on every row at once, once every stepping env
    has answered, as it does for a learned policy."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy

    def reset(self, mask: np.ndarray) -> None:
        self.policy.reset(mask)

    def on_envs_pause(self, idx: Any) -> None:
        self.policy.on_envs_pause(idx)

    def act(self, obs: Any) -> np.ndarray:
        return self.policy.act(obs)


def evaluator_time(name: str, kwargs: dict[str, Any], specs: list[EpisodeSpec], n: int, acting: str
                   ) -> tuple[float, float, _Actions, int]:
    """Wall time and CPU time (this process + the env workers) of `rollout` over `specs`."""
    venv = embodied.envs.make_vec(name, num_envs=n, vectorization="sync" if n == 1 else "async", **kwargs)
    seen, policy = _Actions(), embodied.policies.make("expert")  # imports torch: not part of the timing
    if acting == "lockstep":
        policy = _InStep(policy)
    venv.prepare()  # workers started and envs built, as the replay's are before its clock starts
    pids = [p for p in venv.worker_pids() if p is not None]
    c0 = time.process_time() + sum(_cpu_seconds(p) for p in pids)
    t0 = time.perf_counter()
    records = rollout(venv, policy, episodes=specs, observer=seen)
    wall = time.perf_counter() - t0
    cpu = time.process_time() + sum(_cpu_seconds(p) for p in venv.worker_pids() if p is not None) - c0
    venv.close()
    return wall, cpu, seen, sum(r.steps for r in records)


def gym_async_time(name: str, kwargs: dict[str, Any], n_episodes: int, n: int) -> float:
    """The previous path: Gymnasium AsyncVectorEnv, shared_memory=False, lockstep (paused envs stepped)."""
    fns = [lambda: embodied.envs.make(name, **kwargs) for _ in range(n)]
    venv = gym.vector.AsyncVectorEnv(fns, context="forkserver", shared_memory=False,
                                     autoreset_mode=gym.vector.AutoresetMode.DISABLED)
    policy = embodied.policies.make("expert")
    venv.get_attr("spec")  # a round trip: the workers are up and their envs built
    t0 = time.perf_counter()
    rollout(venv, policy, n_episodes=n_episodes, seed=0)
    wall = time.perf_counter() - t0
    venv.close()
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--envs", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--episodes", type=int, default=24, help="navigation episodes per measurement")
    parser.add_argument("--libero-episodes", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="navigation repeats (medians are printed)")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--acting", nargs="+", default=["free"], choices=["free", "lockstep"],
                        help="free: the expert acts on each env as its step returns (independent_rows); "
                             "lockstep: on every row once all stepping envs answered, as for a learned policy")
    parser.add_argument("--ungrouped", action="store_true",
                        help="hand episodes to whichever env is free, ignoring their house (before 2026-12-04)")
    args = parser.parse_args()
    print(f"cores: {len(os.sched_getaffinity(0))}, load average {os.getloadavg()[0]:.2f}; episodes/hour "
          f"(median of {args.repeats} for navigation, 1 run for LIBERO); overhead = evaluator / replay of the "
          f"same actions - 1")
    print(f"{'task':<13}{'acting':>9}{'envs':>5}{'episodes':>9}{'steps/s':>9}{'ep/hour':>10}{'vs 1 env':>9}"
          f"{'replay ep/h':>12}{'overhead':>9}{'cpu s/ep':>9}{'replay':>7}{'cpu overhead':>13}")
    for task in args.tasks:
        name, kwargs = TASKS[task]["env"], {**TASKS[task]["kwargs"], "resolution": args.resolution}
        n_eps = args.libero_episodes if task == "libero" else args.episodes
        repeats = 1 if task == "libero" else args.repeats
        base = None
        for acting, n in [(a, n) for a in args.acting for n in args.envs if n > 1 or a == args.acting[0]]:
            specs = episode_plan(max(n_eps, n))
            if task == "libero":
                specs = [EpisodeSpec(s.index, s.seed, {"init_state": s.index % 50}) for s in specs]
            if not args.ungrouped:  # as embodied-eval does: a house (a task) stays on one env
                probe = embodied.envs.make(name, **kwargs)
                specs = grouped(specs, probe)
                probe.close()
            runs = []
            for _ in range(repeats):
                wall, cpu, seen, steps = fresh(evaluator_time, name, kwargs, specs, n, acting)
                runs.append((wall, cpu, *replay_time(name, kwargs, specs, seen, n), steps))
            wall, cpu, replay, replay_cpu = (statistics.median(r[j] for r in runs) for j in range(4))
            steps, k = runs[0][4], len(specs)
            eph = k / wall * 3600
            base = eph if n == 1 else base
            ratio = f"{eph / base:.2f}x" if base else "-"
            print(f"{task:<13}{acting if n > 1 else '':>9}{n:>5}{k:>9}{steps / wall:>9.1f}{eph:>10.0f}{ratio:>9}"
                  f"{k / replay * 3600:>12.0f}{wall / replay - 1:>+9.1%}{cpu / k:>9.3f}{replay_cpu / k:>7.3f}"
                  f"{cpu / replay_cpu - 1:>+13.1%}", flush=True)
        if 2 in args.envs and task != "libero":
            g = statistics.median(fresh(gym_async_time, name, kwargs, args.episodes, 2) for _ in range(repeats))
            print(f"{task:<13}{'':>9}{'2*':>5}{args.episodes:>9}{'':>9}{args.episodes / g * 3600:>10.0f}"
                  f"{(args.episodes / g * 3600) / base:>8.2f}x   (* Gymnasium AsyncVectorEnv, the previous path)",
                  flush=True)
    print(f"load average at the end: {os.getloadavg()[0]:.2f} (other jobs on the machine skew every number)")


if __name__ == "__main__":
    main()
