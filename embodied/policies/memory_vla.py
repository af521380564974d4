"""`memory_vla`: a MemoryVLA-style policy (Shi et al., arXiv 2508.19236) at toolkit scale.

Per environment step:

1. **Perceptual tokens.** Each camera goes through a small strided CNN; its feature map is pooled to a
   `grid x grid` patch grid and compressed by an SE-gated 1x1 bottleneck (MemoryVLA's `BottleneckSE`
   at toy width), giving `grid**2` tokens per camera; proprioception (vector keys) adds one token.
2. **Cognitive token.** A `transformers` causal LM (a tiny randomly initialised Llama by default, or any
   local checkpoint via `backbone=<path>`) reads `[bos; instruction tokens; projected perceptual tokens]`;
   its last hidden state at the last position is the cognitive token (MemoryVLA takes the LLM's last
   hidden state at the final position).
3. **Memory.** The `pcmb` bank (`embodied.memory.pcmb`) retrieves from past perceptual and cognitive
   entries, gate-fuses them with the current ones and writes the current step. Writes happen on **every
   environment step**, also while the policy is replaying a queued action chunk: a chunk-strided write
   (LeRobot's pitfall) would leave holes in the bank that training never showed.
4. **Action expert.** A small DiT (`embodied.policies.diffusion`) conditioned on the fused cognitive token
   and cross-attending to the fused perceptual tokens denoises an action chunk of H steps with a few DDIM
   steps. The initial noise of a chunk is drawn from a generator seeded by `(sample_seed, episode step)`,
   so actions are reproducible and a row's actions never depend on the other rows.

`act` keeps one action-chunk queue per row and pops one action per step; `reset(mask)` clears the rows'
queues, step counters and memory rows; `on_envs_pause` drops them. `loss(batch)` is the diffusion
loss (MSE on the clean chunk by default, `prediction="sample"`; or on the noise / velocity) on the
action chunks (normalised to [-1, 1] with `set_action_stats`) that start at every unmasked step of the
windows; the bank is scanned over the window from an empty state, exactly as in a rollout. Not reproduced: classifier-
free guidance (the paper drops the cognitive token with p = 0.1 and samples with CFG 1.5).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from embodied.memory.base import Memory
from embodied.memory.pcmb import PCMB
from embodied.policies.diffusion import DDIM, ActionDiT
from embodied.policies.encoders import PAD, KeySpec, ObservationEncoder, WordTokenizer
from embodied.policies.pretrained import PolicyConfig, PretrainedPolicy

# ---------------------------------------------------------------------------------------------- shared parts


class LanguageBackbone(nn.Module):
    """A `transformers` causal LM used as a sequence model over `[bos; text; extra tokens]`.

    `path=None` builds a tiny Llama from a config (random weights; nothing is downloaded) with the
    policy's word vocabulary; a local path loads any causal LM and its tokenizer with
    `local_files_only=True`. Only the decoder stack is kept (the LM head is not needed: the policies read
    hidden states), which also avoids tied weights that safetensors refuses to save.
    """

    def __init__(self, vocab: list[str], hidden: int, layers: int, heads: int, max_text_tokens: int,
                 path: str | None = None) -> None:
        super().__init__()
        from transformers import AutoModelForCausalLM, LlamaConfig

        self.max_text_tokens = max_text_tokens
        self.hf_tokenizer: Any = None
        self.word_tokenizer: WordTokenizer | None = None
        if path:
            from transformers import AutoTokenizer

            lm = AutoModelForCausalLM.from_pretrained(path, local_files_only=True).float()
            self.hf_tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            if self.hf_tokenizer.pad_token_id is None:
                self.hf_tokenizer.pad_token = self.hf_tokenizer.eos_token or self.hf_tokenizer.unk_token
        else:
            config = LlamaConfig(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=2 * hidden,
                                 num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                                 max_position_embeddings=512, tie_word_embeddings=False, pad_token_id=PAD,
                                 bos_token_id=None, eos_token_id=None)
            lm = AutoModelForCausalLM.from_config(config)
            self.word_tokenizer = WordTokenizer(vocab)
        self.lm = lm.base_model
        self.hidden = int(self.lm.config.hidden_size)
        # A learned first token: every row then has a valid first position, whatever the padding.
        self.bos = nn.Parameter(torch.randn(self.hidden) * 0.02)

    def tokenize(self, texts: Sequence[str], device: torch.device) -> tuple[Tensor, Tensor]:
        """Texts -> ids [B, L] and a validity mask [B, L]."""
        texts = [str(t) for t in texts]
        if self.hf_tokenizer is not None:
            enc = self.hf_tokenizer(texts, padding="max_length", truncation=True, max_length=self.max_text_tokens,
                                    return_tensors="pt", add_special_tokens=False)
            return enc["input_ids"].to(device), enc["attention_mask"].bool().to(device)
        assert self.word_tokenizer is not None
        ids = self.word_tokenizer.encode(texts, self.max_text_tokens).to(device)
        return ids, ids != PAD

    def forward(self, ids: Tensor, text_mask: Tensor, extra: Tensor) -> Tensor:
        """ids/text_mask [B, L], extra [B, K, hidden] -> hidden states of the extra tokens [B, K, hidden].

        Padding may sit in the middle of the sequence; position ids count valid tokens only, so a
        padded instruction gives the same result as an unpadded one.
        """
        b = len(extra)
        emb = self.lm.get_input_embeddings()(ids)
        seq = torch.cat([self.bos.expand(b, 1, -1), emb, extra], dim=1)
        ones = torch.ones(b, 1, dtype=torch.bool, device=extra.device)
        mask = torch.cat([ones, text_mask, ones.expand(b, extra.shape[1])], dim=1)
        pos = (mask.long().cumsum(1) - 1).clamp(min=0)
        out = self.lm(inputs_embeds=seq, attention_mask=mask.long(), position_ids=pos, use_cache=False)
        return out.last_hidden_state[:, -extra.shape[1]:]


def vector_encoder(spec: dict[str, KeySpec], dim: int) -> ObservationEncoder | None:
    """One token from the vector/discrete observations (proprioception, GPS...), or None without any.

    It keeps `ObservationEncoder`'s normalisation buffers, so `set_normalization` works unchanged."""
    sub = {k: s for k, s in spec.items() if s.kind in ("vector", "discrete")}
    return ObservationEncoder(sub, dim) if sub else None


def text_key(spec: dict[str, KeySpec]) -> str | None:
    return next((k for k, s in spec.items() if s.kind == "text"), None)


@contextlib.contextmanager
def scratch_memory(mem: Memory, batch: int) -> Iterator[None]:
    """Run a training window on an empty memory of `batch` rows and give the rollout state back after:
    `loss` may be called between `act` calls (online fine-tuning) without clobbering the episode state."""
    saved = mem.memory_state()
    mem.resize(batch)
    try:
        yield
    finally:
        mem.load_state_dict(saved, strict=False)


def keep_rows(n: int, idx: Sequence[int]) -> list[int]:
    drop = {int(i) for i in idx}
    return [i for i in range(n) if i not in drop]


# ---------------------------------------------------------------------------------------------- MemoryVLA


@dataclasses.dataclass
class MemoryVLAConfig(PolicyConfig):
    dim: int = 64  # perceptual token width (D)
    backbone: str | None = None  # local path of a HF causal LM; None: a tiny random Llama
    lm_hidden: int = 64
    lm_layers: int = 2
    lm_heads: int = 4
    max_text_tokens: int = 32
    grid: int = 2  # perceptual tokens per camera = grid * grid
    chunk: int = 4  # H: actions per chunk (all are executed before the next chunk is sampled)
    dit_layers: int = 2
    dit_heads: int = 4
    train_steps: int = 100
    sample_steps: int = 10
    prediction: str = "sample"  # what the DiT regresses: "sample" (x0), "epsilon" or "v_prediction"
    diffusion_repeats: int = 4  # each chunk is trained under this many noise levels per batch
    capacity: int = 16  # L
    retrieval_layers: int = 2
    memory_heads: int = 1
    consolidation: str = "merge"
    fusion: str = "gate"
    sample_seed: int = 0


class SEBottleneck(nn.Module):
    """1x1 conv -> ReLU -> squeeze-excitation gate -> 1x1 conv (MemoryVLA's compression, small)."""

    def __init__(self, dim: int, reduction: int = 4) -> None:
        super().__init__()
        self.inp = nn.Conv2d(dim, dim, 1)
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dim, max(dim // reduction, 4), 1), nn.ReLU(),
                                nn.Conv2d(max(dim // reduction, 4), dim, 1), nn.Sigmoid())
        self.out = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.inp(x))
        return self.out(x * self.se(x))


class PerceptualTokens(nn.Module):
    """Image [B, H, W, C] -> `grid**2` perceptual tokens [B, grid**2, dim]."""

    def __init__(self, channels: int, dim: int, grid: int, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.cnn = nn.Sequential(
            nn.Conv2d(channels, 32, 5, stride=2, padding=2), nn.GELU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(64, dim, 3, stride=2, padding=1), nn.GELU(),
            nn.AdaptiveAvgPool2d(grid),
        )
        self.compress = SEBottleneck(dim)
        self.pos = nn.Parameter(torch.randn(grid * grid, dim) * 0.02)

    def forward(self, image: Tensor) -> Tensor:
        x = self.compress(self.cnn(image.float().movedim(-1, 1) / self.scale))
        return x.flatten(2).transpose(1, 2) + self.pos


class MemoryVLAPolicy(PretrainedPolicy):
    """MemoryVLA-style policy for continuous (Box(-1, 1)) action spaces; see the module docstring."""

    name = "memory_vla"
    config_class = MemoryVLAConfig
    config: MemoryVLAConfig

    def __init__(self, config: MemoryVLAConfig) -> None:
        super().__init__(config)
        if not config.action_dim:
            raise ValueError("memory_vla predicts continuous action chunks: it needs a Box action space")
        spec = config.obs_spec
        self.image_keys = [k for k, s in spec.items() if s.kind == "image"]
        self.text_key = text_key(spec)
        self.vision = nn.ModuleDict({k: PerceptualTokens(spec[k].shape[-1], config.dim, config.grid, spec[k].scale)
                                     for k in self.image_keys})
        self.encoder = vector_encoder(spec, config.dim)  # replaces the base class's pooled encoder
        self.n_tokens = len(self.image_keys) * config.grid**2 + (self.encoder is not None)
        if self.n_tokens == 0:
            raise ValueError("memory_vla needs at least one image or vector observation")
        self.backbone = LanguageBackbone(config.vocab, config.lm_hidden, config.lm_layers, config.lm_heads,
                                         config.max_text_tokens, config.backbone)
        hidden = self.backbone.hidden
        self.to_lm = nn.Linear(config.dim, hidden)
        self.memory = PCMB(dim=config.dim, cog_dim=hidden, n_tokens=self.n_tokens, batch_size=1,
                           capacity=config.capacity, heads=config.memory_heads,
                           retrieval_layers=config.retrieval_layers, consolidation=config.consolidation,
                           fusion=config.fusion)
        self.dit = ActionDiT(config.action_dim, config.chunk, config.dim, hidden, config.dim,
                             config.dit_layers, config.dit_heads)
        self.ddim = DDIM(config.train_steps, config.sample_steps, config.prediction)
        # Action normalisation to [-1, 1] per dimension (LeRobot's MIN_MAX for actions); buffers, so they
        # are saved with the weights. The identity until `set_action_stats` is given the data's range.
        self.register_buffer("action_low", -torch.ones(config.action_dim))
        self.register_buffer("action_high", torch.ones(config.action_dim))
        # Rollout state, one row per active environment (not parameters, not saved).
        self.queue: Tensor | None = None  # [n, H, A] the current chunk
        self.queue_pos: Tensor | None = None  # [n] next action in the chunk (H: empty)
        self.steps: Tensor | None = None  # [n] episode step

    # ------------------------------------------------------------------ action normalisation
    def set_action_stats(self, low: np.ndarray, high: np.ndarray) -> None:
        """Per-dimension range of the training actions (e.g. `actions.min(0)`, `actions.max(0)`): the DiT
        then works on actions mapped to [-1, 1]; a constant dimension maps to 0 and back exactly."""
        low_t = torch.as_tensor(np.asarray(low, dtype=np.float32).reshape(-1), device=self.action_low.device)
        high_t = torch.as_tensor(np.asarray(high, dtype=np.float32).reshape(-1), device=self.action_low.device)
        shape = self.action_low.shape
        if low_t.shape != shape or high_t.shape != shape or bool((high_t < low_t).any()):
            raise ValueError(f"need low <= high, each of shape {tuple(self.action_low.shape)}")
        self.action_low.copy_(low_t)
        self.action_high.copy_(high_t)

    def _action_scale(self) -> tuple[Tensor, Tensor]:
        center = (self.action_high + self.action_low) / 2
        return center, (self.action_high - self.action_low) / 2

    def normalize_actions(self, actions: Tensor) -> Tensor:
        center, half = self._action_scale()
        return torch.where(half > 1e-6, (actions - center) / half.clamp(min=1e-6), torch.zeros_like(actions))

    def unnormalize_actions(self, actions: Tensor) -> Tensor:
        center, half = self._action_scale()
        return center + actions * half

    # ------------------------------------------------------------------ perception
    def _tensors(self, obs: dict[str, Any]) -> dict[str, Tensor]:
        spec = {k: s for k, s in self.config.obs_spec.items() if s.kind != "text"}
        return {k: v.to(self.device()) for k, v in self.processor(obs, list(spec)).items()}

    def perceive(self, obs: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """[M, ...] observations -> perceptual tokens [M, N, D] and cognitive token [M, Dc]."""
        x = self._tensors(obs)
        tokens = [self.vision[k](x[k]) for k in self.image_keys]
        if self.encoder is not None:
            tokens.append(self.encoder(x)[:, None])
        per = torch.cat(tokens, dim=1)
        m = len(per)
        if self.text_key is not None:
            ids, tmask = self.backbone.tokenize(list(obs[self.text_key]), per.device)
        else:
            ids = torch.zeros(m, 0, dtype=torch.long, device=per.device)
            tmask = torch.zeros(m, 0, dtype=torch.bool, device=per.device)
        cog = self.backbone(ids, tmask, self.to_lm(per))[:, -1]
        return per, cog

    def chunk_noise(self, step: int) -> Tensor:
        """The initial DDIM noise of a chunk sampled at episode step `step`: a pure function of
        (sample_seed, step), so actions repeat exactly and do not depend on other rows."""
        g = torch.Generator().manual_seed(self.config.sample_seed * 1_000_003 + step)
        return torch.randn(self.config.chunk, self.config.action_dim, generator=g)

    # ------------------------------------------------------------------ Policy protocol
    def reset(self, mask: np.ndarray) -> None:
        mask_t = torch.as_tensor(np.asarray(mask, dtype=bool), device=self.device())
        n = len(mask_t)
        if self.queue is None or len(self.queue) != n:
            self.queue = torch.zeros(n, self.config.chunk, self.config.action_dim, device=self.device())
            self.queue_pos = torch.full((n,), self.config.chunk, dtype=torch.long, device=self.device())
            self.steps = torch.zeros(n, dtype=torch.long, device=self.device())
            self.memory.resize(n)
            return
        assert self.queue_pos is not None and self.steps is not None
        self.queue_pos[mask_t] = self.config.chunk
        self.steps[mask_t] = 0
        self.queue[mask_t] = 0
        self.memory.reset(mask_t)

    def on_envs_pause(self, idx: Sequence[int]) -> None:
        if self.queue is None:
            return
        assert self.queue_pos is not None and self.steps is not None
        keep = torch.tensor(keep_rows(len(self.queue), idx), dtype=torch.long, device=self.device())
        self.queue, self.queue_pos, self.steps = self.queue[keep], self.queue_pos[keep], self.steps[keep]
        self.memory.prune(keep)

    @torch.no_grad()
    def act(self, obs: dict[str, Any]) -> np.ndarray:
        per, cog = self.perceive(obs)
        n = len(per)
        if self.queue is None or len(self.queue) != n or self.memory.batch_size != n:
            raise RuntimeError("call reset(mask) with one entry per environment before act()")
        assert self.queue_pos is not None and self.steps is not None
        fused_p, fused_c = self.memory.step(per, cog).output  # every step: no chunk-strided writes
        need = (self.queue_pos >= self.config.chunk).nonzero().flatten()
        if need.numel():
            noise = torch.stack([self.chunk_noise(int(self.steps[i])) for i in need]).to(per.device)
            fp, fc = fused_p[need], fused_c[need]
            chunk = self.ddim.sample(lambda x, k: self.dit(x, k, fc, fp), noise)
            self.queue[need] = self.unnormalize_actions(chunk)
            self.queue_pos[need] = 0
        action = self.queue[torch.arange(n, device=per.device), self.queue_pos]
        self.queue_pos += 1
        self.steps += 1
        return action.clamp(-1, 1).cpu().numpy()

    # ------------------------------------------------------------------ training
    def loss(self, batch: dict[str, Any]) -> Tensor:
        """Diffusion loss over every unmasked step of windows that start at an episode's first step.
        The action chunk at step t is actions[t : t+H]; positions past the episode end are masked
        (LeRobot's `action_is_pad`)."""
        obs = batch["obs"]
        first = next(iter(obs.values()))
        b, t = np.shape(first)[:2]
        flat = {k: np.asarray(v).reshape(b * t, *np.shape(v)[2:]) for k, v in obs.items()
                if k in self.config.obs_spec}
        per, cog = self.perceive(flat)
        per, cog = per.view(b, t, *per.shape[1:]), cog.view(b, t, -1)
        with scratch_memory(self.memory, b):
            fused_p, fused_c = self.memory.sequence(per, cog).output
        device = per.device
        actions = torch.as_tensor(np.asarray(batch["actions"]), dtype=torch.float32, device=device)
        mask = torch.as_tensor(np.asarray(batch["mask"]), dtype=torch.bool, device=device)
        h = self.config.chunk
        idx = torch.arange(t, device=device)[:, None] + torch.arange(h, device=device)[None]  # [T, H]
        inside = idx < t
        idx = idx.clamp(max=t - 1)
        chunks = self.normalize_actions(actions)[:, idx]  # [B, T, H, A] in [-1, 1]
        chunk_mask = mask[:, idx] & inside & mask[:, :, None]  # [B, T, H]
        sel = mask.flatten()
        x0 = chunks.flatten(0, 1)[sel]
        cm = chunk_mask.flatten(0, 1)[sel].float()
        fp, fc = fused_p.flatten(0, 1)[sel], fused_c.flatten(0, 1)[sel]
        r = self.config.diffusion_repeats
        x0, cm, fp, fc = x0.repeat(r, 1, 1), cm.repeat(r, 1), fp.repeat(r, 1, 1), fc.repeat(r, 1)
        k = torch.randint(0, self.config.train_steps, (len(x0),), device=device)
        noise = torch.randn_like(x0)
        pred = self.dit(self.ddim.add_noise(x0, noise, k), k, fc, fp)
        err = ((pred - self.ddim.target(x0, noise, k)) ** 2).mean(-1)
        return (err * cm).sum() / cm.sum().clamp(min=1)
