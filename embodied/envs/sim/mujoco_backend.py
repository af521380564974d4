"""Embedded navigation backend: MuJoCo for rendering, the navigation grid for motion.

Rendering uses the low-level path (offscreen `MjrContext`, `mjv_updateScene`, `mjr_render`,
one `mjr_readPixels` for RGB and depth together); a second pass with segmentation colours
gives semantic ids. The GL context is created lazily on the first `render`, so a backend
can be built in a parent process and used after fork/forkserver in a worker.

Motion never touches MuJoCo physics: the agent is a mocap body, and moves are checked
against the inflated occupancy grid (`NavGrid`), which costs microseconds and guarantees
the agent's cylinder never overlaps walls or furniture.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import weakref

import numpy as np

from .follower import GreedyFollower
from .mujoco_scene import AGENT_BODY, CAMERA_NAME, to_mjspec
from .navgrid import NavGrid
from .scene import Scene
from .types import Action, AgentConfig, AgentPose, Frames, SensorConfig, StepOutcome

GL_BACKENDS = ("egl", "osmesa", "glfw")


def _gl_context_class(gl: str | None):
    """The GLContext class for `gl` (or MUJOCO_GL / egl when unset)."""
    gl = (gl or os.environ.get("MUJOCO_GL") or "egl").lower()
    if gl not in GL_BACKENDS:
        raise ValueError(f"gl must be one of {list(GL_BACKENDS)}, got '{gl}'")
    if gl == "egl":
        from mujoco.egl import GLContext
    elif gl == "osmesa":
        from mujoco.osmesa import GLContext
    else:
        from mujoco.glfw import GLContext
    return GLContext


def _free_at_exit(ref: weakref.ref) -> None:
    """Free a still-alive GL context before EGL's own atexit hook terminates the display."""
    ctx = ref()
    if ctx is not None:
        with contextlib.suppress(Exception):  # shutting down anyway
            ctx.free()


DEFAULT_AGENT, DEFAULT_SENSORS = AgentConfig(), SensorConfig()


class MujocoBackend:
    """`NavBackend` on MuJoCo + `NavGrid`."""

    def __init__(self, agent: AgentConfig = DEFAULT_AGENT, sensors: SensorConfig = DEFAULT_SENSORS,
                 gl: str | None = None, grid_cell: float = 0.05):
        self.agent, self.sensors, self.gl = agent, sensors, gl
        self.grid_cell = grid_cell
        self.scene: Scene | None = None
        self.navgrid: NavGrid | None = None
        self.follower: GreedyFollower | None = None
        self.model = self.data = None
        self._position = np.zeros(3)
        self._yaw = 0.0
        self._gl_ctx = self._mjr_ctx = self._scn = self._cam = self._opt = None
        self._pose_dirty = True
        self._geom_obj = self._geom_cat = None
        self._seg_obj = self._seg_cat = None

    # ------------------------------------------------------------------ scene
    def load_scene(self, scene: Scene) -> None:
        """Build model and grid; a no-op when the same scene is already loaded, so every
        episode in a house reuses the compiled model, the render context and the grid with
        its cached distance fields."""
        if self.scene is not None and (scene is self.scene or scene == self.scene):
            return
        if not isinstance(scene, Scene):
            raise TypeError(f"the mujoco backend loads procedural scenes (a Scene), got {scene!r}; "
                            "real scans need backend.name=habitat")
        import mujoco

        spec, names = to_mjspec(scene, self.agent, self.sensors)
        self.model = spec.compile()
        self.data = mujoco.MjData(self.model)
        self._geom_obj = np.zeros(self.model.ngeom, dtype=np.int32)
        self._geom_cat = np.zeros(self.model.ngeom, dtype=np.int32)
        by_id = {o.id: o for o in scene.objects}
        for name, oid in names.items():
            gid = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_GEOM, name)
            self._geom_obj[gid], self._geom_cat[gid] = oid, by_id[oid].category_id
        self.navgrid = NavGrid(scene, radius=self.agent.radius, cell=self.grid_cell)
        self.follower = GreedyFollower(self.navgrid, self.agent)
        self.scene = scene
        self._free_render_context()
        mujoco.mj_forward(self.model, self.data)
        self.set_agent_pose(self.navgrid.sample_navigable_point(np.random.default_rng(0)), 0.0)

    def _require_scene(self) -> NavGrid:
        if self.navgrid is None:
            raise RuntimeError("call load_scene(scene) first")
        return self.navgrid

    # ------------------------------------------------------------------ agent
    def set_agent_pose(self, position: np.ndarray, yaw: float) -> None:
        self._require_scene()
        self._position = np.array([float(position[0]), float(position[1]), 0.0])
        self._yaw = float(yaw)
        self._pose_dirty = True

    def get_agent_pose(self) -> AgentPose:
        return AgentPose(position=self._position.copy(), yaw=self._yaw)

    def apply_action(self, action: int) -> StepOutcome:
        """Turns never collide (the agent is a cylinder); forward moves go through `NavGrid.try_move`."""
        grid = self._require_scene()
        action = int(action)
        if action == Action.TURN_LEFT or action == Action.TURN_RIGHT:
            sign = 1.0 if action == Action.TURN_LEFT else -1.0
            self._yaw = (self._yaw + sign * math.radians(self.agent.turn_angle_deg) + math.pi) % (2 * math.pi) - math.pi
            self._pose_dirty = True
            return StepOutcome()
        if action != Action.MOVE_FORWARD:
            return StepOutcome()
        step = self.agent.forward_step
        disp = np.array([step * math.cos(self._yaw), step * math.sin(self._yaw)])
        new, collided = grid.try_move(self._position, disp, self.agent.allow_sliding)
        moved = math.hypot(new[0] - self._position[0], new[1] - self._position[1])
        self._position[0], self._position[1] = new
        self._pose_dirty = True
        return StepOutcome(collided=collided, moved=moved)

    # ------------------------------------------------------------------ navigation queries
    def geodesic_distance(self, a: np.ndarray, goals: np.ndarray) -> float:
        return self._require_scene().geodesic_distance(a, goals)

    def shortest_path(self, a: np.ndarray, goals: np.ndarray) -> np.ndarray:
        return self._require_scene().shortest_path(a, goals)

    def next_action(self, goals: np.ndarray, stop_radius: float) -> int:
        self._require_scene()
        return int(self.follower.next_action(self.get_agent_pose(), goals, stop_radius))

    def walk_to(self, goals: np.ndarray, stop_radius: float, max_steps: int) -> list[int]:
        """Pure pursuit of the shortest path, handing over to the oracle where it stalls."""
        self._require_scene()
        return self.follower.walk(self, goals, stop_radius, max_steps)

    def sample_navigable_point(self, rng: np.random.Generator) -> np.ndarray:
        return self._require_scene().sample_navigable_point(rng)

    def is_navigable(self, points: np.ndarray) -> bool | np.ndarray:
        grid = self._require_scene()
        pts = np.asarray(points, dtype=np.float64)
        return grid.is_navigable(pts) if pts.ndim == 1 else grid.lookup(grid.navigable, pts)

    # ------------------------------------------------------------------ rendering
    def _ensure_render_context(self) -> None:
        """Create GL + MuJoCo render contexts on first use (never in __init__: fork safety)."""
        import mujoco

        if self._gl_ctx is None:
            w, h = max(self.sensors.width, 64), max(self.sensors.height, 64)
            self._gl_ctx = _gl_context_class(self.gl)(w, h)
            atexit.register(_free_at_exit, weakref.ref(self._gl_ctx))  # runs before EGL's (LIFO)
        self._gl_ctx.make_current()
        if self._mjr_ctx is not None:
            return
        self._mjr_ctx = mujoco.MjrContext(self.model, mujoco.mjtFontScale.mjFONTSCALE_50)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._mjr_ctx)
        self._scn = mujoco.MjvScene(self.model, maxgeom=self.model.ngeom + 10)
        for flag in ("mjRND_SHADOW", "mjRND_REFLECTION", "mjRND_SKYBOX", "mjRND_FOG", "mjRND_HAZE"):
            self._scn.flags[getattr(mujoco.mjtRndFlag, flag)] = 0
        self._opt = mujoco.MjvOption()
        self._opt.geomgroup[3] = 0  # the agent's own body
        self._cam = mujoco.MjvCamera()
        self._cam.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._cam.fixedcamid = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, CAMERA_NAME)
        self._viewport = mujoco.MjrRect(0, 0, self.sensors.width, self.sensors.height)
        self._seg_obj = self._seg_cat = None

    def _free_render_context(self) -> None:
        """Drop model-bound render state (the GL context itself is kept for the next model)."""
        if self._mjr_ctx is not None:
            if self._gl_ctx is not None:
                self._gl_ctx.make_current()
            self._mjr_ctx.free()
        self._mjr_ctx = self._scn = None

    def _sync_pose(self) -> None:
        import mujoco

        if not self._pose_dirty:
            return
        bid = self.model.body(AGENT_BODY).mocapid[0]
        self.data.mocap_pos[bid] = self._position
        self.data.mocap_quat[bid] = [math.cos(self._yaw / 2), 0.0, 0.0, math.sin(self._yaw / 2)]
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_camlight(self.model, self.data)
        self._pose_dirty = False

    def render(self) -> Frames:
        import mujoco

        self._require_scene()
        self._ensure_render_context()
        self._sync_pose()
        s = self.sensors
        mujoco.mjv_updateScene(self.model, self.data, self._opt, None, self._cam, mujoco.mjtCatBit.mjCAT_ALL, self._scn)
        frames = Frames()
        if s.rgb or s.depth:
            mujoco.mjr_render(self._viewport, self._scn, self._mjr_ctx)
            rgb = np.empty((s.height, s.width, 3), dtype=np.uint8) if s.rgb else None
            depth = np.empty((s.height, s.width), dtype=np.float32) if s.depth else None
            mujoco.mjr_readPixels(rgb, depth, self._viewport, self._mjr_ctx)
            if rgb is not None:
                frames.rgb = rgb[::-1].copy()
            if depth is not None:
                frames.depth = self._linear_depth(depth[::-1])[..., None]
        if s.semantic:
            frames.semantic_object, frames.semantic_category = self._render_semantic()
        return frames

    def _linear_depth(self, buf: np.ndarray) -> np.ndarray:
        """Metres from the non-linear depth buffer (0 = near plane, 1 = far plane), clipped."""
        near = self.model.vis.map.znear * self.model.stat.extent
        far = self.model.vis.map.zfar * self.model.stat.extent
        z = (near * far) / (far - buf.astype(np.float64) * (far - near))
        return np.clip(z, self.sensors.min_depth, self.sensors.max_depth).astype(np.float32)

    def _render_semantic(self) -> tuple[np.ndarray, np.ndarray]:
        import mujoco

        s, scn = self.sensors, self._scn
        scn.flags[mujoco.mjtRndFlag.mjRND_SEGMENT] = 1
        scn.flags[mujoco.mjtRndFlag.mjRND_IDCOLOR] = 1
        try:
            mujoco.mjr_render(self._viewport, scn, self._mjr_ctx)
            seg = np.empty((s.height, s.width, 3), dtype=np.uint8)
            mujoco.mjr_readPixels(seg, None, self._viewport, self._mjr_ctx)
        finally:
            scn.flags[mujoco.mjtRndFlag.mjRND_SEGMENT] = 0
            scn.flags[mujoco.mjtRndFlag.mjRND_IDCOLOR] = 0
        ids = seg[::-1].astype(np.int32)
        ids = ids[..., 0] | (ids[..., 1] << 8) | (ids[..., 2] << 16)  # segid + 1, 0 = background
        self._update_seg_tables()
        ids = np.clip(ids, 0, len(self._seg_obj) - 1)
        return self._seg_obj[ids], self._seg_cat[ids]

    def _update_seg_tables(self) -> None:
        """Lookup segid+1 -> object / category id; the scene's geom list is static between calls."""
        import mujoco

        scn = self._scn
        if self._seg_obj is not None and len(self._seg_obj) == scn.ngeom + 1:
            return
        obj = np.zeros(scn.ngeom + 1, dtype=np.int32)
        cat = np.zeros(scn.ngeom + 1, dtype=np.int32)
        for g in scn.geoms[: scn.ngeom]:
            if g.segid >= 0 and g.objtype == mujoco.mjtObj.mjOBJ_GEOM and g.segid + 1 < len(obj):
                obj[g.segid + 1] = self._geom_obj[g.objid]
                cat[g.segid + 1] = self._geom_cat[g.objid]
        self._seg_obj, self._seg_cat = obj, cat

    def close(self) -> None:
        self._free_render_context()
        if self._gl_ctx is not None:
            self._gl_ctx.free()
            self._gl_ctx = None
