"""LIBERO env speed and memory: steps/s, reset time and RSS per environment, default vs fast rendering.

    python benchmarks/libero_env.py [--suite libero_object] [--task-id 0] [--resolution 128] [--steps 100]

Each rendering mode runs in its own fresh process (spawn), so RSS is the cost of one env.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
from typing import Any

import numpy as np


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def measure(args: dict[str, Any], fast: bool) -> dict[str, float]:
    from embodied.envs.libero.env import LiberoEnv

    base = rss_mb()
    env = LiberoEnv(suite=args["suite"], task_id=args["task_id"], resolution=args["resolution"], fast_render=fast)
    t = time.perf_counter()
    env.reset(seed=0)  # builds the simulator
    first = time.perf_counter() - t
    resets = []
    for i in range(args["resets"]):
        t = time.perf_counter()
        env.reset(seed=i + 1)
        resets.append(time.perf_counter() - t)
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    for _ in range(args["steps"]):
        a = rng.uniform(-0.3, 0.3, 7).astype(np.float32)
        a[6] = -1.0
        env.step(a)
    rate = args["steps"] / (time.perf_counter() - t)
    out = {"first_reset_s": first, "reset_s": float(np.median(resets)), "steps_per_s": rate,
           "rss_mb": rss_mb(), "rss_env_mb": rss_mb() - base}
    env.close()
    return out


def _worker(args: dict[str, Any], fast: bool, q: Any) -> None:
    q.put(measure(args, fast))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--suite", default="libero_object")
    p.add_argument("--task-id", type=int, default=0)
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--resets", type=int, default=3)
    a = p.parse_args()
    args = {"suite": a.suite, "task_id": a.task_id, "resolution": a.resolution, "steps": a.steps, "resets": a.resets}
    ctx = mp.get_context("spawn")
    print(f"LIBERO {a.suite} task {a.task_id}, agentview + wrist at {a.resolution}x{a.resolution}, "
          f"MUJOCO_GL={os.environ.get('MUJOCO_GL', 'egl')}, {a.steps} steps, {a.resets} resets")
    print(f"{'rendering':<10} {'steps/s':>8} {'reset s':>8} {'1st reset s':>12} {'RSS MB':>8} {'env MB':>8}")
    for fast in (False, True):
        q = ctx.Queue()
        proc = ctx.Process(target=_worker, args=(args, fast, q))
        proc.start()
        r = q.get()
        proc.join()
        name = "fast" if fast else "default"
        print(f"{name:<10} {r['steps_per_s']:>8.1f} {r['reset_s']:>8.2f} {r['first_reset_s']:>12.1f} "
              f"{r['rss_mb']:>8.0f} {r['rss_env_mb']:>8.0f}", flush=True)


if __name__ == "__main__":
    main()
