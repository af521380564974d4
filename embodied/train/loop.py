"""The training loop: behaviour cloning of a learning policy on a dataset, one process or torchrun.

Read top to bottom: set up (process group, dataset, policy, optimiser, schedule, EMA), resume
from the last checkpoint when asked, then per step: fetch the step's batch, forward under
autocast, backward (DDP all-reduces), clip, step, EMA; log, checkpoint, evaluate. SIGTERM
(preemption) finishes the step in flight, writes a checkpoint and exits.

Exact resume: the batch of step s is a pure function of (seed, s) (see `batches.py`), the
optimiser, scheduler and RNG states are restored, so the loss curve of a resumed run equals
the uninterrupted run's.

Distributed: every rank draws the same global batch of `batch_size` windows and trains on its
own slice; the loss is weighted by each rank's share of the global loss weight, so after
DDP's gradient average the update equals one process on the whole batch.
"""

from __future__ import annotations

import contextlib
import copy
import json
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from embodied.memory.state import TensorState
from embodied.policies import PretrainedPolicy
from embodied.train import checkpoint, distributed, optim
from embodied.train.config import TrainConfig

LOG_NAME = "train_log.jsonl"


@dataclass
class RunState:
    """What the loop hands to callbacks (periodic evaluation, DAgger)."""

    step: int
    policy: PretrainedPolicy
    ctx: distributed.Dist
    metrics: dict[str, float] = field(default_factory=dict)


BatchFn = Callable[[int, int, int], Iterator[dict[str, Any]]]  # (start_step, rank, world) -> batches


class _Preemption:
    """Turns SIGTERM into a flag the loop checks between steps (the step in flight completes)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> _Preemption:
        self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        signal.signal(signal.SIGTERM, self._previous)


def autocast(device: torch.device, mode: str) -> contextlib.AbstractContextManager:
    """bf16 autocast where asked (`bf16`) or where the device supports it (`auto`: CUDA with bf16)."""
    if mode == "off":
        return contextlib.nullcontext()
    if mode == "auto" and not (device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def train_policy(
    policy: PretrainedPolicy,
    batches: BatchFn,
    cfg: TrainConfig,
    output_dir: Path,
    run_config: dict[str, Any],
    ctx: distributed.Dist,
    on_step: Callable[[RunState], dict[str, float]] | None = None,
    total_steps: int | None = None,
    resume: bool | None = None,
    until: int | None = None,
) -> int:
    """Train `policy` up to step `until` (default: the schedule's end, `total_steps` or `cfg.steps`)
    and return the last step done. The learning-rate schedule spans `total_steps`.

    `resume` (default `cfg.resume`): continue from `output_dir/checkpoints/last` when there is one.
    `on_step(state)` runs on rank 0 after each step (periodic evaluation) and returns metrics to log.
    """
    cfg.validate()
    total = total_steps or cfg.steps
    output_dir = Path(output_dir)
    policy.to(ctx.device).train()
    # static_graph: heads the BC loss does not use (hcam_agent's value head) get no gradient, and the
    # set of used parameters is the same every step, so DDP learns it once on the first step instead of
    # walking the autograd graph every step (find_unused_parameters=True), and its buckets stay fixed
    # broadcast_buffers=False: no policy changes a buffer while training (constants such as HCAM's position
    # encoding, action statistics set before the run), so rank 0's copy need not be sent before every forward,
    # a collective on each step; `_check_replicas_agree` checks buffers as well as weights at the end
    model = DistributedDataParallel(policy, device_ids=[ctx.device] if ctx.device.type == "cuda" else None,
                                    static_graph=True, gradient_as_bucket_view=True,
                                    broadcast_buffers=False) if ctx.enabled else policy
    opt = optim.adamw(policy, cfg.lr, cfg.weight_decay)
    sched = optim.scheduler(opt, total, cfg.warmup_steps, cfg.min_lr_ratio)
    ema = copy.deepcopy(policy).eval().requires_grad_(False) if cfg.ema > 0 else None

    step = 0
    # truncated BPTT: the state where each row's last window ended, carried into its next window
    carry: TensorState | None = None
    last = checkpoint.latest(output_dir) if (cfg.resume if resume is None else resume) else None
    if last is not None:
        step = checkpoint.load(last, policy, opt, sched, ema)["step"]
        if cfg.sampling == "tbptt" and policy.initial_state(1) is not None:
            carry = checkpoint.load_carry(last, policy, ctx.rank)
        if ctx.is_main:
            print(f"resumed from {last} at step {step}")
    log = _Log(output_dir / LOG_NAME, step, total, cfg, ctx)

    end = total if until is None else min(until, total)
    stream = batches(step, ctx.rank, ctx.world_size)
    with _Preemption() as preempt:
        while step < end:
            t0 = time.perf_counter()
            batch = next(stream)
            t_data = time.perf_counter() - t0
            metrics, state, stop = _train_step(model, policy, batch, opt, sched, cfg, ctx, carry, preempt.requested)
            if cfg.sampling == "tbptt":
                carry = state.detach_() if state is not None else None
            if ema is not None:
                optim.ema_update(ema, policy, cfg.ema)
            step += 1
            metrics.update(data_s=t_data, step_s=time.perf_counter() - t0,
                           samples=float(_rows(batch)) * ctx.world_size)
            if on_step is not None and ctx.is_main:
                metrics.update(on_step(RunState(step, ema or policy, ctx, metrics)))
            log.step(step, metrics)
            if step % cfg.save_every == 0 or step == end or stop:
                _save(output_dir, step, policy, opt, sched, run_config, ema, ctx, carry)
            if stop:
                if ctx.is_main:
                    print(f"SIGTERM: checkpoint written at step {step}; exiting")
                log.close()
                raise SystemExit(143)
    log.close()
    _check_replicas_agree(policy, ctx)
    return step


def _check_replicas_agree(policy: PretrainedPolicy, ctx: distributed.Dist) -> None:
    """After the all-reduced updates every rank must hold the same weights and buffers; a mismatch means
    a rank trained on something else (a bug worth stopping for, not a silent divergence)."""
    if not ctx.enabled:
        return
    local = sum(float(t.detach().double().sum()) for t in [*policy.parameters(), *policy.buffers()]
                if t.dtype.is_floating_point)
    mean = ctx.all_sum(local) / ctx.world_size
    if ctx.any(abs(local - mean) > 1e-6 * max(1.0, abs(mean))):
        raise RuntimeError(f"rank {ctx.rank}: weights differ across ranks after training (checksum {local} vs "
                           f"mean {mean})")


def _train_step(model: torch.nn.Module, policy: PretrainedPolicy, batch: dict[str, Any],
                opt: torch.optim.Optimizer, sched: Any, cfg: TrainConfig, ctx: distributed.Dist,
                carry: TensorState | None, stop_requested: bool
                ) -> tuple[dict[str, float], TensorState | None, bool]:
    """One optimiser step on the global mean loss. Returns the metrics, the final rollout state
    (tbptt) and whether any rank was asked to stop (SIGTERM)."""
    with autocast(ctx.device, cfg.amp):
        out = model(batch, state=carry) if carry is not None else model(batch)
    loss = out["loss"]
    weight = float(out["weight"]) if "weight" in out else float(batch["loss_mask"].sum())
    opt.zero_grad(set_to_none=True)
    if ctx.enabled:
        # DDP averages gradients over ranks. Each rank backpropagates its loss *sum* (mean x weight);
        # rescaling the average by world_size / global weight then gives the gradient of the global
        # mean. The global weight, loss, frame count and stop flag travel in one all-reduce, after
        # backward: every collective is a point where each rank waits for the slowest.
        (loss * weight).backward()
        total_weight, loss_sum, frames, stops = ctx.all_sum_many(
            [weight, float(loss.detach()) * weight, _frames(batch), float(stop_requested)])
        scale = ctx.world_size / max(total_weight, 1e-12)
        for p in policy.parameters():
            if p.grad is not None:
                p.grad.mul_(scale)
        global_loss, stop = loss_sum / max(total_weight, 1e-12), stops > 0
    else:
        loss.backward()
        global_loss, frames, stop = float(loss.detach()), _frames(batch), stop_requested
    grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else
                                               float("inf"))
    opt.step()
    sched.step()
    metrics = {"loss": global_loss, "grad_norm": float(grad_norm), "lr": sched.get_last_lr()[0], "frames": frames}
    return metrics, out.get("state"), stop


def _rows(batch: dict[str, Any]) -> int:
    return int(batch["loss_mask"].shape[0])


def _frames(batch: dict[str, Any]) -> float:
    """Real (not padding) frames in the batch: padding has timestep -1."""
    return float((batch["timestep"] >= 0).sum()) if "timestep" in batch else float(batch["loss_mask"].numel())


def _save(output_dir: Path, step: int, policy: PretrainedPolicy, opt: torch.optim.Optimizer, sched: Any,
          run_config: dict[str, Any], ema: PretrainedPolicy | None, ctx: distributed.Dist,
          carry: TensorState | None) -> None:
    if ctx.is_main:  # only rank 0 writes; the others wait so no rank runs ahead of a checkpoint
        checkpoint.save(output_dir, step, policy, opt, sched, run_config, ema)
    ctx.barrier()
    if carry is not None:  # each rank's carried rows, after rank 0 has put the step directory in place
        checkpoint.save_carry(output_dir, step, carry, ctx.rank)
    ctx.barrier()


class _Log:
    """Rank 0's step log: `train_log.jsonl` (one JSON line per step), TensorBoard, W&B, a progress bar."""

    def __init__(self, path: Path, start: int, total: int, cfg: TrainConfig, ctx: distributed.Dist) -> None:
        self.enabled = ctx.is_main
        self.cfg, self.total = cfg, total
        self.window: list[dict[str, float]] = []
        if not self.enabled:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        _truncate_after(path, start)  # steps logged after the checkpoint we resume from are redone
        self.file = path.open("a")
        self.tb = _tensorboard(path.parent / "tensorboard", start) if cfg.tensorboard else None
        self.wandb = _wandb(cfg, path.parent) if cfg.wandb_project else None
        from tqdm import tqdm

        # A live bar on a terminal; in a log file (CI, SLURM) one line per `log_every` steps instead.
        self.interactive = sys.stderr.isatty()
        self.bar = tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True,
                        disable=not self.interactive)

    def step(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps({"step": step, **metrics}) + "\n")
        self.file.flush()
        self.window.append(metrics)
        self.bar.update(1)
        if step % self.cfg.log_every == 0 or step == self.total:
            n = len(self.window)
            mean = {k: sum(m.get(k, 0.0) for m in self.window) / n for k in metrics}
            step_s = sum(m["step_s"] for m in self.window)
            summary = {"loss": mean["loss"], "lr": mean["lr"], "grad_norm": mean["grad_norm"],
                       "samples_per_s": sum(m["samples"] for m in self.window) / max(step_s, 1e-9),
                       "data_fraction": sum(m["data_s"] for m in self.window) / max(step_s, 1e-9)}
            summary.update({k: v for k, v in metrics.items() if k.startswith("eval/")})
            self.bar.set_postfix(loss=f"{summary['loss']:.4f}", samples_s=f"{summary['samples_per_s']:.1f}")
            if not self.interactive:
                print(f"step {step}/{self.total}  " + "  ".join(f"{k} {v:.4g}" for k, v in summary.items()),
                      flush=True)
            if self.tb is not None:
                for k, v in summary.items():
                    self.tb.add_scalar(k if "/" in k else f"train/{k}", v, step)
            if self.wandb is not None:
                self.wandb.log(summary, step=step)
            self.window = []

    def close(self) -> None:
        if not self.enabled:
            return
        self.bar.close()
        self.file.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def _truncate_after(path: Path, step: int) -> None:
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in keep))
    tmp.replace(path)


def _tensorboard(log_dir: Path, start: int) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ImportError("train.tensorboard=true needs the tensorboard package: pip install tensorboard "
                          "(or set train.tensorboard=false)") from e

    return SummaryWriter(str(log_dir), purge_step=start or None)


def _wandb(cfg: TrainConfig, output_dir: Path) -> Any:
    try:
        import wandb
    except ImportError as e:
        raise ImportError("train.wandb_project is set but wandb is not installed: pip install wandb") from e
    return wandb.init(project=cfg.wandb_project, dir=str(output_dir), resume="allow")


def read_log(output_dir: Path) -> list[dict[str, float]]:
    """The per-step records of a run's `train_log.jsonl`."""
    path = Path(output_dir) / LOG_NAME
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
