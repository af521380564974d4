"""Navigation episodes: the dataclass and VLN-CE-layout files.

Episode files follow the R2R-CE layout (`{split}.json.gz` with `episodes`, and
`{split}_gt.json.gz` mapping episode_id -> {locations, actions, forward_steps}). Our own
files store Z-up positions and say so in `"frame": "z_up"`; files without that key are
real R2R-CE / RxR-CE files in habitat's Y-up frame and are converted on load.

`load_ground_truth(path)` parses a `{split}_gt.json.gz` on its own (the dense `locations`
VLN-CE scores nDTW against, the expert `actions`, `forward_steps`).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FRAME_KEY = "frame"
DEFAULT_RADIUS = 3.0  # VLN-CE's success distance, for goals that carry no radius


@dataclass
class NavEpisode:
    episode_id: str
    scene_id: str  # "procedural:<seed>" for generated houses, else a scene path
    start_position: list[float]
    start_yaw: float
    goals: list[list[float]]  # goal points; reaching any one counts
    success_distance: float
    geodesic_distance: float = float("nan")
    instruction: str = ""
    reference_path: list[list[float]] = field(default_factory=list)  # sparse (R2R nav-graph nodes)
    gt_locations: list[list[float]] = field(default_factory=list)  # dense (`_gt` locations): nDTW's reference
    gt_actions: list[int] = field(default_factory=list)
    gt_forward_steps: int = 0
    object_category: str = ""
    target_object_ids: list[int] = field(default_factory=list)
    tour_actions: list[int] = field(default_factory=list)  # ObjectRecall: scripted tour
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ndtw_reference(self) -> list[list[float]]:
        """What nDTW compares against: the dense `_gt` locations when present (VLN-CE), else
        the reference path."""
        return self.gt_locations or self.reference_path


@dataclass
class GroundTruth:
    """One episode's entry of a VLN-CE `{split}_gt.json.gz`, positions converted to Z-up."""

    locations: list[list[float]]
    actions: list[int]
    forward_steps: int


def yup_to_zup(p: list[float]) -> list[float]:
    x, y, z = (float(v) for v in p)
    return [x, -z, y]


def quat_to_yaw_yup(q: list[float]) -> float:
    """Heading of a habitat agent rotation [x, y, z, w] (rotation about +Y, 0 = facing -Z)."""
    _, y, _, w = q
    habitat_yaw = 2.0 * np.arctan2(y, w)  # rotation about +Y; the agent faces -Z at 0
    # habitat -Z is our +Y, so facing -Z (habitat yaw 0) is our yaw pi/2
    return float(np.arctan2(np.sin(habitat_yaw + np.pi / 2), np.cos(habitat_yaw + np.pi / 2)))


def save_episodes(episodes: list[NavEpisode], directory: str | Path, split: str) -> Path:
    """Write `{split}.json.gz` and `{split}_gt.json.gz` atomically (temp file + rename)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data = {FRAME_KEY: "z_up", "episodes": [_to_r2r(e) for e in episodes]}
    gt = {e.episode_id: {"locations": e.ndtw_reference, "actions": e.gt_actions,
                         "forward_steps": e.gt_forward_steps} for e in episodes}
    path = directory / f"{split}.json.gz"
    _write_gz_atomic(path, data)
    _write_gz_atomic(directory / f"{split}_gt.json.gz", gt)
    return path


def load_episodes(path: str | Path) -> list[NavEpisode]:
    """Read our files or real R2R-CE / RxR-CE files (with their `_gt` file if present)."""
    path = Path(path)
    with gzip.open(path, "rt") as f:
        data = json.load(f)
    if "episodes" not in data:
        raise ValueError(f"{path}: an episode file holds an 'episodes' list (VLN-CE layout), got keys {sorted(data)}")
    zup = data.get(FRAME_KEY) == "z_up"
    gt_path = path.with_name(path.name.replace(".json.gz", "_gt.json.gz"))
    gt = load_ground_truth(gt_path, zup=zup) if gt_path.exists() else {}
    return [_from_r2r(raw, zup, gt.get(str(raw["episode_id"]))) for raw in data["episodes"]]


def load_ground_truth(path: str | Path, zup: bool = False) -> dict[str, GroundTruth]:
    """Parse a VLN-CE `{split}_gt.json.gz`: episode_id -> `GroundTruth`. Real files are in
    habitat's Y-up frame (`zup=False`) and are converted; ours are Z-up already."""
    with gzip.open(Path(path), "rt") as f:
        raw = json.load(f)
    conv = _floats if zup else yup_to_zup
    out = {}
    for episode_id, entry in raw.items():
        try:
            out[str(episode_id)] = GroundTruth(locations=[conv(p) for p in entry["locations"]],
                                               actions=[int(a) for a in entry.get("actions", [])],
                                               forward_steps=int(entry.get("forward_steps", 0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: episode '{episode_id}' needs 'locations' (a list of [x, y, z]), "
                             f"optional 'actions' and 'forward_steps': {exc}") from exc
    return out


def _floats(p: list[float]) -> list[float]:
    return [float(v) for v in p]


def _to_r2r(e: NavEpisode) -> dict[str, Any]:
    d = asdict(e)
    for key in ("gt_locations", "gt_actions", "gt_forward_steps"):  # they belong in `{split}_gt.json.gz`
        d.pop(key)
    d["goals"] = [{"position": g, "radius": e.success_distance} for g in e.goals]
    d["instruction"] = {"instruction_text": e.instruction}
    d["info"] = {"geodesic_distance": e.geodesic_distance}
    return d


def _from_r2r(raw: dict[str, Any], zup: bool, gt: GroundTruth | None) -> NavEpisode:
    conv = _floats if zup else yup_to_zup
    goals = raw.get("goals", [])
    instruction = raw.get("instruction", "")
    if isinstance(instruction, dict):
        instruction = instruction.get("instruction_text", "")
    if zup:
        yaw = float(raw["start_yaw"])
    else:
        yaw = quat_to_yaw_yup(raw.get("start_rotation", [0, 0, 0, 1]))
    if not goals:
        raise ValueError(f"episode {raw.get('episode_id')}: 'goals' is empty (each goal: position, radius)")
    return NavEpisode(
        episode_id=str(raw["episode_id"]),
        scene_id=str(raw["scene_id"]),
        start_position=conv(raw["start_position"]),
        start_yaw=yaw,
        goals=[conv(g["position"]) for g in goals],
        success_distance=float(goals[0].get("radius") or DEFAULT_RADIUS),
        geodesic_distance=float((raw.get("info") or {}).get("geodesic_distance", float("nan"))),
        instruction=instruction,
        reference_path=[conv(p) for p in raw.get("reference_path") or []],
        gt_locations=gt.locations if gt else [],
        gt_actions=gt.actions if gt else [],
        gt_forward_steps=gt.forward_steps if gt else 0,
        object_category=str(raw.get("object_category", "")),
        target_object_ids=list(raw.get("target_object_ids", [])),
        tour_actions=list(raw.get("tour_actions", [])),
        extra=dict(raw.get("extra", {})),
    )


def _write_gz_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with gzip.open(tmp, "wt") as f:
        json.dump(data, f)
    tmp.replace(path)
