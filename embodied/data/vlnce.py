"""VLN-CE trajectories through the dataset API: `{split}.json.gz` with its `{split}_gt.json.gz`.

    src = open_dataset("data/R2R_VLNCE_v1-3/train/train.json.gz")
    ep = src.read(0)
    ep["action"]                  # the reference actions (0 STOP, 1 FORWARD, 2 LEFT, 3 RIGHT)
    ep["obs"]["position"]         # [T, 3] the agent's position before each action (Z-up metres)
    ep["obs"]["instruction"]      # the episode's instruction, once per step

VLN-CE ships actions and dense locations, no images: this source gives exactly those (scene,
episode id and start pose in `episode_info`), for analysis, for teacher forcing on positions,
or to drive a rendering collection. The `_gt` file's `locations` has one entry per step after
each action and the start first, so step t's position is `locations[t]`; the action space is
the navigation tasks' Discrete(4), which VLN-CE shares.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces

from embodied.data.format import DatasetError
from embodied.data.source import EpisodeSource

FPS = 10  # no clock in VLN-CE; the navigation envs' render_fps


def is_vlnce_split(path: Path) -> bool:
    return path.name.endswith(".json.gz") and not path.name.endswith("_gt.json.gz")


class VLNCESource(EpisodeSource):
    """The episodes of a VLN-CE split that have a ground-truth trajectory."""

    def __init__(self, path: str | Path) -> None:
        from embodied.envs.nav.episodes import load_episodes

        self.path = Path(path)
        gt_path = self.path.with_name(self.path.name.replace(".json.gz", "_gt.json.gz"))
        if not gt_path.exists():
            raise DatasetError(f"{gt_path}: missing (a VLN-CE split's trajectories are in its _gt file)")
        try:
            episodes = load_episodes(self.path)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DatasetError(f"{self.path}: not a readable VLN-CE episode file ({e})") from e
        self.episodes = [e for e in episodes if e.gt_actions]
        if not self.episodes:
            raise DatasetError(f"{gt_path}: no episode of {self.path.name} has ground-truth actions")
        for e in self.episodes:
            if len(e.gt_locations) < len(e.gt_actions):
                raise DatasetError(f"{gt_path}: episode '{e.episode_id}' has {len(e.gt_actions)} actions but only "
                                   f"{len(e.gt_locations)} locations")
        self.fps = FPS
        self.episode_lengths = np.array([len(e.gt_actions) for e in self.episodes], dtype=np.int64)
        self.tasks = list(dict.fromkeys(e.instruction for e in self.episodes))
        longest = max(len(t) for t in self.tasks) if self.tasks else 1
        self.observation_space = spaces.Dict({
            "instruction": spaces.Text(max(longest, 1), min_length=0,
                                       charset=sorted({c for t in self.tasks for c in t}) or "a"),
            "position": spaces.Box(-np.inf, np.inf, (3,), np.float32),
        })
        self.action_space = spaces.Discrete(4)
        positions = np.concatenate([np.asarray(e.gt_locations, np.float64) for e in self.episodes])
        self.stats = {"position": {"mean": positions.mean(0), "std": positions.std(0) + 1e-6,
                                   "min": positions.min(0), "max": positions.max(0)}}

    def read(self, episode: int, frames: np.ndarray | None = None, keys: Sequence[str] | None = None
             ) -> dict[str, Any]:
        idx = self._frames(episode, frames)
        e = self.episodes[episode]
        n = len(e.gt_actions)
        obs: dict[str, np.ndarray] = {}
        for key in self._keys(keys):
            if key == "instruction":
                obs[key] = np.array([e.instruction] * len(idx), dtype=object)
            else:
                obs[key] = np.asarray(e.gt_locations, np.float32)[idx]
        actions = np.asarray(e.gt_actions, np.int64)
        last = idx == n - 1
        return {"obs": obs, "action": actions[idx], "reward": np.zeros(len(idx), np.float32),  # VLN-CE has none
                "terminated": last & (actions[idx] == 0), "truncated": last & (actions[idx] != 0),
                "timestep": idx.astype(np.int64)}

    def episode_info(self, episode: int) -> dict[str, Any]:
        e = self.episodes[episode]
        return {"episode_id": e.episode_id, "scene": e.scene_id, "start_position": e.start_position,
                "start_yaw": e.start_yaw, "forward_steps": e.gt_forward_steps}
