"""Success of the scripted LIBERO expert per task, over the protocol's fixed init states.

    python benchmarks/libero_expert.py --suite libero_object --init-states 50 [--tasks 0 1 2]

Episode i uses init state i. The expert reads privileged poses, not images, so the env
runs without cameras (physics only, much faster than rendering two views). Prints one line
per episode as it ends (so a long run can be followed or cut short) and a per-task table.
"""

from __future__ import annotations

import argparse
import time

import embodied
from embodied.envs.libero.expert import ExpertError, pick_place_goals


def run_task(suite: str, task_id: int, init_states: int) -> list[bool] | None:
    """Successes per init state, or None when the task has goals the expert does not script."""
    env = embodied.envs.make("libero", suite=suite, task_id=task_id, cameras=(), fast_render=True)
    env.reset(seed=0)  # builds the simulator, which parses the task's goal
    try:
        pick_place_goals(env.unwrapped)
    except ExpertError as err:
        print(f"{suite} task {task_id}: not scripted ({err})", flush=True)
        env.close()
        return None
    results = []
    for i in range(init_states):
        start = time.perf_counter()
        env.reset(seed=i, options={"init_state": i})
        done, info = False, {}
        while not done:
            _, _, terminated, truncated, info = env.step(env.unwrapped.expert_action())
            done = terminated or truncated
        results.append(bool(info["is_success"]))
        print(f"{suite} task {task_id} init {i}: success={results[-1]} steps={info['steps']} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    env.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--suite", default="libero_object")
    parser.add_argument("--tasks", type=int, nargs="*", default=list(range(10)))
    parser.add_argument("--init-states", type=int, default=50)
    args = parser.parse_args()
    table = {t: run_task(args.suite, t, args.init_states) for t in args.tasks}
    print(f"\n{args.suite}: task, successes / init states")
    for t, res in table.items():
        print(f"  task {t}: " + (f"{sum(res)}/{len(res)}" if res is not None else "not scripted"))
    total = [r for res in table.values() if res is not None for r in res]
    if total:
        print(f"  all: {sum(total)}/{len(total)} = {sum(total) / len(total):.1%}")


if __name__ == "__main__":
    main()
