"""Training checkpoints in LeRobot's layout, written atomically, read with clear errors.

    <output_dir>/checkpoints/
        000500/
            pretrained_model/      config.json, model.safetensors, policy_preprocessor.*,
                                   train_config.json (the resolved run config)
            training_state/        optimizer_state.safetensors, optimizer_param_groups.json,
                                   scheduler_state.json, rng_state.safetensors,
                                   training_step.json, weights.safetensors (raw weights when
                                   pretrained_model holds the EMA)
        last -> 000500             (a relative symlink, replaced atomically)

A step directory is written under a temporary name and renamed into place, so a crash or a
SIGTERM mid-write leaves the previous checkpoint as `last`. Nothing is pickled: tensors go to
safetensors, everything else to JSON.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from embodied.policies import CheckpointError, PretrainedPolicy
from embodied.policies.pretrained import load_weights

CHECKPOINTS, LAST = "checkpoints", "last"
PRETRAINED, TRAINING_STATE = "pretrained_model", "training_state"


def step_name(step: int) -> str:
    return f"{step:06d}"


def save(
    output_dir: Path,
    step: int,
    policy: PretrainedPolicy,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    run_config: dict[str, Any],
    ema: PretrainedPolicy | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write checkpoint `step` (the EMA weights, when given, as the pretrained model) and point
    `last` at it. Returns the step directory."""
    root = Path(output_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_name(step)
    tmp = root / f".{step_name(step)}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model_dir = (ema or policy).save_pretrained(tmp / PRETRAINED)
    (model_dir / "train_config.json").write_text(json.dumps(run_config, indent=2, default=str))
    state_dir = tmp / TRAINING_STATE
    state_dir.mkdir(parents=True)
    _save_optimizer(state_dir, optimizer)
    (state_dir / "scheduler_state.json").write_text(json.dumps(scheduler.state_dict()))
    save_file(_rng_state(), str(state_dir / "rng_state.safetensors"))
    if ema is not None:
        save_file({k: v.detach().contiguous().cpu() for k, v in policy.state_dict().items()},
                  str(state_dir / "weights.safetensors"))
    (state_dir / "training_step.json").write_text(json.dumps({"step": step, **(extra or {})}))
    shutil.rmtree(final, ignore_errors=True)  # a re-run of the same step replaces it
    os.replace(tmp, final)
    link_tmp = root / f".{LAST}.tmp"
    if link_tmp.is_symlink() or link_tmp.exists():
        link_tmp.unlink()
    link_tmp.symlink_to(final.name)
    os.replace(link_tmp, root / LAST)
    return final


def save_carry(output_dir: Path, step: int, carry: Any, rank: int) -> None:
    """Truncated BPTT's carried state of one rank (`carry_rank<r>.safetensors`): rollout-style
    state, kept with the training state (never in the model) so a resume continues every lane."""
    state_dir = Path(output_dir) / CHECKPOINTS / step_name(step) / TRAINING_STATE
    tensors = {k: v.detach().contiguous().cpu() for k, v in carry.tensors().items()}
    tmp = state_dir / f".carry_rank{rank}.tmp"
    save_file(tensors, str(tmp))
    os.replace(tmp, state_dir / f"carry_rank{rank}.safetensors")


def load_carry(step_dir: Path, policy: PretrainedPolicy, rank: int) -> Any:
    """The carried state saved by `save_carry`, rebuilt on the policy's own state layout."""
    path = Path(step_dir) / TRAINING_STATE / f"carry_rank{rank}.safetensors"
    tensors = _read_safetensors(path)
    rows = {int(t.shape[0]) for t in tensors.values()}
    if len(rows) != 1:
        raise CheckpointError(f"{path}: tensors disagree on the number of rows ({sorted(rows)})")
    state = policy.initial_state(rows.pop())
    if state is None or set(state.tensors()) != set(tensors):
        raise CheckpointError(f"{path}: holds {sorted(tensors)}, the policy's state has "
                              f"{sorted(state.tensors()) if state is not None else 'none'}")
    for name, value in tensors.items():
        *parents, leaf = name.split(".")
        target = state
        for p in parents:
            target = getattr(target, p)
        setattr(target, leaf, value.to(getattr(target, leaf).device))
    return state


def latest(output_dir: Path) -> Path | None:
    """The newest checkpoint's step directory, or None when the run has none."""
    link = Path(output_dir) / CHECKPOINTS / LAST
    if not link.exists():
        return None
    return link.resolve()


def load(
    step_dir: Path,
    policy: PretrainedPolicy,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    ema: PretrainedPolicy | None = None,
) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and RNG from `step_dir`; returns training_step.json."""
    state_dir = step_dir / TRAINING_STATE
    raw = state_dir / "weights.safetensors"
    weights_path = raw if raw.exists() else step_dir / PRETRAINED / "model.safetensors"
    policy.load_state_dict(load_weights(weights_path, policy))
    if policy.processor is not None:
        policy.processor.load(step_dir / PRETRAINED)
    if ema is not None:
        ema.load_state_dict(load_weights(step_dir / PRETRAINED / "model.safetensors", ema))
    _load_optimizer(state_dir, optimizer)
    scheduler.load_state_dict(_read_json(state_dir / "scheduler_state.json"))
    _set_rng_state(_read_safetensors(state_dir / "rng_state.safetensors"))
    info = _read_json(state_dir / "training_step.json")
    if not isinstance(info.get("step"), int):
        raise CheckpointError(f"{state_dir / 'training_step.json'}: no integer 'step'")
    return info


# ---------------------------------------------------------------------- optimizer
def _save_optimizer(state_dir: Path, optimizer: torch.optim.Optimizer) -> None:
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for idx, state in sd["state"].items():
        for name, value in state.items():
            key = f"{idx}.{name}"
            if isinstance(value, torch.Tensor):
                tensors[key] = value.detach().contiguous().cpu()
            else:
                scalars[key] = value
    save_file(tensors, str(state_dir / "optimizer_state.safetensors"))
    groups = {"param_groups": sd["param_groups"], "scalars": scalars}
    (state_dir / "optimizer_param_groups.json").write_text(json.dumps(groups))


def _load_optimizer(state_dir: Path, optimizer: torch.optim.Optimizer) -> None:
    tensors = _read_safetensors(state_dir / "optimizer_state.safetensors")
    groups = _read_json(state_dir / "optimizer_param_groups.json")
    state: dict[int, dict[str, Any]] = {}
    for key, value in {**tensors, **groups.get("scalars", {})}.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    expected = sum(len(g["params"]) for g in optimizer.state_dict()["param_groups"])
    saved = sum(len(g["params"]) for g in groups["param_groups"])
    if expected != saved:
        raise CheckpointError(f"{state_dir / 'optimizer_param_groups.json'}: {saved} parameters, the policy has "
                              f"{expected} (a checkpoint of another architecture?)")
    optimizer.load_state_dict({"state": state, "param_groups": groups["param_groups"]})


# ---------------------------------------------------------------------- RNG
def _rng_state() -> dict[str, torch.Tensor]:
    out = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"cuda.{i}"] = s
    return out


def _set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["torch"])
    cuda = [state[k] for k in sorted(state) if k.startswith("cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])


# ---------------------------------------------------------------------- readers with named errors
def _read_json(path: Path) -> Any:
    if not path.exists():
        raise CheckpointError(f"{path}: missing (an incomplete checkpoint?)")
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise CheckpointError(f"{path}: missing (an incomplete checkpoint?)")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises several types for truncated or garbage files
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e


def read_step(step_dir: Path) -> int:
    """The step a checkpoint was written at."""
    info = _read_json(Path(step_dir) / TRAINING_STATE / "training_step.json")
    if not isinstance(info.get("step"), int):
        raise CheckpointError(f"{step_dir / TRAINING_STATE / 'training_step.json'}: no integer 'step'")
    return info["step"]
