"""Demonstration data: datasets on disk (LeRobotDataset v3.0), readers, training samples.

    from embodied.data import DatasetWriter, open_dataset, WindowDataset, Collate
    src = open_dataset("outputs/collect/pointnav")      # ours, LeRobot's, or LIBERO HDF5
    ds = WindowDataset(src, window=16, burn_in=4)

See docs/data.md. `episodes.py` keeps the in-memory episodes of the older training tests.
"""

from embodied.data.episodes import Episode, collect_episodes, episode_windows, normalization_stats
from embodied.data.format import DatasetError
from embodied.data.reader import LeRobotSource, open_dataset
from embodied.data.sampling import (
    PAD,
    Collate,
    EpisodeChunkSampler,
    EpisodeDataset,
    GroupDataset,
    ShardedSampler,
    WindowDataset,
)
from embodied.data.source import EpisodeSource
from embodied.data.video import VideoSettings
from embodied.data.writer import DatasetWriter, EpisodeBuffer

__all__ = [
    "PAD",
    "Collate",
    "DatasetError",
    "DatasetWriter",
    "Episode",
    "EpisodeBuffer",
    "EpisodeChunkSampler",
    "EpisodeDataset",
    "EpisodeSource",
    "GroupDataset",
    "LeRobotSource",
    "ShardedSampler",
    "VideoSettings",
    "WindowDataset",
    "collect_episodes",
    "episode_windows",
    "normalization_stats",
    "open_dataset",
]
