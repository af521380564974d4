"""Per-step read+write latency and peak memory of each memory against episode length.

Usage: python benchmarks/memory.py [--lengths 256 1024 4096 16384] [--steps 20] [--repeat 3] [--kinds ...]

Every (memory, length) configuration runs in its own subprocess; peak memory is the subprocess's
`resource.getrusage(RUSAGE_SELF).ru_maxrss` minus its RSS before the memory was built and filled
(platform.md: tracemalloc does not see torch allocations). Latency is the median over `--steps` timed
streaming steps (one read + one write, batch 1, no grad) after filling the memory to the given length and
`--warmup` untimed steps;
with `--repeat R` every configuration runs in R fresh subprocesses, in R rounds that each run every
configuration once (a drift in the machine's load then hits all alike), and the table shows the median of the
R medians (and of the R peaks), which is what a loaded shared machine needs.

HCAM shapes match platform.md's htm-pytorch measurement: dim 512, 8 heads, top-k 2, chunk 32, one query
per step; `full_attention` is multi-head attention of the step over all cached (projected) history keys and
values; `htm_pytorch` runs `HTMAttention` of the same shapes over the whole history each step (it has no
incremental memory, so the history is a tensor that grows by one row per step).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

import torch

D, HEADS, TOPK, CHUNK = 512, 8, 2, 32


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def bench(kind: str, length: int, steps: int, warmup: int = 5) -> dict[str, Any]:
    import embodied.memory as em

    torch.manual_seed(0)
    torch.set_grad_enabled(False)
    base = rss_mb()
    x = torch.randn(1, D)
    if kind == "hcam":
        m = em.make("hcam", dim=D, batch_size=1, chunk_size=CHUNK, topk=TOPK, heads=HEADS,
                    max_chunks=max(1, (length + steps) // CHUNK + 1))  # fmt: skip
        for _ in range(length):  # no history tensor kept outside the memory
            m.write(torch.randn(1, D))

        def step() -> None:
            m.step(x)
    elif kind == "full_attention":
        hist_k = torch.empty(1, HEADS, length + steps + 1, D // HEADS)
        hist_v = torch.empty_like(hist_k)
        hist_k[:, :, :length] = torch.randn(1, HEADS, length, D // HEADS)
        hist_v[:, :, :length] = torch.randn(1, HEADS, length, D // HEADS)
        qkv = torch.nn.Linear(D, 3 * D)
        o = torch.nn.Linear(D, D)
        n = [length]

        def step() -> None:
            q, k, v = qkv(x).view(1, 3, HEADS, 1, D // HEADS).unbind(1)
            hist_k[:, :, n[0] : n[0] + 1] = k
            hist_v[:, :, n[0] : n[0] + 1] = v
            n[0] += 1
            a = torch.nn.functional.scaled_dot_product_attention(q, hist_k[:, :, : n[0]], hist_v[:, :, : n[0]])
            o(a.reshape(1, 1, D))
    elif kind == "htm_pytorch":
        from htm_pytorch import HTMAttention

        attn = HTMAttention(dim=D, heads=HEADS, topk_mems=TOPK, mem_chunk_size=CHUNK, dim_head=D // HEADS)
        mem = torch.empty(1, length + steps + CHUNK, D)
        mem[:, :length] = torch.randn(1, length, D)
        n = [length]

        def step() -> None:
            usable = n[0] // CHUNK * CHUNK  # completed chunks, like our HCAM
            attn(x[:, None], mem[:, :usable])
            mem[:, n[0]] = x
            n[0] += 1
    elif kind == "dual_kv":
        m = em.make("dual_kv", semantic_dim=64, spatial_dim=64, dim=64, tokens_per_frame=16, batch_size=1,
                    layers=2, heads=4)  # fmt: skip
        s, g = torch.randn(1, 16, 64), torch.randn(1, 16, 64)
        for _ in range(min(length, 64)):  # the cache is full after 57 frames; fill the counters for the rest
            m.step(s, g)
        for c in m.caches.values():
            for layer in c.layers:
                layer.frames_seen += length - min(length, 64)
                layer.slot_frame += length - min(length, 64)

        def step() -> None:
            m.step(s, g)
    elif kind == "pcmb":
        m = em.make("pcmb", dim=256, n_tokens=64, batch_size=1, capacity=16, heads=1)
        p, c = torch.randn(1, 64, 256), torch.randn(1, 256)
        for _ in range(min(length, 32)):  # the bank is full after 16 steps
            m.step(p, c)

        def step() -> None:
            m.step(p, c)
    elif kind == "events":
        m = em.make("events", dim=D, batch_size=1, max_events=256, max_event_len=64, topk=4)
        xs = torch.randn(length, 1, D)
        for i in range(length):
            m.write(xs[i])

        def step() -> None:
            m.step(x)
    elif kind == "place":
        m = em.make("place", dim=D, batch_size=1, capacity=1024, num_places=32, chunk_size=CHUNK, topk=TOPK,
                    heads=HEADS)  # fmt: skip
        xs = torch.randn(length, 1, D)
        for i in range(length):
            m.write(xs[i], torch.tensor([i // 50 % 32]))

        def step() -> None:
            m.step(x, torch.tensor([3]))
    elif kind == "voxel_map":
        m = em.make("voxel_map", batch_size=1, voxel_size=0.1, num_classes=16, extent=25.0)
        g = torch.Generator().manual_seed(0)

        def frame() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            d = 0.5 + 4 * torch.rand(1, 64, 64, generator=g)
            pose = torch.cat(
                [20 * torch.rand(1, 2, generator=g) - 10, torch.ones(1, 1), 6.28 * torch.rand(1, 1, generator=g)], 1
            )
            return d, pose, torch.randint(0, 16, (1, 64, 64), generator=g)

        for _ in range(min(length, 512)):  # map size saturates with the scene; cap the fill
            m.write(*frame())
        fr = frame()

        def step() -> None:
            m.step(*fr)
    else:
        raise ValueError(kind)
    for _ in range(warmup):  # first calls build lazy caches (fused weights, projected keys) and warm the allocator
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"kind": kind, "length": length, "ms": 1e3 * statistics.median(times), "peak_mb": peak - base}


KINDS = ["hcam", "full_attention", "htm_pytorch", "dual_kv", "pcmb", "events", "place", "voxel_map"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", type=int, nargs="*", default=[256, 1024, 4096, 16384])
    ap.add_argument("--kinds", nargs="*", default=KINDS)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps before the timed ones (every memory)")
    ap.add_argument("--threads", type=int, default=1)  # 2 threads collapse on a loaded 2-core box
    ap.add_argument("--repeat", type=int, default=1, help="fresh subprocesses per configuration (median)")
    ap.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.one:
        print(json.dumps(bench(a.one[0], int(a.one[1]), a.steps, a.warmup)))
        return
    configs = []
    for kind in a.kinds:
        for length in a.lengths:
            configs += [(kind, 64)] if kind == "dual_kv" and length == a.lengths[0] else []
            configs.append((kind, length))
    # Rounds: every configuration once per round, so a drift in the machine's load hits them all alike.
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {c: [] for c in configs}
    for i in range(a.repeat):
        for kind, n in configs:
            cmd = [sys.executable, __file__, "--one", kind, str(n), "--steps", str(a.steps), "--warmup", str(a.warmup)]
            out = subprocess.run([*cmd, "--threads", str(a.threads)], capture_output=True, text=True, check=True)
            runs[(kind, n)].append(json.loads(out.stdout.strip().splitlines()[-1]))
            if i == a.repeat - 1:
                r = runs[(kind, n)]
                print(f"{kind:15s} {n:6d} steps  {statistics.median(x['ms'] for x in r):8.3f} ms/step  "
                      f"peak +{statistics.median(x['peak_mb'] for x in r):7.1f} MB  "
                      f"runs {[round(x['ms'], 3) for x in r]}", flush=True)  # fmt: skip
    rows = [
        {
            "kind": kind,
            "length": n,
            "ms": statistics.median(x["ms"] for x in runs[(kind, n)]),
            "peak_mb": statistics.median(x["peak_mb"] for x in runs[(kind, n)]),
        }
        for kind, n in configs
    ]
    by = {(r["kind"], r["length"]): r for r in rows}
    print("\n| memory | " + " | ".join(f"{n} steps" for n in a.lengths) + " |")
    print("|---|" + "---|" * len(a.lengths))
    for kind in a.kinds:
        cells = [
            f"{by[(kind, n)]['ms']:.2f} ms / {by[(kind, n)]['peak_mb']:.0f} MB" for n in a.lengths if (kind, n) in by
        ]
        print(f"| {kind} | " + " | ".join(cells) + " |")
    L = max(a.lengths)
    if ("hcam", L) in by and ("full_attention", L) in by:
        print(
            f"\nHCAM speed-up over full attention at {L}: "
            f"{by[('full_attention', L)]['ms'] / by[('hcam', L)]['ms']:.1f}x"
        )
    if ("hcam", L) in by and ("htm_pytorch", L) in by:
        h, t = by[("hcam", L)], by[("htm_pytorch", L)]
        print(
            f"HCAM vs htm-pytorch at {L}: {t['ms'] / h['ms']:.1f}x faster, "
            f"peak {h['peak_mb']:.0f} vs {t['peak_mb']:.0f} MB"
        )
    if ("dual_kv", 64) in by and ("dual_kv", 4096) in by:
        print(f"dual_kv latency step 4096 / step 64: {by[('dual_kv', 4096)]['ms'] / by[('dual_kv', 64)]['ms']:.2f}")


if __name__ == "__main__":
    main()
