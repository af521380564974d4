"""Policy training: behaviour cloning and DAgger on datasets, one process or torchrun.

    embodied-train policy=gru dataset=outputs/data/pointnav train.steps=500 output_dir=outputs/train/gru

Programmatic use: `embodied.train.run.Job` / `run(job)`, or `embodied.train.loop.train_policy`
with any batch function (see docs/training.md).
"""

from embodied.train.config import DaggerConfig, TrainConfig

__all__ = ["DaggerConfig", "TrainConfig"]
