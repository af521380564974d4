"""Typed training settings (`train.*` on the command line; Hydra rejects a misspelt key)."""

from __future__ import annotations

from dataclasses import dataclass, field

AMP_MODES = ("auto", "bf16", "off")
SAMPLING = ("window", "episode", "tbptt", "group")


@dataclass
class DaggerConfig:
    """DAgger (Ross et al., 2011): roll out the current policy (mixed with the expert with
    probability beta), label every visited state with the expert's action, aggregate, retrain."""

    iterations: int = 0  # 0: plain behaviour cloning
    episodes: int = 20  # rollout episodes per iteration
    steps: int = 200  # training steps after each aggregation
    beta: float = 1.0  # expert mixing probability in iteration 0 (beta_i = beta * decay**i)
    beta_decay: float = 0.5
    num_envs: int = 2


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 8  # global batch (windows), split evenly over torchrun ranks
    window: int = 64  # steps per training window
    burn_in: int = 0  # leading steps of a window whose loss is masked (the memory warms up on them)
    # window: windows start anywhere; episode: whole episodes (window unused); tbptt: truncated BPTT,
    # each batch row walks its episodes window after window and the state carries over (detached);
    # group: MemoryVLA-style, `window` frames of one episode in time order with their real timesteps,
    # ending at any frame, the earlier ones drawn from the `group_span` frames before it (0: its whole past)
    sampling: str = "window"
    group_span: int = 0
    # "key:value[,key:value]": no loss on steps whose observation `key` equals the value: steps where
    # the env ignores the agent's action (ObjectRecall's guided tour: phase:0), no decision to imitate.
    skip_loss_when: str = ""
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio at the last step
    grad_clip: float = 1.0  # max gradient norm; 0 disables clipping
    ema: float = 0.0  # EMA decay of the weights (e.g. 0.999); 0 disables; the checkpoint then holds the EMA
    amp: str = "auto"  # auto: bf16 autocast on CUDA devices that support it; bf16; off
    device: str = "auto"  # auto: cuda (this rank's local GPU) when available, else cpu
    num_workers: int = 0  # DataLoader worker processes (decoding, tokenisation, normalisation)
    seed: int = 0  # data order and any randomness in the loss
    log_every: int = 10
    save_every: int = 500  # a checkpoint every N steps (and always at the end)
    eval_every: int = 0  # roll the policy out every N steps (0: never); needs an env
    eval_episodes: int = 10
    eval_num_envs: int = 1
    resume: bool = False  # continue from output_dir/checkpoints/last
    tensorboard: bool = True
    wandb_project: str | None = None  # log to Weights & Biases too (when installed)
    dagger: DaggerConfig = field(default_factory=DaggerConfig)

    def skip_loss(self) -> dict[str, int]:
        """`skip_loss_when` parsed: {observation key: value}."""
        out: dict[str, int] = {}
        for item in filter(None, (p.strip() for p in self.skip_loss_when.split(","))):
            key, sep, value = item.partition(":")
            if not sep or not key.strip() or not value.strip().lstrip("-").isdigit():
                raise ValueError(f"train.skip_loss_when: expected 'key:int[,key:int]', got '{self.skip_loss_when}'")
            out[key.strip()] = int(value)
        return out

    def validate(self) -> None:
        self.skip_loss()
        if self.amp not in AMP_MODES:
            raise ValueError(f"train.amp must be one of {list(AMP_MODES)}, got '{self.amp}'")
        if self.sampling not in SAMPLING:
            raise ValueError(f"train.sampling must be one of {list(SAMPLING)}, got '{self.sampling}'")
        for name in ("steps", "batch_size", "window"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.group_span < 0:
            raise ValueError(f"train.group_span must be >= 0 (0: the whole past), got {self.group_span}")
        if self.group_span and self.group_span < self.window - 1:
            raise ValueError(f"train.group_span must be 0 or >= train.window - 1 = {self.window - 1} (a group's "
                             f"earlier frames are drawn from it), got {self.group_span}")
        if self.sampling == "group" and self.burn_in:
            raise ValueError("train.burn_in applies to windows; with train.sampling=group it must be 0")
        if not 0 <= self.burn_in < self.window:
            raise ValueError(f"train.burn_in must be in [0, train.window={self.window}), got {self.burn_in}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"train.ema must be in [0, 1), got {self.ema}")
        if self.save_every < 1 or self.log_every < 1:
            raise ValueError("train.save_every and train.log_every must be >= 1")
