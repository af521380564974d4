"""Videos of the first K episodes, with overlays, written off the loop's thread.

The loop only keeps a reference to each frame (observations are already copies); drawing the
overlays (instruction, action, running metrics) and encoding happen in a background thread. Files
are animated GIFs (Pillow, no ffmpeg needed), written to a temp name and renamed when complete.
"""

from __future__ import annotations

import os
import queue
import threading
from pathlib import Path
from typing import Any

import numpy as np

from embodied.evaluate.rollout import EpisodeRecord, EpisodeSpec, RolloutObserver

FRAME_KEYS = ("rgb", "agentview_rgb", "wrist_rgb")  # the first present is filmed


def _frame(obs: Any) -> np.ndarray | None:
    if isinstance(obs, dict):
        for key in FRAME_KEYS:
            if key in obs:
                return np.asarray(obs[key])
        return None
    arr = np.asarray(obs)
    return arr if arr.ndim == 3 and arr.shape[-1] == 3 and arr.dtype == np.uint8 else None


def _format_action(action: Any) -> str:
    a = np.asarray(action)
    return str(int(a)) if a.ndim == 0 else "[" + " ".join(f"{v:+.2f}" for v in a.ravel()) + "]"


def _format_metrics(info: dict[str, Any]) -> str:
    metrics = info.get("metrics", {})
    return " ".join(f"{k}={float(v):.2f}" for k, v in list(metrics.items())[:4])


class VideoRecorder(RolloutObserver):
    """Films the episodes with index < `first` into `directory/episode_{k:06d}.gif`."""

    def __init__(self, directory: Path, first: int, fps: int = 10) -> None:
        self.directory, self.first, self.fps = Path(directory), int(first), int(fps)
        self._episodes: dict[int, dict[str, Any]] = {}
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []

    def _wanted(self, spec: EpisodeSpec) -> bool:
        return spec.index < self.first and not self.path(spec.index).exists()

    def path(self, k: int) -> Path:
        return self.directory / f"episode_{k:06d}.gif"

    def episode_start(self, env_index: int, spec: EpisodeSpec, obs: Any, info: dict[str, Any]) -> None:
        if not self._wanted(spec):
            return
        frame = _frame(obs)
        if frame is None:
            return
        instruction = obs.get("instruction", info.get("instruction", "")) if isinstance(obs, dict) else ""
        self._episodes[spec.index] = {"instruction": str(instruction), "frames": [frame], "texts": ["reset"]}

    def step(self, env_index: int, spec: EpisodeSpec, action: Any, obs: Any, info: dict[str, Any]) -> None:
        ep = self._episodes.get(spec.index)
        if ep is None:
            return
        frame = _frame(obs)
        if frame is not None:
            ep["frames"].append(frame)
            ep["texts"].append(f"a={_format_action(action)} {_format_metrics(info)}")

    def episode_end(self, record: EpisodeRecord) -> None:
        ep = self._episodes.pop(record.episode, None)
        if ep is None:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="embodied-video", daemon=True)
            self._thread.start()
        self._queue.put((record.episode, ep))

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self._write(*item)
            except Exception as exc:  # a video is a by-product: report it, never stop the run
                self.errors.append(f"episode {item[0]}: {exc!r}")

    def _write(self, k: int, ep: dict[str, Any]) -> None:
        from PIL import Image, ImageDraw

        images = []
        for frame, text in zip(ep["frames"], ep["texts"]):
            img = Image.fromarray(frame).convert("RGB")
            scale = max(1, 256 // max(img.size))
            img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
            canvas = Image.new("RGB", (img.width, img.height + 28), (0, 0, 0))
            canvas.paste(img, (0, 0))
            draw = ImageDraw.Draw(canvas)
            draw.text((2, img.height + 1), ep["instruction"][:60], fill=(255, 255, 255))
            draw.text((2, img.height + 14), text[:60], fill=(255, 255, 0))
            images.append(canvas)
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / f".episode_{k:06d}.gif.tmp"
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=1000 // self.fps, loop=0)
        os.replace(tmp, self.path(k))

    def close(self) -> None:
        """Finish the queued videos (episodes still being filmed are dropped)."""
        self._episodes.clear()
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
