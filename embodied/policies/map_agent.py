"""`map_agent`: a modular, non-learned agent on top of the `voxel_map` memory.

Every step it fuses depth + per-pixel categories into a `VoxelMap` (pose = the start-frame
gps/compass, camera 1.25 m above the floor), projects the map to a 2-D grid (obstacles:
voxels between 0.1 and 1.5 m, inflated by the agent's size; unknown counts as free) and
plans with fast marching (`scikit-fmm`) toward a goal region:

* ObjectNav: the free cells near any voxel whose majority label is the goal category; STOP
  once that category is within `stop_distance`. Until the category is mapped it explores
  (a first look around, then the nearest frontier between seen floor and unknown space).
* ObjectRecall: during the tour (phase 0, actions ignored) it fuses every frame into the map
  as for ObjectNav, with each pixel's colour as the voxel feature, and keeps the tour's own
  poses. At the question it queries the map: the labelled voxels above the floor, split
  per category into connected top-down components, are the objects (category = the
  voxels' majority label, colour = their mean feature, position = their cells); an object
  was shown at the first tour step that faced it from next to it, and that order answers
  "shown first/second". It parses the question, picks the object and goes back to it.

Privileged inputs (declared in `MapAgentConfig.privileged_inputs` and docs/policies.md): the
per-pixel semantic category labels (`semantic_category`, from an env built with
`semantic=True`). Object instance ids (`semantic`) are not read.

It has no weights: `save_pretrained` writes its config and an empty weights file, and
`from_pretrained` rebuilds it. The env must be built with `semantic=True`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import skfmm
import torch
from scipy import ndimage
from torch import nn

from embodied.envs.scenes import CATEGORIES, COLOURS
from embodied.memory.voxel_map import VoxelMap
from embodied.policies.pretrained import PretrainedPolicy

STOP, FORWARD, LEFT, RIGHT = 0, 1, 2, 3
ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth")
REQUIRED_KEYS = ("depth", "semantic_category", "gps", "compass")
PRIVILEGED = ("semantic_category",)  # simulator ground truth a real robot would not get for free


@dataclasses.dataclass
class MapAgentConfig:
    n_actions: int = 4
    voxel_size: float = 0.15  # metres; also the planning grid's cell
    extent: float = 25.0  # half-width of the mapped square around the start (m)
    camera_height: float = 1.25
    hfov_deg: float = 90.0
    max_depth: float = 8.0
    stride: int = 1  # pixel subsampling of the fused frames (use 2 at 64x64 and above)
    obstacle_z: tuple[float, float] = (0.1, 1.5)
    inflation: float = 0.2  # obstacle inflation (m): about the agent's radius
    stop_distance: float = 0.7  # STOP when the goal's nearest mapped point is this close (m)
    turn_threshold_deg: float = 20.0
    look_around_steps: int = 24  # ObjectNav: turn in place first (24 x 15 deg = one turn)
    face_distance: float = 1.6  # ObjectRecall: "the tour faced o" = o's centre this close ...
    face_angle_deg: float = 12.0  # ... and within this angle of the heading ...
    face_reach: float = 0.6  # ... and o's nearest mapped point this close (the tour stood next to it)
    min_object_points: int = 8  # ObjectRecall: smaller labelled map components are noise
    privileged_inputs: tuple[str, ...] = PRIVILEGED  # a declaration: what it reads that a robot lacks
    seed: int = 0

    def __post_init__(self) -> None:
        if tuple(self.privileged_inputs) != PRIVILEGED:
            raise ValueError(f"map_agent: privileged_inputs declares what it reads, {list(PRIVILEGED)} (per-pixel "
                             f"category labels); got {list(self.privileged_inputs)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MapAgentConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown config keys {unknown}; accepted: {sorted(known)}")
        data = dict(data)
        for key in ("obstacle_z", "privileged_inputs"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


@dataclasses.dataclass
class _MapObject:
    """One object as the voxel map holds it: a connected top-down component of voxels of one category."""

    category: int
    cells: np.ndarray  # flat 2-D grid cells of its voxels
    centre: np.ndarray  # count-weighted mean xy of its voxels (m)
    rgb: np.ndarray  # mean colour of its fused pixels, in [0, 1]
    points: int  # pixels fused into it
    faced_at: int | None = None  # first tour step that faced it


@dataclasses.dataclass
class _Row:
    """Per-environment planning state (the map itself lives in the batched VoxelMap)."""

    steps: int = 0
    tour_steps: int = 0
    last_action: int = -1
    last_xy: np.ndarray | None = None
    stuck: int = 0
    visited: set[int] = dataclasses.field(default_factory=set)
    blocked: set[int] = dataclasses.field(default_factory=set)
    tour_poses: list[tuple[float, float, float]] = dataclasses.field(default_factory=list)  # x, y, yaw
    target: _MapObject | None = None  # ObjectRecall: the object of the map to return to
    question: str = ""
    rng: np.random.Generator = dataclasses.field(default_factory=np.random.default_rng)


class MapAgentPolicy(PretrainedPolicy):
    """Voxel-map + fast-marching planner for ObjectNav and ObjectRecall (no learned weights)."""

    name = "map_agent"
    config_class: ClassVar[Any] = MapAgentConfig
    config: MapAgentConfig  # type: ignore[assignment]

    def __init__(self, config: MapAgentConfig) -> None:
        nn.Module.__init__(self)  # no encoder: this policy has no weights
        if config.n_actions != 4:
            raise ValueError("map_agent drives the navigation tasks' 4 discrete actions (STOP, FORWARD, LEFT, RIGHT)")
        self.config = config
        self.nx = math.ceil(2 * config.extent / config.voxel_size)
        self.rows: list[_Row] = []
        self._set_map(self._new_map(0))
        r = max(1, round(config.inflation / config.voxel_size))
        yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
        self._disk = xx**2 + yy**2 <= r * r

    # ------------------------------------------------------------------ construction, checkpoints
    @classmethod
    def build(
        cls,
        observation_space: gym.spaces.Dict | None = None,
        action_space: gym.Space | None = None,
        texts: Iterable[str] = (),
        obs_keys: Sequence[str] | None = None,
        **options: Any,
    ) -> MapAgentPolicy:
        """Check the env gives what the map needs (semantic=True, gps+compass)."""
        if observation_space is not None:
            missing = [k for k in REQUIRED_KEYS if k not in observation_space.spaces]
            if missing:
                raise ValueError(
                    f"map_agent needs the observations {list(REQUIRED_KEYS)}; missing {missing}: build the env with "
                    f"semantic=True (and depth, gps_compass); present: {sorted(observation_space.spaces)}")
        if action_space is not None and not (isinstance(action_space, gym.spaces.Discrete) and action_space.n == 4):
            raise ValueError(f"map_agent needs the navigation tasks' Discrete(4) actions, got {action_space}")
        return cls(MapAgentConfig(**options))

    @classmethod
    def from_config_dir(cls, directory: Path, config: dict[str, Any]) -> MapAgentPolicy:
        policy = cls(MapAgentConfig.from_dict(config))
        policy.eval()
        return policy

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        """No weights; the map is episode state, not part of a checkpoint."""
        return {}

    def set_normalization(self, stats: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:  # nothing to normalise
        pass

    def device(self) -> torch.device:
        return torch.device("cpu")

    def loss(self, batch: dict[str, Any]) -> torch.Tensor:
        raise TypeError("map_agent has no learned weights to train")

    def _set_map(self, voxel_map: VoxelMap) -> None:
        """The map is rollout state: a plain attribute, never a submodule (so never in a checkpoint)."""
        object.__setattr__(self, "map", voxel_map)

    def _new_map(self, batch_size: int) -> VoxelMap:
        c = self.config
        return VoxelMap(batch_size=batch_size, voxel_size=c.voxel_size, hfov=math.radians(c.hfov_deg),
                        num_classes=len(CATEGORIES), feature_dim=3, extent=c.extent, z_range=(-1.0, 3.0),
                        max_depth=c.max_depth, stride=c.stride)  # feature: the pixel colour

    # ------------------------------------------------------------------ Policy protocol
    def reset(self, mask: np.ndarray) -> None:
        mask = np.asarray(mask, dtype=bool)
        if len(mask) != len(self.rows):
            self._set_map(self._new_map(len(mask)))
            self.rows = [self._fresh_row(i) for i in range(len(mask))]
            return
        self.map.reset(torch.as_tensor(mask))
        for i in np.flatnonzero(mask):
            self.rows[i] = self._fresh_row(int(i))

    def _fresh_row(self, i: int) -> _Row:
        return _Row(rng=np.random.default_rng([self.config.seed, i, len(self.rows)]))

    def on_envs_pause(self, idx: Sequence[int]) -> None:
        drop = {int(i) for i in idx}
        keep = [i for i in range(len(self.rows)) if i not in drop]
        self.map.prune(torch.tensor(keep, dtype=torch.long))
        self.rows = [self.rows[i] for i in keep]

    @torch.no_grad()
    def act(self, obs: dict[str, Any]) -> np.ndarray:
        missing = [k for k in REQUIRED_KEYS if k not in obs]
        if missing:
            raise KeyError(f"map_agent needs the observations {missing}: build the env with semantic=True "
                           f"(present: {sorted(obs)})")
        n = len(obs["gps"])
        if len(self.rows) != n:
            raise RuntimeError("call reset(mask) with one entry per environment before act()")
        c = self.config
        depth = torch.as_tensor(np.asarray(obs["depth"], dtype=np.float32))[..., 0]
        labels = torch.as_tensor(np.asarray(obs["semantic_category"])).long()
        gps = np.asarray(obs["gps"], dtype=np.float64)
        yaw = np.asarray(obs["compass"], dtype=np.float64).reshape(n)
        pose = torch.tensor(np.c_[gps, np.full(n, c.camera_height), yaw], dtype=torch.float32)
        colour = torch.as_tensor(np.asarray(obs["rgb"], dtype=np.float32) / 255.0) if "rgb" in obs else None
        written = self.map.write(depth, pose, labels, colour)
        if self.trace_sink is not None:  # the map's points are gathered only when someone reads them
            self.note_read("voxel_map", "voxel_map", {**written, **self._map_points(n)},
                           {"voxel_size": c.voxel_size})
        grids = self._grids()
        phases = np.asarray(obs["phase"]).reshape(n) if "phase" in obs else np.ones(n, dtype=int)
        actions = np.zeros(n, dtype=np.int64)
        for i, row in enumerate(self.rows):
            row.visited.add(self._cell(gps[i]))
            if "phase" in obs:
                if phases[i] == 0:
                    row.tour_poses.append((float(gps[i][0]), float(gps[i][1]), float(yaw[i])))
                    actions[i] = FORWARD  # ignored during the tour
                    row.steps += 1
                    continue
                if not row.question:
                    row.question = str(obs["instruction"][i])
                    row.target = self._answer(self._shown_objects(i, row), row.question)
            goal = self._goal_cells(row, grids[i], obs, i)
            actions[i] = self._navigate(row, grids[i], gps[i], float(yaw[i]), goal, look_around="phase" not in obs)
            row.last_action, row.last_xy = int(actions[i]), gps[i].copy()
            row.steps += 1
        return actions

    def _map_points(self, n: int, limit: int = 4000) -> dict[str, list[np.ndarray]]:
        """Per row: voxel centres [P, 3] (world frame of the episode start, as the GPS) and their majority
        labels [P], at most `limit` of them (evenly subsampled) for viewers."""
        m = self.map
        env = m.vkeys // m.K
        labels = m.votes.argmax(-1)
        points, labs = [], []
        for i in range(n):
            sel = (env == i).nonzero().flatten()
            if sel.numel() > limit:
                sel = sel[torch.linspace(0, sel.numel() - 1, limit).long()]
            points.append(m.centres(m.vkeys[sel]).numpy())
            labs.append(labels[sel].numpy())
        return {"points_xyz": points, "points_label": labs}

    # ------------------------------------------------------------------ map -> 2-D grids
    def _cell(self, xy: np.ndarray) -> int:
        g = np.floor((np.asarray(xy[:2]) + self.config.extent) / self.config.voxel_size).astype(int)
        g = np.clip(g, 0, self.nx - 1)
        return int(g[0] * self.nx + g[1])

    def _grids(self) -> list[dict[str, np.ndarray]]:
        """Per row: flat 2-D cell ids of obstacle voxels, floor voxels and (cell, category) of labelled voxels."""
        m = self.map
        env = (m.vkeys // m.K).numpy()
        lin = (m.vkeys % m.K).numpy()
        z = (lin % m.nz + 0.5) * m.voxel_size + m.z_range[0]
        cell = lin // m.nz
        lab = m.votes.argmax(-1).numpy()
        lo, hi = self.config.obstacle_z
        out = []
        for i in range(len(self.rows)):
            sel = env == i
            zi, ci = z[sel], cell[sel]
            obst = (zi > lo) & (zi < hi)
            out.append({"obstacle": np.unique(ci[obst]), "floor": np.unique(ci[zi < lo]),
                        "cell": ci, "label": lab[sel], "z": zi})
        return out

    # ------------------------------------------------------------------ goals
    def _goal_cells(self, row: _Row, grid: dict[str, np.ndarray], obs: dict[str, Any], i: int) -> np.ndarray | None:
        """Cells of the thing to reach (None: not known yet, explore)."""
        if "phase" in obs:  # ObjectRecall
            return None if row.target is None else row.target.cells
        if "objectgoal" in obs:
            cat = int(np.asarray(obs["objectgoal"]).reshape(-1)[i])
            sel = (grid["label"] == cat) & (grid["z"] > 0.0)
            cells = np.unique(grid["cell"][sel])
            return cells if len(cells) else None
        return None

    # ------------------------------------------------------------------ ObjectRecall: querying the map
    def map_objects(self, i: int) -> list[_MapObject]:
        """The objects in row i's voxel map: labelled (non-structure) voxels above the floor, split per
        majority category into 8-connected top-down components of at least `min_object_points` pixels."""
        c, m = self.config, self.map
        sel = (m.vkeys // m.K) == i
        lin = (m.vkeys[sel] % m.K).numpy()
        z = (lin % m.nz + 0.5) * m.voxel_size + m.z_range[0]
        cell = lin // m.nz
        label = m.votes[sel].argmax(-1).numpy()
        counts, colour = m.counts[sel].numpy(), m.feats[sel].numpy()
        keep = (label > 0) & (z > 0.0)
        objects = []
        for cat in np.unique(label[keep]):
            v = keep & (label == cat)
            cells, w, f = cell[v], counts[v], colour[v]
            gx, gy = cells // self.nx, cells % self.nx
            grid = np.zeros((gx.max() - gx.min() + 1, gy.max() - gy.min() + 1), dtype=bool)
            grid[gx - gx.min(), gy - gy.min()] = True
            comp, n = ndimage.label(grid, structure=np.ones((3, 3)))
            part = comp[gx - gx.min(), gy - gy.min()]
            for j in range(1, n + 1):
                o = part == j
                points = float(w[o].sum())
                if points < c.min_object_points:
                    continue
                xy = (np.stack([gx[o], gy[o]], 1) + 0.5) * c.voxel_size - c.extent
                objects.append(_MapObject(int(cat), np.unique(cells[o]), (xy * w[o, None]).sum(0) / points,
                                          f[o].sum(0) / points, int(points)))
        return objects

    def _shown_objects(self, i: int, row: _Row) -> list[_MapObject]:
        """The map's objects, each with the first tour step that faced it, or None: its centre within
        `face_distance` and `face_angle_deg` of the tour's pose and its nearest cell within `face_reach`
        (the tour walks to a spot next to each shown object and turns to it; measured on 8 val_unseen
        tours, the reach condition drops most objects merely passed while keeping every shown one)."""
        c = self.config
        objects = self.map_objects(i)
        if not objects or not row.tour_poses:
            return objects
        poses = np.asarray(row.tour_poses)  # [S, 3]
        d = np.stack([o.centre for o in objects])[None] - poses[:, None, :2]  # [S, N, 2]
        ang = np.abs((np.arctan2(d[..., 1], d[..., 0]) - poses[:, None, 2] + np.pi) % (2 * np.pi) - np.pi)
        faced = (np.hypot(d[..., 0], d[..., 1]) < c.face_distance) & (ang < math.radians(c.face_angle_deg))
        for k, o in enumerate(objects):
            xy = (np.stack([o.cells // self.nx, o.cells % self.nx], 1) + 0.5) * c.voxel_size - c.extent
            reach = np.hypot(*(xy[None] - poses[:, None, :2]).transpose(2, 0, 1)).min(1)  # [S]
            steps = np.flatnonzero(faced[:, k] & (reach < c.face_reach))
            o.faced_at = int(steps[0]) if len(steps) else None
        return objects

    def _answer(self, objects: list[_MapObject], question: str) -> _MapObject | None:
        """Parse the question and pick the map object it names (the shown ones first)."""
        order = sorted((o for o in objects if o.faced_at is not None), key=lambda o: o.faced_at)
        q = question.lower()
        m = re.search(r"shown (" + "|".join(ORDINALS) + r")\b", q)
        if m:
            k = ORDINALS.index(m.group(1))
            return order[k] if k < len(order) else (order[-1] if order else None)
        m = re.search(r"the ([a-z]+) object you were shown", q)
        if m and m.group(1) in COLOURS:
            ref = np.asarray(COLOURS[m.group(1)][:3])
            pool = order or objects
            return min(pool, key=lambda o: _colour_distance(o.rgb, ref)) if pool else None
        m = re.search(r"the ([a-z ]+?) you were shown", q)
        if m and m.group(1) in CATEGORIES:
            cat = CATEGORIES.index(m.group(1))
            shown = [o for o in order if o.category == cat]
            if shown:
                return shown[0]
            same = [o for o in objects if o.category == cat]
            return max(same, key=lambda o: o.points) if same else None
        return order[0] if order else None

    # ------------------------------------------------------------------ planning
    def _navigate(self, row: _Row, grid: dict[str, np.ndarray], xy: np.ndarray, yaw: float,
                  goal: np.ndarray | None, look_around: bool = True) -> int:
        c = self.config
        vs = c.voxel_size
        if row.last_action == FORWARD and row.last_xy is not None and np.hypot(*(xy - row.last_xy)) < 0.05:
            row.stuck += 1  # a wall the map missed: block the cells just ahead
            for dist in (0.2, 0.3):
                p = xy + dist * np.array([math.cos(yaw), math.sin(yaw)])
                row.blocked.add(self._cell(p))
        else:
            row.stuck = 0
        if goal is not None and len(goal):
            gxy = (np.stack([goal // self.nx, goal % self.nx], 1) + 0.5) * vs - c.extent
            if np.min(np.hypot(*(gxy - xy).T)) <= c.stop_distance:
                return STOP
        elif look_around and row.steps < c.look_around_steps:
            return LEFT
        if row.stuck >= 3:
            row.stuck = 0
            return int(row.rng.choice([LEFT, RIGHT]))

        # crop a window around everything known (+ margin) and the agent
        known = [grid["obstacle"], grid["floor"], np.fromiter(row.visited, np.int64)]
        if goal is not None:
            known.append(goal)
        allc = np.concatenate(known)
        gx, gy = allc // self.nx, allc % self.nx
        ax, ay = self._cell(xy) // self.nx, self._cell(xy) % self.nx
        margin = 20
        x0, x1 = max(min(gx.min(), ax) - margin, 0), min(max(gx.max(), ax) + margin + 1, self.nx)
        y0, y1 = max(min(gy.min(), ay) - margin, 0), min(max(gy.max(), ay) + margin + 1, self.nx)
        shape = (x1 - x0, y1 - y0)

        def raster(cells: np.ndarray) -> np.ndarray:
            out = np.zeros(shape, dtype=bool)
            cx, cy = cells // self.nx - x0, cells % self.nx - y0
            ok = (cx >= 0) & (cx < shape[0]) & (cy >= 0) & (cy < shape[1])
            out[cx[ok], cy[ok]] = True
            return out

        obstacle = raster(np.concatenate([grid["obstacle"], np.fromiter(row.blocked, np.int64)]))
        obstacle = ndimage.binary_dilation(obstacle, self._disk)
        lx, ly = ax - x0, ay - y0
        obstacle[max(lx - 1, 0) : lx + 2, max(ly - 1, 0) : ly + 2] = False  # the agent stands on free space
        if goal is not None and len(goal):
            near = ndimage.binary_dilation(raster(goal), iterations=max(1, round((c.stop_distance - 0.15) / vs)))
            target = near & ~obstacle
        else:
            target = self._frontier(grid, row, raster, obstacle, lx, ly)
        if not target.any():
            return int(row.rng.choice([FORWARD, FORWARD, LEFT, RIGHT]))
        phi = np.where(target, -1.0, 1.0)
        try:
            dist = skfmm.distance(np.ma.MaskedArray(phi, obstacle), dx=vs)
        except ValueError:
            return int(row.rng.choice([FORWARD, LEFT, RIGHT]))
        d = np.ma.filled(dist, np.inf).astype(np.float64)
        d[target] = -1.0
        if not np.isfinite(d[lx, ly]):
            return int(row.rng.choice([FORWARD, LEFT, RIGHT]))
        # steer toward the lowest-cost cell on a small ring around the agent
        rad = 3
        xs, ys = np.mgrid[-rad : rad + 1, -rad : rad + 1]
        ring = (xs**2 + ys**2 <= rad * rad) & (xs**2 + ys**2 >= 4)
        px, py = lx + xs[ring], ly + ys[ring]
        ok = (px >= 0) & (px < shape[0]) & (py >= 0) & (py < shape[1])
        px, py = px[ok], py[ok]
        costs = d[px, py]
        best = int(np.argmin(costs))
        if not np.isfinite(costs[best]):
            return int(row.rng.choice([LEFT, RIGHT]))
        want = math.atan2(py[best] - ly, px[best] - lx)
        diff = _wrap(want - yaw)
        if abs(diff) > math.radians(c.turn_threshold_deg):
            return LEFT if diff > 0 else RIGHT
        return FORWARD

    def _frontier(self, grid: dict[str, np.ndarray], row: _Row, raster: Any, obstacle: np.ndarray,
                  lx: int, ly: int) -> np.ndarray:
        """Seen-free cells next to unknown space, at least 1 m away from the agent."""
        vis = ndimage.binary_dilation(raster(np.fromiter(row.visited, np.int64)), iterations=8)
        free = (raster(grid["floor"]) | vis) & ~obstacle
        known = free | raster(grid["obstacle"])
        frontier = free & ndimage.binary_dilation(~known, iterations=1)
        xs, ys = np.nonzero(frontier)
        far = (xs - lx) ** 2 + (ys - ly) ** 2 >= 100
        out = np.zeros_like(frontier)
        out[xs[far], ys[far]] = True
        return out


def _wrap(a: float) -> float:
    return (a + math.pi) % (2 * math.pi) - math.pi


def _colour_distance(observed: np.ndarray, reference: np.ndarray) -> float:
    """Distance of a rendered mean colour to a named colour, allowing for the lighting's
    brightness (the reference scaled by 0.7 .. 1.2)."""
    return min(float(np.linalg.norm(s * reference - observed)) for s in np.linspace(0.7, 1.2, 6))
