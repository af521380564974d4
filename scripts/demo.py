"""`make demo`: evaluate policies on the embedded navigation tasks and print the table.

Runs the expert (the shortest-path oracle) and a random policy on ObjectRecall (a memory
task) and VLN, and the map agent (a voxel-map memory that remembers what the tour showed)
on ObjectRecall, on the val_unseen houses, two environments in parallel. Writes every
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


def _append(log, record) -> None:
    """One JSON line per finished episode, flushed: a crash loses nothing already run."""
    log.write(json.dumps(record.as_row()) + "\n")
    log.flush()


def _policy_options(name: str, venv) -> dict:
    if name == "random":
        return {"action_space": venv.single_action_space, "seed": 0}
    if name == "map_agent":
        return {"observation_space": venv.single_observation_space, "action_space": venv.single_action_space}
    return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--num-envs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("outputs/demo") / time.strftime("%Y-%m-%d_%H-%M-%S"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    results = {}
    runs = [("objectrecall", "expert"), ("objectrecall", "map_agent"), ("objectrecall", "random"),
            ("vln", "expert"), ("vln", "random")]
    for task, policy_name in runs:
        # the map agent reads depth and semantic labels; 64x64 keeps its voxel-map writes cheap
        env_options = {"semantic": True, "resolution": 64} if policy_name == "map_agent" else {}
        venv = embodied.envs.make_vec(task, num_envs=args.num_envs, vectorization="async", split="val_unseen",
                                      expert=policy_name == "expert", **env_options)
        policy = embodied.policies.make(policy_name, **_policy_options(policy_name, venv))
        start = time.perf_counter()
        with open(args.out / f"{task}-{policy_name}.jsonl", "w") as log:
            records = rollout(venv, policy, args.episodes, seed=0, on_episode=lambda r, log=log: _append(log, r))
        venv.close()
        results[f"{task} / {policy_name}"] = summarize(records)
        print(f"{task:>12} {policy_name:>9}: {args.episodes} episodes in {time.perf_counter() - start:.1f} s",
              flush=True)
    (args.out / "summary.json").write_text(json.dumps(results, indent=2))
    print()
    print(format_table(results, metrics=METRICS))
    print(f"\noutputs: {args.out}")


if __name__ == "__main__":
    main()
