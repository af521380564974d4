"""Reader for the official LIBERO / robomimic HDF5 demonstration files, and the same files
through the dataset API (`LiberoHDF5Source`, what `embodied.data.open_dataset` returns for them).

Layout (one file per task):

    data/                      attrs: problem_info (JSON with "language_instruction"), env_args, ...
      demo_0/                  attrs: num_samples
        actions                (T, 7) float
        obs/agentview_rgb      (T, H, W, 3) uint8, stored as rendered (upside down)
        obs/eye_in_hand_rgb    (T, H, W, 3) uint8
        obs/ee_pos, ee_ori, gripper_states, joint_states, ...
        rewards, dones, states, robot_states
      demo_1/ ...
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces

from embodied.data.format import DatasetError
from embodied.data.source import EpisodeSource

IMAGE_SUFFIXES = ("_rgb", "_image", "_depth")


def _instruction(data_attrs: Any, path: Path) -> str:
    info = data_attrs.get("problem_info")
    if info is not None:
        if isinstance(info, bytes):
            info = info.decode()
        try:
            lang = json.loads(str(info)).get("language_instruction")
        except (json.JSONDecodeError, AttributeError):
            lang = None
        if isinstance(lang, list):
            lang = " ".join(lang)
        if lang:
            return str(lang).strip()
    # Fall back on the file name: "[KITCHEN_SCENE3_]turn_on_the_stove_demo.hdf5".
    stem = re.sub(r"_demo$", "", path.stem)
    stem = re.sub(r"^[A-Z0-9_]*SCENE\d+_", "", stem)
    return stem.replace("_", " ")


def _demo_key(name: str) -> tuple[int, str]:
    m = re.search(r"(\d+)$", name)
    return (int(m.group(1)) if m else -1, name)


def read_libero_hdf5(path: str | Path, upright: bool = True, load_images: bool = True
                     ) -> Iterator[dict[str, Any]]:
    """Yield one episode per `data/demo_*` group, in numeric order (demo_2 before demo_10).

    Each episode is a dict: `name` (group name), `instruction` (str), `actions` (T, 7) and every
    other per-step dataset of the demo as numpy arrays (`rewards`, `dones`, `states`, ...), with
    the observations under `obs` (a dict of arrays keyed as in the file).

    `upright=True` rotates image observations (`*_rgb`, `*_image`, `*_depth`) by 180°, matching
    `embodied/Libero-v0` observations (LIBERO stores frames as rendered, upside down).
    `load_images=False` skips image datasets (fast metadata / action scans).
    """
    import h5py

    path = Path(path)
    with h5py.File(path, "r") as f:
        if "data" not in f:
            raise ValueError(f"{path}: not a LIBERO/robomimic file (no 'data' group)")
        data = f["data"]
        instruction = _instruction(data.attrs, path)
        for name in sorted((k for k in data if k.startswith("demo")), key=_demo_key):
            demo = data[name]
            ep: dict[str, Any] = {"name": name, "instruction": instruction}
            for key, item in demo.items():
                if isinstance(item, h5py.Dataset):
                    ep[key] = item[()]
            obs: dict[str, np.ndarray] = {}
            if "obs" in demo:
                for key, item in demo["obs"].items():
                    is_image = key.endswith(IMAGE_SUFFIXES)
                    if is_image and not load_images:
                        continue
                    arr = item[()]
                    if is_image and upright and arr.ndim >= 3:
                        arr = np.ascontiguousarray(arr[:, ::-1, ::-1])
                    obs[key] = arr
            ep["obs"] = obs
            if "actions" not in ep:
                raise ValueError(f"{path}: {name} has no 'actions' dataset")
            yield ep


# --------------------------------------------------------------------------- dataset API
FPS = 20  # LIBERO's control frequency
CAMERA_NAMES = {"agentview_rgb": "agentview_rgb", "eye_in_hand_rgb": "wrist_rgb"}  # file key -> env key
STATE_PARTS = ("ee_pos", "ee_ori", "gripper_states")  # 3 + 3 + 2 = the env's 8-D `state`


class LiberoHDF5Source(EpisodeSource):
    """LIBERO / robomimic demonstrations (one `.hdf5` file or a directory of them, every
    `data/demo_*` one episode) under the env's observation names: `agentview_rgb`,
    `wrist_rgb` (upright, as `embodied/Libero-v0` renders them), `state` (ee_pos, ee_ori,
    gripper_states; the files' ee_ori is LIBERO's recorded orientation, which this reader
    does not convert) and `instruction`. Stats cover `state` and `action` (no images)."""

    def __init__(self, path: str | Path) -> None:
        import h5py

        self.path = Path(path)
        files = sorted(self.path.glob("*.hdf5")) if self.path.is_dir() else [self.path]
        if not files:
            raise DatasetError(f"{self.path}: no .hdf5 files")
        self.fps = FPS
        self._episodes: list[tuple[Path, str]] = []
        lengths, instructions, image_shapes = [], [], {}
        actions, states = [], []
        for f in files:
            try:
                with h5py.File(f, "r") as h:
                    if "data" not in h:
                        raise DatasetError(f"{f}: not a LIBERO/robomimic file (no 'data' group)")
                    data = h["data"]
                    text = _instruction(data.attrs, f)
                    for name in sorted((k for k in data if k.startswith("demo")), key=_demo_key):
                        demo = data[name]
                        if "actions" not in demo:
                            raise DatasetError(f"{f}: {name} has no 'actions' dataset")
                        act = demo["actions"][()]
                        obs = demo.get("obs", {})
                        for key, env_key in CAMERA_NAMES.items():
                            if key in obs:
                                image_shapes[env_key] = obs[key].shape[1:]
                        if all(k in obs for k in STATE_PARTS):
                            states.append(np.concatenate([obs[k][()] for k in STATE_PARTS], axis=1))
                        self._episodes.append((f, name))
                        lengths.append(len(act))
                        actions.append(act)
                        instructions.append(text)
            except OSError as e:
                raise DatasetError(f"{f}: not a readable HDF5 file ({e})") from e
        if not self._episodes:
            raise DatasetError(f"{self.path}: no data/demo_* episodes")
        self.episode_lengths = np.asarray(lengths, dtype=np.int64)
        self.tasks = list(dict.fromkeys(instructions))
        self._instructions = instructions
        self._has_state = len(states) == len(self._episodes)
        obs_spaces: dict[str, spaces.Space] = {k: spaces.Box(0, 255, tuple(s), np.uint8)
                                               for k, s in sorted(image_shapes.items())}
        if self._has_state:
            obs_spaces["state"] = spaces.Box(-np.inf, np.inf, (8,), np.float32)
        chars = "".join(sorted(set("".join(self.tasks)))) or " "
        obs_spaces["instruction"] = spaces.Text(max(256, *(len(t) for t in self.tasks)), min_length=0, charset=chars)
        self.observation_space = spaces.Dict(obs_spaces)
        self.action_space = spaces.Box(-1.0, 1.0, (7,), np.float32)
        self.stats = {"action": _stats(np.concatenate(actions))}
        if self._has_state:
            self.stats["state"] = _stats(np.concatenate(states))

    def episode_info(self, episode: int) -> dict[str, Any]:
        f, name = self._episodes[episode]
        return {"episode_index": episode, "length": int(self.episode_lengths[episode]), "file": str(f),
                "demo": name, "tasks": [self._instructions[episode]]}

    def read(self, episode: int, frames: np.ndarray | None = None, keys: Sequence[str] | None = None
             ) -> dict[str, Any]:
        import h5py

        frames = self._frames(episode, frames)
        wanted = self._keys(keys)
        f, name = self._episodes[episode]
        order = np.unique(frames)  # h5py reads increasing indices; put them back in the asked order
        back = np.searchsorted(order, frames)
        n = len(frames)
        try:
            with h5py.File(f, "r") as h:
                demo = h["data"][name]
                obs_group = demo.get("obs", {})
                out: dict[str, Any] = {"obs": {}}
                for key, env_key in CAMERA_NAMES.items():
                    if env_key in wanted:
                        img = obs_group[key][order][back]
                        out["obs"][env_key] = np.ascontiguousarray(img[:, ::-1, ::-1])
                if "state" in wanted:
                    out["obs"]["state"] = np.concatenate(
                        [obs_group[k][order][back] for k in STATE_PARTS], axis=1).astype(np.float32)
                if "instruction" in wanted:
                    out["obs"]["instruction"] = np.array([self._instructions[episode]] * n, dtype=object)
                out["action"] = demo["actions"][order][back].astype(np.float32)
                length = int(self.episode_lengths[episode])
                out["reward"] = (demo["rewards"][order][back] if "rewards" in demo
                                 else np.zeros(n)).astype(np.float32)
                dones = demo["dones"][order][back] if "dones" in demo else (frames == length - 1)
                out["terminated"] = np.asarray(dones).astype(bool)
                out["truncated"] = np.zeros(n, bool)
                out["timestep"] = frames.copy()
        except (OSError, KeyError) as e:
            raise DatasetError(f"{f}: cannot read {name} ({type(e).__name__}: {e})") from e
        return out


def _stats(x: np.ndarray) -> dict[str, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    return {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0), "count": np.array([len(x)])}
