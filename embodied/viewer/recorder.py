"""Recording a viewer session: each recorded episode becomes a dataset episode (the LeRobot v3.0
format of `embodied-collect`, committed atomically through `DatasetWriter`, so `open_dataset` reads
it and training can use it) and an MP4 of its camera frames.

    <record_dir>/dataset/            the dataset (reopened and appended to by later sessions)
    <record_dir>/videos/episode_000003.mp4   dataset episode 3's camera(s), side by side

The session always buffers the running episode from its reset, so switching recording on
mid-episode still records the whole episode. An episode cut short (recording switched off, the
viewer closed, Ctrl-C) is committed with its last step marked truncated: nothing driven is lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces

from embodied.data.video import VideoSettings, encode
from embodied.data.writer import DatasetWriter, EpisodeBuffer

VIDEO_KEYS = ("rgb", "agentview_rgb", "wrist_rgb")


@dataclass
class RecordedEpisode(EpisodeBuffer):
    """The session's running episode (`EpisodeBuffer`), remembering its dataset index once committed."""

    committed: int | None = None


class SessionRecorder:
    """Commits episodes of one env to `<record_dir>/dataset` and writes their videos. The dataset is
    created (or reopened) at the first commit, so a session that records nothing writes nothing."""

    def __init__(self, record_dir: str | Path, observation_space: spaces.Dict, action_space: spaces.Space, fps: int,
                 env: Mapping[str, Any], policy: Mapping[str, Any]) -> None:
        self.root = Path(record_dir)
        self.observation_space, self.action_space, self.fps = observation_space, action_space, int(fps)
        self.env, self.policy = dict(env), dict(policy)
        self._writer: DatasetWriter | None = None
        self.committed: list[int] = []

    @property
    def dataset_dir(self) -> Path:
        return self.root / "dataset"

    def video_path(self, episode: int) -> Path:
        return self.root / "videos" / f"episode_{episode:06d}.mp4"

    def _open(self) -> DatasetWriter:
        if self._writer is None:
            self._writer = DatasetWriter(self.dataset_dir, self.observation_space, self.action_space, fps=self.fps,
                                         env=self.env, video=VideoSettings(),
                                         collection={"policy": self.policy, "source": "embodied-view"})
        return self._writer

    def commit(self, buf: RecordedEpisode) -> int:
        """Write `buf` as one dataset episode (cut short: its last step is marked truncated) and its video;
        returns the episode index. A buffer is committed at most once."""
        if buf.committed is not None:
            return buf.committed
        if not len(buf):
            raise ValueError("nothing to record: the episode has no step yet")
        index = buf.write(self._open(), task=str(self.env["name"]), cut_short=True)  # the person ended it
        buf.committed = index
        self.committed.append(index)
        frames = [np.stack(buf.obs[k]) for k in VIDEO_KEYS if k in buf.obs]
        if frames:  # the dataset holds the frames already; the MP4 is for people (cameras side by side)
            encode(self.video_path(index), np.concatenate(frames, axis=2), self.fps, VideoSettings())
        return index

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
