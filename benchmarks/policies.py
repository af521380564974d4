"""Per-step inference latency (batch 1 and 8) and parameter counts of every policy, on CPU.

    python benchmarks/policies.py [--steps 20] [--threads 1] [--resolution 64]

Observations are samples of each environment's observation space (latency does not depend
on their content), so no simulator runs here. Each policy uses its Hydra config's defaults.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from gymnasium import spaces

import embodied

# policy -> (environment, environment options); map_agent reads semantic labels
POLICY_ENVS = {
    "random": ("objectnav", {}),
    "memoryless": ("objectnav", {}),
    "gru": ("objectnav", {}),
    "hcam_agent": ("objectnav", {}),
    "map_agent": ("objectnav", {"semantic": True}),
    "janus_vln": ("vln", {}),
    "memory_vla": ("libero", {}),
}
TEXTS = ["Find a chair.", "Turn left, leave the kitchen and stop next to the red sofa in the hallway.",
         "pick up the alphabet soup and place it in the basket"]


def sample_batch(space: spaces.Dict, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    space.seed(int(rng.integers(2**31)))
    samples = [space.sample() for _ in range(batch)]
    out = {}
    for key in space.spaces:
        values = [s[key] for s in samples]
        if isinstance(space[key], spaces.Text):
            out[key] = np.array([TEXTS[i % len(TEXTS)] for i in range(batch)], dtype=object)
        else:
            out[key] = np.stack([np.asarray(v) for v in values])
    if "depth" in out:  # positive, metric depths
        out["depth"] = np.abs(out["depth"]) % 5.0 + 0.5
    return out


def measure(name: str, resolution: int, steps: int) -> dict[str, float]:
    env_name, options = POLICY_ENVS[name]
    env = embodied.envs.make(env_name, resolution=resolution, **options)
    kwargs = {"action_space": env.action_space}
    if name != "random":
        kwargs.update(observation_space=env.observation_space, texts=TEXTS)
    policy = embodied.policies.make(name, **kwargs)
    params = sum(p.numel() for p in policy.parameters()) if isinstance(policy, torch.nn.Module) else 0
    if isinstance(policy, torch.nn.Module):
        policy.eval()
    row = {"params": params}
    rng = np.random.default_rng(0)
    for batch in (1, 8):
        obs = [sample_batch(env.observation_space, batch, rng) for _ in range(steps + 3)]
        policy.reset(np.ones(batch, dtype=bool))
        times = []
        for t, o in enumerate(obs):
            start = time.perf_counter()
            policy.act(o)
            if t >= 3:  # warm-up steps excluded
                times.append(time.perf_counter() - start)
        row[f"ms_b{batch}"] = 1e3 * float(np.median(times))
    env.close()
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--policies", nargs="*", default=list(POLICY_ENVS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU, {args.threads} torch thread(s), {args.resolution}x{args.resolution} images, "
          f"median of {args.steps} steps after 3 warm-up steps")
    print(f"{'policy':<12}{'env':<11}{'parameters':>12}{'batch 1':>12}{'batch 8':>12}")
    for name in args.policies:
        r = measure(name, args.resolution, args.steps)
        print(f"{name:<12}{POLICY_ENVS[name][0]:<11}{r['params']:>12,}{r['ms_b1']:>9.2f} ms{r['ms_b8']:>9.2f} ms",
              flush=True)


if __name__ == "__main__":
    main()
