"""ObjectRecall behaviour cloning: memory policy vs memoryless on the same demonstrations.

Trains each policy with `embodied-train` on an `embodied-collect` dataset of expert episodes in
the training houses, evaluates each checkpoint on `val_unseen` houses, and prints success overall
and per question type (ordinal: "the object you were shown second"; category: "the lamp you
were shown"; colour: "the green object you were shown").

    python scripts/objectrecall_bc.py --dataset outputs/data/objectrecall32_train --steps 300 --episodes 200

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

import embodied
from embodied.evaluate import rollout, summarize

ORDINAL = re.compile(r"shown (first|second|third|fourth|fifth|sixth|seventh|eighth)")


def question_type(question: str) -> str:
    if ORDINAL.search(question):
        return "ordinal"
    return "colour" if "object you were shown" in question else "category"


def train(policy: str, args: argparse.Namespace, out: Path) -> float:
    cmd = [sys.executable, "-m", "embodied.train", f"policy={policy}", f"policy.dim={args.dim}",
           f"dataset={args.dataset}", f"output_dir={out}", f"train.steps={args.steps}",
           f"train.batch_size={args.batch_size}", "train.sampling=episode", f"train.window={args.window}",
           "train.skip_loss_when=phase:0", f"train.lr={args.lr}", "train.warmup_steps=20",
           f"train.save_every={args.steps}", "train.log_every=25", f"train.seed={args.seed}", "train.resume=true"]
    start = time.time()
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return time.time() - start


def evaluate(checkpoint: Path, args: argparse.Namespace) -> dict:
    env_kw = {"resolution": args.resolution, "split": "val_unseen"}
    probe = embodied.envs.make("objectrecall", **env_kw)
    types = {}
    for k in range(args.episodes):
        probe.reset(seed=args.eval_seed + k)
        types[args.eval_seed + k] = question_type(probe.unwrapped.episode.instruction)
    probe.close()
    policy = embodied.policies.from_pretrained(checkpoint)
    venv = embodied.envs.make_vec("objectrecall", num_envs=2, **env_kw)
    start = time.time()
    records = rollout(venv, policy, args.episodes, seed=args.eval_seed)
    venv.close()
    per_type: dict[str, list[float]] = {}
    for r in records:
        per_type.setdefault(types[r.seed], []).append(r.metrics["success"])
    return {"summary": summarize(records), "seconds": time.time() - start,
            "per_type": {t: (float(np.mean(v)), len(v)) for t, v in sorted(per_type.items())}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--policies", nargs="+", default=["memoryless", "hcam_agent"])
    ap.add_argument("--out", type=Path, default=Path("outputs/objectrecall_bc"))
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--window", type=int, default=320)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--eval-seed", type=int, default=0)
    args = ap.parse_args()
    results = {}
    for policy in args.policies:
        out = args.out / policy
        seconds = train(policy, args, out)
        res = evaluate(out, args)
        res["train_seconds"] = seconds
        results[policy] = res
        s = res["summary"]["success"]
        print(f"{policy}: success {s['mean']:.3f} ± {s['ci95']:.3f} (n={s['n']}), per question type "
              f"{res['per_type']}, train {seconds / 60:.1f} min, eval {res['seconds'] / 60:.1f} min", flush=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=2, default=float))


if __name__ == "__main__":
    main()
