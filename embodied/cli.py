"""Console entry points. Each is a Hydra app over the configs in `embodied/conf/`;
`--help` lists the config groups, and any option is overridable on the command line."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from embodied.config import CONFIG_PATH, component_kwargs, register_configs

register_configs()


@hydra.main(config_path=CONFIG_PATH, config_name="evaluate", version_base="1.3")
def eval_main(cfg: DictConfig) -> None:
    """Roll a policy out in an environment, print the metrics table, write outputs."""
    from embodied import envs, policies
    from embodied.evaluate import format_table, rollout, summarize

    out = Path(cfg.eval.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    env_name, env_kwargs = component_kwargs(cfg.env)
    policy_name, policy_kwargs = component_kwargs(cfg.policy)
    venv = envs.make_vec(
        env_name, num_envs=cfg.eval.num_envs, vectorization=cfg.eval.vectorization, **env_kwargs
    )
    policy = policies.make(
        policy_name,
        observation_space=venv.single_observation_space,
        action_space=venv.single_action_space,
        **policy_kwargs,
    )
    with open(out / "episodes.jsonl", "a") as log:  # one line per finished episode, flushed
        def write(record) -> None:
            log.write(json.dumps(record.as_row()) + "\n")
            log.flush()

        records = rollout(venv, policy, cfg.eval.episodes, seed=cfg.eval.seed, on_episode=write)
    venv.close()
    summary = summarize(records)
    _write_json_atomic(out / "summary.json", {"config": OmegaConf.to_container(cfg, resolve=True), "metrics": summary})
    print(format_table({f"{policy_name} @ {env_name}": summary}))
    print(f"outputs: {out}")


def _write_json_atomic(path: Path, data: object) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def _not_available(what: str) -> None:
    print(f"embodied-{what}: not available yet (see the project's open issues)", file=sys.stderr)
    sys.exit(2)


@hydra.main(config_path=CONFIG_PATH, config_name="collect", version_base="1.3")
def collect_main(cfg: DictConfig) -> None:
    """Record episodes of a policy into a LeRobotDataset v3.0 at `output_dir` (docs/data.md)."""
    from embodied.data.collect import main

    code = main(cfg)
    if code:
        sys.exit(code)


@hydra.main(config_path=CONFIG_PATH, config_name="train", version_base="1.3")
def _train_app(cfg: DictConfig) -> None:
    from embodied.train.run import main

    main(cfg)


def train_main() -> None:
    """Behaviour cloning / DAgger of a learning policy on a dataset (embodied/train/run.py). Under
    torchrun only rank 0 writes Hydra's files into output_dir; the other ranks write nothing there."""
    if os.environ.get("RANK", "0") != "0":
        sys.argv += ["hydra.output_subdir=null", "hydra/job_logging=none", "hydra/hydra_logging=none"]
    _train_app()


@hydra.main(config_path=CONFIG_PATH, config_name="view", version_base="1.3")
def view_main(cfg: DictConfig) -> None:
    _not_available("view")
