"""Property tests shared by every memory in `embodied.memory` (small dims, few hypothesis examples)."""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import embodied.memory as em
from embodied.memory.state import TensorState

torch.set_num_threads(1)
SETTINGS = settings(
    max_examples=3,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
)


@dataclass
class Driver:
    make: Callable[[], Any]
    inputs: Callable[[int, int, torch.Generator], tuple[torch.Tensor, ...]]  # each [B,T,...]
    step: Callable[[Any, TensorState, tuple[torch.Tensor, ...]], torch.Tensor]
    sequence: Callable[[Any, TensorState, tuple[torch.Tensor, ...], torch.Tensor | None], torch.Tensor]
    parallel: bool = False  # `sequence` is a parallel pass (not a scan of `step`)


def _randn(*shape: int, g: torch.Generator) -> torch.Tensor:
    return torch.randn(*shape, generator=g)


DRIVERS: dict[str, Driver] = {
    "hcam": Driver(
        make=lambda: em.make("hcam", dim=8, chunk_size=3, topk=2, heads=2, max_chunks=3),
        inputs=lambda B, T, g: (_randn(B, T, 8, g=g),),
        step=lambda m, s, x: m.step(x[0], s).output,
        sequence=lambda m, s, x, r: m.sequence(x[0], s, reset=r).output,
        parallel=True,
    ),
    "hcam_layer": Driver(
        make=lambda: em.make("hcam_layer", dim=8, chunk_size=3, topk=2, heads=2, max_chunks=3),
        inputs=lambda B, T, g: (_randn(B, T, 8, g=g),),
        step=lambda m, s, x: m.step(x[0], s).output,
        sequence=lambda m, s, x, r: m.sequence(x[0], s, r).output,
        parallel=True,
    ),
    "pcmb": Driver(
        make=lambda: em.make("pcmb", dim=8, n_tokens=2, capacity=3, heads=2),
        inputs=lambda B, T, g: (_randn(B, T, 2, 8, g=g), _randn(B, T, 8, g=g)),
        step=lambda m, s, x: m.step(x[0], x[1], s).output[0].flatten(1),
        sequence=lambda m, s, x, r: m.sequence(x[0], x[1], s, r).output[0].flatten(2),
    ),
    "pcmb_fifo": Driver(
        make=lambda: em.make("pcmb", dim=8, n_tokens=2, capacity=3, consolidation="fifo"),
        inputs=lambda B, T, g: (_randn(B, T, 2, 8, g=g), _randn(B, T, 8, g=g)),
        step=lambda m, s, x: m.step(x[0], x[1], s).output[1],
        sequence=lambda m, s, x, r: m.sequence(x[0], x[1], s, r).output[1],
    ),
    "dual_kv": Driver(
        make=lambda: em.make(
            "dual_kv", semantic_dim=6, spatial_dim=5, dim=8, tokens_per_frame=2, layers=1, heads=2, n_initial=2,
            n_recent=3,
        ),
        inputs=lambda B, T, g: (_randn(B, T, 2, 6, g=g), _randn(B, T, 2, 5, g=g)),
        step=lambda m, s, x: m.step(x[0], x[1], s).output,
        sequence=lambda m, s, x, r: m.sequence(x[0], x[1], s, r).output,
    ),
    "events": Driver(
        make=lambda: em.make("events", dim=8, max_events=4, max_event_len=3, window=5, topk=2),
        inputs=lambda B, T, g: (_randn(B, T, 8, g=g), torch.rand(B, T, generator=g)),
        step=lambda m, s, x: m.step(x[0], s, x[1]).output,
        sequence=lambda m, s, x, r: m.sequence(x[0], s, x[1], r).output,
    ),
    **{
        f"place_{ev}": Driver(
            make=lambda ev=ev: em.make("place", dim=8, capacity=6, num_places=3, chunk_size=2, topk=2, eviction=ev),
            inputs=lambda B, T, g: (_randn(B, T, 8, g=g), torch.randint(0, 3, (B, T), generator=g)),
            step=lambda m, s, x: m.step(x[0], x[1], s).output,
            sequence=lambda m, s, x, r: m.sequence(x[0], x[1], s, r).output,
        )
        for ev in ("fifo", "lifo", "lvfo", "mvfo")
    },
}


def register_driver(name: str, driver: Driver) -> None:
    DRIVERS[name] = driver


def _slice(x: tuple[torch.Tensor, ...], t: int) -> tuple[torch.Tensor, ...]:
    return tuple(v[:, t] for v in x)


def _rows(x: tuple[torch.Tensor, ...], idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return tuple(v[idx] for v in x)


def _run(mem: Any, state: TensorState, d: Driver, x: tuple[torch.Tensor, ...],
         reset: torch.Tensor | None = None) -> torch.Tensor:
    outs = []
    for t in range(x[0].shape[1]):
        if reset is not None:
            state.reset(reset[:, t])
        outs.append(d.step(mem, state, _slice(x, t)))
    return torch.stack(outs, 1)


def _fresh(d: Driver, B: int, seed: int = 0) -> tuple[Any, TensorState]:
    torch.manual_seed(seed)
    mem = d.make()
    return mem, mem.initial_state(B)


names = pytest.mark.parametrize("name", sorted(DRIVERS))
parallel_names = pytest.mark.parametrize("name", sorted(n for n, d in DRIVERS.items() if d.parallel))


@names
@SETTINGS
@given(seed=st.integers(0, 2**16), T=st.integers(4, 10), env=st.integers(0, 2), at=st.integers(0, 9))
def test_reset_of_one_env_never_changes_others(name: str, seed: int, T: int, env: int, at: int) -> None:
    d = DRIVERS[name]
    g = torch.Generator().manual_seed(seed)
    B = 3
    x = d.inputs(B, T, g)
    (a, sa), (b, sb) = _fresh(d, B), _fresh(d, B)
    reset = torch.zeros(B, T, dtype=torch.bool)
    reset[env, min(at, T - 1)] = True
    with torch.no_grad():
        oa = _run(a, sa, d, x)
        ob = _run(b, sb, d, x, reset)
    others = [i for i in range(B) if i != env]
    torch.testing.assert_close(oa[others], ob[others], rtol=0, atol=0)


@parallel_names
@SETTINGS
@given(seed=st.integers(0, 2**16), T=st.integers(3, 10), p=st.floats(0.0, 0.3))
def test_parallel_sequence_equals_streaming(name: str, seed: int, T: int, p: float) -> None:
    """For memories whose `sequence` is a real parallel pass (not a loop over `step`)."""
    d = DRIVERS[name]
    g = torch.Generator().manual_seed(seed)
    B = 3
    x = d.inputs(B, 2 * T, g)
    reset = torch.rand(B, 2 * T, generator=g) < p
    (a, sa), (b, sb) = _fresh(d, B), _fresh(d, B)
    with torch.no_grad():
        oa = _run(a, sa, d, x, reset)
        first = tuple(v[:, :T] for v in x)
        second = tuple(v[:, T:] for v in x)
        ob = torch.cat([d.sequence(b, sb, first, reset[:, :T]), d.sequence(b, sb, second, reset[:, T:])], 1)
    torch.testing.assert_close(oa.reshape(ob.shape), ob, rtol=1e-4, atol=1e-5)


@names
@SETTINGS
@given(seed=st.integers(0, 2**16), T=st.integers(2, 8))
def test_state_clone_select_and_weights_only_state_dict(name: str, seed: int, T: int) -> None:
    """The state is an object of its own: a clone continues identically, selected rows continue as they
    would have, and the module's state_dict holds weights only (loading it keeps any state valid)."""
    d = DRIVERS[name]
    g = torch.Generator().manual_seed(seed)
    B = 3
    x = d.inputs(B, 2 * T, g)
    a, sa = _fresh(d, B)
    with torch.no_grad():
        _run(a, sa, d, tuple(v[:, :T] for v in x))
        state_leaves = {k.rsplit(".", 1)[-1] for k in sa.tensors()}
        assert state_leaves and not [k for k in a.state_dict() if k.rsplit(".", 1)[-1] in state_leaves]
        snapshot = sa.clone()
        rest = tuple(v[:, T:] for v in x)
        oa = _run(a, sa, d, rest)
        b, _ = _fresh(d, 1, seed=1)  # other weights, then ours loaded: continues from the snapshot exactly
        b.load_state_dict(a.state_dict())
        torch.testing.assert_close(_run(b, snapshot.clone(), d, rest), oa, rtol=0, atol=0)
        c = snapshot.clone()
        c.select(torch.tensor([2, 0]))
        assert c.batch_size == 2
        torch.testing.assert_close(_run(a, c, d, _rows(rest, torch.tensor([2, 0]))), oa[[2, 0]], rtol=1e-5, atol=1e-6)
        keep = torch.tensor([True, False, True])
        c2 = snapshot.clone()
        c2.select(keep)
        torch.testing.assert_close(_run(a, c2, d, _rows(rest, keep)), oa[keep], rtol=1e-5, atol=1e-6)


@names
def test_step_and_sequence_return_the_same_read_result(name: str) -> None:
    """The one step contract: `sequence` returns what T calls of `step` return (read-then-write),
    the same output and the same trace keys, stacked on axis 1."""
    d = DRIVERS[name]
    g = torch.Generator().manual_seed(0)
    B, T = 2, 5
    x = d.inputs(B, T, g)
    m, s1 = _fresh(d, B)
    s2 = m.initial_state(B)
    with torch.no_grad():
        steps = [_step_result(m, name, s1, _slice(x, t)) for t in range(T)]
        seq = _sequence_result(m, name, s2, x)
    assert set(seq.trace) == set(steps[0].trace)
    last = steps[-1].trace
    outs = seq.output if isinstance(seq.output, tuple) else (seq.output,)
    step_outs = steps[-1].output if isinstance(steps[-1].output, tuple) else (steps[-1].output,)
    for o, so in zip(outs, step_outs):
        torch.testing.assert_close(o[:, -1], so, rtol=1e-4, atol=1e-5)
    for k, v in seq.trace.items():
        assert v.shape[:2] == (B, T), k
        if k == "indices":  # slots: the ring buffer's in `step`, the window's [stored; new] chunks in `sequence`
            continue
        got, want = v[:, -1].float(), last[k].float()
        if k == "chunk_start_t":  # which unreadable chunk fills an empty pick is arbitrary
            got, want = got * seq.trace["selected_valid"][:, -1], want * last["selected_valid"]
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5, msg=k)



def _step_result(m: Any, name: str, s: TensorState, x: tuple[torch.Tensor, ...]) -> Any:
    if name.startswith(("hcam",)):
        return m.step(x[0], s)
    if name == "events":
        return m.step(x[0], s, x[1])
    if name.startswith("place"):
        return m.step(x[0], x[1], s)
    return m.step(x[0], x[1], s)


def _sequence_result(m: Any, name: str, s: TensorState, x: tuple[torch.Tensor, ...]) -> Any:
    if name == "hcam":
        return m.sequence(x[0], s)
    if name == "hcam_layer":
        return m.sequence(x[0], s)
    if name == "events":
        return m.sequence(x[0], s, x[1])
    return m.sequence(x[0], x[1], s)


def test_registry_and_names() -> None:
    for n in ("hcam", "pcmb", "dual_kv"):
        assert n in em.names()
    with pytest.raises(TypeError):
        em.make("hcam", no_such_option=1)


# ----------------------------------------------------------------------------- mechanism-specific
def test_hcam_topk_all_chunks_equals_full_attention_over_chunks() -> None:
    torch.manual_seed(0)
    B, M, C, D, Q = 2, 5, 4, 8, 3
    att = em.hcam.HCAMAttention(query_dim=6, memory_dim=D, feature_dim=8, heads=2, topk=M, chunk_size=C)
    q = torch.randn(B, Q, 6)
    contents = torch.randn(B, M, C, D)
    keys = contents.mean(2)
    out = att(q, keys, contents).output
    # reference: every chunk, softmax over all chunk scores, standard MHA inside each chunk
    kappa = att.chunk_k(keys)
    w = torch.softmax(torch.einsum("bqf,bmf->bqm", att.chunk_q(q), kappa) / 8**0.5, -1)
    mem = contents + em.hcam.chunk_position_encoding(C, D)
    H, dh = 2, 4
    qh = att.q(q).view(B, Q, H, dh)
    kh = att.k(mem).view(B, M, C, H, dh)
    vh = att.v(mem).view(B, M, C, H, dh)
    a = torch.softmax(torch.einsum("bqhe,bmche->bqmhc", qh, kh) / dh**0.5, -1)
    per_chunk = torch.einsum("bqmhc,bmche->bqmhe", a, vh).reshape(B, Q, M, H * dh)
    ref = att.o(torch.einsum("bqm,bqmf->bqf", w, per_chunk))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_hcam_chunk_keys_are_means_and_ring_capacity() -> None:
    m = em.make("hcam", dim=4, chunk_size=2, topk=1, heads=1, max_chunks=2)
    s = m.initial_state(2)
    xs = torch.arange(2 * 10 * 4, dtype=torch.float32).view(2, 10, 4)
    for t in range(10):
        m.write(xs[:, t], s)
    assert s.n_chunks.tolist() == [5, 5]
    assert s.chunk_valid.sum(1).tolist() == [2, 2]  # capacity: only the last 2 chunks remain
    assert sorted(s.chunk_ord[0].tolist()) == [3, 4]
    slot = int((s.chunk_ord[0] == 4).nonzero())
    torch.testing.assert_close(s.keys[0, slot], xs[0, 8:10].mean(0))
    r = m.read(torch.randn(2, 4), s)
    assert r.trace["indices"].shape == (2, 1) and torch.allclose(r.trace["weights"], torch.ones(2, 1))


def test_hcam_no_memory_expansion() -> None:
    """The read never builds a [B, M, Q, C, D] tensor: peak intermediate stays O(Q*k*C*D)."""
    m = em.make("hcam", dim=8, chunk_size=4, topk=2, heads=2, max_chunks=64)
    s = m.initial_state(1)
    m.sequence(torch.randn(1, 256, 8), s)
    sizes = []

    def hook(*args: Any) -> None:
        pass

    with torch.profiler.profile(profile_memory=True) as prof:
        m.read(torch.randn(1, 16, 8), s)
    for ev in prof.key_averages():
        sizes.append(ev.cpu_memory_usage)
    assert max(sizes) < 64 * 16 * 4 * 8 * 4  # far below M*Q*C*D floats


def test_hcam_gradient_stop_and_flow() -> None:
    for detach, expect in ((True, False), (False, True)):
        m = em.make("hcam", dim=4, chunk_size=2, topk=1, heads=1, detach_writes=detach)
        xs = torch.randn(1, 6, 4, requires_grad=True)
        out = m.sequence(xs, m.initial_state(1), queries=torch.randn(1, 6, 4)).output
        out.sum().backward()
        assert (xs.grad is not None and xs.grad.abs().sum() > 0) == expect


def test_pcmb_merge_consolidation_merges_most_similar_adjacent_pair() -> None:
    m = em.make("pcmb", dim=4, n_tokens=1, capacity=3)
    s = m.initial_state(1)
    base = torch.eye(4)
    entries = [base[0], base[1], base[1] * 2, base[2]]  # entries 1 and 2 are most similar (cos 1)
    for e in entries:
        tr = m.write(e.view(1, 1, 4), e.view(1, 4), s)
    assert int(s.count) == 3
    assert tr["per_merge_index"].tolist() == [1]
    torch.testing.assert_close(s.per_mem[0, 1, 0], base[1] * 1.5)
    assert s.per_t[0, :3].tolist() == [0, 1, 3]  # merged entry keeps the first timestep
    f = em.make("pcmb", dim=4, n_tokens=1, capacity=3, consolidation="fifo")
    sf = f.initial_state(1)
    for e in entries:
        f.write(e.view(1, 1, 4), e.view(1, 4), sf)
    assert sf.per_t[0, :3].tolist() == [1, 2, 3]


def test_dual_kv_keeps_initial_and_recent_frames_constant_size() -> None:
    m = em.make("dual_kv", tokens_per_frame=2, n_initial=2, n_recent=3, layers=1, dim=8)
    s = m.initial_state(2)
    sizes = set()
    for _t in range(20):
        r = m.step(torch.randn(2, 2, 32), torch.randn(2, 2, 32), s)
        sizes.add(tuple(s.semantic_0.keys.shape))
    assert len(sizes) == 1
    kept = sorted(r.trace["kept_frames"][0].tolist())
    assert kept == [0, 1, 16, 17, 18, 19]  # first 2 + last 3 + the current frame (dropped next step)


def test_start_recent_cache_as_hf_past_key_values() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=128,
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, 50, (1, 20))
    n_init, n_recent = 3, 5
    cache = em.dual_kv.StartRecentCache(2, n_init, n_recent, tokens_per_frame=1)
    outs = []
    with torch.no_grad():
        out = model(ids[:, :4], past_key_values=cache, use_cache=True)
        outs.append(out.logits[:, -1])
        for t in range(4, 20):
            out = model(ids[:, t : t + 1], past_key_values=cache, use_cache=True)
            outs.append(out.logits[:, -1])
        # reference: full sequence with an explicit start+recent mask
        T = 20
        i = torch.arange(T)
        allowed = (i[None] <= i[:, None]) & ((i[None] < n_init) | (i[None] >= i[:, None] - n_recent))
        mask = torch.where(allowed, 0.0, float("-inf"))[None, None]
        ref = model(ids, attention_mask=mask).logits[0, 3:]
    torch.testing.assert_close(torch.cat(outs), ref, rtol=1e-4, atol=1e-4)


def test_start_recent_cache_with_prefix_matches_full_attention_per_row() -> None:
    """The LM use of `StartRecentLayer` (janus_vln): a never-evicted prefix with padding, frames of F tokens,
    explicit per-row masks (`next_attention_mask`) and positions, rows starting at different calls; each
    row equals one full-sequence pass of the model with an explicit start+recent mask."""
    from transformers import LlamaConfig, LlamaModel

    cfg = LlamaConfig(vocab_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, max_position_embeddings=128, initializer_range=0.3)  # attention matters
    torch.manual_seed(0)
    model = LlamaModel(cfg).eval()
    n_init, n_recent, F, L, T = 1, 2, 2, 4, 7
    prefix = torch.randn(2, L, 16)
    pvalid = torch.tensor([[True, True, True, True], [True, False, True, False]])  # padding inside row 1
    frames = torch.randn(2, T, F, 16)
    layers = [em.dual_kv.StartRecentLayer.new_state(2, 1, 8, n_init, n_recent, F, torch.float32, "cpu", L)
              for _ in range(2)]
    cache = em.dual_kv.StartRecentCache.over(layers, n_init, n_recent, F, prefix_tokens=L)

    def call(x: torch.Tensor, allowed: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)[:, None]
        kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        return model(inputs_embeds=x, attention_mask=mask, position_ids=pos, **{kw: cache}).last_hidden_state

    start = [0, 2]  # row 1 starts two calls later
    got = torch.zeros(2, T, F, 16)
    with torch.no_grad():
        for c in range(T + start[1] + 1):
            for r in (0, 1):
                if c == start[r]:  # this row writes its prefix alone
                    cache.set_active(torch.arange(2) == r)
                    cache.begin_prefix(pvalid)
                    call(prefix, cache.layers[0].next_attention_mask(L), (pvalid.long().cumsum(1) - 1).clamp(min=0))
            active = torch.tensor([start[0] < c <= start[0] + T, start[1] < c <= start[1] + T])
            if not active.any():
                continue
            cache.set_active(active)
            lay = cache.layers[0]
            t = lay.frames_seen.clamp(max=T - 1)
            x = frames[torch.arange(2), t]
            pos = (lay.prefix_mask.sum(1) + lay.frames_seen * F)[:, None] + torch.arange(F)[None]
            out = call(x, lay.next_attention_mask(F), pos)
            for r in active.nonzero().flatten().tolist():
                got[r, t[r]] = out[r]
        for r in (0, 1):
            seq = torch.cat([prefix[r, pvalid[r]], frames[r].flatten(0, 1)])[None]
            n = int(pvalid[r].sum())
            frame = torch.cat([torch.full((n,), -1), torch.arange(T).repeat_interleave(F)])
            i, j = torch.arange(len(frame))[:, None], torch.arange(len(frame))[None]
            fi, fj = frame[:, None], frame[None, :]
            keep = (fj < 0) | (fj < n_init) | (fj >= fi - n_recent)
            mask = torch.where((j <= i) & keep, 0.0, torch.finfo(torch.float32).min)[None, None]
            ref = model(inputs_embeds=seq, attention_mask=mask).last_hidden_state[0, n:].view(T, F, 16)
            torch.testing.assert_close(got[r], ref, rtol=1e-5, atol=1e-5)
    assert sorted(cache.layers[0].slot_frame[0].tolist()) == [0, T - 3, T - 2, T - 1]  # evicted in between


def test_events_segment_on_surprise_and_retrieve_neighbours() -> None:
    m = em.make("events", dim=4, max_events=8, max_event_len=8, min_event_len=1, window=8, topk=1)
    st_ = m.initial_state(1)
    surprise = [0.1, 0.1, 0.1, 5.0, 0.1, 0.1, 5.0, 0.1, 0.1, 5.0, 0.1]
    xs = torch.randn(len(surprise), 4)
    bounds = [bool(m.write(xs[t : t + 1], st_, torch.tensor([s]))["boundary"]) for t, s in enumerate(surprise)]
    assert [t for t, b in enumerate(bounds) if b] == [3, 6, 9]
    assert st_.ev_closed.sum().item() == 3 and st_.ev_len[0, :4].tolist() == [3, 3, 3, 2]
    r = m.read(st_.ev_repr[:, 1] * 10, st_)  # most similar to event 1: neighbours 0 and 2 come with it
    got = r.trace["event_ord"][r.trace["event_valid"]].tolist()
    assert got == [0, 1, 2]
    assert r.trace["from_contiguity"][r.trace["event_valid"]].tolist() == [True, False, True]


def test_place_chunks_hold_one_place_and_eviction_rules() -> None:
    m = em.make("place", dim=4, capacity=5, num_places=3, chunk_size=2, eviction="lvfo")
    s = m.initial_state(1)
    for p in [0, 0, 1, 2, 2]:
        m.write(torch.randn(1, 4), torch.tensor([p]), s)
    with m.bound(s):
        _, mask, _, cplace = m.place_chunks()
    assert sorted(cplace[0][mask[0].any(1)].tolist()) == [0, 1, 2, 2] or sorted(cplace[0][mask[0].any(1)].tolist()) == [
        0,
        1,
        2,
    ]
    m.write(torch.randn(1, 4), torch.tensor([0]), s)  # lvfo evicts the only place-1 entry
    assert sorted(s.place[0].tolist()) == [0, 0, 0, 2, 2]
    f = em.make("place", dim=4, capacity=3, num_places=3, eviction="lifo")
    sf = f.initial_state(1)
    for p in [0, 1, 2, 1]:
        f.write(torch.randn(1, 4), torch.tensor([p]), sf)
    assert sorted(sf.ord[0].tolist()) == [0, 1, 2]


def _scene(B: int, T: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    depth = 1.0 + 3.0 * torch.rand(B, T, 6, 8, generator=g)
    pose = torch.cat([torch.rand(B, T, 3, generator=g), 6.28 * torch.rand(B, T, 1, generator=g)], -1)
    labels = torch.randint(0, 4, (B, T, 6, 8), generator=g)
    return depth, pose, labels


def test_voxel_map_modes_reset_prune_and_queries() -> None:
    g = torch.Generator().manual_seed(0)
    B, T = 3, 5
    depth, pose, labels = _scene(B, T, g)
    mk = lambda: em.make("voxel_map", batch_size=B, voxel_size=0.1, num_classes=4, extent=8.0)  # noqa: E731
    a, b = mk(), mk()
    reset = torch.zeros(B, T, dtype=torch.bool)
    reset[1, 2] = True
    for t in range(T):
        a.reset(reset[:, t])
        a.write(depth[:, t], pose[:, t], labels[:, t])
    b.sequence(depth, pose, labels, reset=reset)
    assert torch.equal(a.vkeys, b.vkeys) and torch.allclose(a.counts, b.counts) and torch.allclose(a.votes, b.votes)
    assert a.t.tolist() == b.t.tolist() == [5, 3, 5]
    # reset independence: env 0 unaffected by env 1's reset
    c = mk()
    for t in range(T):
        c.write(depth[:, t], pose[:, t], labels[:, t])
    q = a.centres(a.vkeys[a.vkeys // a.K == 0])[None].expand(B, -1, -1)
    assert torch.equal(a.read(q).output[0], c.read(q).output[0]) and bool(a.read(q).output[0].all())
    # state round trip + prune
    d = em.make("voxel_map", batch_size=1, voxel_size=0.1, num_classes=4, extent=8.0)
    d.load_state_dict(a.state_dict())
    assert d.batch_size == B and torch.equal(d.read(q).output, a.read(q).output)
    d.prune(torch.tensor([2, 0]))
    assert torch.equal(d.read(q[:2]).output, a.read(q).output[[2, 0]])
    _cent, valid = a.query_category(2)
    assert valid.any() and a.top_down(0).shape == (a.nx, a.nx)
    assert len(a.point_cloud(0).points) == int(a.occupancy()[0])


def test_voxel_map_camera_convention() -> None:
    m = em.make("voxel_map", batch_size=1, voxel_size=0.05, hfov=1.0, extent=5.0)
    depth = torch.full((1, 1, 1), 2.0)  # centre pixel, 2 m ahead
    for yaw, expect in ((0.0, (3.0, 1.0)), (math.pi / 2, (1.0, 3.0))):
        m.reset()
        m.write(depth, torch.tensor([[1.0, 1.0, 0.5, yaw]]))
        c = m.centres(m.vkeys)[0]
        assert abs(float(c[0]) - expect[0]) < 0.05 and abs(float(c[1]) - expect[1]) < 0.05


def test_hydra_configs_build_every_memory() -> None:
    from pathlib import Path

    from omegaconf import OmegaConf

    conf = Path(em.__file__).parent.parent / "conf" / "memory"
    for name in em.names():
        cfg = OmegaConf.to_container(OmegaConf.load(conf / f"{name}.yaml"))
        assert cfg.pop("name") == name
        em.make(name, **cfg)


def test_voxel_map_store_matches_a_plain_sorted_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """The append-only store + two-level sorted index (small delta merges forced) equals a table rebuilt
    from scratch with torch.unique after every write; public views, reads, state and resize stay consistent."""
    import embodied.memory.voxel_map as vmod

    monkeypatch.setattr(vmod, "_DELTA_MAX", 40)
    g = torch.Generator().manual_seed(3)
    B = 2
    m = em.make("voxel_map", batch_size=B, voxel_size=0.25, num_classes=3, feature_dim=2, extent=4.0)
    keys, votes = torch.zeros(0, dtype=torch.long), torch.zeros(0, 3)
    for _ in range(12):
        depth = 0.5 + 2 * torch.rand(B, 6, 8, generator=g)
        pose = torch.cat([torch.rand(B, 2, generator=g), torch.ones(B, 1), 6.28 * torch.rand(B, 1, generator=g)], 1)
        lab = torch.randint(0, 3, (B, 6, 8), generator=g)
        pts, valid = m.backproject(depth, pose)
        lin, ok = m.voxel_index(pts)
        ok = ok & valid
        k = (torch.arange(B)[:, None, None] * m.K + lin)[ok]
        allk = torch.cat([keys, k])
        keys, inv = torch.unique(allk, return_inverse=True)
        new_votes = torch.nn.functional.one_hot(lab[ok], 3).float()
        votes = torch.zeros(keys.numel(), 3).index_add_(0, inv, torch.cat([votes, new_votes]))
        m.write(depth, pose, lab, torch.randn(B, 6, 8, 2, generator=g))
        q = m.centres(keys)[None].expand(B, -1, -1)
        r = m.read(q)
        assert bool(r.output[keys // m.K, torch.arange(keys.numel())].all())
        torch.testing.assert_close(r.trace["label"][keys // m.K, torch.arange(keys.numel())], votes.argmax(-1))
        assert torch.equal(m.occupancy(), torch.bincount(keys // m.K, minlength=B))
        assert not m._ordered  # the write itself never compacted the store (that is O(V))
    assert torch.equal(m.vkeys, keys) and torch.equal(m.votes, votes)
    saved = copy.deepcopy(m.state_dict())
    m.write(depth, pose, lab)
    assert torch.equal(saved["vkeys"], keys)  # state dicts are snapshots
    m.resize(3)
    assert m.vkeys.numel() == 0 and m.occupancy().tolist() == [0, 0, 0]


def test_hcam_fast_read_equals_general_read() -> None:
    """The batched-matmul read (no content mask) equals the general einsum read, outputs and gradients."""
    from embodied.memory.hcam import HCAMAttention

    torch.manual_seed(0)
    for pe in (True, False):
        a = HCAMAttention(12, 8, 16, heads=4, topk=3, chunk_size=5, position_encoding=pe)
        q = torch.randn(2, 3, 12, requires_grad=True)
        keys, cont = torch.randn(2, 6, 8), torch.randn(2, 6, 5, 8)
        mask = torch.rand(2, 3, 6) > 0.3
        mask[0, 0] = False
        r1 = a(q, keys, cont, mask)
        r2 = a(q, keys, cont, mask, torch.ones(2, 6, 5, dtype=torch.bool))
        torch.testing.assert_close(r1.output, r2.output, rtol=1e-5, atol=1e-6)
        params = [q, a.q.weight, a.k.weight, a.v.weight, a.o.weight]
        for x, y in zip(torch.autograd.grad(r1.output.sum(), params), torch.autograd.grad(r2.output.sum(), params)):
            torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)


def test_hcam_inference_chunk_scores_follow_weight_updates() -> None:
    """The no-grad read uses a cached fused W_q^T W_k; it must equal the training-mode scores and be
    rebuilt after an in-place update (optimizer step) and after `load_state_dict`."""
    from embodied.memory.hcam import HCAMAttention

    torch.manual_seed(0)
    a = HCAMAttention(12, 8, 16, heads=4, topk=3, chunk_size=5)
    q, keys = torch.randn(2, 3, 12), torch.randn(2, 6, 8)

    def check() -> None:
        with torch.no_grad():
            fast = a.chunk_scores(q, keys)
        torch.testing.assert_close(fast, a.chunk_scores(q, keys).detach(), rtol=1e-5, atol=1e-5)

    check()
    with torch.no_grad():
        a.chunk_q.weight.mul_(-2.0)  # in place, as an optimizer step does
    check()
    other = HCAMAttention(12, 8, 16, heads=4, topk=3, chunk_size=5)
    a.load_state_dict(other.state_dict())
    check()
    with torch.no_grad():
        torch.testing.assert_close(a.chunk_scores(q, keys), other.chunk_scores(q, keys))


def test_hcam_rollout_reads_follow_writes_resets_prunes_and_weight_updates() -> None:
    """A no-grad read scores chunks through `projected_keys`, kept up to date by `write`. After every kind
    of state change it must read what the training path (scores through the weights) reads."""
    torch.manual_seed(0)
    m = em.make("hcam", dim=8, chunk_size=4, topk=2, heads=2, max_chunks=5)
    s = m.initial_state(3)
    with torch.no_grad():
        m.attention.chunk_q.weight.mul_(10.0)  # scores far apart, so a stale key changes the read
    q = torch.randn(3, 8)

    def check(s: TensorState) -> None:
        with torch.no_grad():
            fast = m.read(q, s)
        with torch.enable_grad():
            slow = m.read(q, s)  # the training path: scores through the weights
        with torch.no_grad():  # the invariant behind it: every chunk's key, projected with today's weights
            torch.testing.assert_close(s.projected_keys, m.attention.project_keys(s.keys), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fast.output, slow.output.detach(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fast.trace["weights"], slow.trace["weights"].detach(), rtol=1e-5, atol=1e-5)
        assert torch.equal(fast.trace["indices"], slow.trace["indices"])

    with torch.no_grad():
        for t in range(30):  # wraps the 5-chunk ring buffer
            m.write(torch.randn(3, 8), s, active=torch.tensor([True, t % 3 > 0, True]))
            if t % 7 == 0:
                check(s)
        s.reset(torch.tensor([False, True, False]))
        check(s)
        for _ in range(9):
            m.write(torch.randn(3, 8), s)
        check(s)
        m.attention.chunk_k.weight.mul_(-1.5)  # an optimizer step between rollouts,
        for _ in range(8):
            m.write(torch.randn(3, 8), s)  # then writes before any read
        check(s)
        s.select(torch.tensor([2, 0]))
        q = q[[2, 0]]
        check(s)
        other = em.make("hcam", dim=8, chunk_size=4, topk=2, heads=2, max_chunks=5)
        m.load_state_dict(other.state_dict())  # new weights under an existing state
        check(s)
    m.sequence(torch.randn(2, 6, 8), s)  # a training window writes keys without projecting them
    check(s)


@pytest.mark.parametrize("heads,n,entries,tokens,dim", [(1, 4, 5, 3, 16), (2, 2, 3, 2, 8), (4, 8, 4, 8, 8)])
def test_pcmb_query_side_retrieval_equals_projecting_the_bank(
    heads: int, n: int, entries: int, tokens: int, dim: int
) -> None:
    from embodied.memory.pcmb import CrossBlock

    torch.manual_seed(0)
    blk = CrossBlock(dim, heads)
    q = torch.randn(2, n, dim, requires_grad=True)
    mem, pe = torch.randn(2, entries, tokens, dim), torch.randn(2, entries, dim)
    mask = torch.rand(2, entries * tokens) > 0.3
    mask[:, 0] = True
    key = (mem + pe[:, :, None]).reshape(2, -1, dim)
    a, wa = blk(q, key, mem.reshape(2, -1, dim), mask)
    b, wb = blk.forward_bank(q, mem, pe, mask)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(wa, wb, rtol=1e-4, atol=1e-6)
    params = [q, blk.q.weight, blk.k.weight, blk.v.weight, blk.v.bias]
    for x, y in zip(torch.autograd.grad(a.square().sum(), params), torch.autograd.grad(b.square().sum(), params)):
        torch.testing.assert_close(x, y, rtol=1e-3, atol=1e-4)


READS = {  # read(query = the step's input, state) of each driver, compared with what `step` returns
    "hcam": lambda m, s, x: m.read(x[0], s).output,
    "pcmb": lambda m, s, x: m.read(x[0], x[1], s).output[0].flatten(1),
    "pcmb_fifo": lambda m, s, x: m.read(x[0], x[1], s).output[1],
    "dual_kv": lambda m, s, x: m.read(x[0], x[1], s).output,
    "events": lambda m, s, x: m.read(x[0], s).output,
    **{f"place_{ev}": (lambda m, s, x: m.read(x[0], s).output) for ev in ("fifo", "lifo", "lvfo", "mvfo")},
}


@pytest.mark.parametrize("name", sorted(READS))
def test_step_reads_the_memory_before_writing_the_step(name: str) -> None:
    """Read-then-write: a step's output is the read of the state as it was before the step (and `read`
    leaves the state unchanged)."""
    d = DRIVERS[name]
    g = torch.Generator().manual_seed(4)
    B, T = 2, 9
    x = d.inputs(B, T, g)
    m, s = _fresh(d, B)
    with torch.no_grad():
        for t in range(T):
            xt = _slice(x, t)
            before = s.clone()
            r1 = READS[name](m, s, xt)
            r2 = READS[name](m, s, xt)  # a read changes nothing
            got = d.step(m, s, xt)
            torch.testing.assert_close(r1, r2, rtol=0, atol=0)
            torch.testing.assert_close(got, r1, rtol=1e-5, atol=1e-6)
            assert any(not torch.equal(v, s.tensors()[k]) for k, v in before.tensors().items())  # it wrote
