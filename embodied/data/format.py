"""The on-disk layout (LeRobotDataset v3.0) and how Gymnasium spaces map onto its features.

    meta/info.json                      codebase_version "v3.0", fps, features, path templates, totals
    meta/stats.json                     per-feature min/max/mean/std/count (LeRobot's conventions)
    meta/tasks.parquet                  task string <-> task_index
    meta/episodes/chunk-*/file-*.parquet  one row per episode: length, file indices, offsets, stats
    meta/embodied.json                  ours: env name and options, observation/action spaces, key map
    data/chunk-*/file-*.parquet         one row per frame
    videos/<key>/chunk-*/file-*.mp4     RGB cameras

Observation keys map to features: an RGB image `k` (uint8 [H, W, 3]) -> video
`observation.images.k`; `instruction` -> the frame's task (`task_index`); every other key
-> `observation.k` (depth stays float32 in parquet, so it round-trips exactly). The
privileged `expert_action` is its own top-level feature, the action taken is `action`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000  # files per chunk directory (LeRobot's default)
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
EPISODES_PATH = "meta/episodes/" + CHUNK_FILE + ".parquet"
INFO = "meta/info.json"
STATS = "meta/stats.json"
TASKS = "meta/tasks.parquet"
EMBODIED = "meta/embodied.json"  # our own metadata (LeRobot ignores it)

INSTRUCTION = "instruction"
EXPERT_ACTION = "expert_action"
IMAGE_PREFIX = "observation.images."
OBS_PREFIX = "observation."

# Per-frame bookkeeping features (LeRobot's five, then ours).
FRAME_FEATURES: dict[str, dict[str, Any]] = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
    "next.reward": {"dtype": "float32", "shape": [1], "names": None},
    "next.terminated": {"dtype": "bool", "shape": [1], "names": None},
    "next.truncated": {"dtype": "bool", "shape": [1], "names": None},
    "scene": {"dtype": "string", "shape": [1], "names": None},
    "init_state": {"dtype": "int64", "shape": [1], "names": None},
}


class DatasetError(ValueError):
    """A dataset file is missing, corrupt, truncated or incompatible; the message names it."""


def chunk_indices(i: int, chunks_size: int = CHUNKS_SIZE) -> dict[str, int]:
    return {"chunk_index": i // chunks_size, "file_index": i % chunks_size}


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write through a temp file in the same directory, then rename: readers see the old
    file or the new one, never a half-written one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2))


def read_json(path: Path) -> Any:
    if not path.exists():
        raise DatasetError(f"{path}: missing")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: not valid JSON ({e})") from e


# ----------------------------------------------------------------------------- spaces <-> JSON
def space_to_json(space: spaces.Space) -> dict[str, Any]:
    """A JSON description of a Gymnasium space (Box, Discrete, MultiDiscrete, MultiBinary, Text, Dict)."""
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": {k: space_to_json(s) for k, s in space.spaces.items()}}
    if isinstance(space, spaces.Box):
        return {"type": "Box", "shape": list(space.shape), "dtype": str(space.dtype),
                "low": _compact(space.low), "high": _compact(space.high)}
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": space.nvec.tolist()}
    if isinstance(space, spaces.MultiBinary):
        return {"type": "MultiBinary", "n": np.asarray(space.n).tolist()}
    if isinstance(space, spaces.Text):
        return {"type": "Text", "max_length": int(space.max_length), "min_length": int(space.min_length),
                "charset": "".join(sorted(space.character_set))}
    raise DatasetError(f"space {space} cannot be stored (supported: Box, Discrete, MultiDiscrete, MultiBinary, "
                       "Text, Dict)")


def space_from_json(d: dict[str, Any]) -> spaces.Space:
    kind = d.get("type")
    if kind == "Dict":
        return spaces.Dict({k: space_from_json(v) for k, v in d["spaces"].items()})
    if kind == "Box":
        shape = tuple(d["shape"])
        dtype = np.dtype(d["dtype"])
        return spaces.Box(_expand(d["low"], shape, dtype), _expand(d["high"], shape, dtype), shape, dtype)
    if kind == "Discrete":
        return spaces.Discrete(d["n"], start=d.get("start", 0))
    if kind == "MultiDiscrete":
        return spaces.MultiDiscrete(d["nvec"])
    if kind == "MultiBinary":
        return spaces.MultiBinary(d["n"])
    if kind == "Text":
        return spaces.Text(d["max_length"], min_length=d["min_length"], charset=d["charset"])
    raise DatasetError(f"unknown space type {kind!r}")


def _compact(a: np.ndarray) -> Any:
    """A scalar when every element is equal (an image's bounds), else the full list."""
    a = np.asarray(a)
    flat = a.reshape(-1)
    if flat.size and np.all(flat == flat[0]):
        return flat[0].item()
    return a.tolist()


def _expand(v: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    return np.broadcast_to(np.asarray(v, dtype=dtype), shape).copy()


# ----------------------------------------------------------------------------- spaces -> features
def is_rgb(space: spaces.Space) -> bool:
    return isinstance(space, spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3 and space.shape[-1] == 3


def feature_of(space: spaces.Space, where: str) -> dict[str, Any]:
    """The LeRobot feature (dtype, shape) storing one value of `space`."""
    if isinstance(space, spaces.Box):
        return {"dtype": str(space.dtype), "shape": list(space.shape) or [1], "names": None}
    if isinstance(space, spaces.Discrete):
        return {"dtype": "int64", "shape": [1], "names": None}
    if isinstance(space, (spaces.MultiDiscrete, spaces.MultiBinary)):
        return {"dtype": "int64", "shape": list(space.shape), "names": None}
    if isinstance(space, spaces.Text):
        return {"dtype": "string", "shape": [1], "names": None}
    raise DatasetError(f"{where}: space {space} cannot be stored (supported: Box, Discrete, MultiDiscrete, "
                       "MultiBinary, Text)")


def observation_features(observation_space: spaces.Dict, fps: int, video_info: dict[str, Any] | None = None
                         ) -> dict[str, str]:
    """Observation key -> feature key (`task` for the instruction)."""
    if not isinstance(observation_space, spaces.Dict):
        raise DatasetError(f"observation_space must be a gymnasium Dict, got {observation_space}")
    out = {}
    for key, space in observation_space.spaces.items():
        if "/" in key:
            raise DatasetError(f"observation key {key!r}: '/' is not allowed in feature names")
        if key == INSTRUCTION and isinstance(space, spaces.Text):
            out[key] = "task"
        elif key == EXPERT_ACTION:
            out[key] = EXPERT_ACTION
        elif is_rgb(space):
            out[key] = IMAGE_PREFIX + key
        else:
            out[key] = OBS_PREFIX + key
    return out


def build_features(observation_space: spaces.Dict, action_space: spaces.Space, fps: int,
                   video: Any) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """(info.json features, observation key -> feature key)."""
    keymap = observation_features(observation_space, fps)
    features: dict[str, dict[str, Any]] = {}
    for key, fkey in keymap.items():
        space = observation_space.spaces[key]
        if fkey == "task":
            continue
        if fkey.startswith(IMAGE_PREFIX):
            h, w, c = space.shape
            features[fkey] = {"dtype": "video", "shape": [h, w, c], "names": ["height", "width", "channels"],
                              "info": video.info(h, w, fps)}
        else:
            features[fkey] = feature_of(space, f"observation {key!r}")
    features["action"] = feature_of(action_space, "action")
    features.update({k: dict(v) for k, v in FRAME_FEATURES.items()})
    return features, keymap
