"""What a trained HCAM agent's memory reads when the ObjectRecall question comes.

For each `val_unseen` episode: roll the checkpoint out (one env, semantic frames on so the script,
not the policy, knows which objects each frame shows), note the tour steps at which the asked object
covers at least `--min-pixels` pixels, and at the first question step read the HCAM trace of every
layer (`act_with_trace`): which chunks it selected and with what weight. Prints, per layer, the share of
the read weight that fell on chunks holding a frame of the asked object, against the share of tour
chunks that hold one (what a read blind to the question would give), then the same per question type
(ordinal, category, colour) and for successful and failed episodes:

    python scripts/objectrecall_reads.py --checkpoint checkpoints/objectrecall32-hcam_agent --episodes 30

The policy reads only its own observations (the semantic frames are for this script).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

import embodied
from embodied.envs.vector import batch_observations
from embodied.policies.traces import act_with_trace

sys.path.insert(0, str(Path(__file__).resolve().parent))
from objectrecall_bc import question_type  # the one definition of the question types


def episode(env, policy, seed: int, min_pixels: int) -> dict:
    obs, _ = env.reset(seed=seed)
    target = env.unwrapped.episode.target_object_ids[0]
    policy.reset(np.ones(1, dtype=bool))
    seen_at: list[int] = []  # tour steps whose frame shows the asked object
    t, tour_steps, reads, info = 0, 0, None, {}
    while True:
        if obs["phase"] == 0 and int((obs["semantic"] == target).sum()) >= min_pixels:
            seen_at.append(t)
        if obs["phase"] == 1 and reads is None:
            actions, traces = act_with_trace(policy, batch_observations([obs]))
            reads = traces[0]
            tour_steps = t
        else:
            actions = policy.act(batch_observations([obs]))
        obs, _, terminated, truncated, info = env.step(int(actions[0]))
        t += 1
        if terminated or truncated:
            break
    chunk = policy.config.chunk_size
    shown_chunks = {s // chunk for s in seen_at}
    n_tour_chunks = max(1, tour_steps // chunk)
    out = {"seed": seed, "success": float(info["metrics"]["success"]),
           "question": env.unwrapped.episode.instruction, "tour_steps": tour_steps, "target_frames": len(seen_at),
           "chance": len({c for c in shown_chunks if c < n_tour_chunks}) / n_tour_chunks, "layers": {}}
    for name, read in (reads or {}).items():
        starts = read.trace["chunk_start_t"].reshape(-1)
        weights = read.trace["weights"].reshape(-1)
        valid = read.trace["selected_valid"].reshape(-1).astype(bool)
        on_target = sum(float(w) for s, w, v in zip(starts, weights, valid) if v and int(s) // chunk in shown_chunks)
        out["layers"][name] = {"weight_on_target_chunks": on_target, "weight": float(weights[valid].sum()),
                               "chunk_starts": [int(s) for s, v in zip(starts, valid) if v]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--episodes", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--min-pixels", type=int, default=4)
    ap.add_argument("--out", type=Path, default=None, help="write one JSON line per episode here")
    args = ap.parse_args()
    policy = embodied.policies.from_pretrained(args.checkpoint)
    if policy.name != "hcam_agent":
        raise SystemExit(f"--checkpoint: expected an hcam_agent checkpoint, got {policy.name}")
    env = embodied.envs.make("objectrecall", split="val_unseen", resolution=args.resolution, semantic=True)
    rows = [episode(env, policy, args.seed + i, args.min_pixels) for i in range(args.episodes)]
    env.close()
    if args.out:
        args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    names = sorted({n for r in rows for n in r["layers"]})
    print(f"{len(rows)} episodes, success {np.mean([r['success'] for r in rows]):.3f}; "
          f"tour chunks holding the asked object (a blind read's share): {np.mean([r['chance'] for r in rows]):.3f}")
    for name in names:
        share = [r["layers"][name]["weight_on_target_chunks"] / max(r["layers"][name]["weight"], 1e-9)
                 for r in rows if name in r["layers"]]
        print(f"{name}: read weight on chunks showing the asked object {np.mean(share):.3f} "
              f"(episodes where it is > 0.5: {np.mean(np.array(share) > 0.5):.2f})")
    for qtype in sorted({question_type(r["question"]) for r in rows}):
        sel = [r for r in rows if question_type(r["question"]) == qtype]
        parts = []
        for name in names:
            s = [r["layers"][name]["weight_on_target_chunks"] / max(r["layers"][name]["weight"], 1e-9)
                 for r in sel if name in r["layers"]]
            parts.append(f"{name} {np.mean(s):.3f}")
        chance = np.mean([r["chance"] for r in sel])
        print(f"  {qtype} questions ({len(sel)}, success {np.mean([r['success'] for r in sel]):.3f}): weight on the "
              f"asked object's chunks {', '.join(parts)}; a blind read's share {chance:.3f}")
    for kind in ("successful", "failed"):
        sel = [r for r in rows if (r["success"] > 0) == (kind == "successful")]
        if sel and names:
            s = [r["layers"][names[-1]]["weight_on_target_chunks"] / max(r["layers"][names[-1]]["weight"], 1e-9)
                 for r in sel]
            print(f"  {kind} episodes ({len(sel)}): {names[-1]} weight on the asked object's chunks {np.mean(s):.3f}")


if __name__ == "__main__":
    main()
