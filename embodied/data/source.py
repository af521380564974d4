"""`EpisodeSource`: what every dataset reader exposes (`embodied.data.reader.open_dataset`
picks the reader: LeRobot v3 directories, LIBERO / robomimic HDF5, VLN-CE splits)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces


class EpisodeSource:
    """What every dataset reader exposes (see the module docstring)."""

    path: Path
    fps: int
    observation_space: spaces.Dict
    action_space: spaces.Space
    tasks: list[str]
    episode_lengths: np.ndarray
    stats: dict[str, dict[str, np.ndarray]]
    env: dict[str, Any] | None = None  # {"name", "options"} when an embodied env wrote it
    has_expert_action: bool = False

    @property
    def num_episodes(self) -> int:
        return len(self.episode_lengths)

    @property
    def num_frames(self) -> int:
        return int(self.episode_lengths.sum())

    def read(self, episode: int, frames: np.ndarray | None = None, keys: Sequence[str] | None = None
             ) -> dict[str, Any]:
        """Frames of one episode (all, or the given frame numbers, in that order): `obs`
        (key -> [N, ...]; text as an object array of str; only `keys` when given), `action`,
        `expert_action` (when stored), `reward` float32, `terminated`/`truncated` bool,
        `timestep` int64 [N]."""
        raise NotImplementedError

    def _keys(self, keys: Sequence[str] | None) -> list[str]:
        names = list(self.observation_space.spaces)
        if keys is None:
            return names
        unknown = sorted(set(keys) - set(names))
        if unknown:
            raise KeyError(f"observation keys {unknown} are not in this dataset (it has {names})")
        return list(keys)

    def episode_info(self, episode: int) -> dict[str, Any]:
        """Identity of an episode: seed, scene, init_state, episode_id, metrics (what is known)."""
        return {}

    def _frames(self, episode: int, frames: np.ndarray | None) -> np.ndarray:
        if not 0 <= episode < self.num_episodes:
            raise IndexError(f"episode {episode} out of range [0, {self.num_episodes - 1}]")
        n = int(self.episode_lengths[episode])
        if frames is None:
            return np.arange(n)
        frames = np.asarray(frames, dtype=np.int64)
        if frames.size and (frames.min() < 0 or frames.max() >= n):
            raise IndexError(f"episode {episode} has {n} frames; asked for {frames.min()}..{frames.max()}")
        return frames
