"""A scripted pick-and-place expert that reads privileged object poses from the simulator.

It solves tasks whose BDDL goal is one `in`/`on` predicate (libero_object: "pick up the X and
place it in the basket"; libero_spatial: "pick up the black bowl ... and place it on the plate").
It reads the goal from the parsed BDDL problem, the object poses from MuJoCo body positions and
drives the OSC_POSE controller with proportional end-effector deltas:

    above object -> descend -> close gripper -> lift -> above target -> lower -> open -> retreat

    env = gymnasium.make("embodied/Libero-v0", suite="libero_object", task_id=0)
    obs, info = env.reset(seed=0)
    while True:
        obs, r, terminated, truncated, info = env.step(env.unwrapped.expert_action())
        if terminated or truncated:
            break
"""

from __future__ import annotations

from typing import Any

import numpy as np

SUPPORTED_PREDICATES = ("in", "on")


class ExpertError(RuntimeError):
    """The task is not a single pick-and-place the expert knows how to solve."""


class PickPlaceExpert:
    """Stateful scripted policy for one episode (build a new one after each reset)."""

    def __init__(self, env: Any, gain: float = 12.0, carry_clearance: float = 0.12) -> None:
        self.env = env
        self.gain = gain
        self.carry_clearance = carry_clearance
        self.phase = "approach"
        self.phase_steps = 0
        inner = env.sim.env
        goals = inner.parsed_problem["goal_state"]
        if len(goals) != 1 or goals[0][0].lower() not in SUPPORTED_PREDICATES:
            raise ExpertError(f"expert handles one in/on goal, got {goals}")
        _, self.obj_name, target = goals[0]
        self.target_name = target
        self._inner = inner
        self._carry: float | None = None

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

    def object_pos(self) -> np.ndarray:
        return self._body_pos(self.obj_name)

    def target_pos(self) -> np.ndarray:
        inner, name = self._inner, self.target_name
        sites = getattr(inner, "object_sites_dict", {})
        if name in inner.obj_body_id:
            return self._body_pos(name)
        if name in sites:
            sid = inner.sim.model.site_name2id(sites[name].root.get("name", name)) if hasattr(
                sites[name], "root") else inner.sim.model.site_name2id(name)
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
        """Travel height: above every other object's top (fixed once, before the object is lifted)."""
        if self._carry is None:
            tops = [self._extent(n)[1] for n in self._inner.obj_body_id if n != self.obj_name]
            obj_h = self._extent(self.obj_name)[1] - self._extent(self.obj_name)[0]
            self._carry = max(tops) + obj_h + self.carry_clearance
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

    def act(self) -> np.ndarray:
        eef = np.asarray(self.env.robot_state()[:3], dtype=np.float64)
        obj = self.object_pos()
        bottom, top = self._extent(self.obj_name)
        grasp_z = max(top - min(0.03, 0.5 * (top - bottom)), bottom + 0.012)
        carry = self.carry_height()
        tgt = self.target_pos()
        release_z = self.target_top() + 0.5 * (top - bottom) + 0.03  # object centre when released
        self.phase_steps += 1
        p = self.phase
        if p == "approach":
            a, err = self._move(eef, np.array([obj[0], obj[1], max(carry, grasp_z + 0.08)]), -1.0)
            if np.linalg.norm(eef[:2] - obj[:2]) < 0.01 or self.phase_steps > 120:
                self._next("descend")
        elif p == "descend":
            a, err = self._move(eef, np.array([obj[0], obj[1], grasp_z]), -1.0)
            if err < 0.01 or self.phase_steps > 60:
                self._next("grasp")
        elif p == "grasp":
            a, _ = self._move(eef, np.array([obj[0], obj[1], grasp_z]), 1.0)
            a[:3] = 0.0
            if self.phase_steps >= 12:
                self._next("lift")
        elif p == "lift":
            a, err = self._move(eef, np.array([eef[0], eef[1], carry]), 1.0)
            a[:2] = 0.0
            if abs(eef[2] - carry) < 0.02 or self.phase_steps > 60:
                self._next("transport")
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
