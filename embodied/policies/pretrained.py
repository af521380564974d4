"""Learning policies: a config dataclass + a torch model + its pre/post-processing.

A checkpoint is a directory with `config.json` (the config, including the observation
spec and the instruction vocabulary) and `model.safetensors` (the weights and the
normalisation statistics, which are buffers). Nothing is pickled.

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

from embodied.policies.encoders import KeySpec, ObservationEncoder, WordTokenizer, observation_spec, to_tensors

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
    """Base of the learning policies. Subclasses set `name`, `config_class` and implement
    `forward_step` (one step, with state) and `forward_window` (a [B, T] window)."""

    name: ClassVar[str]
    config_class: ClassVar[type[PolicyConfig]] = PolicyConfig

    def __init__(self, config: PolicyConfig) -> None:
        super().__init__()
        if (config.n_actions > 0) == (config.action_dim > 0):
            raise ValueError("a policy config needs exactly one of n_actions (discrete) or action_dim (continuous)")
        torch.manual_seed(config.seed)
        self.config = config
        self.tokenizer = WordTokenizer(config.vocab)
        self.encoder = ObservationEncoder(config.obs_spec, config.dim, vocab_size=len(config.vocab))

    # ------------------------------------------------------------------ construction
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
        config = cls.config_class(obs_spec=observation_spec(observation_space, obs_keys), vocab=vocab, **actions,
                                  **options)
        return cls(config)

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write config.json and model.safetensors atomically (a crash leaves the old files)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {"type": self.name, **self.config.to_dict()}
        _atomic(directory / CONFIG_NAME, lambda p: p.write_text(json.dumps(config, indent=2)))
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        _atomic(directory / WEIGHTS_NAME, lambda p: save_file(state, str(p)))
        return directory

    @classmethod
    def from_config_dir(cls, directory: Path, config: dict[str, Any]) -> PretrainedPolicy:
        policy = cls(cls.config_class.from_dict(config))
        policy.load_state_dict(load_file(str(directory / WEIGHTS_NAME)))
        policy.eval()
        return policy

    # ------------------------------------------------------------------ data
    def set_normalization(self, stats: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """Vector-observation statistics {key: (mean, std)}, computed from the training data."""
        for key, (mean, std) in stats.items():
            if key in self.config.obs_spec and self.config.obs_spec[key].kind == "vector":
                self.encoder.set_stats(key, mean, std)

    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encode(self, obs: dict[str, Any]) -> torch.Tensor:
        """[N, ...] numpy observations -> [N, dim] features."""
        return self.encoder(to_tensors(obs, self.config.obs_spec, self.tokenizer, self.device()))

    def encode_window(self, obs: dict[str, Any]) -> torch.Tensor:
        """[B, T, ...] observations -> [B, T, dim] features."""
        first = next(iter(obs.values()))
        b, t = np.shape(first)[:2]
        flat = {k: np.asarray(v).reshape(b * t, *np.shape(v)[2:]) for k, v in obs.items() if k in self.config.obs_spec}
        return self.encode(flat).view(b, t, -1)

    # ------------------------------------------------------------------ heads
    def action_from_output(self, out: torch.Tensor) -> np.ndarray:
        if self.config.n_actions:
            return out.argmax(-1).cpu().numpy()
        return out.clamp(-1, 1).cpu().numpy()

    def action_loss(self, out: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mask = mask.float()
        if self.config.n_actions:
            per_step = nn.functional.cross_entropy(out.flatten(0, 1), actions.long().flatten(), reduction="none")
        else:
            per_step = ((out - actions.float()) ** 2).mean(-1).flatten()
        return (per_step * mask.flatten()).sum() / mask.sum().clamp(min=1)

    # ------------------------------------------------------------------ Policy protocol
    def reset(self, mask: np.ndarray) -> None:
        raise NotImplementedError

    def on_envs_pause(self, idx: Sequence[int]) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def act(self, obs: dict[str, Any]) -> np.ndarray:
        return self.action_from_output(self.forward_step(self.encode(obs)))

    def loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """Behaviour-cloning loss on episode windows: batch = {"obs": {k: [B, T, ...]},
        "actions": [B, T, ...], "mask": [B, T]}; each window starts at an episode's start."""
        feats = self.encode_window(batch["obs"])
        out = self.forward_window(feats)
        device = feats.device
        return self.action_loss(out, torch.as_tensor(np.asarray(batch["actions"])).to(device),
                                torch.as_tensor(np.asarray(batch["mask"])).to(device))

    def forward_step(self, feats: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_window(self, feats: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)
