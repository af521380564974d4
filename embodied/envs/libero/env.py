"""`embodied/Libero-v0`: a Gymnasium env over the `libero.libero` API.

    env = gymnasium.make("embodied/Libero-v0", suite="libero_object", task_id=0)
    obs, info = env.reset(seed=0, options={"init_state": 3})   # episode 3 -> init state 3

The simulator (robosuite + MuJoCo offscreen GL context) is built lazily on the first reset,
inside the process that steps it: forking a live EGL context breaks, so vector envs must use
`forkserver`/`spawn` workers and the parent never renders.
"""

from __future__ import annotations

import contextlib
import io
import os
import string
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from embodied.envs.libero._loader import import_libero
from embodied.envs.libero.protocol import NUM_TASKS, PROTOCOLS, SUITES, LiberoProtocol, get_protocol

CAMERAS: dict[str, str] = {"agentview": "agentview", "wrist": "robot0_eye_in_hand"}
# Every character a LIBERO instruction may contain (they are lower-case words; keep room for variants).
INSTRUCTION_CHARSET: str = string.ascii_letters + string.digits + " ,.'-_:;()/&!?"
MAX_INSTRUCTION_CHARS = 256
NOOP_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float64)


@contextlib.contextmanager
def _own_numpy_rng(*seed: int) -> Iterator[None]:
    """Seed numpy's global RNG (what LIBERO samples from) from `seed` inside the block, and give the
    caller's RNG state back afterwards."""
    caller = np.random.get_state()
    np.random.seed(np.random.SeedSequence(list(seed)).generate_state(1)[0])
    try:
        yield
    finally:
        np.random.set_state(caller)


@dataclass(frozen=True)
class LiberoSettings:
    """Everything a report needs to reproduce a LIBERO number (printed next to results)."""

    suite: str
    task_id: int
    task: str
    instruction: str
    protocol: LiberoProtocol
    max_steps: int
    resolution: int
    cameras: tuple[str, ...]
    fast_render: bool
    hard_reset: bool
    gl_backend: str

    def as_dict(self) -> dict[str, Any]:
        return {"suite": self.suite, "task_id": self.task_id, "task": self.task, "instruction": self.instruction,
                "protocol": self.protocol.as_dict(), "max_steps": self.max_steps, "resolution": self.resolution,
                "cameras": list(self.cameras), "fast_render": self.fast_render, "hard_reset": self.hard_reset,
                "gl_backend": self.gl_backend}


def quat2axisangle(quat: np.ndarray) -> np.ndarray:
    """(x, y, z, w) quaternion -> axis-angle 3-vector (robosuite convention)."""
    q = np.asarray(quat, dtype=np.float64)
    w = float(np.clip(q[3], -1.0, 1.0))
    den = np.sqrt(1.0 - w * w)
    if den < 1e-8:
        return np.zeros(3)
    return q[:3] * 2.0 * np.arccos(w) / den


def _check_task_id(suite: str, task_id: Any, field: str) -> None:
    if not isinstance(task_id, (int, np.integer)) or not 0 <= int(task_id) < NUM_TASKS[suite]:
        raise ValueError(f"{field} must be an int in [0, {NUM_TASKS[suite] - 1}] for suite {suite!r}, got {task_id!r}")


def _check_choice(field: str, value: Any, allowed: list[Any] | tuple[Any, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{field} must be one of {list(allowed)}, got {value!r}")


class LiberoEnv(gym.Env):
    """One LIBERO task under a named evaluation protocol.

    Observations (dict): `agentview_rgb`, `wrist_rgb` (H x W x 3 uint8, upright: the simulator's
    upside-down frames are rotated 180°), `state` (8 float32: eef position 3, eef axis-angle 3,
    gripper joint positions 2), `instruction` (text).
    Action: `Box(-1, 1, (7,))` = OSC_POSE end-effector deltas (xyz, axis-angle) + gripper (-1 open, +1 close).

    Reset: `reset(seed=s, options={"init_state": i})` uses fixed init state i; without the option the
    index is `seed % num_init_states` (a pure function of the seed), and with neither it cycles
    0, 1, 2, ... per env. Then `protocol.num_steps_wait` no-op steps settle the scene (not counted).
    `options={"task_id": t}` switches the env to task t of its suite (the simulator is rebuilt, so a
    suite run orders its episodes task by task); `task_id=None` at construction starts on task 0.
    `terminated` on success (simulator check), `truncated` at `protocol.max_steps[suite]`.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        suite: str = "libero_object",
        task_id: int | None = 0,
        resolution: int = 128,
        cameras: tuple[str, ...] | list[str] = ("agentview", "wrist"),
        protocol: str = "openvla",
        fast_render: bool = False,
        expert: bool = False,
        render_mode: str | None = None,
    ) -> None:
        _check_choice("suite", suite, SUITES)
        task_id = 0 if task_id is None else task_id
        _check_task_id(suite, task_id, "task_id")
        if not isinstance(resolution, (int, np.integer)) or not 16 <= int(resolution) <= 1024:
            raise ValueError(f"resolution must be an int in [16, 1024] (128 for CPU work, 256 for the protocol), "
                             f"got {resolution!r}")
        cameras = tuple(cameras)
        for cam in cameras:
            _check_choice("cameras", cam, list(CAMERAS))
        if len(set(cameras)) != len(cameras):
            raise ValueError(f"cameras must be a subset of {list(CAMERAS)} without repeats, got {cameras}")
        _check_choice("protocol", protocol, sorted(PROTOCOLS))
        if render_mode is not None:
            _check_choice("render_mode", render_mode, self.metadata["render_modes"])

        self.suite, self.resolution = suite, int(resolution)
        self.cameras, self.fast_render, self.render_mode = cameras, bool(fast_render), render_mode
        self.expert = bool(expert)
        self.protocol: LiberoProtocol = get_protocol(protocol)
        self.max_steps = self.protocol.max_steps_for(suite)

        benchmark, _ = import_libero()  # cheap (no simulator): fails here with the install hint
        with contextlib.redirect_stdout(io.StringIO()):  # LIBERO prints its task order
            self._suite = benchmark.get_benchmark(suite)(task_order_index=0)
        self._sim: Any = None  # libero OffScreenRenderEnv, built lazily in the stepping process
        self._set_task(int(task_id))

        r = self.resolution
        obs_spaces: dict[str, spaces.Space] = {
            f"{cam}_rgb": spaces.Box(0, 255, (r, r, 3), np.uint8) for cam in cameras}
        obs_spaces["state"] = spaces.Box(-np.inf, np.inf, (8,), np.float32)
        obs_spaces["instruction"] = spaces.Text(MAX_INSTRUCTION_CHARS, min_length=0, charset=INSTRUCTION_CHARSET)
        if self.expert:  # privileged: the scripted expert's next action, for the `expert` policy
            obs_spaces["expert_action"] = spaces.Box(-1.0, 1.0, (7,), np.float32)
        self.observation_space = spaces.Dict(obs_spaces)
        self.action_space = spaces.Box(-1.0, 1.0, (7,), np.float32)

        self._raw_obs: dict[str, Any] | None = None
        self.init_state_index = -1
        self._next_unseeded = 0
        self.steps = 0
        self.success = False
        self._expert: Any = None

    def episode_group(self, seed: int | None, options: dict[str, Any] | None = None) -> str:
        """What an episode shares with others: its task (a new task closes and rebuilds the simulator).
        An evaluator that keeps a group on one env builds each task's simulator once."""
        task_id = (options or {}).get("task_id")
        return f"{self.suite}/task-{self.task_id if task_id is None else int(task_id)}"

    # ------------------------------------------------------------------ simulator
    def _set_task(self, task_id: int) -> None:
        """Point the env at task `task_id` of its suite; a built simulator of another task is closed."""
        if getattr(self, "task_id", None) == task_id:
            return
        if self._sim is not None:
            with contextlib.suppress(Exception):
                self._sim.close()
            self._sim = None
        self.task_id = task_id
        self._task = self._suite.get_task(task_id)
        self.instruction: str = self._task.language
        self.task_name: str = self._task.name
        self._init_states: np.ndarray | None = None
        self._expert = None
        self.settings = LiberoSettings(
            suite=self.suite, task_id=task_id, task=self.task_name, instruction=self.instruction,
            protocol=self.protocol, max_steps=self.max_steps, resolution=self.resolution, cameras=self.cameras,
            fast_render=self.fast_render, hard_reset=not self.fast_render,
            gl_backend=os.environ.get("MUJOCO_GL", "egl"))

    @property
    def init_states(self) -> np.ndarray:
        if self._init_states is None:
            states = np.asarray(self._suite.get_task_init_states(self.task_id))
            n = self.protocol.num_init_states
            if len(states) < n:
                raise RuntimeError(f"{self.task_name}: {len(states)} init states, protocol needs {n}")
            self._init_states = states[:n]
        return self._init_states

    @property
    def sim(self) -> Any:
        """The underlying `libero` OffScreenRenderEnv (created on first use, in this process)."""
        if self._sim is None:
            _, envs = import_libero()
            cams = [CAMERAS[c] for c in self.cameras]
            with _own_numpy_rng(self.protocol.sim_seed):  # LIBERO's env.seed() seeds numpy's global RNG
                self._sim = envs.OffScreenRenderEnv(
                    bddl_file_name=self._suite.get_task_bddl_file_path(self.task_id),
                    camera_names=cams, camera_heights=self.resolution, camera_widths=self.resolution,
                    hard_reset=not self.fast_render, ignore_done=True,
                    use_camera_obs=bool(cams),  # no cameras: physics only, about 15x faster (state-based work)
                    horizon=self.max_steps + self.protocol.num_steps_wait + 10)
                self._sim.seed(self.protocol.sim_seed)
            if self.fast_render:
                self._apply_fast_render()
        return self._sim

    def _apply_fast_render(self) -> None:
        """Shadows, reflections and MSAA off (kept across soft resets)."""
        import mujoco

        sim = self._sim.env.sim
        model = sim.model._model
        model.vis.quality.offsamples = 0
        model.light_castshadow[:] = 0
        ctx = sim._render_context_offscreen
        if ctx is not None:
            ctx.gl_ctx.make_current()
            ctx.scn.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            ctx.scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
            ctx._set_mujoco_context_and_buffers()  # re-create the framebuffer without multisampling

    # ------------------------------------------------------------------ gym API
    def _resolve_init_state(self, seed: int | None, options: dict[str, Any] | None) -> int:
        n = self.protocol.num_init_states
        if options and options.get("init_state") is not None:
            i = options["init_state"]
            if not isinstance(i, (int, np.integer)) or not 0 <= int(i) < n:
                raise ValueError(f"options['init_state'] must be an int in [0, {n - 1}], got {i!r}")
            return int(i)
        if seed is not None:
            return int(seed) % n
        i = self._next_unseeded % n
        self._next_unseeded += 1
        return i

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        unknown = set(options or {}) - {"init_state", "task_id"}
        if unknown:
            raise ValueError(f"unknown reset option(s) {sorted(unknown)}; accepted: ['init_state', 'task_id']")
        if options and options.get("task_id") is not None:
            _check_task_id(self.suite, options["task_id"], "options['task_id']")
            self._set_task(int(options["task_id"]))
        self.init_state_index = self._resolve_init_state(seed, options)
        sim = self.sim
        # LIBERO re-places the fixtures (bodies without a free joint: cabinet, stove, ...) on every reset
        # with numpy's global RNG, and the init states (time, qpos, qvel) do not cover them: in the usual
        # loop, episode i's scene depends on how many resets came before (measured: fixtures move by up
        # to 1 cm, and the expert's result flips). Seed that RNG from (sim_seed, i) for the reset only.
        with _own_numpy_rng(self.protocol.sim_seed, self.init_state_index):
            sim.reset()
            raw = sim.set_init_state(self.init_states[self.init_state_index])
        self._clear_carried_state()
        for _ in range(self.protocol.num_steps_wait):
            raw, _, _, _ = sim.step(NOOP_ACTION)
        self._raw_obs = raw
        self.steps = 0
        self.success = bool(sim.check_success())
        self._expert = None
        info = self._info()
        info["settings"] = self.settings  # full protocol record, once per episode
        return self._observation(), info

    def _clear_carried_state(self) -> None:
        """Zero the simulator state that survives a reset but is not in the init state, so episode i
        starts the same whichever episodes ran before it: MuJoCo's solver warm start (the previous
        step's accelerations) and robosuite's gripper command, which integrates the gripper actions
        (a fresh env starts it at zero; left alone, the settle steps end with the fingers 0.2 mm apart
        from a fresh env's)."""
        inner = self.sim.env
        inner.sim.data.qacc_warmstart[:] = 0.0
        for robot in inner.robots:
            if getattr(robot, "gripper", None) is not None:
                robot.gripper.current_action = np.zeros(robot.gripper.dof)

    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        if self._raw_obs is None:
            raise RuntimeError("call reset() before step()")
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(7), -1.0, 1.0)
        raw, _, _, _ = self.sim.step(a)
        self._raw_obs = raw
        self.steps += 1
        self.success = bool(self.sim.check_success())
        terminated = self.success
        truncated = (not terminated) and self.steps >= self.max_steps
        return self._observation(), float(terminated), terminated, truncated, self._info()

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array" or self._raw_obs is None:
            return None
        if not self.cameras:
            return None
        cam = "agentview" if "agentview" in self.cameras else self.cameras[0]
        return self._image(cam)

    def close(self) -> None:
        if self._sim is not None:
            with contextlib.suppress(Exception):
                self._sim.close()
            self._sim = None
        super().close()

    # ------------------------------------------------------------------ observations
    def _image(self, cam: str) -> np.ndarray:
        img = self._raw_obs[f"{CAMERAS[cam]}_image"]
        return np.ascontiguousarray(img[::-1, ::-1])  # rendered upside down: rotate 180°

    def robot_state(self) -> np.ndarray:
        o = self._raw_obs
        return np.concatenate([o["robot0_eef_pos"], quat2axisangle(o["robot0_eef_quat"]),
                               o["robot0_gripper_qpos"]]).astype(np.float32)

    def _observation(self) -> dict[str, Any]:
        obs: dict[str, Any] = {f"{cam}_rgb": self._image(cam) for cam in self.cameras}
        obs["state"] = self.robot_state()
        obs["instruction"] = self.instruction
        if self.expert:
            obs["expert_action"] = np.asarray(self.expert_action(), dtype=np.float32)
        return obs

    def _info(self) -> dict[str, Any]:
        return {
            "is_success": self.success,
            "init_state": self.init_state_index,
            "task": self.task_name,
            "instruction": self.instruction,
            "steps": self.steps,
            "metrics": {"success": float(self.success), "steps": float(self.steps)},
            "protocol": self.protocol.name,
        }

    def get_sim_state(self) -> np.ndarray:
        """The flattened MuJoCo state (time, qpos, qvel), as stored in LIBERO init states and demos."""
        return np.asarray(self.sim.get_sim_state()).copy()

    def set_sim_state(self, state: np.ndarray) -> dict[str, Any]:
        """Set a flattened MuJoCo state (no physics step) and return the observation it renders."""
        self._raw_obs = self.sim.regenerate_obs_from_state(np.asarray(state, dtype=np.float64))
        self.success = bool(self.sim.check_success())
        return self._observation()

    # ------------------------------------------------------------------ expert
    def expert_action(self) -> np.ndarray:
        """Scripted pick-and-place action from privileged object poses (see `expert.py`)."""
        from embodied.envs.libero.expert import TaskExpert

        if self._expert is None:
            self._expert = TaskExpert(self)
        return self._expert.act()
