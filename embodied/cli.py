"""Console entry points. Each is a Hydra app over the configs in `embodied/conf/`;
`--help` lists the config groups, and any option is overridable on the command line."""

from __future__ import annotations

import os
import sys

import hydra
from omegaconf import DictConfig

from embodied.conf import register_configs
from embodied.config import CONFIG_PATH

register_configs()


@hydra.main(config_path=CONFIG_PATH, config_name="evaluate", version_base="1.3")
def eval_main(cfg: DictConfig) -> None:
    """Evaluate a policy: resumable, vectorised, LIBERO suites, Ray (embodied/evaluate/run.py)."""
    from embodied.evaluate.run import evaluate

    evaluate(cfg)


def report_main(argv: list[str] | None = None) -> None:
    """`embodied-report RUN_DIR...`: compare evaluation runs (embodied/evaluate/report.py)."""
    from embodied.evaluate.report import main

    main(sys.argv[1:] if argv is None else argv)


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
    """The simulator viewer with a memory inspector, a local web page (embodied/viewer, docs/viewer.md)."""
    from embodied.viewer.app import main

    main(cfg)
