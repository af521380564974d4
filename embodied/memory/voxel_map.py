"""voxel_map: a 3-D voxel memory fused from depth, pose and per-pixel labels / features.

Camera convention (inputs of `write`):
* `depth [B,H,W]` metres along the optical axis from a pinhole camera with horizontal field of view
  `hfov` (radians); square pixels, principal point at the image centre; depth <= 0 or > `max_depth` ignored.
* `pose [B,4]` = camera position (x, y, z) in a Z-up world and yaw (rad; 0 = looking along +X,
  counter-clockwise positive). The camera looks horizontally (no pitch / roll); image u grows to the
  right, v grows downwards.
* `labels [B,H,W]` long category ids (optional, < `num_classes`, negative = unlabeled) and
  `features [B,H,W,F]` (optional).

Hot path: a torch voxel hash over all environments at once (no per-env loop). Voxel keys are
`env * K + linear voxel index`; the public table (`vkeys` sorted, with aligned point counts, label votes
[V, num_classes] and feature sums [V, F]; also the state dict) is a view of an internal store:

* the store is append-only with spare capacity (new voxels go to the end, existing voxels are updated in
  place with `index_add_`), so a write never moves the O(V) vote / feature rows;
* the key -> slot index is a large sorted part plus a small sorted "delta" of recently added keys; a write
  looks its (uniqued) keys up in both with `searchsorted` and merges its new keys into the delta (O(delta));
  the delta is merged into the large part when it passes `_DELTA_MAX` keys (O(V) keys only);
* reading the public table (`vm.vkeys`, `vm.votes`, ..., `state_dict()`, exports) first compacts the store
  into sorted order when keys were added since the last compaction (O(V), off the hot path);
* per-env occupancy is a running count.

A 64x64 write therefore costs O(H*W log) plus O(delta), independent of the map size.

Unlike the other memories, a `VoxelMap` has no weights: the object *is* the episode state (a growing
table that is not indexed by environment, so it does not fit a `TensorState`). It keeps its own
`reset(mask)` / `prune(keep)` / `resize(n)`, and a policy holds it as rollout state, outside its
`nn.Module` (see `map_agent`), so it never lands in a checkpoint. Fusion is a sum, so
streaming and sequence mode agree up to float summation order. open3d is used only for exports
(`point_cloud`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from embodied.memory import MEMORIES
from embodied.memory.base import Memory, ReadResult, as_keep_index

_TABLE = ("vkeys", "counts", "votes", "feats")
_DELTA_MAX = 1 << 16  # keys in the small sorted index before it is merged into the large one


def _merge_sorted(ak: Tensor, av: Tensor, bk: Tensor, bv: Tensor) -> tuple[Tensor, Tensor]:
    """Merge two sorted, disjoint key arrays with their values (O(na + nb log na))."""
    if bk.numel() == 0:
        return ak, av
    if ak.numel() == 0:
        return bk, bv
    dst = torch.searchsorted(ak, bk) + torch.arange(bk.numel(), device=bk.device)
    n = ak.numel() + bk.numel()
    rest = torch.ones(n, dtype=torch.bool, device=ak.device)
    rest[dst] = False
    keys, vals = ak.new_empty(n), av.new_empty(n)
    keys[rest], vals[rest] = ak, av
    keys[dst], vals[dst] = bk, bv
    return keys, vals


@MEMORIES.register("voxel_map")
class VoxelMap(Memory):
    """Args: batch_size, voxel_size (m, 0.05-0.10), hfov (rad), num_classes, feature_dim (0 = none),
    extent (half-width of the mapped square around the origin, m), z_range (min, max height, m), max_depth,
    stride (pixel subsampling).

    API: `write(depth, pose, labels=None, features=None, active=None) -> trace`;
    `read(positions[B,Q,3]) -> ReadResult(occupied [B,Q] float, trace{label, feature, count})` (query by
    position); `query_category(c) -> (centres [B,K,3], valid [B,K])`; `query_feature(f[B,F], k)`;
    `top_down(env) -> [Hm,Wm] label map`; `point_cloud(env) -> open3d PointCloud`.
    """

    def __init__(
        self,
        batch_size: int = 1,
        voxel_size: float = 0.1,
        hfov: float = math.pi / 2,
        num_classes: int = 16,
        feature_dim: int = 0,
        extent: float = 25.0,
        z_range: tuple[float, float] = (-1.0, 3.0),
        max_depth: float = 10.0,
        stride: int = 1,
    ) -> None:
        super().__init__(detach_writes=True)
        self._batch_size = int(batch_size)
        self._table_fill: dict[str, float | int | bool] = {}
        self.voxel_size, self.hfov, self.num_classes, self.feature_dim = voxel_size, hfov, num_classes, feature_dim
        self.extent, self.z_range, self.max_depth, self.stride = extent, tuple(z_range), max_depth, stride
        self.nx = math.ceil(2 * extent / voxel_size)
        self.nz = math.ceil((z_range[1] - z_range[0]) / voxel_size)
        self.K = self.nx * self.nx * self.nz
        # flat table over all envs (env axis = key // K)
        self._add_table("vkeys", torch.zeros(0, dtype=torch.long))
        self._add_table("counts", torch.zeros(0))
        self._add_table("votes", torch.zeros(0, num_classes))
        self._add_table("feats", torch.zeros(0, max(feature_dim, 0)))
        self._add_table("t", torch.zeros(batch_size, dtype=torch.long))
        self._rebuild()

    # ----------------------------------------------------------------- table buffers
    def _add_table(self, name: str, tensor: Tensor, fill: float | int | bool = 0) -> None:
        self.register_buffer(name, tensor.fill_(fill) if tensor.numel() else tensor, persistent=True)
        self._table_fill[name] = fill

    @property
    def batch_size(self) -> int:
        return self._batch_size

    def _rows(self, mask: Tensor) -> Tensor:
        mask = torch.as_tensor(mask, device=self.device)
        if mask.dtype != torch.bool:
            mask = torch.zeros(self.batch_size, dtype=torch.bool, device=self.device).index_fill_(
                0, mask.long().flatten(), True)
        if mask.shape != (self.batch_size,):
            raise ValueError(f"reset mask must have shape ({self.batch_size},), got {tuple(mask.shape)}")
        return mask

    @torch.no_grad()
    def resize(self, batch_size: int) -> None:
        """`batch_size` empty environment rows (the whole map cleared)."""
        n = int(batch_size)
        if n < 0:
            raise ValueError(f"batch_size must be >= 0, got {n}")
        for name in _TABLE:
            buf = self._buffers[name]
            self._buffers[name] = buf.new_zeros(0, *buf.shape[1:])
        self._buffers["t"] = torch.zeros(n, dtype=torch.long, device=self.device)
        self._batch_size = n
        self._rebuild()

    # ----------------------------------------------------------------- internal store
    # _sk/_sc/_sv/_sf: append-only store (capacity >= _n); _ik/_is: large sorted index (keys, slots);
    # _dk/_ds: small sorted index of keys added since; _occ [B]: voxels per env; _ordered: store slots are
    # in key order; _stale: the public table (registered buffers) must be refreshed from the store.
    @property
    def device(self) -> torch.device:
        return self._buffers["t"].device

    def _rebuild(self, extra: int = 4096) -> None:
        """(Re)build the store from the public table (after init, load, reset, prune, device moves)."""
        b = self._buffers
        keys, dev = b["vkeys"], b["vkeys"].device
        n = keys.numel()
        cap = n + extra
        self._sk = torch.zeros(cap, dtype=torch.long, device=dev)
        self._sc = torch.zeros(cap, dtype=b["counts"].dtype, device=dev)
        self._sv = torch.zeros(cap, self.num_classes, dtype=b["votes"].dtype, device=dev)
        self._sf = torch.zeros(cap, b["feats"].shape[1], dtype=b["feats"].dtype, device=dev)
        self._sk[:n], self._sc[:n], self._sv[:n], self._sf[:n] = keys, b["counts"], b["votes"], b["feats"]
        self._n = n
        self._ik, self._is = self._sk[:n], torch.arange(n, device=dev)
        self._dk = torch.zeros(0, dtype=torch.long, device=dev)
        self._ds = torch.zeros(0, dtype=torch.long, device=dev)
        self._occ = torch.bincount(keys // self.K, minlength=self.batch_size)[: self.batch_size]
        self._ordered, self._stale = True, True

    def _sync(self) -> None:
        """Refresh the public sorted table (views of the store); compacts the store if keys were added."""
        d = self.__dict__
        if not d.get("_stale", False):
            return
        self._stale = False
        n = self._n
        if not self._ordered:  # keys were appended: permute the store into key order
            keys, slots = _merge_sorted(self._ik, self._is, self._dk, self._ds)
            cap = max(self._sk.numel(), n + 4096)
            dev = keys.device
            sk = torch.zeros(cap, dtype=torch.long, device=dev)
            sc = torch.zeros(cap, dtype=self._sc.dtype, device=dev)
            sv = torch.zeros(cap, self.num_classes, dtype=self._sv.dtype, device=dev)
            sf = torch.zeros(cap, self._sf.shape[1], dtype=self._sf.dtype, device=dev)
            sk[:n], sc[:n], sv[:n], sf[:n] = keys, self._sc[slots], self._sv[slots], self._sf[slots]
            self._sk, self._sc, self._sv, self._sf = sk, sc, sv, sf
            self._ik, self._is = sk[:n], torch.arange(n, device=dev)
            self._dk, self._ds = self._dk[:0], self._ds[:0]
            self._ordered = True
        b = self._buffers
        b["vkeys"], b["counts"], b["votes"], b["feats"] = self._sk[:n], self._sc[:n], self._sv[:n], self._sf[:n]

    def __getattr__(self, name: str) -> Any:
        if name in _TABLE and self.__dict__.get("_stale", False):
            self._sync()
        return super().__getattr__(name)

    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str, keep_vars: bool) -> None:
        self._sync()
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "_batch_size_"] = torch.tensor(self._batch_size)
        for name in _TABLE:  # snapshots: the store is updated in place by later writes
            destination[prefix + name] = destination[prefix + name].clone()

    def _apply(self, fn: Any, recurse: bool = True) -> VoxelMap:
        self._sync()
        for name in _TABLE:  # detach the public table from the store before moving it
            self._buffers[name] = self._buffers[name].clone()
        super()._apply(fn, recurse)
        self._rebuild()
        return self

    def _find(self, keys: Tensor) -> Tensor:
        """Store slot of each key (-1 where absent)."""
        slot = torch.full_like(keys, -1)
        for ik, isl in ((self._ik, self._is), (self._dk, self._ds)):
            if ik.numel():
                pos = torch.searchsorted(ik, keys).clamp(max=ik.numel() - 1)
                slot = torch.where(ik[pos] == keys, isl[pos], slot)
        return slot

    def _reserve(self, n: int) -> None:
        cap = self._sk.numel()
        if n <= cap:
            return
        cap = max(n, 2 * cap)
        m = self._n
        for name in ("_sk", "_sc", "_sv", "_sf"):
            old = getattr(self, name)
            new = old.new_zeros(cap, *old.shape[1:])
            new[:m] = old[:m]
            setattr(self, name, new)
        # the large index keys were a view of the old store: keep them as they are (own copy)
        self._ik = self._ik.clone() if self._ik.numel() else self._ik

    # the flat table is not indexed by env: custom reset / prune / batch size
    def reset(self, mask: Tensor | None = None) -> None:
        mask = self._rows(torch.ones(self.batch_size, dtype=torch.bool) if mask is None else mask)
        self.t = torch.where(mask.to(self.t.device), 0, self.t)
        if not bool(mask.any()) or not bool((self._occ.to(mask.device)[mask] > 0).any()):
            return  # nothing to clear (the usual per-step reset(done) call)
        keep = ~mask.to(self.vkeys.device)[self.vkeys // self.K]
        self.vkeys, self.counts, self.votes, self.feats = (
            self.vkeys[keep], self.counts[keep], self.votes[keep], self.feats[keep],
        )  # fmt: skip
        self._rebuild()

    def prune(self, keep: Tensor) -> None:
        idx = as_keep_index(keep, self.batch_size).to(self.vkeys.device)
        new_of_old = torch.full((self.batch_size,), -1, dtype=torch.long, device=idx.device)
        new_of_old[idx] = torch.arange(idx.numel(), device=idx.device)
        env = new_of_old[self.vkeys // self.K]
        k = env >= 0
        keys = env[k] * self.K + self.vkeys[k] % self.K
        order = keys.argsort()
        self.vkeys, self.counts = keys[order], self.counts[k][order]
        self.votes, self.feats = self.votes[k][order], self.feats[k][order]
        self.t = self.t[idx]
        self._batch_size = int(idx.numel())
        self._rebuild()

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, local_metadata: dict[str, Any],
                              strict: bool, missing_keys: list[str], unexpected_keys: list[str],
                              error_msgs: list[str]) -> None:
        self._sync()
        for name in self._table_fill:  # adopt the saved shapes (another batch size, a grown table)
            if prefix + name in state_dict:
                cur = self._buffers[name]
                self._buffers[name] = torch.empty(state_dict[prefix + name].shape, dtype=cur.dtype, device=cur.device)
        state_dict = {k: v for k, v in state_dict.items() if k != prefix + "_batch_size_"}
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        self._batch_size = int(self.t.shape[0])
        self._rebuild()

    # ----------------------------------------------------------------- geometry
    def backproject(self, depth: Tensor, pose: Tensor) -> tuple[Tensor, Tensor]:
        """depth [B,H,W], pose [B,4] -> world points [B,H,W,3], valid [B,H,W] (see module docstring)."""
        _B, H, W = depth.shape
        f = (W / 2) / math.tan(self.hfov / 2)
        u = torch.arange(W, device=depth.device, dtype=depth.dtype) + 0.5 - W / 2
        v = torch.arange(H, device=depth.device, dtype=depth.dtype) + 0.5 - H / 2
        right = depth * u[None, None, :] / f
        down = depth * v[None, :, None] / f
        yaw = pose[:, 3][:, None, None]
        c, s = torch.cos(yaw), torch.sin(yaw)
        x = pose[:, 0, None, None] + depth * c + right * s  # right = (sin yaw, -cos yaw)
        y = pose[:, 1, None, None] + depth * s - right * c
        z = pose[:, 2, None, None] - down
        valid = (depth > 0) & (depth <= self.max_depth)
        return torch.stack([x, y, z], -1), valid

    def voxel_index(self, pts: Tensor) -> tuple[Tensor, Tensor]:
        g = torch.floor((pts[..., :2] + self.extent) / self.voxel_size).long()
        gz = torch.floor((pts[..., 2] - self.z_range[0]) / self.voxel_size).long()
        ok = (g >= 0).all(-1) & (g < self.nx).all(-1) & (gz >= 0) & (gz < self.nz)
        lin = (g[..., 0] * self.nx + g[..., 1]) * self.nz + gz
        return lin.clamp(0, self.K - 1), ok

    def centres(self, keys: Tensor) -> Tensor:
        lin = keys % self.K
        gz = lin % self.nz
        gy = (lin // self.nz) % self.nx
        gx = lin // (self.nz * self.nx)
        vs = self.voxel_size
        return torch.stack(
            [(gx + 0.5) * vs - self.extent, (gy + 0.5) * vs - self.extent, (gz + 0.5) * vs + self.z_range[0]], -1
        )

    # ----------------------------------------------------------------- write / read
    def write(
        self,
        depth: Tensor,
        pose: Tensor,
        labels: Tensor | None = None,
        features: Tensor | None = None,
        active: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Fuse one frame per environment (depth [B,H,W], pose [B,4], labels [B,H,W], features [B,H,W,F])."""
        sl = (slice(None), slice(None, None, self.stride), slice(None, None, self.stride))
        depth = depth[sl]
        B = depth.shape[0]
        if active is None:
            active = torch.ones(B, dtype=torch.bool, device=depth.device)
        pts, valid = self.backproject(depth, pose)
        lin, ok = self.voxel_index(pts)
        ok = ok & valid & active[:, None, None]
        env = torch.arange(B, device=depth.device)[:, None, None].expand_as(lin)
        keys = (env * self.K + lin)[ok]
        votes = torch.zeros(keys.shape[0], self.num_classes, device=depth.device)
        if labels is not None:
            lab = labels[sl][ok].long()
            lv = (lab >= 0) & (lab < self.num_classes)
            votes[lv.nonzero().flatten(), lab[lv]] = 1.0
        feats = (
            features[sl][ok].float()
            if features is not None and self.feature_dim
            else votes.new_zeros(keys.shape[0], self._sf.shape[1])
        )
        self._merge(keys, torch.ones(keys.shape[0], device=depth.device), votes, feats)
        self.t = self.t + active.long().to(self.t.device)
        return {"points": ok.sum((1, 2)), "voxels": self.occupancy()}

    def _merge(self, keys: Tensor, counts: Tensor, votes: Tensor, feats: Tensor) -> None:
        """Add per-point counts / votes / features for keys (any order, repeats allowed) to the store."""
        if keys.numel() == 0:
            return
        uk, inv = torch.unique(keys, sorted=True, return_inverse=True)
        slot = self._find(uk)
        new = slot < 0
        nk = uk[new]
        m = nk.numel()
        if m:
            n = self._n
            self._reserve(n + m)
            ns = torch.arange(n, n + m, device=uk.device)
            slot[new] = ns
            self._sk[n : n + m] = nk
            self._n = n + m
            self._ordered = False
            self._dk, self._ds = _merge_sorted(self._dk, self._ds, nk, ns)
            if self._dk.numel() > _DELTA_MAX:
                self._ik, self._is = _merge_sorted(self._ik, self._is, self._dk, self._ds)
                self._dk, self._ds = self._dk[:0], self._ds[:0]
            self._occ = self._occ + torch.bincount(nk // self.K, minlength=self.batch_size)[: self.batch_size]
        s = slot[inv]
        self._sc.index_add_(0, s, counts.to(self._sc.dtype))
        self._sv.index_add_(0, s, votes.to(self._sv.dtype))
        if self._sf.shape[1]:
            self._sf.index_add_(0, s, feats.to(self._sf.dtype))
        self._stale = True

    def occupancy(self) -> Tensor:
        """[B] number of occupied voxels per environment."""
        return self._occ.clone()

    def _lookup(self, keys: Tensor) -> tuple[Tensor, Tensor]:
        pos = torch.searchsorted(self.vkeys, keys).clamp(max=max(self.vkeys.numel() - 1, 0))
        hit = (
            (self.vkeys.numel() > 0) & (self.vkeys[pos] == keys)
            if self.vkeys.numel()
            else torch.zeros_like(keys, dtype=torch.bool)
        )
        return pos, hit

    def read(self, positions: Tensor) -> ReadResult:
        """Query by position: positions [B,Q,3] world metres -> occupied [B,Q] plus label / feature / count."""
        B = positions.shape[0]
        lin, ok = self.voxel_index(positions)
        keys = torch.arange(B, device=positions.device)[:, None] * self.K + lin
        slot = self._find(keys)
        hit = (slot >= 0) & ok
        s = slot.clamp(min=0)
        if self._n:
            label = torch.where(hit, self._sv[s].argmax(-1), -1)
            count = torch.where(hit, self._sc[s], 0.0)
            feat = (self._sf[s] / self._sc[s].clamp(min=1)[..., None]) * hit[..., None]
        else:
            label, count, feat = torch.full_like(keys, -1), torch.zeros_like(keys, dtype=torch.float), None
        return ReadResult(hit.float(), {"label": label, "count": count, "feature": feat, "occupancy": self.occupancy()})

    def query_category(self, category: int, max_results: int = 256) -> tuple[Tensor, Tensor]:
        """Centres of voxels whose majority label is `category`: [B,K,3] and valid [B,K]."""
        sel = (self.votes.argmax(-1) == category) & (self.votes.sum(-1) > 0)
        return self._per_env(sel.float(), max_results)

    def query_feature(self, feature: Tensor, k: int = 16) -> tuple[Tensor, Tensor, Tensor]:
        """Top-k voxels by cosine similarity of their mean feature to feature [B,F]: centres, scores, valid."""
        env = self.vkeys // self.K
        mean = self.feats / self.counts.clamp(min=1)[:, None]
        s = torch.cosine_similarity(mean, feature[env], dim=-1)
        cent, valid, score = self._per_env(s, k, return_scores=True)
        return cent, score, valid

    def _per_env(self, score: Tensor, k: int, return_scores: bool = False) -> Any:
        B, V = self.batch_size, self.vkeys.numel()
        env = self.vkeys // self.K
        dense = torch.full((B, max(V, 1)), float("-inf"), device=score.device)
        if V:
            dense[env, torch.arange(V, device=score.device)] = torch.where(
                score > 0 if not return_scores else torch.ones_like(score, dtype=torch.bool), score, float("-inf")
            )
        kk = min(k, dense.shape[1])
        top, idx = dense.topk(kk, dim=1)
        valid = torch.isfinite(top)
        if V:
            cent = self.centres(self.vkeys[idx.clamp(max=max(V - 1, 0))])
        else:
            cent = torch.zeros(B, kk, 3, device=score.device)
        cent = cent * valid[..., None]
        return (cent, valid, top) if return_scores else (cent, valid)

    def step(
        self, depth: Tensor, pose: Tensor, labels: Tensor | None = None, features: Tensor | None = None
    ) -> ReadResult:
        """Read the map around the camera (positions 1 m ahead at camera height) as it was before this
        frame, then fuse the frame (read-then-write, as every memory)."""
        ahead = pose[:, :3] + torch.stack(
            [torch.cos(pose[:, 3]), torch.sin(pose[:, 3]), torch.zeros_like(pose[:, 3])], -1
        )
        r = self.read(ahead[:, None])
        r.trace.update(self.write(depth, pose, labels, features))
        return r

    def sequence(
        self,
        depth: Tensor,
        pose: Tensor,
        labels: Tensor | None = None,
        features: Tensor | None = None,
        reset: Tensor | None = None,
    ) -> None:
        """Fuse a window [B,T,...] at once: frames before an episode start in the window are dropped."""
        B, T = depth.shape[:2]
        dev = depth.device
        if reset is not None:
            reset = reset.to(dev)
            last = torch.where(reset, torch.arange(T, device=dev)[None], -1).max(1).values
            self.reset(last >= 0)
            keep_t = torch.arange(T, device=dev)[None] >= last.clamp(min=0)[:, None]
        else:
            keep_t = torch.ones(B, T, dtype=torch.bool, device=dev)
        flat = lambda x: None if x is None else x.flatten(0, 1)  # noqa: E731
        t0 = self.t.clone()
        # fuse all frames as one big batch of B*T "envs" mapped back to their env
        d = flat(depth)
        env_of = torch.arange(B, device=dev).repeat_interleave(T)
        pts, valid = self.backproject(d[:, :: self.stride, :: self.stride], flat(pose))
        lin, ok = self.voxel_index(pts)
        ok = ok & valid & keep_t.flatten()[:, None, None]
        keys = (env_of[:, None, None] * self.K + lin)[ok]
        votes = torch.zeros(keys.shape[0], self.num_classes, device=dev)
        if labels is not None:
            lab = flat(labels)[:, :: self.stride, :: self.stride][ok].long()
            lv = (lab >= 0) & (lab < self.num_classes)
            votes[lv.nonzero().flatten(), lab[lv]] = 1.0
        feats = (flat(features)[:, :: self.stride, :: self.stride][ok].float()
                 if features is not None and self.feature_dim
                 else votes.new_zeros(keys.shape[0], self._sf.shape[1]))  # fmt: skip
        self._merge(keys, torch.ones(keys.shape[0], device=dev), votes, feats)
        self.t = torch.where(
            reset.any(1) if reset is not None else torch.zeros(B, dtype=torch.bool, device=dev), 0, t0
        ) + keep_t.sum(1)

    # ----------------------------------------------------------------- exports
    def top_down(self, env: int = 0) -> Tensor:
        """[nx, nx] long map for env: majority label of the highest occupied voxel per cell (-1 free/unknown)."""
        sel = (self.vkeys // self.K) == env
        lin = self.vkeys[sel] % self.K
        cell = lin // self.nz
        lab = torch.where(self.votes[sel].sum(-1) > 0, self.votes[sel].argmax(-1), self.num_classes)
        out = torch.full((self.nx * self.nx,), -1, dtype=torch.long)
        out[cell] = lab  # keys are sorted by z within a cell, so the highest voxel wins
        return out.view(self.nx, self.nx)

    def point_cloud(self, env: int = 0) -> Any:
        """open3d PointCloud of voxel centres of env, coloured by label."""
        import numpy as np
        import open3d as o3d

        sel = (self.vkeys // self.K) == env
        pts = self.centres(self.vkeys[sel]).cpu().numpy().astype(np.float64)
        lab = self.votes[sel].argmax(-1).cpu().numpy()
        rng = np.random.default_rng(0)
        palette = rng.uniform(0.2, 1.0, size=(self.num_classes, 3))
        pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
        pc.colors = o3d.utility.Vector3dVector(palette[lab])
        return pc
