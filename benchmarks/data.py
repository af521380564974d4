"""Dataset speed: `embodied-collect` episodes/s and frames/s, the commit alone, bytes per
frame, and training windows/s through a DataLoader (PointNav expert, RGB + depth).

    python benchmarks/data.py [--resolution 128] [--episodes 20] [--workers 2]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from torch.utils.data import DataLoader

from embodied.data import Collate, DatasetWriter, ShardedSampler, WindowDataset, open_dataset
from embodied.data.collect import collect


def collect_speed(root: Path, args: argparse.Namespace, num_envs: int, vectorization: str) -> Path:
    out = root / f"{num_envs}-{vectorization}"
    r = collect("pointnav", {"resolution": args.resolution, "expert": True}, "expert", {}, out,
                episodes=args.episodes, num_envs=num_envs, vectorization=vectorization, progress=False)
    src = open_dataset(out)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    video = sum(p.stat().st_size for p in (out / "videos").rglob("*.mp4"))
    print(f"collect, {num_envs} env(s) {vectorization}: {r.committed / r.seconds:.2f} episodes/s, "
          f"{src.num_frames / r.seconds:.0f} frames/s; {size / src.num_frames / 1024:.1f} KiB/frame "
          f"(RGB video {video / src.num_frames / 1024:.1f})")
    return out


def commit_speed(src_dir: Path, root: Path) -> None:
    src = open_dataset(src_dir)
    episodes = [src.read(e) for e in range(min(5, src.num_episodes))]
    w = DatasetWriter(root / "commit", src.observation_space, src.action_space, fps=src.fps)
    start = time.perf_counter()
    for ep in episodes:
        w.add_episode(ep["obs"], ep["action"], ep["reward"], ep["terminated"], ep["truncated"])
    frames = sum(len(ep["action"]) for ep in episodes)
    print(f"commit alone (stats, parquet, video): {frames / (time.perf_counter() - start):.0f} frames/s")


def loader_speed(src_dir: Path, workers: int, window: int = 16, batch: int = 8, batches: int = 20) -> None:
    ds = WindowDataset(open_dataset(src_dir), window=window, burn_in=4)
    loader = DataLoader(ds, batch_size=batch, sampler=ShardedSampler(ds, seed=0), collate_fn=Collate(),
                        num_workers=workers)
    it = iter(loader)
    next(it)  # worker start-up out of the timing
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    dt = time.perf_counter() - start
    print(f"WindowDataset(window={window}) batch {batch}, {workers} workers: {batches * batch / dt:.0f} windows/s "
          f"({batches * batch * window / dt:.0f} frames/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    import embodied.policies  # noqa: F401  (imports out of the timings)

    root = Path(tempfile.mkdtemp(prefix="embodied-data-bench-"))
    try:
        print(f"PointNav expert, {args.resolution}x{args.resolution} RGB + depth, {args.episodes} episodes")
        sync = collect_speed(root, args, 1, "sync")
        collect_speed(root, args, 2, "async")
        commit_speed(sync, root)
        for workers in sorted({0, args.workers}):
            loader_speed(sync, workers)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
