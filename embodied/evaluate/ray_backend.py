"""`eval.backend=ray`: shard a run's episodes over Ray actors, each with its own envs and policy.

Episodes go out in chunks of `eval.ray.chunk`; each actor runs one chunk at a time with the same
`rollout` as the local backend and returns its records, which the driver writes as they come (so
the files are the local backend's). A chunk whose actor dies is given to a fresh actor, at most
`eval.ray.max_retries` times; records are only written for chunks that finished, so each episode
is written once. See docs/evaluation.md for clusters and SLURM.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from embodied.evaluate.rollout import EpisodeRecord, EpisodeSpec

# How an actor runs a chunk: `run_job(job, specs, on_episode=None)` of the evaluator, passed in
# (a module-level function travels to the actors by reference).
RunJob = Callable[..., Sequence[EpisodeRecord]]


class _Worker:
    """A Ray actor: builds its envs and policy from the job and runs chunks of episodes."""

    def __init__(self, job: dict[str, Any], run_job: RunJob) -> None:
        self.job, self.run_job = job, run_job

    def run(self, specs: Sequence[EpisodeSpec]) -> list[dict[str, Any]]:
        return [r.as_row() for r in self.run_job(self.job, list(specs), on_episode=None)]

    def pid(self) -> int:
        import os

        return os.getpid()


def _connect(ray: Any, ray_cfg: Any) -> None:
    if ray.is_initialized():
        return
    # ray.init replaces the driver's SIGTERM handler with one that exits on the spot; the evaluator's
    # (stop the loop, write summary.json with status interrupted, exit 130) must stay in charge
    on_sigterm = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
    try:
        _init(ray, ray_cfg)
    finally:
        if on_sigterm is not None:
            signal.signal(signal.SIGTERM, on_sigterm)


def _init(ray: Any, ray_cfg: Any) -> None:
    if ray_cfg.address:
        try:
            ray.init(address=ray_cfg.address, log_to_driver=False)
        except ConnectionError as exc:
            # Ray >= 2.59: `ray start --head` turns token authentication on by itself when ~/.ray/auth_token
            # exists (any earlier local `ray.init()` writes one), while a driver connecting by address only
            # sends the token when RAY_AUTH_MODE=token is set: the connection then fails on authentication.
            raise ConnectionError(
                f"eval.ray.address={ray_cfg.address!r}: could not connect to the Ray cluster ({exc}). If it was "
                "started with `ray start` (Ray >= 2.59 enables token authentication there whenever "
                "~/.ray/auth_token exists), export RAY_AUTH_MODE=token on every node and for this driver, with "
                "the same token (RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token): docs/evaluation.md, SLURM.") from exc
    else:  # a new local cluster on this machine ("local": never attach to one that already runs here)
        ray.init(address="local", num_cpus=ray_cfg.num_cpus, include_dashboard=False, log_to_driver=False)


def run_ray(job: dict[str, Any], specs: Sequence[EpisodeSpec], write: Callable[[EpisodeRecord], None],
            ray_cfg: Any, run_job: RunJob, on_start: Callable[[Any], None] | None = None) -> None:
    """Run `specs` on Ray actors; `write` gets each record on the driver. `on_start(actor)` is called
    for every actor launched (tests use it to kill one)."""
    try:
        import ray
        from ray.exceptions import RayActorError, WorkerCrashedError
    except ImportError as exc:
        raise ImportError("eval.backend=ray needs Ray: pip install 'embodied[ray]'") from exc
    _connect(ray, ray_cfg)
    remote = ray.remote(num_cpus=ray_cfg.cpus_per_worker, max_restarts=0)(_Worker)
    chunks = [list(specs[i:i + ray_cfg.chunk]) for i in range(0, len(specs), ray_cfg.chunk)]
    pending: list[tuple[list[EpisodeSpec], int]] = [(c, 0) for c in chunks]
    idle: list[Any] = []
    for _ in range(min(ray_cfg.workers, len(chunks))):
        actor = remote.remote(job, run_job)
        idle.append(actor)
        if on_start is not None:
            on_start(actor)
    in_flight: dict[Any, tuple[Any, list[EpisodeSpec], int]] = {}
    try:
        while pending or in_flight:
            while pending and idle:
                chunk, tries = pending.pop(0)
                actor = idle.pop()
                in_flight[actor.run.remote(chunk)] = (actor, chunk, tries)
            (ref,), _ = ray.wait(list(in_flight), num_returns=1)
            actor, chunk, tries = in_flight.pop(ref)
            try:
                rows = ray.get(ref)
            except (RayActorError, WorkerCrashedError) as exc:
                if tries + 1 > ray_cfg.max_retries:
                    raise RuntimeError(f"episodes {[s.index for s in chunk]} lost {tries + 1} Ray workers") from exc
                print(f"ray: worker lost ({type(exc).__name__}); rescheduling episodes {[s.index for s in chunk]}",
                      file=sys.stderr)
                pending.insert(0, (chunk, tries + 1))
                actor = remote.remote(job, run_job)
                if on_start is not None:
                    on_start(actor)
            else:
                for row in rows:
                    write(EpisodeRecord.from_row(row))
            idle.append(actor)
    finally:
        for actor, _, _ in in_flight.values():
            ray.kill(actor)
        for actor in idle:
            ray.kill(actor)
