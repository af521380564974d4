"""`act_with_trace`: what each policy's memories read at a step, per row, on request only; and the
memory inspector's payload built from those traces (embodied/viewer/panels.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from gymnasium import spaces

import embodied.policies
from embodied.envs.nav.language import CHARSET
from embodied.policies.traces import TraceSink, act_with_trace, tracing
from embodied.viewer import panels

S = 32


def nav_space(text: bool = False, semantic: bool = False) -> spaces.Dict:
    out: dict[str, spaces.Space] = {
        "rgb": spaces.Box(0, 255, (S, S, 3), np.uint8), "depth": spaces.Box(0.0, 10.0, (S, S, 1), np.float32),
        "gps": spaces.Box(-50.0, 50.0, (2,), np.float32), "compass": spaces.Box(-np.pi, np.pi, (1,), np.float32)}
    if text:
        out["instruction"] = spaces.Text(64, charset=CHARSET)
    else:
        out["pointgoal"] = spaces.Box(np.array([0, -np.pi], np.float32), np.array([50, np.pi], np.float32))
    if semantic:
        out["semantic"] = spaces.Box(0, 50, (S, S), np.int32)
        out["semantic_category"] = spaces.Box(0, 20, (S, S), np.int32)
        out["objectgoal"] = spaces.Discrete(20)
    return spaces.Dict(out)


def batch(space: spaces.Dict, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    space.seed(seed)
    rows = [space.sample() for _ in range(n)]
    out: dict[str, np.ndarray] = {}
    for key in space.spaces:
        values = [r[key] for r in rows]
        out[key] = np.array(values, dtype=object) if isinstance(values[0], str) else np.stack(values)
        if key == "depth":
            out[key] = np.clip(out[key], 0.3, 5.0)
        if key == "gps":  # inside any map's extent
            out[key] = np.clip(out[key], -5.0, 5.0)
    return out


def build(name: str, space: spaces.Dict, action_space: spaces.Space | None = None, **kw: Any) -> Any:
    policy = embodied.policies.make(name, observation_space=space, action_space=action_space or spaces.Discrete(4),
                                    **kw)
    return policy


def steps(policy: Any, space: spaces.Dict, n_steps: int, rows: int = 2) -> list[Any]:
    policy.reset(np.ones(rows, dtype=bool))
    out = []
    for t in range(n_steps):
        out.append(act_with_trace(policy, batch(space, rows, seed=t)))
    return out


def test_hcam_agent_traces_every_layer_per_row_and_acts_as_plain_act() -> None:
    space = nav_space()
    traced, plain = build("hcam_agent", space, dim=32, layers=2, chunk_size=2), build(
        "hcam_agent", space, dim=32, layers=2, chunk_size=2)
    traced.reset(np.ones(2, dtype=bool))
    plain.reset(np.ones(2, dtype=bool))
    for t in range(6):
        obs = batch(space, 2, seed=t)
        actions, traces = act_with_trace(traced, obs)
        np.testing.assert_array_equal(actions, plain.act(obs))  # tracing changes nothing the policy does
    assert traced.trace_sink is None  # attached for the call only
    assert len(traces) == 2 and set(traces[0]) == {"layer0", "layer1"}
    read = traces[1]["layer0"]
    assert read.kind == "hcam" and read.facts == {"chunk_size": 2}
    # 5 steps written before the 6th read: 2 complete chunks of 2, both readable and chosen
    assert int(read.trace["occupancy"]) == 2
    assert read.trace["indices"].shape == (min(4, 64),) and read.trace["selected_valid"].sum() == 2
    assert sorted(read.trace["chunk_start_t"][read.trace["selected_valid"]].tolist()) == [0, 2]
    assert not any("trace" in k for k in traced.state_dict())


def test_note_read_is_a_no_op_without_a_sink() -> None:
    policy = build("memory_agent", nav_space(), dim=32, memory="hcam")
    policy.reset(np.ones(1, dtype=bool))
    policy.act(batch(nav_space(), 1))
    assert policy.trace_sink is None
    with tracing(policy) as sink:
        policy.act(batch(nav_space(), 1))
    assert isinstance(sink, TraceSink) and set(sink.reads) == {"memory"}


def test_trace_sink_refuses_unknown_kinds_and_misaligned_rows() -> None:
    sink = TraceSink()
    with pytest.raises(ValueError, match="trace kind must be one of"):
        sink.add("m", "lstm", {}, None)
    sink.add("m", "gru", {"hidden_norm": torch.zeros(3)}, None)
    with pytest.raises(ValueError, match="noted twice"):
        sink.add("m", "gru", {}, None)
    with pytest.raises(ValueError, match="leading batch axis of 2"):
        sink.rows(2)


@pytest.mark.parametrize("memory", ["hcam", "pcmb", "events", "place", "gru"])
def test_memory_agent_traces_become_inspector_payloads(memory: str) -> None:
    space = nav_space()
    policy = build("memory_agent", space, dim=32, memory=memory, chunk_size=2, capacity=4)
    results = steps(policy, space, 7)
    reads = results[-1][1][0]
    assert set(reads) == {"memory"} and reads["memory"].kind == memory
    thumbs = {t: f"thumb{t}" for t in range(7)}
    (payload,) = panels.memory_payload(reads, thumbs.get)
    assert payload["kind"] == memory and payload["name"] == "memory"
    if memory == "hcam":
        assert payload["occupancy"] == 3 and len(payload["chunks"]) == 3
        assert all(c["thumbs"] == [f"thumb{c['start']}", f"thumb{c['start'] + 1}"] for c in payload["chunks"])
        assert abs(sum(c["weight"] for c in payload["chunks"]) - 1.0) < 1e-3
    elif memory == "pcmb":
        assert payload["occupancy"] == 4 and payload["capacity"] == 4  # full: consolidation merged entries
        assert len(payload["entries"]) == 4 and "per_merge_similarity" in payload
    elif memory == "events":
        assert payload["closed_events"] >= 0 and isinstance(payload["events"], list)
    elif memory == "place":
        assert payload["occupancy"] >= 1 and all("place" in c for c in payload["chunks"])
    else:
        assert payload["hidden_norm"] > 0


def test_janus_vln_traces_its_kv_windows() -> None:
    space = nav_space(text=True)
    policy = build("janus_vln", space, dim=32, lm_hidden=32, n_initial=2, n_recent=3, texts=["go left"])
    reads = steps(policy, space, 7, rows=1)[-1][1][0]
    (payload,) = panels.memory_payload(reads, lambda t: None)
    assert payload["kind"] == "dual_kv" and payload["n_initial"] == 2
    # 6 frames written before the 7th read: the start window keeps 0, 1; the recent window the last 3 + this one
    assert [f["t"] for f in payload["initial"]] == [0, 1]
    assert payload["occupancy"] == len(payload["initial"]) + payload["recent_count"] <= 2 + 3 + 1


def test_memory_vla_traces_its_bank() -> None:
    space = spaces.Dict({"agentview_rgb": spaces.Box(0, 255, (S, S, 3), np.uint8),
                         "state": spaces.Box(-1.0, 1.0, (8,), np.float32),
                         "instruction": spaces.Text(64, charset=CHARSET)})
    policy = build("memory_vla", space, spaces.Box(-1.0, 1.0, (7,), np.float32), dim=32, lm_hidden=32,
                   capacity=3, texts=["pick it"])
    reads = steps(policy, space, 5, rows=1)[-1][1][0]
    (payload,) = panels.memory_payload(reads, lambda t: f"t{t}")
    assert payload["kind"] == "pcmb" and payload["occupancy"] == 3
    assert [e["thumb"] for e in payload["entries"]] == [f"t{e['t']}" for e in payload["entries"]]


def test_map_agent_traces_its_voxel_map_points_in_the_world_frame() -> None:
    space = nav_space(semantic=True)
    policy = build("map_agent", space)
    reads = steps(policy, space, 2, rows=2)[-1][1][1]
    (payload,) = panels.memory_payload(reads, lambda t: None, start=[10.0, -5.0, 0.0])
    assert payload["kind"] == "voxel_map" and payload["voxels"] > 0 and payload["points_written"] > 0
    cloud = np.asarray(payload["cloud"])
    assert cloud.shape[1] == 6 and len(cloud) == min(payload["voxels"], 4000)
    assert abs(cloud[:, 0].mean() - 10.0) < 6.0  # shifted by the episode start (depth <= 5 m)


def test_policies_without_memory_give_empty_traces() -> None:
    space = nav_space()
    policy = embodied.policies.make("random", action_space=spaces.Discrete(4), seed=0)
    policy.reset(np.ones(2, dtype=bool))
    actions, traces = act_with_trace(policy, batch(space, 2))
    assert len(actions) == 2 and traces == [{}, {}]
