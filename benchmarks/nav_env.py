"""Navigation environment speed: steps/s for one env and an AsyncVectorEnv of 2, and the
wrapper overhead against the raw backend (apply_action + render).

    python benchmarks/nav_env.py [--backend mujoco|habitat] [--python /path/to/python] [--steps 600]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import embodied
from embodied.envs.backend import Action

MOVES = [Action.MOVE_FORWARD, Action.TURN_LEFT, Action.TURN_RIGHT]


def backend_spec(args: argparse.Namespace) -> dict:
    return {"name": args.backend, "python": args.python}


def raw_backend(args: argparse.Namespace, semantic: bool) -> float:
    env = embodied.envs.make("pointnav", resolution=args.resolution, semantic=semantic, backend=backend_spec(args))
    env.reset(seed=0)
    backend = env.unwrapped.backend  # the env's own backend, scene already loaded
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(args.steps):
        backend.apply_action(int(rng.choice(MOVES)))
        backend.render()
    rate = args.steps / (time.perf_counter() - start)
    env.close()
    return rate


def single_env(args: argparse.Namespace, semantic: bool) -> float:
    env = embodied.envs.make("pointnav", resolution=args.resolution, semantic=semantic, backend=backend_spec(args),
                             max_episode_steps=10_000)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(args.steps):
        env.step(int(rng.choice(MOVES)))
    rate = args.steps / (time.perf_counter() - start)
    env.close()
    return rate


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
    parser.add_argument("--steps", type=int, default=600)
    args = parser.parse_args()
    where = f"out of process ({args.python})" if args.python else "in process"
    print(f"backend={args.backend} {where}, {args.resolution}x{args.resolution}, {args.steps} steps per figure")
    print(f"{'sensors':<22}{'raw backend':>14}{'env (1)':>12}{'overhead':>10}{'async env (2)':>16}")
    for name, semantic in (("RGB-D", False), ("RGB-D + semantic", True)):
        raw = raw_backend(args, semantic)
        one = single_env(args, semantic)
        two = vector_env(args, semantic)
        overhead = raw / one - 1.0
        print(f"{name:<22}{raw:>11.0f}/s{one:>9.0f}/s{overhead:>9.1%}{two:>13.0f}/s")


if __name__ == "__main__":
    main()
