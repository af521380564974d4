"""Exporters from the plain scene description to simulator formats.

`to_mjspec` builds a MuJoCo model (render-only: geoms never collide, the navigation
grid handles collisions). `export_glb` writes meshes for a habitat-style backend.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from embodied.envs.backend import AgentConfig, SensorConfig
from embodied.envs.scenes.types import Scene

if TYPE_CHECKING:
    import mujoco
    import trimesh

WALL_RGBA = (0.88, 0.86, 0.82, 1.0)
CEILING_RGBA = (0.95, 0.95, 0.95, 1.0)
FLOOR_TINTS = ((0.62, 0.52, 0.40), (0.55, 0.58, 0.62), (0.66, 0.62, 0.52), (0.50, 0.56, 0.48),
               (0.60, 0.50, 0.52), (0.56, 0.54, 0.60), (0.68, 0.60, 0.46), (0.52, 0.50, 0.46))
ROUND_CATEGORIES = frozenset({"lamp", "plant", "vase", "mug", "bin", "ball", "basket"})
CAMERA_NAME, AGENT_BODY = "agent_eye", "agent"
NEAR, FAR = 0.05, 50.0  # metres; the ceiling keeps every ray well inside FAR


def _yaw_quat(yaw: float) -> list[float]:
    return [math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]


def camera_quat() -> np.ndarray:
    """Camera looking along the body's +X with +Z up (MuJoCo cameras look along their -Z)."""
    import mujoco

    mat = np.array([[0.0, 0.0, -1.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # columns: cam x, y, z in body
    q = np.zeros(4)
    mujoco.mju_mat2Quat(q, mat.ravel())
    return q


def vertical_fov_deg(sensors: SensorConfig) -> float:
    half = math.radians(sensors.hfov_deg) / 2
    return math.degrees(2 * math.atan(math.tan(half) * sensors.height / sensors.width))


def to_mjspec(scene: Scene, agent: AgentConfig, sensors: SensorConfig) -> tuple[mujoco.MjSpec, dict[str, int]]:
    """MuJoCo spec of the scene plus a map geom name -> semantic object id (objects only).

    Geoms are named `obj_<id>` for objects and `struct_*` for floor, walls and ceiling.
    """
    import mujoco

    spec = mujoco.MjSpec()
    spec.modelname = f"house_{scene.seed}"
    spec.stat.extent = 1.0  # makes znear/zfar absolute metres
    spec.visual.map.znear, spec.visual.map.zfar = NEAR, FAR
    spec.visual.global_.offwidth = max(sensors.width, 64)
    spec.visual.global_.offheight = max(sensors.height, 64)
    spec.visual.quality.shadowsize = 0
    spec.visual.quality.offsamples = 0  # no MSAA: it costs llvmpipe more than the whole frame
    spec.visual.headlight.ambient = [0.45, 0.45, 0.45]
    spec.visual.headlight.diffuse = [0.35, 0.35, 0.35]
    spec.visual.headlight.specular = [0.0, 0.0, 0.0]
    world = spec.worldbody
    world.add_light(name="sun", pos=[0, 0, 10], dir=[0.3, 0.2, -1.0], type=mujoco.mjtLightType.mjLIGHT_DIRECTIONAL,
                    castshadow=False, diffuse=[0.4, 0.4, 0.4], specular=[0, 0, 0])

    def box(name: str, pos, size, rgba, yaw: float = 0.0, kind=mujoco.mjtGeom.mjGEOM_BOX) -> None:
        half = [s / 2 for s in size]
        if kind == mujoco.mjtGeom.mjGEOM_CYLINDER:
            half = [min(half[0], half[1]), half[2], 0.0]
        world.add_geom(name=name, type=kind, pos=list(pos), size=half, rgba=list(rgba), quat=_yaw_quat(yaw),
                       contype=0, conaffinity=0)

    xmin, ymin, xmax, ymax = scene.bounds
    t, h = scene.wall_thickness, scene.wall_height
    for k, room in enumerate(scene.rooms):
        x0, y0, x1, y1 = room.bounds
        box(f"struct_floor_{room.id}", ((x0 + x1) / 2, (y0 + y1) / 2, -0.05), (x1 - x0, y1 - y0, 0.1),
            (*FLOOR_TINTS[k % len(FLOOR_TINTS)], 1.0))
    box("struct_ceiling", ((xmin + xmax) / 2, (ymin + ymax) / 2, h + 0.05), (xmax - xmin + t, ymax - ymin + t, 0.1),
        CEILING_RGBA)
    for k, w in enumerate(scene.walls):
        box(f"struct_wall_{k}", w.position, w.size, WALL_RGBA)
    names = {}
    for o in scene.objects:
        kind = mujoco.mjtGeom.mjGEOM_CYLINDER if o.category in ROUND_CATEGORIES else mujoco.mjtGeom.mjGEOM_BOX
        box(f"obj_{o.id}", o.position, o.size, o.rgba, o.yaw, kind)
        names[f"obj_{o.id}"] = o.id
    body = world.add_body(name=AGENT_BODY, mocap=True)
    body.add_geom(name="agent_body", type=mujoco.mjtGeom.mjGEOM_CYLINDER, size=[agent.radius, agent.height / 2, 0],
                  pos=[0, 0, agent.height / 2], rgba=[0.2, 0.2, 0.2, 1], group=3, contype=0, conaffinity=0)
    body.add_camera(name=CAMERA_NAME, pos=[0, 0, agent.camera_height], quat=list(camera_quat()),
                    fovy=vertical_fov_deg(sensors))
    return spec, names


# ----------------------------------------------------------------------------- glb
def _frame_matrix(frame: str) -> np.ndarray:
    """4x4 transform from our Z-up world to the written frame.

    "y_up" (glTF's convention, what habitat assumes for a bare .glb): (x, y, z) -> (x, z, -y),
    the inverse of backend.py's `zup = (x, -z, y)`. "z_up": identity.
    """
    if frame == "z_up":
        return np.eye(4)
    if frame == "y_up":
        m = np.eye(4)
        m[:3, :3] = [[1, 0, 0], [0, 0, 1], [0, -1, 0]]
        return m
    raise ValueError(f"frame must be 'y_up' or 'z_up', got '{frame}'")


def _box_mesh(pos, size, rgba, yaw: float = 0.0) -> trimesh.Trimesh:
    import trimesh

    m = trimesh.creation.box(extents=size)
    tf = trimesh.transformations.rotation_matrix(yaw, [0, 0, 1])
    tf[:3, 3] = pos
    m.apply_transform(tf)
    m.visual.face_colors = (np.asarray(rgba) * 255).astype(np.uint8)
    return m


def scene_meshes(scene: Scene, ceiling: bool = False) -> tuple[trimesh.Trimesh, dict[int, trimesh.Trimesh]]:
    """Static structure (floors, walls[, ceiling]) as one mesh and one mesh per object id, Z-up world frame."""
    import trimesh

    parts = []
    for k, room in enumerate(scene.rooms):
        x0, y0, x1, y1 = room.bounds
        parts.append(_box_mesh(((x0 + x1) / 2, (y0 + y1) / 2, -0.05), (x1 - x0, y1 - y0, 0.1),
                               (*FLOOR_TINTS[k % len(FLOOR_TINTS)], 1.0)))
    parts += [_box_mesh(w.position, w.size, WALL_RGBA) for w in scene.walls]
    if ceiling:
        xmin, ymin, xmax, ymax = scene.bounds
        parts.append(_box_mesh(((xmin + xmax) / 2, (ymin + ymax) / 2, scene.wall_height + 0.05),
                               (xmax - xmin, ymax - ymin, 0.1), CEILING_RGBA))
    structure = trimesh.util.concatenate(parts)
    objects = {o.id: _box_mesh(o.position, o.size, o.rgba, o.yaw) for o in scene.objects}
    return structure, objects


def export_glb(scene: Scene, path: str | Path, frame: str = "y_up", ceiling: bool = False) -> dict[int, Path]:
    """Write `path` (structure, semantic id 0) and `<stem>_obj<id>.glb` per object; returns id -> file.

    Object meshes are in world coordinates (add them at the identity pose). `frame="y_up"`
    (default) writes glTF's Y-up axes, i.e. a habitat point is (x, z, -y) of ours.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tf = _frame_matrix(frame)
    structure, objects = scene_meshes(scene, ceiling=ceiling)
    structure.apply_transform(tf)
    structure.export(path)
    out = {}
    for oid, mesh in objects.items():
        mesh.apply_transform(tf)
        p = path.with_name(f"{path.stem}_obj{oid}.glb")
        mesh.export(p)
        out[oid] = p
    return out
