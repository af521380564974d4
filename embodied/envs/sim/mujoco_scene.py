"""Scene -> MuJoCo model for `MujocoBackend` (render-only: geoms never collide, the
navigation grid handles collisions)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from .scene import CEILING_RGBA, FLOOR_TINTS, WALL_RGBA, Scene
from .types import AgentConfig, SensorConfig

if TYPE_CHECKING:
    import mujoco

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
