"""DAgger (Ross, Gordon and Bagnell, 2011) for the navigation tasks.

    embodied-train policy=gru dataset=outputs/data/pointnav train.steps=500 \
        train.dagger.iterations=3 train.dagger.episodes=20 train.dagger.steps=200 output_dir=outputs/train/gru_dagger

1. Copy the demonstrations to `output_dir/dagger_data` (the aggregate; the user's dataset is
   never modified) and train `train.steps` steps of behaviour cloning on it.
2. Iteration i = 1..N: roll out a mixture that plays the expert's action with probability
   beta_i = beta * beta_decay**(i-1) and the policy's otherwise (the policy sees and remembers
   every step either way), in the env built with `expert=True`, so every visited state carries
   the expert's label `expert_action`; append those episodes to the aggregate (one atomic
   commit each), then train `train.dagger.steps` more steps on the aggregate with
   `expert_action` as the target.

Resumable like plain training: a re-run with `train.resume=true` finds the iteration from the
checkpoint's step, keeps every episode already aggregated (collection resumes by seed) and
goes on. Episode seeds of iteration i are `SEED_BASE + i * 100_000 + k`, disjoint from the
demonstrations' and from each other.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embodied.data.collect import collect
from embodied.data.reader import open_dataset
from embodied.data.source import EpisodeSource
from embodied.policies import PretrainedPolicy
from embodied.policies.baselines import EXPERT_KEY
from embodied.train import checkpoint, distributed
from embodied.train.batches import make_batches
from embodied.train.loop import train_policy

SEED_BASE = 10_000_000
AGGREGATE = "dagger_data"


class MixturePolicy:
    """Plays the expert's action (from the `expert_action` observation) with probability `beta`
    per row and step, the policy's otherwise. The policy acts on every step, so its memory
    follows the trajectory actually driven."""

    def __init__(self, policy: PretrainedPolicy, beta: float, seed: int) -> None:
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"train.dagger.beta must be in [0, 1], got {beta}")
        self.policy, self.beta = policy, float(beta)
        self.rng = np.random.default_rng(seed)

    def reset(self, mask: np.ndarray) -> None:
        self.policy.reset(mask)

    def on_envs_pause(self, idx: Sequence[int]) -> None:
        self.policy.on_envs_pause(idx)

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        if EXPERT_KEY not in obs:
            raise KeyError(f"DAgger needs the '{EXPERT_KEY}' observation: the env must be built with expert=True")
        action = np.array(self.policy.act(obs))
        expert = self.rng.random(len(action)) < self.beta
        action[expert] = np.asarray(obs[EXPERT_KEY])[expert]
        return action


def _env_of(job: Any, source: EpisodeSource) -> tuple[str, dict[str, Any]]:
    if job.env is not None:
        name, options = job.env
    elif source.env:
        name, options = str(source.env["name"]), dict(source.env.get("options", {}))
    else:
        raise ValueError("DAgger needs an environment: the dataset records none, pass env=...")
    return name, {**options, "expert": True}


def run_dagger(job: Any, source: EpisodeSource, policy: PretrainedPolicy, ctx: distributed.Dist) -> Path:
    """Behaviour cloning, then `train.dagger.iterations` rounds of roll out / relabel / aggregate / retrain."""
    cfg, dag = job.train, job.train.dagger
    if ctx.enabled:
        raise ValueError("DAgger runs in one process (its rollouts are not sharded); launch it without torchrun")
    if not source.has_expert_action:
        raise ValueError(f"{job.dataset}: DAgger trains on the expert's labels, but the dataset has no "
                         f"'{EXPERT_KEY}' feature; collect it with policy=expert (which sets env.expert=true)")
    out = job.output_dir
    aggregate = out / AGGREGATE
    if not aggregate.exists():
        tmp = out / f".{AGGREGATE}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(job.dataset, tmp)
        tmp.rename(aggregate)
    env_name, env_options = _env_of(job, source)
    total = cfg.steps + dag.iterations * dag.steps
    last = checkpoint.latest(out)
    done = int(checkpoint.read_step(last)) if last is not None and cfg.resume else 0
    for i in range(dag.iterations + 1):
        end = cfg.steps + i * dag.steps
        if i > 0 and done < end:
            beta = dag.beta * dag.beta_decay ** (i - 1)
            policy.eval()
            result = collect(env_name, env_options, "dagger", {"iteration": i, "beta": beta}, aggregate,
                             episodes=dag.episodes, seed=SEED_BASE + i * 100_000, num_envs=dag.num_envs,
                             policy=MixturePolicy(policy, beta, seed=cfg.seed + i), progress=False)
            print(f"dagger iteration {i}: beta {beta:.3f}, {result.committed} episodes aggregated, "
                  f"success while collecting {result.success:.3f}, dataset now {result.total} episodes")
        data = open_dataset(aggregate)
        batches = make_batches(data, policy.processor, window=cfg.window, burn_in=cfg.burn_in,
                               batch_size=cfg.batch_size, seed=cfg.seed + i, sampling=cfg.sampling,
                               target=EXPERT_KEY, num_workers=cfg.num_workers, skip_loss_when=cfg.skip_loss(),
                               group_span=cfg.group_span)
        done = train_policy(policy, batches, cfg, out, job.run_config, ctx, total_steps=total,
                            resume=done > 0 or cfg.resume, until=end)
    return out / checkpoint.CHECKPOINTS / checkpoint.LAST / checkpoint.PRETRAINED
