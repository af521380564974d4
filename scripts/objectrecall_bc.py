"""ObjectRecall behaviour cloning: memory policy vs memoryless on the same demonstrations.

Trains each policy with `embodied-train` on an `embodied-collect` dataset of expert episodes in
the training houses, evaluates each checkpoint with `embodied-eval` on `val_unseen` houses, and
prints success overall and per question type (ordinal: "the object you were shown second";
category: "the lamp you were shown"; colour: "the green object you were shown"). Both steps
resume: an interrupted run re-started with the same arguments continues where it stopped.

    python scripts/objectrecall_bc.py --dataset outputs/data/objectrecall32 --steps 700 --episodes 200
    python scripts/objectrecall_bc.py --dataset outputs/data/objectrecall32 --steps 700 --episodes 200 \
        --dagger-iterations 3 --out outputs/objectrecall_dagger     # BC, then 3 DAgger rounds
    python scripts/objectrecall_bc.py --dataset outputs/data/objectrecall32 --steps 700 --episodes 200 \
        --policies gru memory_agent:memory=place,capacity=512       # a policy's options after a colon
    python scripts/objectrecall_bc.py --dataset outputs/data/objectrecall32_t8 --out outputs/or700_t8 \
        --env tour_objects=8 max_tour_steps=800 max_episode_steps=1100   # evaluate on the dataset's tours

DAgger (`train.dagger.*`): each round rolls out `--dagger-episodes` episodes in the training houses
with a mixture that plays the expert's action with probability beta (0.5, 0.25, 0.125 by default)
and the policy's otherwise, labels every visited step with the expert's action, adds the episodes
to a copy of the dataset and trains `--dagger-steps` more steps on the aggregate.

No loss on the guided tour (`train.skip_loss_when=phase:0`): the env ignores the agent's actions
there, and the tour is about 80% of the frames; BC on it learns to predict the tour's script.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ORDINAL = re.compile(r"shown (first|second|third|fourth|fifth|sixth|seventh|eighth)")


def question_type(question: str) -> str:
    if ORDINAL.search(question):
        return "ordinal"
    return "colour" if "object you were shown" in question else "category"


def policy_spec(spec: str) -> tuple[str, list[str], str]:
    """`name` or `name:key=value,key=value` -> (policy name, its `policy.key=value` overrides, a run label
    for directory names: `memory_agent:memory=place` -> `memory_agent-memory_place`)."""
    name, _, rest = spec.partition(":")
    options = [o for o in rest.split(",") if o]
    bad = [o for o in options if "=" not in o or o.startswith("=")]
    if not name or bad:
        raise SystemExit(f"--policies: expected NAME or NAME:KEY=VALUE,..., got {spec!r}")
    label = "-".join([name, *(o.replace("=", "_") for o in options)])
    return name, [f"policy.{o}" for o in options], label


def train(name: str, overrides: list[str], args: argparse.Namespace, out: Path) -> float:
    cmd = [sys.executable, "-m", "embodied.train", f"policy={name}", *overrides, f"policy.dim={args.dim}",
           f"dataset={args.dataset}", f"output_dir={out}", f"train.steps={args.steps}",
           f"train.batch_size={args.batch_size}", "train.sampling=episode", f"train.window={args.window}",
           "train.skip_loss_when=phase:0", f"train.lr={args.lr}", "train.warmup_steps=20",
           f"train.save_every={args.steps}", "train.log_every=25", f"train.seed={args.seed}",
           f"policy.seed={args.seed}", "train.resume=true"]
    if args.dagger_iterations:
        cmd += [f"train.dagger.iterations={args.dagger_iterations}", f"train.dagger.episodes={args.dagger_episodes}",
                f"train.dagger.steps={args.dagger_steps}", f"train.dagger.beta={args.dagger_beta}",
                "train.dagger.beta_decay=0.5", "train.dagger.num_envs=2"]
    start = time.time()
    subprocess.run(cmd, check=True, env=child_env(args))
    return time.time() - start


def child_env(args: argparse.Namespace) -> dict[str, str]:
    """The environment of the train and eval processes. `--threads N` caps torch's threads (OpenMP): two
    jobs side by side on 2 cores with torch's default of one thread per core each oversubscribe the cores,
    and OpenMP's spinning then makes training steps slower and erratic (measured: 3-20 s instead of about
    2.5 s per step with one thread each)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if args.threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
    return env


def evaluate(name: str, checkpoint: Path, args: argparse.Namespace, out: Path) -> dict:
    """`embodied-eval` on `val_unseen` with the checkpoint (which holds the policy's options); success per
    question type from its episodes.jsonl (each record names its question). Re-running resumes a partial
    evaluation."""
    cmd = [str(Path(sys.executable).parent / "embodied-eval"), "env=objectrecall", f"env.resolution={args.resolution}",
           "env.split=val_unseen", f"policy={name}", f"policy.checkpoint={checkpoint}",
           f"eval.episodes={args.episodes}", f"eval.seed={args.eval_seed}", "eval.num_envs=2",
           "eval.vectorization=async", "eval.videos=0", f"output_dir={out}", *(f"env.{o}" for o in args.env)]
    start = time.time()
    subprocess.run(cmd, check=True, env=child_env(args))
    rows = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines() if line.strip()]
    per_type: dict[str, list[float]] = {}
    for r in rows:
        per_type.setdefault(question_type(r["instruction"]), []).append(r["success"])
    summary = json.loads((out / "summary.json").read_text())
    return {"summary": summary["overall"], "seconds": time.time() - start,
            "per_type": {t: (float(np.mean(v)), len(v)) for t, v in sorted(per_type.items())}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--policies", nargs="+", default=["memoryless", "hcam_agent"],
                    help="policy names, each optionally with options: memory_agent:memory=place,capacity=512")
    ap.add_argument("--out", type=Path, default=Path("outputs/objectrecall_bc"))
    ap.add_argument("--steps", type=int, default=700)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--window", type=int, default=320)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0, help="the training seed: weight init and batch order")
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--env", nargs="*", default=[], metavar="KEY=VALUE",
                    help="evaluation env options, as the dataset was collected: tour_objects=8 max_tour_steps=800")
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--eval-seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads per train/eval process (0: torch's default); 1 when two runs share 2 cores")
    ap.add_argument("--dagger-iterations", type=int, default=0, help="DAgger rounds after the BC steps (0: BC only)")
    ap.add_argument("--dagger-episodes", type=int, default=100, help="episodes rolled out per DAgger round")
    ap.add_argument("--dagger-steps", type=int, default=150, help="training steps per DAgger round")
    ap.add_argument("--dagger-beta", type=float, default=0.5,
                    help="expert share of the first round (halved each round)")
    args = ap.parse_args()
    bad = [o for o in args.env if "=" not in o or o.startswith("=")]
    if bad:
        raise SystemExit(f"--env: expected KEY=VALUE, got {bad}")
    for spec in args.policies:
        name, overrides, label = policy_spec(spec)
        out = args.out / label
        seconds = train(name, overrides, args, out)
        res = evaluate(name, out, args, args.out / f"{label}_eval")
        res["train_seconds"] = seconds
        s = res["summary"]["success"]
        print(f"{label}: success {s['mean']:.3f} [{s['low']:.3f}, {s['high']:.3f}] (n={s['n']}), per question type "
              f"{res['per_type']}, train {seconds / 60:.1f} min, eval {res['seconds'] / 60:.1f} min", flush=True)
        save_result(args.out / "results.json", label, res)


def save_result(path: Path, label: str, res: dict) -> None:
    """Merge one policy's result into results.json (runs of other policies into the same --out, side by
    side, keep theirs); write through a temp file so a crash never leaves half a file."""
    results = json.loads(path.read_text()) if path.exists() else {}
    results[label] = res
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(results, indent=2, default=float))
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
