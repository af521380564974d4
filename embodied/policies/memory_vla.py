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
   steps. The initial noise of a chunk is drawn per environment row from a generator seeded by
   `(the row's episode seed, episode step)`; episode seeds come from a generator seeded with
   `sample_seed` in the order episodes start, so actions are reproducible, differ between rows and
   episodes, and a row's actions never depend on the other rows.

`act` keeps one action-chunk queue per row and pops one action per step. The rollout state (a
`TensorState`: `queue`, `queue_pos`, `steps`, `noise_seed` and the bank as child `memory`) lives
outside the module; `reset(mask)` clears the rows, `on_envs_pause` drops them. `loss(batch)` is the diffusion
loss (MSE on the clean chunk by default, `prediction="sample"`; or on the noise / velocity) on the
action chunks (normalised to [-1, 1] with `set_action_stats`) that start at every unmasked step of the
windows; the bank is scanned over the window from an empty state, exactly as in a rollout. Not reproduced: classifier-
free guidance (the paper drops the cognitive token with p = 0.1 and samples with CFG 1.5).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from embodied.memory.pcmb import PCMB
from embodied.memory.state import TensorState
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
        # transformers 5.24 renamed the decoder's `past_key_values` argument to `cache` (the old name warns)
        self.cache_kwarg = "cache" if "cache" in inspect.signature(self.lm.forward).parameters else "past_key_values"
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

    # ------------------------------------------------------------------ streaming through a KV cache
    def prefix(self, ids: Tensor, text_mask: Tensor) -> tuple[Tensor, Tensor]:
        """ids/text_mask [B, L] -> the embedded `[bos; text]` [B, 1+L, hidden] and its validity [B, 1+L]."""
        b = len(ids)
        emb = self.lm.get_input_embeddings()(ids)
        ones = torch.ones(b, 1, dtype=torch.bool, device=ids.device)
        return torch.cat([self.bos.expand(b, 1, -1), emb], 1), torch.cat([ones, text_mask], 1)

    def cache_geometry(self) -> tuple[int, int, int]:
        """(attention layers, key/value heads, head dim) of the decoder, to preallocate its KV cache."""
        cfg = self.lm.config.get_text_config(decoder=True)
        try:
            layers, heads = int(cfg.num_hidden_layers), int(cfg.num_attention_heads)
        except AttributeError as e:
            raise ValueError(f"backbone config {type(cfg).__name__} names no num_hidden_layers / "
                             "num_attention_heads: its KV cache cannot be preallocated") from e
        kv_heads = int(getattr(cfg, "num_key_value_heads", None) or heads)
        head_dim = int(getattr(cfg, "head_dim", None) or self.hidden // heads)
        return layers, kv_heads, head_dim

    def cached(self, embeds: Tensor, allowed: Tensor, position_ids: Tensor, cache: Any) -> Tensor:
        """One call of the decoder on `embeds` [B, q, hidden] with `cache` as its past key/values: `allowed`
        [B, q, kv] is the explicit attention mask over the keys the cache returns (per row, so rows at
        different steps share the call), `position_ids` [B, q] the absolute positions. -> [B, q, hidden]."""
        mask = torch.zeros(allowed.shape, dtype=embeds.dtype, device=embeds.device)
        mask = mask.masked_fill(~allowed, torch.finfo(embeds.dtype).min)[:, None]  # additive: sdpa and eager
        out = self.lm(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids, use_cache=True,
                      **{self.cache_kwarg: cache})
        return out.last_hidden_state


def vector_encoder(spec: dict[str, KeySpec], dim: int) -> ObservationEncoder | None:
    """One token from the vector/discrete observations (proprioception, GPS...), or None without any.

    It keeps `ObservationEncoder`'s normalisation buffers, so `set_normalization` works unchanged."""
    sub = {k: s for k, s in spec.items() if s.kind in ("vector", "discrete")}
    return ObservationEncoder(sub, dim) if sub else None


def text_key(spec: dict[str, KeySpec]) -> str | None:
    return next((k for k, s in spec.items() if s.kind == "text"), None)


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
        self.memory = PCMB(dim=config.dim, cog_dim=hidden, n_tokens=self.n_tokens,
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
        # Episode seeds of the sampling noise, drawn in the order episodes start (not a weight).
        self._episode_seeds = torch.Generator().manual_seed(config.sample_seed)

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
        """[M, ...] raw observations -> perceptual tokens [M, N, D] and cognitive token [M, Dc]."""
        x = self._tensors(obs)
        m, device = len(next(iter(x.values()))), self.device()
        if self.text_key is not None:
            ids, tmask = self.backbone.tokenize(list(obs[self.text_key]), device)
        else:
            ids = torch.zeros(m, 0, dtype=torch.long, device=device)
            tmask = torch.zeros(m, 0, dtype=torch.bool, device=device)
        return self.perceive_tensors(x, ids, tmask)

    def perceive_tensors(self, x: dict[str, Tensor], ids: Tensor, tmask: Tensor) -> tuple[Tensor, Tensor]:
        """Preprocessed [M, ...] tensors + instruction ids/mask [M, L] -> perceptual and cognitive tokens."""
        tokens = [self.vision[k](x[k]) for k in self.image_keys]
        if self.encoder is not None:
            tokens.append(self.encoder(x)[:, None])
        per = torch.cat(tokens, dim=1)
        cog = self.backbone(ids, tmask, self.to_lm(per))[:, -1]
        return per, cog

    def chunk_noise(self, seeds: Tensor, steps: Tensor) -> Tensor:
        """The initial DDIM noise [n, H, A] of chunks sampled by rows with episode seeds `seeds` [n] at
        episode steps `steps` [n]: row i's noise is a pure function of (seeds[i], steps[i]), drawn on the
        policy's device, so actions repeat exactly and never depend on the other rows."""
        device = self.device()
        out = torch.empty(len(seeds), self.config.chunk, self.config.action_dim, device=device)
        for i, (seed, step) in enumerate(zip(seeds.tolist(), steps.tolist())):
            g = torch.Generator(device=device).manual_seed((seed * 1_000_003 + step) % (2**63))
            out[i] = torch.randn(self.config.chunk, self.config.action_dim, generator=g, device=device)
        return out

    # ------------------------------------------------------------------ Policy protocol
    def initial_state(self, batch_size: int) -> TensorState:
        device, c = self.device(), self.config
        state = TensorState(batch_size)
        state.add("queue", torch.empty(batch_size, c.chunk, c.action_dim, device=device))  # the current chunk
        state.add("queue_pos", torch.empty(batch_size, dtype=torch.long, device=device), c.chunk)  # H: empty
        state.add("steps", torch.empty(batch_size, dtype=torch.long, device=device))  # episode step
        state.add("noise_seed", torch.empty(batch_size, dtype=torch.long, device=device))
        state.add_child("memory", self.memory.initial_state(batch_size, device))
        self._new_episode_seeds(state, torch.ones(batch_size, dtype=torch.bool))
        return state

    def _new_episode_seeds(self, state: TensorState, mask: Tensor) -> None:
        rows = mask.nonzero().flatten()
        if rows.numel():
            seeds = torch.randint(0, 2**62, (rows.numel(),), generator=self._episode_seeds)
            seed = state.noise_seed.clone()
            seed[rows.to(seed.device)] = seeds.to(seed.device)
            state.noise_seed = seed

    def reset(self, mask: np.ndarray) -> None:
        existing = self.rollout_state
        super().reset(mask)
        if existing is not None and existing is self.rollout_state:
            self._new_episode_seeds(self.rollout_state, torch.as_tensor(np.asarray(mask, dtype=bool)))

    @torch.no_grad()
    def act(self, obs: dict[str, Any]) -> np.ndarray:
        per, cog = self.perceive(obs)
        n = len(per)
        state = self._checked_state(n)
        assert state is not None
        r = self.memory.step(per, cog, state.memory)  # every step: no chunk-strided writes
        self.note_read("pcmb", "pcmb", r.trace, {"capacity": self.config.capacity})
        fused_p, fused_c = r.output
        need = (state.queue_pos >= self.config.chunk).nonzero().flatten()
        if need.numel():
            noise = self.chunk_noise(state.noise_seed[need], state.steps[need])
            fp, fc = fused_p[need], fused_c[need]
            chunk = self.ddim.sample(lambda x, k: self.dit(x, k, fc, fp), noise)
            queue, pos = state.queue.clone(), state.queue_pos.clone()
            queue[need] = self.unnormalize_actions(chunk)
            pos[need] = 0
            state.queue, state.queue_pos = queue, pos
        action = state.queue[torch.arange(n, device=per.device), state.queue_pos]
        state.queue_pos = state.queue_pos + 1
        state.steps = state.steps + 1
        return action.clamp(-1, 1).cpu().numpy()

    # ------------------------------------------------------------------ training
    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Diffusion loss on a tensor batch (`PretrainedPolicy`'s layout; the instruction as the
        processor's word ids, which are the tiny backbone's own ids)."""
        obs, device = batch["obs"], self.device()
        first = next(iter(obs[k] for k in self.config.obs_spec))
        b, t = first.shape[:2]
        x = {k: obs[k].to(device).flatten(0, 1) for k in self.config.obs_spec if self.config.obs_spec[k].kind != "text"}
        if self.text_key is not None:
            if self.backbone.hf_tokenizer is not None:
                raise ValueError("memory_vla with a Hugging Face backbone tokenises raw instructions: train it "
                                 "through loss(windows), not forward(batch)")
            ids = obs[self.text_key].to(device).flatten(0, 1)[:, : self.backbone.max_text_tokens]
            tmask = ids != PAD
        else:
            ids = torch.zeros(b * t, 0, dtype=torch.long, device=device)
            tmask = torch.zeros(b * t, 0, dtype=torch.bool, device=device)
        per, cog = self.perceive_tensors(x, ids, tmask)
        loss = self.diffusion_loss(per.view(b, t, *per.shape[1:]), cog.view(b, t, -1), batch["action"],
                                   batch["loss_mask"], batch["episode_start"], batch.get("timestep"))
        return {"loss": loss}

    def loss(self, batch: dict[str, Any]) -> Tensor:
        """The diffusion loss on raw numpy windows (each starting an episode; raw instructions, so any
        backbone's tokenizer applies)."""
        obs = batch["obs"]
        first = next(iter(obs.values()))
        b, t = np.shape(first)[:2]
        flat = {k: np.asarray(v).reshape(b * t, *np.shape(v)[2:]) for k, v in obs.items()
                if k in self.config.obs_spec}
        per, cog = self.perceive(flat)
        start = torch.zeros(b, t, dtype=torch.bool)
        start[:, 0] = True
        return self.diffusion_loss(per.view(b, t, *per.shape[1:]), cog.view(b, t, -1),
                                   torch.as_tensor(np.asarray(batch["actions"])),
                                   torch.as_tensor(np.asarray(batch["mask"], dtype=bool)), start)

    def diffusion_loss(self, per: Tensor, cog: Tensor, actions: Tensor, mask: Tensor, episode_start: Tensor,
                       timestep: Tensor | None = None) -> Tensor:
        """Diffusion loss over every unmasked step of [B, T] windows. The bank is scanned over the window
        from an empty state, cleared where `episode_start` is set, its entries stamped with each frame's
        real `timestep` when given (a window opened mid-episode is at step 57, not 0, as in a rollout);
        the action chunk at step t is actions[t : t+H], masked past the episode's end (LeRobot's
        `action_is_pad`)."""
        b, t = per.shape[:2]
        device = per.device
        start = episode_start.to(device)
        steps = None if timestep is None else torch.as_tensor(timestep).to(device=device, dtype=torch.long)
        fused_p, fused_c = self.memory.sequence(per, cog, self.memory.initial_state(b, device), reset=start,
                                                t=steps).output
        actions = actions.to(device=device, dtype=torch.float32)
        mask = mask.to(device=device, dtype=torch.bool)
        h = self.config.chunk
        idx = torch.arange(t, device=device)[:, None] + torch.arange(h, device=device)[None]  # [T, H]
        inside = idx < t
        idx = idx.clamp(max=t - 1)
        episode = start.long().cumsum(1)  # [B, T]: which episode of the window each step belongs to
        same = episode[:, idx] == episode[:, :, None]  # [B, T, H]
        chunks = self.normalize_actions(actions)[:, idx]  # [B, T, H, A] in [-1, 1]
        chunk_mask = mask[:, idx] & inside & same & mask[:, :, None]  # [B, T, H]
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
