"""Raw MuJoCo navigation backend throughput: frames/s for RGB, RGB-D and RGB-D + semantic.

    MUJOCO_GL=egl python benchmarks/nav_backend.py [--size 128] [--frames 300]

Each frame turns the agent (so the camera moves) and renders; no asserts, just numbers.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
from embodied.envs.backend import Action, SensorConfig
from embodied.envs.mujoco_backend import MujocoBackend

from embodied.envs.scenes import generate_scene


def frames_per_second(sensors: SensorConfig, frames: int, seed: int) -> float:
    b = MujocoBackend(sensors=sensors)
    b.load_scene(generate_scene(seed))
    b.set_agent_pose(b.sample_navigable_point(np.random.default_rng(0)), 0.0)
    for _ in range(10):  # warm-up: context creation, first uploads
        b.render()
    t = time.perf_counter()
    for _ in range(frames):
        b.apply_action(Action.TURN_LEFT)
        b.render()
    fps = frames / (time.perf_counter() - t)
    b.close()
    return fps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--seed", type=int, default=100_000)
    args = ap.parse_args()
    n = args.size
    modes = {
        "rgb": SensorConfig(width=n, height=n, depth=False),
        "rgbd": SensorConfig(width=n, height=n),
        "rgbd+semantic": SensorConfig(width=n, height=n, semantic=True),
    }
    print(f"MuJoCo nav backend, {n}x{n}, {args.frames} frames, MUJOCO_GL={os.environ['MUJOCO_GL']}")
    for name, sensors in modes.items():
        print(f"  {name:>14}: {frames_per_second(sensors, args.frames, args.seed):7.1f} frames/s")


if __name__ == "__main__":
    main()
