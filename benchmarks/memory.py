"""Per-step latency and peak memory of each memory, and of the memory agents' `act`, against episode length.

Usage: python benchmarks/memory.py [--lengths 256 1024 4096 16384] [--batch 1 8] [--steps 20] [--repeat 3]
       [--kinds ...]

Every memory is **filled for real** to each length before timing: the state is advanced by `length` steps
of its own write path (HCAM through `sequence` windows, an exact parallel fill; the sequential memories
step by step), with fresh random inputs, on `B` environment rows at once. Nothing is relabelled: a
`dual_kv` cache has seen `length` frames, a `pcmb` bank has consolidated `length` entries, a `voxel_map`
has fused `length` depth frames. Latency is the median over `--steps` timed streaming steps (one read and
one write, no grad) after `--warmup` untimed ones.

Latency is the calling thread's CPU time per step (torch runs one thread): on a loaded shared machine the
wall clock mostly measures the scheduler; the wall-clock median is printed beside it.

Agents (`hcam_agent`, `full_attention_agent`): the same encoder (a blind PointNav agent: pointgoal, GPS,
compass) and
width (dim 512, 8 heads, 2 layers, MLP ratio 2); `hcam_agent` has HCAM layers (chunk 32, top-k 2, a ring
of 512 chunks = 16,384 steps), `full_attention_agent` has pre-LN transformer layers attending to the whole
episode's cached keys and values. Both are filled by running their own layers over `length` steps of
random features of the encoder's width, then timed through `act(obs)` (processor, encoder, trunk, head).

Every (kind, length, batch) configuration runs in its own subprocess; peak memory is the subprocess's
`ru_maxrss` minus its RSS before the memory was built (platform.md: tracemalloc does not see torch
allocations). With `--repeat R` every configuration runs in R rounds of fresh subprocesses and the table
shows the median of the R medians (a loaded shared machine needs it).

`full_attention` is multi-head attention of the step over all cached (projected) history keys and values;
`htm_pytorch` runs `HTMAttention` of the same shapes over the whole history each step (no incremental
memory).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

D, HEADS, TOPK, CHUNK = 512, 8, 2, 32
BLIND = ["pointgoal", "gps", "compass"]  # the agents' inputs: a blind PointNav agent (a cheap shared encoder)
AGENT = {"dim": 512, "layers": 2, "heads": 8, "topk": 2, "chunk_size": 32, "max_chunks": 512, "mlp_ratio": 2}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def memory_bench(kind: str, length: int, B: int, steps: int) -> Callable[[], None]:
    """Build the memory `kind`, fill it for real to `length` steps on B rows, return one timed step."""
    import embodied.memory as em

    g = torch.Generator().manual_seed(0)
    if kind == "hcam":
        m = em.make("hcam", dim=D, chunk_size=CHUNK, topk=TOPK, heads=HEADS,
                    max_chunks=max(1, (length + steps + 64) // CHUNK + 1))  # fmt: skip
        s = m.initial_state(B)
        for lo in range(0, length, 1024):  # the parallel window pass: the same state as `length` steps
            m.sequence(torch.randn(B, min(1024, length - lo), D, generator=g), s)
        x = torch.randn(B, D, generator=g)
        return lambda: m.step(x, s)
    if kind == "dual_kv":
        m = em.make("dual_kv", semantic_dim=64, spatial_dim=64, dim=64, tokens_per_frame=16, layers=2, heads=4)
        s = m.initial_state(B)
        for _ in range(length):
            m.step(torch.randn(B, 16, 64, generator=g), torch.randn(B, 16, 64, generator=g), s)
        a, b = torch.randn(B, 16, 64, generator=g), torch.randn(B, 16, 64, generator=g)
        return lambda: m.step(a, b, s)
    if kind == "pcmb":
        m = em.make("pcmb", dim=256, n_tokens=64, capacity=16, heads=1)
        s = m.initial_state(B)
        for _ in range(length):
            m.step(torch.randn(B, 64, 256, generator=g), torch.randn(B, 256, generator=g), s)
        p, c = torch.randn(B, 64, 256, generator=g), torch.randn(B, 256, generator=g)
        return lambda: m.step(p, c, s)
    if kind == "events":
        m = em.make("events", dim=D, max_events=256, max_event_len=64, topk=4)
        s = m.initial_state(B)
        for _ in range(length):
            m.write(torch.randn(B, D, generator=g), s)
        x = torch.randn(B, D, generator=g)
        return lambda: m.step(x, s)
    if kind == "place":
        m = em.make("place", dim=D, capacity=1024, num_places=32, chunk_size=CHUNK, topk=TOPK, heads=HEADS)
        s = m.initial_state(B)
        for i in range(length):
            m.write(torch.randn(B, D, generator=g), torch.full((B,), i // 50 % 32), s)
        x, where = torch.randn(B, D, generator=g), torch.full((B,), 3)
        return lambda: m.step(x, where, s)
    if kind == "voxel_map":
        m = em.make("voxel_map", batch_size=B, voxel_size=0.1, num_classes=16, extent=25.0)

        def frame() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            d = 0.5 + 4 * torch.rand(B, 64, 64, generator=g)
            pose = torch.cat([20 * torch.rand(B, 2, generator=g) - 10, torch.ones(B, 1),
                              6.28 * torch.rand(B, 1, generator=g)], 1)  # fmt: skip
            return d, pose, torch.randint(0, 16, (B, 64, 64), generator=g)

        for _ in range(length):
            m.write(*frame())
        fr = frame()
        return lambda: m.step(*fr)
    if kind == "full_attention":
        hist_k = torch.empty(B, HEADS, length + steps + 64, D // HEADS)
        hist_v = torch.empty_like(hist_k)
        hist_k[:, :, :length] = torch.randn(B, HEADS, length, D // HEADS, generator=g)
        hist_v[:, :, :length] = torch.randn(B, HEADS, length, D // HEADS, generator=g)
        qkv, o = nn.Linear(D, 3 * D), nn.Linear(D, D)
        x = torch.randn(B, D, generator=g)
        n = [length]

        def step() -> None:
            q, k, v = qkv(x).view(B, 3, HEADS, 1, D // HEADS).unbind(1)
            hist_k[:, :, n[0] : n[0] + 1] = k
            hist_v[:, :, n[0] : n[0] + 1] = v
            n[0] += 1
            a = nn.functional.scaled_dot_product_attention(q, hist_k[:, :, : n[0]], hist_v[:, :, : n[0]])
            o(a.reshape(B, 1, D))

        return step
    if kind == "htm_pytorch":
        from htm_pytorch import HTMAttention

        attn = HTMAttention(dim=D, heads=HEADS, topk_mems=TOPK, mem_chunk_size=CHUNK, dim_head=D // HEADS)
        mem = torch.empty(B, length + steps + 64 + CHUNK, D)
        mem[:, :length] = torch.randn(B, length, D, generator=g)
        x = torch.randn(B, D, generator=g)
        n = [length]

        def step() -> None:
            usable = n[0] // CHUNK * CHUNK  # completed chunks, like our HCAM
            attn(x[:, None], mem[:, :usable])
            mem[:, n[0]] = x
            n[0] += 1

        return step
    if kind in ("hcam_agent", "full_attention_agent"):
        return agent_bench(kind, length, B, g)
    raise ValueError(f"unknown kind {kind!r}; known: {KINDS}")


class FullAttentionTrunk(nn.Module):
    """Pre-LN transformer layers of the agent's width attending to every cached step of the episode."""

    def __init__(self, dim: int, layers: int, heads: int, mlp_ratio: int, capacity: int, batch: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))
        self.qkv = nn.ModuleList(nn.Linear(dim, 3 * dim) for _ in range(layers))
        self.o = nn.ModuleList(nn.Linear(dim, dim) for _ in range(layers))
        self.ln2 = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))
        self.mlp = nn.ModuleList(nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(),
                                               nn.Linear(mlp_ratio * dim, dim)) for _ in range(layers))  # fmt: skip
        self.k = torch.zeros(layers, batch, heads, capacity, dim // heads)
        self.v = torch.zeros_like(self.k)
        self.n = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, T, dim] (T = 1 when acting): causal attention over the cache and the window."""
        B, T, Dm = x.shape
        H = self.heads
        lo, hi = self.n, self.n + T
        causal = torch.ones(T, hi, dtype=torch.bool).tril(lo)
        for i in range(len(self.qkv)):
            q, k, v = self.qkv[i](self.ln1[i](x)).view(B, T, 3, H, Dm // H).permute(2, 0, 3, 1, 4)
            self.k[i, :, :, lo:hi], self.v[i, :, :, lo:hi] = k, v
            a = nn.functional.scaled_dot_product_attention(q, self.k[i, :, :, :hi], self.v[i, :, :, :hi],
                                                           attn_mask=None if T == 1 else causal)
            x = x + self.o[i](a.transpose(1, 2).reshape(B, T, Dm))
            x = x + self.mlp[i](self.ln2[i](x))
        self.n = hi
        return x


def sample_obs(space: Any, batch: int, seed: int) -> dict[str, np.ndarray]:
    space.seed(seed)
    samples = [space.sample() for _ in range(batch)]
    return {k: np.stack([np.asarray(x[k]) for x in samples]) for k in space.spaces}


def agent_bench(kind: str, length: int, B: int, g: torch.Generator) -> Callable[[], None]:
    """hcam_agent or the full-attention agent of the same width, filled to `length` steps, timed by `act`."""
    import embodied

    env = embodied.envs.make("pointnav", resolution=16)
    policy = embodied.policies.make("hcam_agent", observation_space=env.observation_space, obs_keys=BLIND,
                                    action_space=env.action_space, **AGENT).eval()
    obs = sample_obs(env.observation_space, B, 0)
    obs["depth"] = np.abs(obs["depth"]) % 5.0 + 0.5
    env.close()
    policy.reset(np.ones(B, dtype=bool))
    window = 1024
    if kind == "hcam_agent":
        for lo in range(0, length, window):  # the agent's own layers over `length` steps (exact parallel fill)
            feats = torch.randn(B, min(window, length - lo), AGENT["dim"], generator=g)
            policy.forward_window(feats, None, policy.rollout_state)
        return lambda: policy.act(obs)
    trunk = FullAttentionTrunk(AGENT["dim"], AGENT["layers"], AGENT["heads"], AGENT["mlp_ratio"],
                               length + 256, B).eval()
    for lo in range(0, length, window):
        trunk(torch.randn(B, min(window, length - lo), AGENT["dim"], generator=g))

    def act() -> np.ndarray:
        h = trunk(policy.encode(obs)[:, None])[:, 0]
        return policy.action_from_output(policy.head(policy.norm(h)))

    return act


def bench(kind: str, length: int, B: int, steps: int, warmup: int = 5) -> dict[str, Any]:
    torch.manual_seed(0)
    torch.set_grad_enabled(False)
    base = rss_mb()
    step = memory_bench(kind, length, B, steps + warmup)
    for _ in range(warmup):  # first calls build lazy caches (fused weights, projected keys) and warm the allocator
        step()
    times, cpu = [], []
    for _ in range(steps):
        t0, c0 = time.perf_counter(), time.thread_time()
        step()
        cpu.append(time.thread_time() - c0)
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"kind": kind, "length": length, "batch": B, "wall_ms": 1e3 * statistics.median(times),
            "ms": 1e3 * statistics.median(cpu), "peak_mb": peak - base}


KINDS = ["hcam", "full_attention", "htm_pytorch", "dual_kv", "pcmb", "events", "place", "voxel_map", "hcam_agent",
         "full_attention_agent"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", type=int, nargs="*", default=[256, 1024, 4096, 16384])
    ap.add_argument("--batch", type=int, nargs="*", default=[1, 8])
    ap.add_argument("--kinds", nargs="*", default=KINDS)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps before the timed ones (every memory)")
    ap.add_argument("--threads", type=int, default=1)  # 2 threads collapse on a loaded 2-core box
    ap.add_argument("--repeat", type=int, default=1, help="fresh subprocesses per configuration (median)")
    ap.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.one:
        print(json.dumps(bench(a.one[0], int(a.one[1]), int(a.one[2]), a.steps, a.warmup)))
        return
    bad = sorted(set(a.kinds) - set(KINDS))
    if bad:
        raise SystemExit(f"--kinds: unknown {bad}; known: {KINDS}")
    configs = [(kind, n, b) for b in a.batch for kind in a.kinds for n in a.lengths]
    # Rounds: every configuration once per round, so a drift in the machine's load hits them all alike.
    runs: dict[tuple[str, int, int], list[dict[str, Any]]] = {c: [] for c in configs}
    for i in range(a.repeat):
        for kind, n, b in configs:
            cmd = [sys.executable, __file__, "--one", kind, str(n), str(b), "--steps", str(a.steps), "--warmup",
                   str(a.warmup), "--threads", str(a.threads)]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            runs[(kind, n, b)].append(json.loads(out.stdout.strip().splitlines()[-1]))
            if i == a.repeat - 1:
                r = runs[(kind, n, b)]
                print(f"{kind:22s} B={b} {n:6d} steps  {statistics.median(x['ms'] for x in r):8.3f} ms/step CPU  "
                      f"({statistics.median(x['wall_ms'] for x in r):8.3f} wall)  "
                      f"peak +{statistics.median(x['peak_mb'] for x in r):7.1f} MB  "
                      f"runs {[round(x['ms'], 3) for x in r]}", flush=True)  # fmt: skip
    by = {c: {"ms": statistics.median(x["ms"] for x in r), "peak_mb": statistics.median(x["peak_mb"] for x in r)}
          for c, r in runs.items()}  # fmt: skip
    for b in a.batch:
        print(f"\nB = {b}\n| memory | " + " | ".join(f"{n} steps" for n in a.lengths) + " |")
        print("|---|" + "---|" * len(a.lengths))
        for kind in a.kinds:
            cells = [f"{by[(kind, n, b)]['ms']:.2f} ms / {by[(kind, n, b)]['peak_mb']:.0f} MB" for n in a.lengths]
            print(f"| {kind} | " + " | ".join(cells) + " |")
        L = max(a.lengths)
        for fast, slow in (("hcam", "full_attention"), ("hcam_agent", "full_attention_agent")):
            if (fast, L, b) in by and (slow, L, b) in by:
                print(f"{fast} speed-up over {slow} at step {L}, B={b}: "
                      f"{by[(slow, L, b)]['ms'] / by[(fast, L, b)]['ms']:.1f}x")
        if ("hcam_agent", L, b) in by and ("hcam_agent", 1024, b) in by:
            print(f"hcam_agent latency step {L} / step 1024, B={b}: "
                  f"{by[('hcam_agent', L, b)]['ms'] / by[('hcam_agent', 1024, b)]['ms']:.2f}")


if __name__ == "__main__":
    main()
