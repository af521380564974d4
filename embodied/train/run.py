"""`embodied-train policy=... dataset=DIR train.steps=N output_dir=DIR`: the command's logic.

Builds the policy from the dataset's spaces and instructions (or loads `policy.checkpoint=DIR`
to fine-tune), sets its normalisation from the dataset's statistics, then runs behaviour cloning
(`loop.train_policy`) and, with `train.dagger.iterations > 0`, DAgger (`dagger.py`). Periodic
evaluation rolls the policy out in the dataset's environment (or `env=...`).

    embodied-train policy=hcam_agent dataset=outputs/data/objectrecall train.steps=2000 output_dir=outputs/train/hcam
    torchrun --nproc-per-node 2 -m embodied.train policy=gru dataset=... output_dir=...
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from embodied import envs, policies
from embodied.config import component_kwargs
from embodied.data.reader import open_dataset
from embodied.data.source import EpisodeSource
from embodied.evaluate import rollout, summarize
from embodied.policies import PretrainedPolicy
from embodied.train import distributed
from embodied.train.batches import make_batches
from embodied.train.config import TrainConfig
from embodied.train.loop import RunState, train_policy

CHECKPOINT_KEYS = ("checkpoint", "untrained")  # policy options the loaders read, not the policy


@dataclass
class Job:
    output_dir: Path
    dataset: Path
    policy_name: str
    policy_options: dict[str, Any]
    checkpoint: str | None
    train: TrainConfig
    env: tuple[str, dict[str, Any]] | None  # None: the environment the dataset was collected in
    run_config: dict[str, Any]

    @classmethod
    def from_config(cls, cfg: DictConfig) -> Job:
        if not cfg.get("dataset"):
            raise ValueError("embodied-train needs dataset=DIR (a dataset written by embodied-collect, a LeRobot "
                             "v3.0 dataset or LIBERO HDF5 demonstrations)")
        name, options = component_kwargs(cfg.policy)
        checkpoint = options.pop("checkpoint", None)
        options.pop("untrained", None)
        train = OmegaConf.to_object(cfg.train)
        assert isinstance(train, TrainConfig)
        env = component_kwargs(cfg.env) if cfg.get("env") is not None else None
        return cls(Path(cfg.output_dir), Path(cfg.dataset), name, options, checkpoint, train, env,
                   OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]


def build_policy(job: Job, source: EpisodeSource) -> PretrainedPolicy:
    """A fresh policy for the dataset's spaces, or the checkpoint to fine-tune."""
    if job.checkpoint:
        policy = policies.from_pretrained(job.checkpoint)
        if policy.name != job.policy_name:
            raise ValueError(f"policy.checkpoint={job.checkpoint} holds a '{policy.name}' policy, not "
                             f"'{job.policy_name}' (choose policy={policy.name})")
        return policy
    policy = policies.make(job.policy_name, observation_space=source.observation_space,
                           action_space=source.action_space, texts=source.tasks, **job.policy_options)
    if not isinstance(policy, PretrainedPolicy):
        raise ValueError(f"policy '{job.policy_name}' has no weights to train; learning policies: "
                         f"{sorted(policies.PRETRAINED)}")
    policy.set_normalization({k: (s["mean"], s["std"]) for k, s in source.stats.items()
                              if "mean" in s and "std" in s})
    return policy


def eval_env(job: Job, source: EpisodeSource) -> tuple[str, dict[str, Any]] | None:
    """The environment to evaluate in: `env=...` or the one recorded in the dataset (without the
    privileged expert observation, which only collection needs)."""
    if job.env is not None:
        return job.env
    if not source.env:
        return None
    options = {k: v for k, v in dict(source.env.get("options", {})).items() if k != "expert"}
    return str(source.env["name"]), options


def evaluator(job: Job, source: EpisodeSource):
    """`on_step` callback: every `train.eval_every` steps, roll the policy out and log its success."""
    cfg = job.train
    if cfg.eval_every <= 0:
        return None
    env = eval_env(job, source)
    if env is None:
        raise ValueError("train.eval_every > 0 needs an environment: the dataset records none, pass env=...")
    name, options = env

    def on_step(state: RunState) -> dict[str, float]:
        if state.step % cfg.eval_every:
            return {}
        venv = envs.make_vec(name, num_envs=cfg.eval_num_envs, **options)
        was_training = state.policy.training
        state.policy.eval()
        try:
            summary = summarize(rollout(venv, state.policy, cfg.eval_episodes, seed=cfg.seed))
        finally:
            venv.close()
            state.policy.train(was_training)
        return {f"eval/{k}": v["mean"] for k, v in summary.items() if k in ("success", "spl", "ndtw", "return")}

    return on_step


def run(job: Job) -> Path:
    """Train and return the directory of the last checkpoint's pretrained model."""
    ctx = distributed.setup(job.train.device)
    try:
        source = open_dataset(job.dataset)
        policy = build_policy(job, source)
        if ctx.is_main:
            job.output_dir.mkdir(parents=True, exist_ok=True)
            (job.output_dir / "train_config.json").write_text(json.dumps(job.run_config, indent=2, default=str))
        if job.train.dagger.iterations > 0:
            from embodied.train.dagger import run_dagger

            return run_dagger(job, source, policy, ctx)
        batches = make_batches(source, policy.processor, window=job.train.window, burn_in=job.train.burn_in,
                               batch_size=job.train.batch_size, seed=job.train.seed, sampling=job.train.sampling,
                               target="action", num_workers=job.train.num_workers,
                               skip_loss_when=job.train.skip_loss(), group_span=job.train.group_span)
        train_policy(policy, batches, job.train, job.output_dir, job.run_config, ctx,
                     on_step=evaluator(job, source))
        return job.output_dir / "checkpoints" / "last" / "pretrained_model"
    finally:
        distributed.teardown(ctx)


def main(cfg: DictConfig) -> None:
    out = run(Job.from_config(cfg))
    if out.exists():
        print(f"checkpoint: {out.resolve()}")
