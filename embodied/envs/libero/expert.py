"""A scripted pick-and-place expert that reads privileged object poses from the simulator.

It solves tasks whose BDDL goal is a conjunction of `in`/`on` predicates (libero_object: "pick up the X
and place it in the basket"; libero_spatial: "pick up the black bowl ... and place it on the plate";
libero_10: "put both the alphabet soup and the tomato sauce in the basket"): `TaskExpert` runs one
`PickPlaceExpert` per predicate, in the BDDL's order.
It reads the goal from the parsed BDDL problem, the object poses from MuJoCo body positions and the
boxes of their collision geoms, and drives the OSC_POSE controller with proportional end-effector deltas:

    above grasp point -> descend -> close gripper -> lift -> above target -> lower -> open -> retreat
    (back to "above grasp point" when the lift leaves the object behind, at most twice)

Solid objects are grasped at the top; bowls and mugs at the rim, on the side away from tall neighbours.

    env = gymnasium.make("embodied/Libero-v0", suite="libero_object", task_id=0)
    obs, info = env.reset(seed=0)
    while True:
        obs, r, terminated, truncated, info = env.step(env.unwrapped.expert_action())  # a TaskExpert
        if terminated or truncated:
            break
"""

from __future__ import annotations

from typing import Any

import numpy as np

SUPPORTED_PREDICATES = ("in", "on")
# Hollow objects are pinched at the rim (a closed gripper above a bowl's centre holds nothing,
# one above a mug's centre lands on its rim and tips it).
RIM_GRASP_CATEGORIES = ("bowl", "mug")
RIM_INSET = 0.006  # m, from the outer edge of the rim to the middle of its wall
RIM_GRASP_DEPTH = 0.015  # m, grasp point below the rim top
CORRIDOR = 0.10  # m, half-width of the strip along the carry path whose objects the held object must clear


def _box_path_distances(lo: np.ndarray, hi: np.ndarray, a: np.ndarray, b: np.ndarray, n: int = 32) -> np.ndarray:
    """Distances in the plane from the box [lo, hi] to n+1 evenly spaced points of the segment a-b."""
    pts = a[None] + np.linspace(0.0, 1.0, n + 1)[:, None] * (b - a)[None]
    gap = np.maximum(np.maximum(lo[None] - pts, pts - hi[None]), 0.0)
    return np.sqrt((gap**2).sum(1))


def in_carry_corridor(lo: np.ndarray, hi: np.ndarray, start: np.ndarray, end: np.ndarray) -> bool:
    """Whether the straight carry path start-end passes within `CORRIDOR` of the footprint [lo, hi] while
    moving towards it. The object is lifted straight up first, so a footprint that the path only leaves
    behind (a cabinet beside the start) is no obstacle."""
    d = _box_path_distances(lo, hi, start, end)
    return bool(d.min() < CORRIDOR and d.min() < d[0] - 1e-3)


class ExpertError(RuntimeError):
    """The task is not a pick-and-place the expert knows how to solve."""


def pick_place_goals(env: Any) -> list[tuple[str, str]]:
    """The (object, target) pairs of the task's BDDL goal, in order; `ExpertError` when the goal has a
    predicate other than in/on (open a drawer, turn on the stove, ...)."""
    goals = env.sim.env.parsed_problem["goal_state"]
    if not goals or any(g[0].lower() not in SUPPORTED_PREDICATES or len(g) != 3 for g in goals):
        raise ExpertError(f"expert handles in/on goals only, got {goals}")
    return [(g[1], g[2]) for g in goals]


class TaskExpert:
    """Stateful scripted policy for one episode (build a new one after each reset): one
    `PickPlaceExpert` per in/on goal, each started once the previous one has let go and backed off."""

    def __init__(self, env: Any, **kwargs: Any) -> None:
        self.stages = [PickPlaceExpert(env, goal=goal, **kwargs) for goal in pick_place_goals(env)]
        self.stage = 0

    @property
    def current(self) -> PickPlaceExpert:
        return self.stages[self.stage]

    def act(self) -> np.ndarray:
        if self.current.finished and self.stage + 1 < len(self.stages):
            self.stage += 1
        return self.current.act()


class PickPlaceExpert:
    """Scripted pick-and-place of one object onto or into one target (by default the task's only goal)."""

    RETREAT_STEPS = 15  # steps backing off after the release before the next stage may start
    MAX_REGRASPS = 2  # new approaches after a lift that left the object behind

    def __init__(self, env: Any, goal: tuple[str, str] | None = None, gain: float = 12.0,
                 carry_clearance: float = 0.12) -> None:
        self.env = env
        self.gain = gain
        self.carry_clearance = carry_clearance
        self.phase = "approach"
        self.phase_steps = 0
        self._trail: list[np.ndarray] = []  # end-effector positions in the current phase
        self._grasp_z = (0.0, 0.0)  # object and hand heights when the gripper closed
        self.regrasps = 0
        inner = env.sim.env
        if goal is None:
            goals = pick_place_goals(env)
            if len(goals) != 1:
                raise ExpertError(f"PickPlaceExpert handles one goal, got {goals}: use TaskExpert")
            goal = goals[0]
        self.obj_name, self.target_name = goal
        self._inner = inner
        self._carry: float | None = None
        self.rim_grasp = any(c in self.obj_name for c in RIM_GRASP_CATEGORIES)
        self._rim_side: int | None = None
        self._geoms = {name: self._collision_geoms(name) for name in inner.obj_body_id}

    # ----------------------------------------------------------------- poses
    def _body_pos(self, name: str) -> np.ndarray:
        inner = self._inner
        return np.array(inner.sim.data.body_xpos[inner.obj_body_id[name]])

    def _extent(self, name: str) -> tuple[float, float]:
        """World z of the object's (approximate) bottom and top."""
        inner = self._inner
        obj = inner.objects_dict.get(name) or getattr(inner, "fixtures_dict", {}).get(name)
        z = self._body_pos(name)[2]
        if obj is None:
            return z, z
        return z + float(obj.bottom_offset[2]), z + float(obj.top_offset[2])

    def _target_bodies(self) -> list[str]:
        return [obj for obj in self._inner.obj_body_id if self.target_name.startswith(obj)]

    def _collision_geoms(self, name: str) -> np.ndarray:
        """Ids of the collision geoms (contype or conaffinity set) of the object's body subtree."""
        model = self._inner.sim.model._model
        root = self._inner.obj_body_id[name]
        bodies = {root}
        for b in range(root + 1, model.nbody):  # MuJoCo gives a child a larger id than its parent
            if model.body_parentid[b] in bodies:
                bodies.add(b)
        collide = (model.geom_contype != 0) | (model.geom_conaffinity != 0)
        return np.flatnonzero(np.isin(model.geom_bodyid, list(bodies)) & collide)

    def collision_box(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """World-frame bounds (lo, hi) of the object's collision geoms, from their local AABBs."""
        model, data = self._inner.sim.model._model, self._inner.sim.data._data
        g = self._geoms[name]
        corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64)
        local = model.geom_aabb[g, None, :3] + corners[None] * model.geom_aabb[g, None, 3:]  # [G,8,3]
        world = np.einsum("gij,gkj->gki", data.geom_xmat[g].reshape(-1, 3, 3), local) + data.geom_xpos[g, None]
        return world.reshape(-1, 3).min(0), world.reshape(-1, 3).max(0)

    def rim_side(self) -> int:
        """-1 (y_min) or +1 (y_max): the rim side whose grasp point is farther from every object that
        rises above the rim (the hand is wide along y and would land on a cabinet next to the bowl).
        Chosen once per episode."""
        if self._rim_side is None:
            lo, hi = self.collision_box(self.obj_name)
            sides = {-1: np.array([0.5 * (lo[0] + hi[0]), lo[1]]), 1: np.array([0.5 * (lo[0] + hi[0]), hi[1]])}
            clearance = {side: np.inf for side in sides}
            for name in self._inner.obj_body_id:
                if name == self.obj_name or not len(self._geoms[name]):
                    continue
                o_lo, o_hi = self.collision_box(name)
                if o_hi[2] < hi[2] - 0.02:  # lower than the rim: the hand passes over it
                    continue
                for side, p in sides.items():
                    clearance[side] = min(clearance[side], float(_box_path_distances(o_lo[:2], o_hi[:2], p, p, n=0)[0]))
            self._rim_side = max(sides, key=lambda side: (clearance[side], -side))  # tie: y_min
        return self._rim_side

    def object_pos(self) -> np.ndarray:
        return self._body_pos(self.obj_name)

    def target_pos(self) -> np.ndarray:
        inner, name = self._inner, self.target_name
        sites = getattr(inner, "object_sites_dict", {})
        if name in inner.obj_body_id:
            return self._body_pos(name)
        if name in sites:
            sid = (
                inner.sim.model.site_name2id(sites[name].root.get("name", name))
                if hasattr(sites[name], "root")
                else inner.sim.model.site_name2id(name)
            )
            return np.array(inner.sim.data.site_xpos[sid])
        for obj in inner.obj_body_id:  # "basket_1_contain_region" -> "basket_1"
            if name.startswith(obj):
                return self._body_pos(obj)
        raise ExpertError(f"cannot locate target {name!r}")

    def target_top(self) -> float:
        for obj in self._inner.obj_body_id:
            if self.target_name.startswith(obj):
                return self._extent(obj)[1]
        return float(self.target_pos()[2])

    def carry_height(self) -> float:
        """Travel height: the held object's bottom clears, by `carry_clearance`, every object
        `in_carry_corridor` of the straight path from the object to the target (a tall cabinet across the
        table, or one beside the start, does not matter). Re-measured every step until the lift, then
        fixed: some init states (libero_10) start objects inside the table, and the simulator throws
        them up; they land again during the approach."""
        if self._carry is None or self.phase in ("approach", "descend", "grasp"):
            lo, hi = self.collision_box(self.obj_name)
            start, end = 0.5 * (lo[:2] + hi[:2]), self.target_pos()[:2]
            tops = [lo[2]]
            for name in self._inner.obj_body_id:
                if name == self.obj_name or not len(self._geoms[name]):
                    continue
                o_lo, o_hi = self.collision_box(name)
                if in_carry_corridor(o_lo[:2], o_hi[:2], start, end):
                    tops.append(o_hi[2])
            self._carry = max(tops) + (hi[2] - lo[2]) + self.carry_clearance
        return self._carry

    # ----------------------------------------------------------------- control
    def _move(self, eef: np.ndarray, goal: np.ndarray, gripper: float) -> tuple[np.ndarray, float]:
        delta = goal - eef
        a = np.zeros(7, dtype=np.float32)
        a[:3] = np.clip(self.gain * delta, -1.0, 1.0)
        a[6] = gripper
        return a, float(np.linalg.norm(delta))

    def _next(self, phase: str) -> None:
        self.phase, self.phase_steps = phase, 0
        self._trail = []

    def _stalled(self, window: int = 10, tol: float = 0.002) -> bool:
        """The hand moved less than `tol` over the last `window` steps (at a reach or joint limit)."""
        if len(self._trail) <= window:
            return False
        return float(np.linalg.norm(self._trail[-1] - self._trail[-1 - window])) < tol

    def act(self) -> np.ndarray:
        eef = np.asarray(self.env.robot_state()[:3], dtype=np.float64)
        obj = self.object_pos()
        bottom, top = self._extent(self.obj_name)
        grasp_xy = obj[:2].copy()
        grasp_z = max(top - min(0.03, 0.5 * (top - bottom)), bottom + 0.012)
        carry = self.carry_height()
        tgt = self.target_pos()
        release_z = self.target_top() + 0.5 * (top - bottom) + 0.03  # object centre when released
        if self.rim_grasp:
            # The fingers close along world y in LIBERO's default end-effector orientation, so they
            # straddle the rim wall at (x_centre, y_min + inset) or (x_centre, y_max - inset).
            lo, hi = self.collision_box(self.obj_name)
            rim_y = lo[1] + RIM_INSET if self.rim_side() < 0 else hi[1] - RIM_INSET
            grasp_xy = np.array([0.5 * (lo[0] + hi[0]), rim_y])
            grasp_z = hi[2] - RIM_GRASP_DEPTH
            targets = self._target_bodies()
            target_top = self.collision_box(targets[0])[1][2] if targets else tgt[2]
            release_z = obj[2] + target_top - lo[2] + 0.02  # body origin when its bottom is 2 cm above
        self.phase_steps += 1
        self._trail.append(eef)
        p = self.phase
        if p == "approach":
            a, err = self._move(eef, np.array([grasp_xy[0], grasp_xy[1], max(carry, grasp_z + 0.08)]), -1.0)
            # A high travel height can be out of reach over the object: once the hand stops within
            # 3 cm, descend, which also closes the remaining horizontal gap.
            off = np.linalg.norm(eef[:2] - grasp_xy)
            if off < 0.01 or (off < 0.03 and self._stalled()) or self.phase_steps > 120:
                self._next("descend")
        elif p == "descend":
            a, err = self._move(eef, np.array([grasp_xy[0], grasp_xy[1], grasp_z]), -1.0)
            if err < 0.01 or self.phase_steps > 60:
                self._next("grasp")
        elif p == "grasp":
            a, _ = self._move(eef, np.array([grasp_xy[0], grasp_xy[1], grasp_z]), 1.0)
            a[:3] = 0.0
            if self.phase_steps >= 12:
                self._grasp_z = (float(obj[2]), float(eef[2]))
                self._next("lift")
        elif p == "lift":
            a, err = self._move(eef, np.array([eef[0], eef[1], carry]), 1.0)
            a[:2] = 0.0
            if abs(eef[2] - carry) < 0.02 or self.phase_steps > 60:
                self._next("approach" if self._start_regrasp_if_missed(obj, eef) else "transport")
        elif p == "transport":
            # align the held object (not the hand) over the target
            goal = np.array([eef[0] + tgt[0] - obj[0], eef[1] + tgt[1] - obj[1], carry])
            a, err = self._move(eef, goal, 1.0)
            if np.linalg.norm(obj[:2] - tgt[:2]) < 0.02 or self.phase_steps > 150:
                self._next("lower")
        elif p == "lower":
            goal = np.array([eef[0] + tgt[0] - obj[0], eef[1] + tgt[1] - obj[1], eef[2] - obj[2] + release_z])
            a, err = self._move(eef, goal, 1.0)
            if err < 0.015 or self.phase_steps > 60:
                self._next("release")
        elif p == "release":
            a, _ = self._move(eef, eef, -1.0)
            if self.phase_steps >= 10:
                self._next("retreat")
        else:  # retreat and hold
            a, _ = self._move(eef, np.array([eef[0], eef[1], carry]), -1.0)
        return a

    def _start_regrasp_if_missed(self, obj: np.ndarray, eef: np.ndarray) -> bool:
        """True (and a regrasp counted) when the hand rose but the object stayed behind (the fingers closed
        on nothing, or beside a tall neighbour), at most `MAX_REGRASPS` times; a rim grasp switches side."""
        obj_rise, hand_rise = obj[2] - self._grasp_z[0], eef[2] - self._grasp_z[1]
        if hand_rise < 0.05 or obj_rise > 0.5 * hand_rise or self.regrasps >= self.MAX_REGRASPS:
            return False
        self.regrasps += 1
        if self.rim_grasp:
            self._rim_side = -self.rim_side()
        return True

    @property
    def finished(self) -> bool:
        """Released the object and backed off from it."""
        return self.phase == "retreat" and self.phase_steps >= self.RETREAT_STEPS
