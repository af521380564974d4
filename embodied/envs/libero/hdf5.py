"""Reader for the official LIBERO / robomimic HDF5 demonstration files.

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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

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
