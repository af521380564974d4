"""`make demo`: evaluate policies on the embedded navigation tasks and print the table.

Runs, on the val_unseen houses with two environments in parallel: the expert (the
shortest-path oracle) and a random policy on ObjectRecall (a memory task) and VLN; on
ObjectRecall also the map agent (a voxel-map memory that remembers what the tour showed) and
the three trained policies shipped in `checkpoints/` (an HCAM agent, a GRU and the memoryless
baseline, behaviour-cloned on the same 400 expert episodes: `docs/results.md`). Writes every
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
SHIPPED = Path(__file__).resolve().parent.parent / "checkpoints"
TRAINED = {"hcam_agent (trained)": SHIPPED / "objectrecall32-hcam_agent",
           "gru (trained)": SHIPPED / "objectrecall32-gru",
           "memoryless (trained)": SHIPPED / "objectrecall32-memoryless"}


def _append(log, record) -> None:
    """One JSON line per finished episode, flushed: a crash loses nothing already run."""
    log.write(json.dumps(record.as_row()) + "\n")
    log.flush()


def _make_policy(name: str, venv):
    if name in TRAINED:  # a shipped checkpoint: its config names the policy and the 32 px observations
        return embodied.policies.from_pretrained(TRAINED[name])
    return embodied.policies.make(name, **_policy_options(name, venv))


def _env_options(policy_name: str) -> dict:
    if policy_name == "map_agent":  # depth and semantic labels; 64x64 keeps its voxel-map writes cheap
        return {"semantic": True, "resolution": 64}
    if policy_name in TRAINED:  # the resolution the shipped policies were trained at
        return {"resolution": 32}
    return {}


def _policy_options(name: str, venv) -> dict:
    if name == "random":
        return {"action_space": venv.single_action_space, "seed": 0}
    if name == "map_agent":
        return {"observation_space": venv.single_observation_space, "action_space": venv.single_action_space}
    return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--trained-episodes", type=int, default=60,
                        help="episodes for each shipped trained policy (its success rate is low: more episodes)")
    parser.add_argument("--num-envs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("outputs/demo") / time.strftime("%Y-%m-%d_%H-%M-%S"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    results = {}
    runs = [("objectrecall", "expert"), ("objectrecall", "map_agent"), ("objectrecall", "random"),
            *(("objectrecall", name) for name in TRAINED), ("vln", "expert"), ("vln", "random")]
    for task, policy_name in runs:
        episodes = args.trained_episodes if policy_name in TRAINED else args.episodes
        venv = embodied.envs.make_vec(task, num_envs=args.num_envs, vectorization="async", split="val_unseen",
                                      expert=policy_name == "expert", **_env_options(policy_name))
        policy = _make_policy(policy_name, venv)
        start = time.perf_counter()
        name = policy_name.split()[0] + ("-trained" if policy_name in TRAINED else "")
        with open(args.out / f"{task}-{name}.jsonl", "w") as log:
            records = rollout(venv, policy, episodes, seed=0, on_episode=lambda r, log=log: _append(log, r))
        venv.close()
        results[f"{task} / {policy_name}"] = summarize(records)
        print(f"{task:>12} {policy_name:>20}: {episodes} episodes in {time.perf_counter() - start:.1f} s",
              flush=True)
    (args.out / "summary.json").write_text(json.dumps(results, indent=2))
    print()
    print(format_table(results, metrics=METRICS))
    print(f"\noutputs: {args.out}")


if __name__ == "__main__":
    main()
