"""Navigation environment speed: steps/s for one env and an AsyncVectorEnv of 2, and the
wrapper overhead against the raw backend (apply_action + render), measured in alternating
blocks so that load from other processes affects both figures alike.

    python benchmarks/nav_env.py [--backend mujoco|habitat] [--python /path/to/python] [--steps 600]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from embodied.envs.backend import Action

import embodied

MOVES = [Action.MOVE_FORWARD, Action.TURN_LEFT, Action.TURN_RIGHT]


def backend_spec(args: argparse.Namespace) -> dict:
    return {"name": args.backend, "python": args.python}


def raw_and_env(args: argparse.Namespace, semantic: bool, block: int = 50) -> tuple[float, float]:
    """Steps/s of the raw backend (apply_action + render) and of the full env step, measured
    in alternating blocks on the same env and scene so that machine-load drift hits both
    alike; each figure is the median over the blocks."""
    env = embodied.envs.make("pointnav", resolution=args.resolution, semantic=semantic, backend=backend_spec(args),
                             max_episode_steps=10**9)
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
    parser.add_argument("--steps", type=int, default=600)
    args = parser.parse_args()
    where = f"out of process ({args.python})" if args.python else "in process"
    print(f"backend={args.backend} {where}, {args.resolution}x{args.resolution}, {args.steps} steps per figure")
    print(f"{'sensors':<22}{'raw backend':>14}{'env (1)':>12}{'overhead':>10}{'async env (2)':>16}")
    for name, semantic in (("RGB-D", False), ("RGB-D + semantic", True)):
        raw, one = raw_and_env(args, semantic)
        two = vector_env(args, semantic)
        overhead = raw / one - 1.0
        print(f"{name:<22}{raw:>11.0f}/s{one:>9.0f}/s{overhead:>9.1%}{two:>13.0f}/s")


if __name__ == "__main__":
    main()
