"""`make demo`: evaluate policies on the embedded navigation tasks and print the table.

Runs the expert (the shortest-path oracle) and a random policy on ObjectRecall (a memory
task) and VLN, on the val_unseen houses, two environments in parallel. Writes every
episode to `outputs/demo/<time>/<task>-<policy>.jsonl` as it finishes and the summary
to `summary.json`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import embodied
from embodied.evaluate import format_table, rollout, summarize

METRICS = ["success", "spl", "oracle_success", "distance_to_goal", "path_length", "ndtw", "steps"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--num-envs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("outputs/demo") / time.strftime("%Y-%m-%d_%H-%M-%S"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    results = {}
    for task in ("objectrecall", "vln"):
        for policy_name in ("expert", "random"):
            venv = embodied.envs.make_vec(task, num_envs=args.num_envs, vectorization="async",
                                          split="val_unseen", expert=policy_name == "expert")
            policy = embodied.policies.make(policy_name, action_space=venv.single_action_space, seed=0)
            start = time.perf_counter()
            with open(args.out / f"{task}-{policy_name}.jsonl", "w") as log:
                records = rollout(venv, policy, args.episodes, seed=0,
                                  on_episode=lambda r, log=log: (log.write(json.dumps(r.as_row()) + "\n"), log.flush()))
            venv.close()
            results[f"{task} / {policy_name}"] = summarize(records)
            print(f"{task:>12} {policy_name:>7}: {args.episodes} episodes in {time.perf_counter() - start:.1f} s",
                  flush=True)
    (args.out / "summary.json").write_text(json.dumps(results, indent=2))
    print()
    print(format_table(results, metrics=METRICS))
    print(f"\noutputs: {args.out}")


if __name__ == "__main__":
    main()
