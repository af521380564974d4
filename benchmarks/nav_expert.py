"""Success of the oracle expert on each navigation task (the ceiling any policy can reach).

    python benchmarks/nav_expert.py [--episodes 200] [--split val_unseen] [--num-envs 2]
                                    [--python /path/to/python]   # the backend out of process
"""

from __future__ import annotations

import argparse
import time

import embodied
from embodied.evaluate import format_table, rollout, summarize

TASKS = ("pointnav", "objectnav", "vln", "objectrecall")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--split", default="val_unseen")
    parser.add_argument("--num-envs", type=int, default=2)
    parser.add_argument("--resolution", type=int, default=32, help="images are not used by the expert")
    parser.add_argument("--tasks", nargs="*", default=list(TASKS))
    parser.add_argument("--backend", default="mujoco", choices=["mujoco", "habitat"])
    parser.add_argument("--python", default=None, help="host the backend in this interpreter (out of process)")
    args = parser.parse_args()
    where = f"out of process ({args.python})" if args.python else "in process"
    print(f"backend={args.backend} {where}, split={args.split}, {args.episodes} episodes per task", flush=True)
    results = {}
    for task in args.tasks:
        venv = embodied.envs.make_vec(task, num_envs=args.num_envs, vectorization="async", split=args.split,
                                      expert=True, resolution=args.resolution,
                                      backend={"name": args.backend, "python": args.python})
        start = time.perf_counter()
        records = rollout(venv, embodied.policies.make("expert"), args.episodes, seed=0)
        venv.close()
        results[task] = summarize(records)
        failed = [r.episode for r in records if not r.metrics["success"]]
        print(f"{task}: {args.episodes} episodes in {time.perf_counter() - start:.0f} s; failed episodes: {failed}",
              flush=True)
    print(format_table(results, metrics=["success", "spl", "oracle_success", "distance_to_goal", "ndtw", "steps"]))


if __name__ == "__main__":
    main()
