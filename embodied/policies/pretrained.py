"""Learning policies: a config dataclass + a torch model + its processor.

A checkpoint is a directory (LeRobot's `pretrained_model/` layout) with `config.json` (the
config, including the observation spec and the instruction vocabulary), `model.safetensors`
(the weights only) and the processor's `policy_preprocessor.json` /
`policy_preprocessor.safetensors` (normalisation statistics). Nothing is pickled, and no
rollout state is saved: memories, recurrent state and caches live in an explicit
`TensorState` (`embodied.memory.state`) that the policy owns for rollouts and that training
windows start empty.

The two halves of the contract:

* **training**: `forward(batch)` on a tensor batch (what `PolicyProcessor` and the dataset's
  collate produce) returns `{"loss": ...}`, so `DistributedDataParallel` wraps the policy as it is.
  `batch = {"obs": {key: [B, T, ...]}, "action": [B, T, ...], "loss_mask": [B, T] bool,
  "episode_start": [B, T] bool}`; a window may start anywhere in an episode and hold the start
  of the next (`episode_start`), and its loss is counted where `loss_mask` is True (padding
  and burn-in excluded).
* **acting**: `reset(mask)`, `on_envs_pause(idx)`, `act(obs)` (the `Policy` protocol), on the
  rollout state.

    policy = embodied.policies.make("gru", observation_space=..., action_space=..., texts=instructions)
    policy.save_pretrained("outputs/ckpt")
    same = embodied.policies.from_pretrained("outputs/ckpt")
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from embodied.memory.state import TensorState
from embodied.policies.encoders import KeySpec, ObservationEncoder, WordTokenizer, observation_spec
from embodied.policies.processor import CheckpointError, PolicyProcessor, atomic_write
from embodied.policies.traces import TraceSink

CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"


@dataclasses.dataclass
class PolicyConfig:
    obs_spec: dict[str, KeySpec]
    n_actions: int = 0  # > 0: a discrete action space
    action_dim: int = 0  # > 0: a continuous Box(-1, 1) action space
    dim: int = 128
    vocab: list[str] = dataclasses.field(default_factory=lambda: ["<pad>", "<unk>"])
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PolicyConfig:
        data = dict(data)
        data["obs_spec"] = {k: KeySpec(**v) for k, v in data["obs_spec"].items()}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown config keys {unknown}; accepted: {sorted(known)}")
        return cls(**data)


class PretrainedPolicy(nn.Module):
    """Base of the learning policies.

    Subclasses set `name` and `config_class` and implement
    `forward_step(feats, state)` (one rollout step for [N, dim] features, updating `state` in
    place) and `forward_window(feats, episode_start, state)` (a [B, T, dim] window); stateful
    ones also implement `initial_state(batch_size)`. Policies whose training objective is not
    the action loss on those outputs (diffusion heads, say) override `forward(batch)`.
    """

    name: ClassVar[str]
    config_class: ClassVar[type[PolicyConfig]] = PolicyConfig
    processor: PolicyProcessor | None = None  # None only for policies without learned inputs (map_agent)
    # Set only inside `embodied.policies.traces.tracing` (a plain attribute, never module state).
    trace_sink: TraceSink | None = None

    def __init__(self, config: PolicyConfig) -> None:
        super().__init__()
        if (config.n_actions > 0) == (config.action_dim > 0):
            raise ValueError("a policy config needs exactly one of n_actions (discrete) or action_dim (continuous)")
        self.config = config
        self.tokenizer = WordTokenizer(config.vocab)
        self.processor = PolicyProcessor(config.obs_spec, self.tokenizer)
        self.encoder = ObservationEncoder(config.obs_spec, config.dim, vocab_size=len(config.vocab))
        self.rollout_state: TensorState | None = None  # a plain attribute: never a buffer, never saved
        self._rows = 0  # rows (active environments) of the rollout; act() before reset() is an error

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, config: PolicyConfig) -> PretrainedPolicy:
        """Build from a config with weights initialised from `config.seed`, leaving torch's global
        RNG as it was (building a policy must not change what the caller draws next)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            return cls(config)

    @classmethod
    def build(
        cls,
        observation_space: gym.spaces.Dict,
        action_space: gym.Space,
        texts: Iterable[str] = (),
        obs_keys: Sequence[str] | None = None,
        **options: Any,
    ) -> PretrainedPolicy:
        """Build from an environment's spaces; `texts` (e.g. the dataset's instructions)
        make the word vocabulary."""
        if isinstance(action_space, gym.spaces.Discrete):
            actions = {"n_actions": int(action_space.n)}
        elif isinstance(action_space, gym.spaces.Box):
            actions = {"action_dim": int(np.prod(action_space.shape))}
        else:
            raise TypeError(f"unsupported action space {action_space}")
        vocab = WordTokenizer.build(texts).vocab
        derived = {"obs_spec", "n_actions", "action_dim", "vocab"}  # from the spaces and texts
        known = {f.name for f in dataclasses.fields(cls.config_class)} - derived
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"policy '{cls.name}': unknown option(s) {unknown}; accepted options: {sorted(known)}")
        config = cls.config_class(obs_spec=observation_spec(observation_space, obs_keys), vocab=vocab, **actions,
                                  **options)
        return cls.create(config)

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write config.json, model.safetensors and the processor files, each atomically
        (a crash leaves the old file, never a half-written one)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {"type": self.name, **self.config.to_dict()}
        atomic_write(directory / CONFIG_NAME, lambda p: p.write_text(json.dumps(config, indent=2)))
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        atomic_write(directory / WEIGHTS_NAME, lambda p: save_file(state, str(p)))
        if self.processor is not None:
            self.processor.save(directory)
        return directory

    @classmethod
    def from_config_dir(cls, directory: Path, config: dict[str, Any]) -> PretrainedPolicy:
        """Rebuild from a checkpoint directory; any unreadable or mismatching file is a
        `CheckpointError` that names it."""
        try:
            policy_config = cls.config_class.from_dict(config)
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{directory / CONFIG_NAME}: does not describe a '{cls.name}' policy ({e})") from e
        policy = cls.create(policy_config)
        policy.load_state_dict(load_weights(directory / WEIGHTS_NAME, policy))
        if policy.processor is not None:
            policy.processor.load(directory)
        policy.eval()
        return policy

    # ------------------------------------------------------------------ data
    def set_normalization(self, stats: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """Vector-observation statistics {key: (mean, std)}, computed from the training data;
        keys that are not vector observations of this policy are ignored."""
        if self.processor is not None:
            self.processor.set_stats(stats)

    def device(self) -> torch.device:
        return next(self.parameters()).device

    def preprocess(self, obs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Raw observations -> tensors on the policy's device (the processor, then a copy)."""
        device = self.device()
        return {k: v.to(device, non_blocking=True) for k, v in self.processor(obs).items()}

    def encode(self, obs: dict[str, Any]) -> torch.Tensor:
        """[N, ...] raw observations -> [N, dim] features."""
        return self.encoder(self.preprocess(obs))

    def encode_tensors(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Preprocessed [B, T, ...] tensors -> [B, T, dim] features (one encoder pass over B*T)."""
        first = next(iter(obs[k] for k in self.config.obs_spec))
        b, t = first.shape[:2]
        device = self.device()
        flat = {k: obs[k].to(device, non_blocking=True).flatten(0, 1) for k in self.config.obs_spec}
        return self.encoder(flat).view(b, t, -1)

    def encode_window(self, obs: dict[str, Any]) -> torch.Tensor:
        """[B, T, ...] raw observations -> [B, T, dim] features."""
        return self.encode_tensors(self.processor({k: obs[k] for k in self.config.obs_spec}))

    # ------------------------------------------------------------------ heads
    def action_from_output(self, out: torch.Tensor) -> np.ndarray:
        if self.config.n_actions:
            return out.argmax(-1).cpu().numpy()
        return out.clamp(-1, 1).cpu().numpy()

    def action_loss(self, out: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mask = mask.float()
        if self.config.n_actions:
            per_step = nn.functional.cross_entropy(out.flatten(0, 1).float(), actions.long().flatten(),
                                                   reduction="none")
        else:
            per_step = ((out.float() - actions.float()) ** 2).mean(-1).flatten()
        return (per_step * mask.flatten()).sum() / mask.sum().clamp(min=1)

    # ------------------------------------------------------------------ rollout state
    def initial_state(self, batch_size: int) -> TensorState | None:
        """An empty rollout state of `batch_size` rows on the policy's device (None: stateless)."""
        return None

    def reset(self, mask: np.ndarray) -> None:
        mask_t = torch.as_tensor(np.asarray(mask, dtype=bool))
        state = self.rollout_state
        if state is None or state.batch_size != len(mask_t):
            self.rollout_state = self.initial_state(len(mask_t))
            self._rows = len(mask_t)
        else:
            state.reset(mask_t)

    def on_envs_pause(self, idx: Sequence[int]) -> None:
        drop = {int(i) for i in idx}
        keep = torch.tensor([i for i in range(self._rows) if i not in drop], dtype=torch.long)
        if self.rollout_state is not None:
            self.rollout_state.select(keep)
        self._rows = len(keep)

    def _checked_state(self, n: int) -> TensorState | None:
        if self._rows != n:
            raise RuntimeError(f"call reset(mask) with one entry per environment ({n}) before act()")
        return self.rollout_state

    def note_read(self, name: str, kind: str, trace: dict[str, Any],
                  facts: dict[str, float | int] | None = None) -> None:
        """Hand a memory read's trace to whoever asked for it (`act_with_trace`); a no-op otherwise."""
        if self.trace_sink is not None:
            self.trace_sink.add(name, kind, trace, facts)

    # ------------------------------------------------------------------ Policy protocol
    @torch.no_grad()
    def act(self, obs: dict[str, Any]) -> np.ndarray:
        feats = self.encode(obs)
        return self.action_from_output(self.forward_step(feats, self._checked_state(len(feats))))

    # ------------------------------------------------------------------ training
    def forward(self, batch: dict[str, Any], state: TensorState | None = None) -> dict[str, Any]:
        """Behaviour-cloning loss on a tensor batch (see the module docstring). The window starts
        from `state` (truncated BPTT: the previous window's final state, detached) or empty; the
        returned `state` is where the window ended."""
        feats = self.encode_tensors(batch["obs"])
        device = feats.device
        start = batch["episode_start"].to(device)
        state = state if state is not None else self.initial_state(feats.shape[0])
        out = self.forward_window(feats, start, state)
        loss = self.action_loss(out, batch["action"].to(device), batch["loss_mask"].to(device))
        return {"loss": loss, "state": state}

    def loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """`forward` on raw numpy windows ({"obs", "actions", "mask"} from
        `embodied.data.episode_windows`, each window starting an episode): a convenience for
        scripts and tests."""
        return self(windows_to_batch(batch, self.processor))["loss"]

    def forward_step(self, feats: torch.Tensor, state: TensorState | None) -> torch.Tensor:
        raise NotImplementedError

    def forward_window(self, feats: torch.Tensor, episode_start: torch.Tensor | None = None,
                       state: TensorState | None = None) -> torch.Tensor:
        raise NotImplementedError


def windows_to_batch(windows: dict[str, Any], processor: PolicyProcessor) -> dict[str, Any]:
    """Numpy episode windows -> the tensor batch `forward` takes (every window starts an episode)."""
    obs = windows["obs"]
    mask = torch.as_tensor(np.asarray(windows["mask"] if "mask" in windows else windows["loss_mask"], dtype=bool))
    actions = windows["actions"] if "actions" in windows else windows["action"]
    start = torch.zeros_like(mask)
    start[:, 0] = True
    return {"obs": processor({k: obs[k] for k in processor.spec}), "action": torch.as_tensor(np.asarray(actions)),
            "loss_mask": mask, "episode_start": start}


def load_weights(path: Path, model: nn.Module) -> dict[str, torch.Tensor]:
    """Read a safetensors weight file and check it against `model`, naming the file on any error."""
    if not path.exists():
        raise CheckpointError(f"{path}: missing (the policy weights)")
    try:
        state = load_file(str(path))
    except Exception as e:  # safetensors raises several types for truncated or garbage files
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit this policy; missing {missing[:8]}, unexpected "
                              f"{unexpected[:8]}")
    wrong = [f"{k}: {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if tuple(state[k].shape) != tuple(v.shape)]
    if wrong:
        raise CheckpointError(f"{path}: tensor shapes do not fit the config: {wrong[:8]}")
    return state
