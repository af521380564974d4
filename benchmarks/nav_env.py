"""Navigation environment speed.

1. Resets per task: in the house already loaded (`same house`) and in a new one
   (`new house`: scene generation, model compilation, grid and first distance fields).
2. Expert evaluation on one env: steps/s including resets against pure stepping, both from
   the same run (time inside `step` vs time inside `step` + `reset`).
3. Stepping: raw backend (apply_action + render) against the env's step, alternating blocks,
   and an AsyncVectorEnv of 2.

Each time is shown as wall clock and as this process's CPU time (which a loaded machine
inflates less: several processes share 2 cores here); medians over the samples.

    python benchmarks/nav_env.py [--backend mujoco|habitat] [--python /path/to/python]
                                 [--resolution 128] [--episodes 40] [--steps 600] [--tasks ...]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import embodied
from embodied.envs.scenes.sources import procedural_scene
from embodied.envs.sim.types import Action

MOVES = [Action.MOVE_FORWARD, Action.TURN_LEFT, Action.TURN_RIGHT]
TASKS = ("pointnav", "objectnav", "vln", "objectrecall")


class Clock:
    """Wall and CPU seconds of a block, accumulated."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def __enter__(self) -> Clock:
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.last_wall = time.perf_counter() - self._w
        self.last_cpu = time.process_time() - self._c
        self.wall += self.last_wall
        self.cpu += self.last_cpu


def backend_spec(args: argparse.Namespace) -> dict:
    return {"name": args.backend, "python": args.python}


def make(args: argparse.Namespace, task: str, **kwargs) -> object:
    return embodied.envs.make(task, resolution=args.resolution, backend=backend_spec(args), **kwargs)


def reset_times(args: argparse.Namespace, task: str) -> dict[str, tuple[float, float]]:
    """Median (wall, cpu) ms of a reset in the loaded house and in a new house. Seeds
    0..episodes-1 hold `episodes_per_scene` (10) episodes per house."""
    env = make(args, task, expert=True)
    env.reset(seed=10**6)  # warm up: GL context, first house
    procedural_scene.cache_clear()  # a new house is generated too, as in an evaluation
    same, new = [], []
    clock = Clock()
    for seed in range(args.episodes):
        with clock:
            env.reset(seed=seed)
        (new if seed % env.unwrapped.episodes_per_scene == 0 else same).append((clock.last_wall, clock.last_cpu))
    env.close()
    med = lambda xs: (1000 * float(np.median([x[0] for x in xs])), 1000 * float(np.median([x[1] for x in xs])))  # noqa: E731
    return {"same house": med(same), "new house": med(new)}


def expert_throughput(args: argparse.Namespace, task: str) -> tuple[float, float, float, float]:
    """(steps/s pure stepping, steps/s including resets) of the expert on one env, wall and CPU."""
    env = make(args, task, expert=True)
    env.reset(seed=10**6)
    steps, step_clock, reset_clock = 0, Clock(), Clock()
    for seed in range(args.episodes):
        with reset_clock:
            obs, _ = env.reset(seed=seed)
        done = False
        while not done:
            with step_clock:
                obs, _, terminated, truncated, _ = env.step(obs["expert_action"])
            steps += 1
            done = terminated or truncated
    env.close()
    return (steps / step_clock.wall, steps / (step_clock.wall + reset_clock.wall),
            steps / step_clock.cpu, steps / (step_clock.cpu + reset_clock.cpu))


def raw_and_env(args: argparse.Namespace, semantic: bool, block: int = 50) -> tuple[float, float]:
    """Steps/s of the raw backend (apply_action + render) and of the full env step, in
    alternating blocks on the same env and scene; medians over the blocks."""
    env = make(args, "pointnav", semantic=semantic, max_episode_steps=10**9)
    env.reset(seed=0)
    backend = env.unwrapped.backend  # the env's own backend, scene already loaded
    rng = np.random.default_rng(0)
    raw_rates, env_rates = [], []
    for _ in range(max(1, args.steps // (2 * block))):
        start = time.perf_counter()
        for _ in range(block):
            backend.apply_action(int(rng.choice(MOVES)))
            backend.render()
        raw_rates.append(block / (time.perf_counter() - start))
        start = time.perf_counter()
        for _ in range(block):
            env.step(int(rng.choice(MOVES)))
        env_rates.append(block / (time.perf_counter() - start))
    env.close()
    return float(np.median(raw_rates)), float(np.median(env_rates))


def vector_env(args: argparse.Namespace, semantic: bool, n: int = 2) -> float:
    venv = embodied.envs.make_vec("pointnav", num_envs=n, vectorization="async", resolution=args.resolution,
                                  semantic=semantic, backend=backend_spec(args), max_episode_steps=10_000)
    venv.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(10):  # warm up the workers' GL contexts
        venv.step(rng.choice(MOVES, size=n))
    steps = args.steps // n
    start = time.perf_counter()
    for _ in range(steps):
        venv.step(rng.choice(MOVES, size=n))
    rate = steps * n / (time.perf_counter() - start)
    venv.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", default="mujoco", choices=["mujoco", "habitat"])
    parser.add_argument("--python", default=None, help="run the backend out of process in this interpreter")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--episodes", type=int, default=40, help="episodes per task for resets and throughput")
    parser.add_argument("--steps", type=int, default=600, help="steps per stepping figure")
    parser.add_argument("--tasks", nargs="*", default=list(TASKS))
    parser.add_argument("--no-stepping", action="store_true", help="skip part 3")
    args = parser.parse_args()
    where = f"out of process ({args.python})" if args.python else "in process"
    print(f"backend={args.backend} {where}, {args.resolution}x{args.resolution}, {args.episodes} episodes per task")
    print("targets: same-house reset <= 10 ms (ObjectRecall, tour planning included: <= 30 ms); "
          "expert steps/s including resets >= 50% of pure stepping")
    print(f"{'task':<14}{'reset same house':>22}{'reset new house':>22}{'expert steps/s':>26}{'incl. resets':>14}")
    print(f"{'':<14}{'wall / cpu ms':>22}{'wall / cpu ms':>22}{'pure -> incl. (wall)':>26}{'wall / cpu':>14}")
    for task in args.tasks:
        r = reset_times(args, task)
        pure, incl, pure_cpu, incl_cpu = expert_throughput(args, task)
        print(f"{task:<14}{r['same house'][0]:>13.1f} / {r['same house'][1]:>5.1f}"
              f"{r['new house'][0]:>13.1f} / {r['new house'][1]:>5.1f}"
              f"{pure:>15.0f} -> {incl:>6.0f}{incl / pure:>8.0%} / {incl_cpu / pure_cpu:>3.0%}", flush=True)
    if args.no_stepping:
        return
    print(f"\n{'sensors':<22}{'raw backend':>14}{'env (1)':>12}{'overhead':>10}{'async env (2)':>16}")
    for name, semantic in (("RGB-D", False), ("RGB-D + semantic", True)):
        raw, one = raw_and_env(args, semantic)
        two = vector_env(args, semantic)
        print(f"{name:<22}{raw:>11.0f}/s{one:>9.0f}/s{raw / one - 1.0:>9.1%}{two:>13.0f}/s")


if __name__ == "__main__":
    main()
