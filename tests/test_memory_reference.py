"""Memories against independent references written from their papers' descriptions (plain float64
loops, no code shared with `embodied.memory`), and the contracts every memory keeps: weights-only
state dicts, no host tensors on the hot path, non-colliding place encodings."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest
import torch

import embodied.memory as em
from embodied.memory.hcam import HCAMAttention

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- HCAM (Lampinen et al. 2021)
def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def _linear(layer: torch.nn.Linear, x: np.ndarray) -> np.ndarray:
    y = x @ _np(layer.weight).T
    return y + _np(layer.bias) if layer.bias is not None else y


def _positions(C: int, D: int) -> np.ndarray:
    """DeepMind's in-chunk sinusoid: positions C-1..0, inverse frequency 1 / 10000^(i/D), i = 0, 2, ..."""
    out = np.zeros((C, D))
    for c in range(C):
        pos = C - 1 - c
        for j, i in enumerate(range(0, D, 2)):
            angle = pos / (10000.0 ** (i / D))
            out[c, j] = math.sin(angle)
            out[c, D // 2 + j] = math.cos(angle)
    return out


def hcam_reference(att: HCAMAttention, q: torch.Tensor, keys: torch.Tensor, contents: torch.Tensor,
                   chunk_mask: torch.Tensor, content_mask: torch.Tensor | None) -> np.ndarray:
    """Per query: score the readable chunk summaries, keep the top k, softmax over those, run multi-head
    attention (biased projections) inside each kept chunk (contents + position code) and mix the per-chunk
    outputs with the chunk weights; nothing readable gives zero."""
    B, Q, _ = q.shape
    _, M, C, D = contents.shape
    Fd, H = att.feature_dim, att.heads
    dh = Fd // H
    pe = _positions(C, D) if att.position_encoding else np.zeros((C, D))
    out = np.zeros((B, Q, Fd))
    for b in range(B):
        for i in range(Q):
            qv = _np(q[b, i])
            allowed = [m for m in range(M) if bool(chunk_mask[b, i, m])]
            if not allowed:
                continue
            qs = _linear(att.chunk_q, qv)
            scores = {m: float(qs @ _linear(att.chunk_k, _np(keys[b, m]))) / math.sqrt(Fd) for m in allowed}
            top = sorted(allowed, key=lambda m: -scores[m])[: att.topk]
            s = np.array([scores[m] for m in top])
            w = np.exp(s - s.max())
            w /= w.sum()
            for wm, m in zip(w, top):
                mem = _np(contents[b, m]) + pe
                valid = [c for c in range(C) if content_mask is None or bool(content_mask[b, m, c])]
                qh = _linear(att.q, qv).reshape(H, dh)
                kh = _linear(att.k, mem).reshape(C, H, dh)
                vh = _linear(att.v, mem).reshape(C, H, dh)
                heads = np.zeros((H, dh))
                for h in range(H):
                    logits = np.array([qh[h] @ kh[c, h] for c in valid]) / math.sqrt(dh)
                    a = np.exp(logits - logits.max())
                    a /= a.sum()
                    heads[h] = sum(a[j] * vh[c, h] for j, c in enumerate(valid))
                out[b, i] += wm * _linear(att.o, heads.reshape(Fd))
    return out


@pytest.mark.parametrize("pe", [True, False])
def test_hcam_attention_matches_the_paper_at_k_below_m_with_masks(pe: bool) -> None:
    torch.manual_seed(0)
    B, Q, M, C, D, E, Fd = 2, 3, 7, 4, 8, 6, 8
    att = HCAMAttention(E, D, Fd, heads=2, topk=3, chunk_size=C, position_encoding=pe)
    with torch.no_grad():  # biases that matter (PyTorch's default init gives small ones)
        for lin in (att.q, att.k, att.v, att.o):
            lin.bias.normal_(0, 0.5)
    q = torch.randn(B, Q, E)
    contents = torch.randn(B, M, C, D)
    keys = contents.mean(2)
    chunk_mask = torch.rand(B, Q, M) > 0.35
    chunk_mask[0, 0] = False  # nothing readable: zero output
    chunk_mask[1, 1] = False
    chunk_mask[1, 1, 2] = True  # fewer readable chunks than k
    content_mask = torch.rand(B, M, C) > 0.3
    content_mask[..., 0] = True
    with torch.no_grad():
        dense = att(q, keys, contents, chunk_mask).output
        masked = att(q, keys, contents, chunk_mask, content_mask).output
    np.testing.assert_allclose(_np(dense), hcam_reference(att, q, keys, contents, chunk_mask, None), atol=1e-5)
    np.testing.assert_allclose(_np(masked), hcam_reference(att, q, keys, contents, chunk_mask, content_mask),
                               atol=1e-5)
    assert float(dense[0, 0].abs().max()) == 0.0


def test_hcam_memory_rollout_read_matches_the_paper() -> None:
    """The memory's rollout read (fused projected keys, single-query path) after real writes: ring buffer
    of chunk means, k < M, rows at different fill levels."""
    torch.manual_seed(1)
    m = em.make("hcam", dim=8, chunk_size=3, topk=2, heads=2, max_chunks=4)
    with torch.no_grad():
        for lin in (m.attention.q, m.attention.k, m.attention.v, m.attention.o):
            lin.bias.normal_(0, 0.5)
    s = m.initial_state(3)
    xs = torch.randn(3, 20, 8)
    with torch.no_grad():
        for t in range(20):
            m.write(xs[:, t], s, active=torch.tensor([True, t < 8, t % 2 == 0]))
        q = torch.randn(3, 8)
        got = m.read(q, s).output
    # the reference rebuilds the chunks from the written stream itself
    contents = torch.zeros(3, 4, 3, 8)
    mask = torch.zeros(3, 1, 4, dtype=torch.bool)
    for b, steps in enumerate([list(range(20)), list(range(8)), list(range(0, 20, 2))]):
        chunks = [steps[i : i + 3] for i in range(0, len(steps) - 2, 3)][-4:]
        for j, ch in enumerate(chunks):
            contents[b, j] = xs[b, ch]
            mask[b, 0, j] = True
    ref = hcam_reference(m.attention, q[:, None], contents.mean(2), contents, mask, None)[:, 0]
    np.testing.assert_allclose(_np(got), ref, atol=1e-5)


def test_hcam_deepmind_init_option() -> None:
    torch.manual_seed(0)
    att = HCAMAttention(256, 256, 256, heads=4, topk=2, chunk_size=4, init="deepmind")
    std = math.sqrt(2.0 / 256) / 0.87962566103423978
    for lin in (att.chunk_q, att.chunk_k, att.q, att.k, att.v, att.o):
        w = lin.weight
        assert float(w.abs().max()) <= 2 * std + 1e-6  # truncated at two standard deviations
        assert abs(float(w.std()) / (std * 0.87962566103423978) - 1) < 0.05  # truncation shrinks the std
        if lin.bias is not None:
            assert float(lin.bias.abs().max()) == 0.0
    with pytest.raises(ValueError, match="init must be one of"):
        HCAMAttention(8, 8, 8, init="xavier")


# ----------------------------------------------------------------------------- place (SAT)
def test_place_time_and_place_encodings_never_collide() -> None:
    m = em.make("place", dim=16, capacity=8, num_places=16)
    t = torch.arange(64).repeat_interleave(16)
    p = torch.arange(16).repeat(64)
    enc = m.encoding(p, t)
    d = torch.cdist(enc.double(), enc.double())
    d.fill_diagonal_(float("inf"))
    assert float(d.min()) > 1e-3
    five, three = torch.tensor(5), torch.tensor(3)
    assert not torch.allclose(m.encoding(five, three), m.encoding(three, five))


# ----------------------------------------------------------------------------- dual_kv (JanusVLN)
def test_dual_kv_sequence_equals_dense_start_recent_attention() -> None:
    """The streaming caches (scan of `step`) against one dense pass where frame i attends to frame j iff
    j <= i and (j < n_initial or j >= i - n_recent), per episode (resets inside the window)."""
    torch.manual_seed(0)
    n_init, n_recent, P = 2, 3, 2
    m = em.make("dual_kv", semantic_dim=6, spatial_dim=5, dim=8, tokens_per_frame=P, layers=2, heads=2,
                n_initial=n_init, n_recent=n_recent)
    B, T = 2, 14
    sem, spa = torch.randn(B, T, P, 6), torch.randn(B, T, P, 5)
    reset = torch.zeros(B, T, dtype=torch.bool)
    reset[1, 6] = True
    with torch.no_grad():
        got = m.sequence(sem, spa, m.initial_state(B), reset).output
        ref = torch.zeros_like(got)
        for b in range(B):
            starts = [0, *[int(t) for t in reset[b].nonzero().flatten() if t > 0], T]
            for lo, hi in itertools.pairwise(starts):
                s = _dense_encoder(m.semantic, sem[b, lo:hi], n_init, n_recent)
                g = _dense_encoder(m.spatial, spa[b, lo:hi], n_init, n_recent)
                ref[b, lo:hi] = s + m.fusion_weight * m.merger(g)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)


def test_dual_kv_blockwise_episode_equals_streaming() -> None:
    """`DualKV.episode` (blockwise over each frame's start+recent band: the training pass, no [T*P, T*P]
    mask) equals streaming `sequence` from an empty state, with both caches evicting, for both the
    standalone memory and `semantic_cache=False` (janus_vln: a per-frame semantic encoder)."""
    torch.manual_seed(0)
    for semantic_cache in (True, False):
        m = em.make("dual_kv", semantic_dim=6, spatial_dim=5, dim=8, tokens_per_frame=2, layers=2, heads=2,
                    n_initial=2, n_recent=3, semantic_cache=semantic_cache)
        sem, spa = torch.randn(2, 13, 2, 6), torch.randn(2, 13, 2, 5)
        with torch.no_grad():
            streamed = m.sequence(sem, spa, m.initial_state(2)).output
            torch.testing.assert_close(m.episode(sem, spa), streamed, rtol=1e-5, atol=1e-5)
        assert sorted(m.initial_state(1).names()) == sorted(
            [*(["semantic_0", "semantic_1"] if semantic_cache else []), "spatial_0", "spatial_1"])


def _dense_encoder(enc: Any, tokens: torch.Tensor, n_init: int, n_recent: int) -> torch.Tensor:
    T, P, _ = tokens.shape
    H, dh = enc.heads, enc.dim // enc.heads
    frame = torch.arange(T).repeat_interleave(P)
    i, j = frame[:, None], frame[None, :]
    allowed = (j <= i) & ((j < n_init) | (j >= i - n_recent))
    x = (enc.inp(tokens) + enc.pos).reshape(T * P, -1)
    for layer in range(len(enc.qkv)):
        q, k, v = enc.qkv[layer](enc.ln1[layer](x)).view(T * P, 3, H, dh).unbind(1)
        logits = torch.einsum("ihd,jhd->hij", q, k) / math.sqrt(dh)
        a = torch.softmax(logits.masked_fill(~allowed, float("-inf")), -1)
        x = x + enc.proj[layer](torch.einsum("hij,jhd->ihd", a, v).reshape(T * P, -1))
        x = x + enc.mlp[layer](enc.ln2[layer](x))
    return x.view(T, P, -1)


# ----------------------------------------------------------------------------- contracts
MEMORIES = {
    "hcam": (lambda: em.make("hcam", dim=8, chunk_size=2, topk=2, heads=2, max_chunks=4),
             lambda m, s, g: m.step(torch.randn(3, 8, generator=g), s)),
    "hcam_layer": (lambda: em.make("hcam_layer", dim=8, chunk_size=2, topk=2, heads=2, max_chunks=4),
                   lambda m, s, g: m.step(torch.randn(3, 8, generator=g), s)),
    "pcmb": (lambda: em.make("pcmb", dim=8, n_tokens=2, capacity=3, heads=2),
             lambda m, s, g: m.step(torch.randn(3, 2, 8, generator=g), torch.randn(3, 8, generator=g), s)),
    "events": (lambda: em.make("events", dim=8, max_events=4, max_event_len=3, window=5, topk=2),
               lambda m, s, g: m.step(torch.randn(3, 8, generator=g), s)),
    "place": (lambda: em.make("place", dim=8, capacity=6, num_places=3, chunk_size=2, topk=2),
              lambda m, s, g: m.step(torch.randn(3, 8, generator=g), torch.randint(0, 3, (3,), generator=g), s)),
    "dual_kv": (lambda: em.make("dual_kv", semantic_dim=6, spatial_dim=5, dim=8, tokens_per_frame=2, layers=1,
                                heads=2, n_initial=2, n_recent=3),
                lambda m, s, g: m.step(torch.randn(3, 2, 6, generator=g), torch.randn(3, 2, 5, generator=g), s)),
}
FACTORIES = ("zeros", "ones", "full", "arange", "empty", "tensor", "randn", "rand", "randint", "eye", "linspace")


@pytest.mark.parametrize("name", sorted(MEMORIES))
def test_hot_path_creates_no_host_tensor(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every tensor a step creates names its device (from the state or the weights), so a memory on an
    accelerator never builds a host tensor per step (each would be a host allocation and a copy)."""
    make, step = MEMORIES[name]
    mem = make()
    state = mem.initial_state(3)
    inputs = torch.Generator().manual_seed(0)
    calls: list[str] = []
    for fn in FACTORIES:
        original = getattr(torch, fn)

        def wrapped(*args: Any, _fn: str = fn, _orig: Any = original, **kwargs: Any) -> Any:
            if kwargs.get("device") is None and kwargs.get("generator") is not inputs:
                calls.append(_fn)
            return _orig(*args, **kwargs)

        monkeypatch.setattr(torch, fn, wrapped)
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            for _ in range(7):  # past chunk completions, consolidations, event boundaries, evictions
                step(mem, state, inputs)
    assert not calls, f"{name}: host tensors created per step by torch.{sorted(set(calls))}"
