"""Training throughput: samples/s per learning policy, one process vs 2 under torchrun, and the
data loader's share of the step time. Runs the real `embodied-train` command (subprocesses) on a
PointNav dataset that `embodied.data.collect` records from the expert first.

    python benchmarks/train.py                      # every policy, 1 and 2 processes
    python benchmarks/train.py --policies gru --steps 40 --resolution 64

Targets (issue: training jobs): the loader under 10% of the step; 2 single-threaded processes
>= 1.6x one in samples/s. Each process is pinned to one thread (OMP_NUM_THREADS=1,
torch.set_num_threads via the env), so on 2 cores the ideal is 2.0x. The first `--warmup`
steps of each run are not counted (DataLoader start, allocator warm-up). Each policy runs
`--repeats` back-to-back (1 process, 2 processes) pairs: medians, and the median pair ratio.
By default the 2 ranks share the single process's batch (each gets half: strong scaling, the
same optimisation); `--per-rank-batch` gives each rank the full batch (weak scaling, the same
work per process, how data-parallel throughput is usually quoted).

`--decompose` adds two runs to each pair that split a shortfall into its causes:
- `1 proc Brank`: one process at the per-rank batch (the 2-rank run halves the batch on each rank, while
  a step's fixed costs, optimizer and clipping, stay): the cost of the smaller batch alone;
- `2 x 1 proc Brank`: two independent single-process runs at the per-rank batch at once, no DDP: what 2 concurrent
  processes get from this machine (shared caches, memory bandwidth, SMT siblings). The 2-rank run
  divided by this is what DDP itself (gradient all-reduce over gloo, the per-step collectives) costs.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

POLICIES = ["memoryless", "gru", "hcam_agent", "janus_vln"]
DIMS = {"memoryless": 64, "gru": 64, "hcam_agent": 64, "janus_vln": 32}
EPISODES = {"janus_vln"}  # trains on whole episodes (its window pass rebuilds the caches from frame 0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(policy: str, dataset: Path, out: Path, args: argparse.Namespace, procs: int,
            batch_size: int) -> list[str]:
    cmd = [f"policy={policy}", f"policy.dim={DIMS.get(policy, 64)}", f"dataset={dataset}", f"output_dir={out}",
           f"train.steps={args.steps}", f"train.batch_size={batch_size}", f"train.window={args.window}",
           f"train.num_workers={args.num_workers}", "train.save_every=100000", "train.tensorboard=false",
           "train.device=cpu"]
    if policy in EPISODES:
        cmd.append("train.sampling=episode")
    if procs == 1:
        return [sys.executable, "-m", "embodied.train", *cmd]
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={procs}", "--master-addr",
            "127.0.0.1", f"--master-port={free_port()}", "-m", "embodied.train", *cmd]


def run_all(commands: list[tuple[list[str], Path]], warmup: int) -> list[dict[str, float]]:
    """Start every command at once (one thread each), wait for all, read each run's log."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for cmd, _ in commands]
    errors = [p.communicate()[1] for p in procs]
    for p, err, (cmd, _) in zip(procs, errors, commands):
        if p.returncode:
            raise SystemExit(f"{' '.join(cmd[-12:])} failed:\n{err[-3000:]}")
    return [throughput(out, warmup) for _, out in commands]


def throughput(out: Path, warmup: int) -> dict[str, float]:
    """samples/s, the loader's share and ms per step over a run's log, its first `warmup` steps left out."""
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    counted = records[warmup:]
    step_s = sum(r["step_s"] for r in counted)
    return {"samples_per_s": sum(r["frames"] for r in counted) / step_s,
            "data_fraction": sum(r["data_s"] for r in counted) / step_s,
            "step_ms": 1000 * step_s / len(counted)}


def run(policy: str, dataset: Path, out: Path, args: argparse.Namespace, procs: int,
        batch_size: int | None = None) -> dict[str, float]:
    return run_all([(command(policy, dataset, out, args, procs, batch_size or args.batch_size), out)], args.warmup)[0]


def per_rank_batch(args: argparse.Namespace) -> int:
    """The batch each of the 2 ranks trains: the full one (--per-rank-batch) or half the global one."""
    return args.batch_size if args.per_rank_batch else max(1, args.batch_size // 2)


def run_concurrent(policy: str, dataset: Path, out: Path, args: argparse.Namespace) -> dict[str, float]:
    """Two independent single-process runs at the per-rank batch, at the same time: samples/s summed."""
    batch = per_rank_batch(args)
    runs = run_all([(command(policy, dataset, out / str(i), args, 1, batch), out / str(i)) for i in range(2)],
                   args.warmup)
    return {"samples_per_s": sum(r["samples_per_s"] for r in runs),
            "data_fraction": statistics.mean(r["data_fraction"] for r in runs)}


def median(pairs: list[tuple[dict[str, float], dict[str, float]]], procs: int, key: str) -> float:
    return statistics.median(pair[procs][key] for pair in pairs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policies", nargs="+", default=POLICIES)
    ap.add_argument("--dataset", type=Path, help="an existing dataset (default: record 8 PointNav expert episodes)")
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--num-workers", type=int, default=0,
                    help="DataLoader workers per process (0: load in the training process; with the decoded-video "
                         "cache that is a few ms per batch, and a worker would compete for the same 2 cores)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="1-process / 2-process pairs per policy, run back to back; medians are printed "
                         "(the speed-up is the median of the pairs' ratios: the machine's speed drifts)")
    ap.add_argument("--per-rank-batch", action="store_true",
                    help="give each of the 2 ranks the full --batch-size (a global batch of 2x): weak scaling, "
                         "the per-rank work equal to the single process's; default: the same global batch")
    ap.add_argument("--decompose", action="store_true",
                    help="also run 1 process at the per-rank batch and 2 independent processes at once (no DDP)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_train_"))
    dataset = args.dataset
    if dataset is None:
        from embodied.data.collect import collect

        dataset = tmp / "pointnav"
        collect("pointnav", {"resolution": args.resolution, "expert": True, "max_episode_steps": 200}, "expert",
                {}, dataset, episodes=8, seed=0, progress=False)
    per_rank = "each rank" if args.per_rank_batch else "global: half per rank"
    print(f"dataset {dataset}; batch {args.batch_size} windows x {args.window} steps (2 ranks: {per_rank}); "
          f"{args.steps} steps ({args.warmup} warm-up); loader workers {args.num_workers} per process; "
          "1 thread per process")
    head = f"{'policy':<12} {'1 proc samples/s':>17} {'loader %':>9} {'2 procs samples/s':>18} {'loader %':>9} "
    head += f"{'speed-up':>9}"
    if args.decompose:
        head += f" {'1 proc Brank':>13} {'2 x 1 proc Brank':>17} {'DDP / 2 x 1':>12}"
    print(head)
    for policy in args.policies:
        pairs, halves, concurrent = [], [], []
        for r in range(args.repeats):
            pairs.append((run(policy, dataset, tmp / f"{policy}_1_{r}", args, 1),
                          run(policy, dataset, tmp / f"{policy}_2_{r}", args, 2,
                              2 * args.batch_size if args.per_rank_batch else None)))
            if args.decompose:
                halves.append(run(policy, dataset, tmp / f"{policy}_h_{r}", args, 1, per_rank_batch(args)))
                concurrent.append(run_concurrent(policy, dataset, tmp / f"{policy}_c_{r}", args))
        ratio = statistics.median(two["samples_per_s"] / one["samples_per_s"] for one, two in pairs)
        one_loader, two_loader = 100 * median(pairs, 0, "data_fraction"), 100 * median(pairs, 1, "data_fraction")
        line = (f"{policy:<12} {median(pairs, 0, 'samples_per_s'):>17.0f} {one_loader:>8.1f}% "
                f"{median(pairs, 1, 'samples_per_s'):>18.0f} {two_loader:>8.1f}% {ratio:>8.2f}x")
        if args.decompose:
            ddp_share = statistics.median(two["samples_per_s"] / c["samples_per_s"]
                                          for (_, two), c in zip(pairs, concurrent))
            line += (f" {statistics.median(h['samples_per_s'] for h in halves):>13.0f}"
                     f" {statistics.median(c['samples_per_s'] for c in concurrent):>17.0f} {ddp_share:>11.2f}x")
        print(line, flush=True)
    print("samples = real (not padding) frames trained per second, all ranks together; janus_vln on whole episodes")


if __name__ == "__main__":
    main()
