"""MP4 encoding and decoding of RGB frames with PyAV (the FFmpeg bindings).

Frame i of a file sits at time `from_timestamp + i / fps`; decoding maps each decoded frame
back to its index through its presentation time, so B-frames and seeking cannot shift frames.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embodied.data.format import DatasetError

CODECS = {"h264": "libx264", "av1": "libsvtav1"}  # setting -> FFmpeg encoder


@dataclass(frozen=True)
class VideoSettings:
    """RGB video quality. `crf` is the encoder's constant-rate factor (lower = better and
    larger; 0 with h264 is near-lossless but still chroma-subsampled), `gop` the keyframe
    interval (a random access decodes at most `gop - 1` frames it does not return)."""

    codec: str = "h264"
    crf: int = 23
    gop: int = 2
    pix_fmt: str = "yuv420p"

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise ValueError(f"video.codec must be one of {sorted(CODECS)}, got {self.codec!r}")
        if not 0 <= int(self.crf) <= 63:
            raise ValueError(f"video.crf must be an int in [0, 63], got {self.crf!r}")
        if int(self.gop) < 1:
            raise ValueError(f"video.gop must be >= 1, got {self.gop!r}")
        if self.pix_fmt not in ("yuv420p", "yuv444p"):
            raise ValueError(f"video.pix_fmt must be one of ['yuv420p', 'yuv444p'], got {self.pix_fmt!r}")

    def info(self, height: int, width: int, fps: int) -> dict[str, Any]:
        """The `info` block LeRobot keeps next to a video feature in meta/info.json."""
        return {"video.height": height, "video.width": width, "video.codec": self.codec,
                "video.pix_fmt": self.pix_fmt, "video.is_depth_map": False, "video.fps": fps,
                "video.channels": 3, "has_audio": False}


def encode(path: Path, frames: np.ndarray, fps: int, settings: VideoSettings) -> None:
    """Write frames [T, H, W, 3] uint8 to `path` (through a temp file, then renamed)."""
    import av

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"{path}: video frames must be [T, H, W, 3] uint8, got {frames.shape} {frames.dtype}")
    t, h, w, _ = frames.shape
    if settings.codec == "av1" and min(h, w) < 64:
        raise ValueError(f"{path}: video.codec 'av1' needs frames of at least 64x64 (got {h}x{w}); use 'h264'")
    if settings.pix_fmt == "yuv420p" and (h % 2 or w % 2):
        raise ValueError(f"{path}: pix_fmt yuv420p needs even frame sizes, got {h}x{w}; use yuv444p")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    options = {"crf": str(int(settings.crf)), "g": str(int(settings.gop))}
    if settings.codec == "av1":
        options["preset"] = "10"
    with av.open(str(tmp), "w", format="mp4") as container:
        stream = container.add_stream(CODECS[settings.codec], rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, settings.pix_fmt
        stream.options = options
        for i in range(t):
            frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
            frame.pts = i  # in the codec's time base, 1/fps
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    os.replace(tmp, path)


def decode(path: Path, fps: int, indices: np.ndarray, from_timestamp: float = 0.0) -> np.ndarray:
    """Frames at `indices` (frame numbers relative to `from_timestamp`) as [N, H, W, 3] uint8."""
    import av
    from av.video.reformatter import VideoReformatter

    wanted = np.asarray(indices, dtype=np.int64)
    if wanted.size == 0:
        raise ValueError(f"{path}: no frames requested")
    targets = set(wanted.tolist())
    first, last = int(wanted.min()), int(wanted.max())
    found: dict[int, np.ndarray] = {}
    # One reformatter for the whole call: `frame.to_ndarray(format=...)` builds a fresh swscale
    # context per frame, which costs ~1.3 ms on a 32x32 frame (8x the conversion itself).
    rgb = VideoReformatter()
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            start = from_timestamp + first / fps
            if start > 0:  # seek to the keyframe at or before the first wanted frame
                container.seek(int(start / stream.time_base), stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                if frame.time is None:
                    continue
                k = round((frame.time - from_timestamp) * fps)
                if k in targets:
                    found[k] = rgb.reformat(frame, format="rgb24").to_ndarray()
                if k >= last:
                    break
    except av.error.FFmpegError as e:
        raise DatasetError(f"{path}: cannot decode video ({e})") from e
    missing = sorted(targets - set(found))
    if missing:
        raise DatasetError(f"{path}: video holds no frame for index {missing[:5]} (truncated or wrong fps?)")
    return np.stack([found[int(k)] for k in wanted])
