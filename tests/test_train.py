"""Training jobs: resume, preemption, corrupt files, torchrun, DAgger, the policy contract.

Every test trains a real policy on a real dataset that `embodied.data.collect` recorded from the
expert in the embedded PointNav env (16 px, short episodes), through the real `embodied-train`
code path (in process or as a subprocess).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import embodied
from embodied.data.collect import collect
from embodied.data.reader import open_dataset
from embodied.policies import CheckpointError
from embodied.train.batches import StepBatches
from embodied.train.loop import read_log

ENV = {"resolution": 16, "max_episode_steps": 40, "expert": True}
GRU = ["policy=gru", "policy.dim=16"]


def train_args(dataset: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return [*GRU, f"dataset={dataset}", f"output_dir={out}", f"train.steps={steps}", "train.window=8",
            "train.batch_size=4", "train.warmup_steps=2", "train.log_every=1", "train.tensorboard=false", *extra]


def run_train(args: list[str], **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "embodied.train", *args], env=env, capture_output=True, text=True,
                          timeout=600, **kw)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "pointnav"
    collect("pointnav", ENV, "expert", {}, root, episodes=4, seed=0, progress=False)
    return root


def losses(out: Path) -> dict[int, float]:
    records = read_log(out)
    steps = [r["step"] for r in records]
    assert steps == sorted(set(steps)), f"a step is logged twice or out of order: {steps}"
    return {r["step"]: r["loss"] for r in records}


def test_sigterm_checkpoints_and_resume_matches_the_uninterrupted_run(dataset: Path, tmp_path: Path) -> None:
    """Preemption: SIGTERM mid-run writes a checkpoint and exits 143; the same command with
    train.resume=true finishes the run, and its loss curve and weights equal an uninterrupted run's."""
    full, out = tmp_path / "full", tmp_path / "run"
    steps, keep = 14, ["train.save_every=100000"]
    assert run_train(train_args(dataset, full, steps, *keep)).returncode == 0
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "embodied.train", *train_args(dataset, out, steps, *keep)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = out / "train_log.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 3):
        time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-2000:]
    step = json.loads((out / "checkpoints/last/training_state/training_step.json").read_text())["step"]
    assert step == max(losses(out)) and 3 <= step < steps, "the checkpoint is at the last finished step"
    assert embodied.policies.from_pretrained(out).name == "gru"  # an output_dir resolves to checkpoints/last
    r = run_train(train_args(dataset, out, steps, *keep, "train.resume=true"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resumed from" in r.stdout
    a, b = losses(full), losses(out)
    assert sorted(b) == list(range(1, steps + 1))
    np.testing.assert_allclose([b[s] for s in sorted(b)], [a[s] for s in sorted(a)], rtol=1e-6)
    wa = load_file(str(full / "checkpoints/last/pretrained_model/model.safetensors"))
    wb = load_file(str(out / "checkpoints/last/pretrained_model/model.safetensors"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k])


def test_corrupt_checkpoint_files_are_named(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert run_train(train_args(dataset, out, 2)).returncode == 0
    model = out / "checkpoints/last/pretrained_model"
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text(json.dumps({"type": "gru"}))
    (bare / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"config\.json"):
        embodied.policies.from_pretrained(bare)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        embodied.policies.from_pretrained(model)
    (model / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json"):
        embodied.policies.from_pretrained(model)
    other = tmp_path / "other"
    assert run_train(train_args(dataset, other, 2)).returncode == 0
    opt = other / "checkpoints/last/training_state/optimizer_state.safetensors"
    opt.write_bytes(b"\x00" * 16)
    r = run_train(train_args(dataset, other, 4, "train.resume=true"))
    assert r.returncode != 0 and "optimizer_state.safetensors" in r.stderr


def test_torchrun_two_ranks_equal_one_process(dataset: Path, tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    args = ["train.save_every=1000", "train.device=cpu"]
    r1 = run_train(train_args(dataset, one, 5, *args))
    assert r1.returncode == 0, r1.stderr[-2000:]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    r2 = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                         "--master-addr", "127.0.0.1", f"--master-port={port}", "-m", "embodied.train",
                         *train_args(dataset, two, 5, *args)], env=env, capture_output=True, text=True, timeout=600)
    assert r2.returncode == 0, r2.stderr[-3000:]
    w1 = load_file(str(one / "checkpoints/last/pretrained_model/model.safetensors"))
    w2 = load_file(str(two / "checkpoints/last/pretrained_model/model.safetensors"))
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(list(losses(one).values()), list(losses(two).values()), rtol=1e-4)
    # rank 0 alone wrote: one log line per step, one checkpoint, one Hydra config
    assert sorted(losses(two)) == [1, 2, 3, 4, 5]
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["000005", "last"]


def test_ranks_get_disjoint_slices_of_the_same_global_batch() -> None:
    starts = np.arange(1000)
    one = StepBatches(starts, batch_size=8, seed=3, start_step=5)
    ranks = [StepBatches(starts, batch_size=8, seed=3, start_step=5, rank=r, world_size=2) for r in range(2)]
    for b1, r0, r1 in zip(iter(one), iter(ranks[0]), iter(ranks[1])):
        assert len(r0) == len(r1) == 4
        assert sorted(r0 + r1) == sorted(b1)
        assert r0 == b1[0::2] and r1 == b1[1::2]
        break
    resumed = next(iter(StepBatches(starts, 8, seed=3, start_step=6)))
    it = iter(one)
    next(it)
    assert next(it) == resumed, "step 6's batch does not depend on where the iteration started"
    with pytest.raises(ValueError, match="divisible"):
        StepBatches(starts, batch_size=7, seed=0, start_step=0, world_size=2)


def test_dagger_aggregates_expert_labels_of_visited_states(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "dagger"
    r = run_train(train_args(dataset, out, 3, "train.dagger.iterations=1", "train.dagger.episodes=2",
                             "train.dagger.steps=2", "train.dagger.beta=0.5", "train.dagger.num_envs=1"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "dagger iteration 1" in r.stdout
    agg = open_dataset(out / "dagger_data")
    base = open_dataset(dataset)
    assert agg.num_episodes == base.num_episodes + 2
    assert base.num_episodes == 4, "the user's dataset is never modified"
    new = [agg.read(e) for e in range(base.num_episodes, agg.num_episodes)]
    # the visited states carry the expert's label; the executed actions are the mixture's own
    assert all("expert_action" in ep for ep in new)
    executed = np.concatenate([ep["action"] for ep in new])
    labels = np.concatenate([ep["expert_action"] for ep in new])
    assert (executed != labels).any(), "beta=0.5: the policy drove some steps"
    assert sorted(losses(out)) == [1, 2, 3, 4, 5]


def test_building_a_policy_leaves_the_global_rng_alone() -> None:
    env = embodied.envs.make("pointnav", resolution=16)
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    a = embodied.policies.make("gru", observation_space=env.observation_space, action_space=env.action_space,
                               dim=16, seed=5)
    torch.testing.assert_close(torch.rand(4), expected)
    b = embodied.policies.make("gru", observation_space=env.observation_space, action_space=env.action_space,
                               dim=16, seed=5)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(va, vb, msg=k)


def test_rollout_state_is_not_in_the_weights(tmp_path: Path) -> None:
    venv = embodied.envs.make_vec("pointnav", num_envs=2, resolution=16)
    policy = embodied.policies.make("gru", observation_space=venv.single_observation_space,
                                    action_space=venv.single_action_space, dim=16)
    obs, _ = venv.reset(seed=0)
    policy.reset(np.ones(2, dtype=bool))
    policy.act(obs)
    assert policy.rollout_state is not None and policy.rollout_state.hidden.abs().sum() > 0
    names = set(policy.state_dict())
    assert not any("hidden" in n for n in names)
    policy.save_pretrained(tmp_path)
    assert set(load_file(str(tmp_path / "model.safetensors"))) == names


def test_unknown_policy_option_is_refused(dataset: Path, tmp_path: Path) -> None:
    r = run_train(train_args(dataset, tmp_path / "x", 1, "+policy.dimm=3"))
    assert r.returncode != 0 and "dimm" in r.stderr and "accepted options" in r.stderr


@pytest.mark.skipif(not os.environ.get("EMBODIED_LEROBOT_PYTHON"), reason="EMBODIED_LEROBOT_PYTHON is not set "
                    "(bash ../shared/lerobot/build.sh makes a venv with the real lerobot; see docs/data.md)")
def test_a_dataset_written_by_lerobot_trains_a_policy(tmp_path: Path) -> None:
    from test_data_lerobot import WRITE_WITH_LEROBOT, run_lerobot

    root = tmp_path / "lerobot_written"
    run_lerobot(WRITE_WITH_LEROBOT, str(root), str(tmp_path / "raw.npz"), tmp=tmp_path)
    out = tmp_path / "run"
    r = run_train(["policy=memoryless", "policy.dim=16", f"dataset={root}", f"output_dir={out}", "train.steps=3",
                   "train.window=4", "train.batch_size=2", "train.tensorboard=false"])
    assert r.returncode == 0, r.stderr[-3000:]
    policy = embodied.policies.from_pretrained(out)
    assert policy.config.action_dim == 7 and {"image", "wrist_image", "state"} <= set(policy.config.obs_spec)
    assert sorted(losses(out)) == [1, 2, 3]


def test_periodic_evaluation_logs_success_to_the_log_and_tensorboard(dataset: Path, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    args = [a for a in train_args(dataset, out, 2, "train.eval_every=2", "train.eval_episodes=2")
            if a != "train.tensorboard=false"]  # the default: TensorBoard on
    r = run_train(args)
    assert r.returncode == 0, r.stderr[-2000:]
    records = read_log(out)
    assert "eval/success" not in records[0] and 0.0 <= records[1]["eval/success"] <= 1.0
    assert "eval/spl" in records[1]
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert {"train/loss", "eval/success"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]


def test_tbptt_carries_the_state_across_windows_and_resumes_exactly(dataset: Path, tmp_path: Path) -> None:
    from embodied.train import distributed
    from embodied.train.batches import make_batches
    from embodied.train.config import TrainConfig
    from embodied.train.loop import train_policy

    source = open_dataset(dataset)

    def job(out: Path, until: int | None, resume: bool) -> tuple[dict[int, float], dict]:
        policy = embodied.policies.make("gru", observation_space=source.observation_space,
                                        action_space=source.action_space, dim=16)
        cfg = TrainConfig(steps=8, batch_size=2, window=6, sampling="tbptt", warmup_steps=1, save_every=100,
                          tensorboard=False, log_every=100)
        batches = make_batches(source, policy.processor, window=6, burn_in=0, batch_size=2, seed=0,
                               sampling="tbptt", target="action", num_workers=0)
        train_policy(policy, batches, cfg, out, {}, distributed.Dist(), until=until, resume=resume)
        return losses(out), policy.state_dict()

    full, w_full = job(tmp_path / "full", None, False)
    job(tmp_path / "part", 4, False)
    assert (tmp_path / "part/checkpoints/last/training_state/carry_rank0.safetensors").exists()
    part, w_part = job(tmp_path / "part", None, True)
    np.testing.assert_allclose([part[s] for s in range(1, 9)], [full[s] for s in range(1, 9)], rtol=1e-6)
    for k in w_full:
        torch.testing.assert_close(w_full[k], w_part[k])


def test_tbptt_loop_hands_each_window_the_previous_final_state(dataset: Path, tmp_path: Path) -> None:
    from embodied.policies.recurrent import GRUPolicy
    from embodied.train import distributed
    from embodied.train.batches import make_batches
    from embodied.train.config import TrainConfig
    from embodied.train.loop import train_policy

    class Recording(GRUPolicy):
        name = "gru"

        def forward(self, batch, state=None):
            given = None if state is None else state.hidden.clone()
            out = super().forward(batch, state)
            self.calls.append((given, out["state"].hidden.detach().clone()))
            return out

    source = open_dataset(dataset)
    policy = Recording.build(source.observation_space, source.action_space, dim=16)
    policy.calls = []
    cfg = TrainConfig(steps=3, batch_size=2, window=6, sampling="tbptt", tensorboard=False)
    batches = make_batches(source, policy.processor, window=6, burn_in=0, batch_size=2, seed=0, sampling="tbptt",
                           target="action", num_workers=0)
    train_policy(policy, batches, cfg, tmp_path, {}, distributed.Dist())
    assert policy.calls[0][0] is None
    for (_, previous_end), (given, _) in zip(policy.calls, policy.calls[1:]):
        torch.testing.assert_close(given, previous_end)


def test_ema_checkpoint_and_bf16_autocast(dataset: Path, tmp_path: Path) -> None:
    from embodied.train.optim import WarmupCosine, ema_update

    out = tmp_path / "run"
    r = run_train(train_args(dataset, out, 3, "train.ema=0.5", "train.amp=bf16"))
    assert r.returncode == 0, r.stderr[-2000:]
    ema = load_file(str(out / "checkpoints/last/pretrained_model/model.safetensors"))
    raw = load_file(str(out / "checkpoints/last/training_state/weights.safetensors"))
    assert set(ema) == set(raw) and any(not torch.equal(ema[k], raw[k]) for k in ema)
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    expected = 0.25 * a.weight.detach() + 0.75 * b.weight.detach()
    ema_update(a, b, decay=0.25)
    torch.testing.assert_close(a.weight.detach(), expected)
    sched = WarmupCosine(total=10, warmup=2, min_ratio=0.1)
    assert [round(sched(i), 3) for i in (0, 1, 2, 9, 10)] == [0.5, 1.0, 1.0, 0.134, 0.1]


def test_janus_vln_trains_on_whole_vln_episodes(tmp_path: Path) -> None:
    from embodied.data.sampling import Collate, EpisodeDataset
    from embodied.train.batches import make_batches

    root = tmp_path / "vln"
    collect("vln", {"resolution": 16, "max_episode_steps": 30, "expert": True}, "expert", {}, root, episodes=2,
            seed=0, progress=False)
    source = open_dataset(root)
    policy = embodied.policies.make("janus_vln", observation_space=source.observation_space,
                                    action_space=source.action_space, texts=source.tasks, dim=16, lm_hidden=16,
                                    lm_layers=1, lm_heads=2)
    raw = Collate()([EpisodeDataset(source)[e] for e in range(2)])  # padded to the longer episode
    batch = {"obs": policy.processor(raw["obs"]), "action": raw["action"], "loss_mask": raw["loss_mask"],
             "episode_start": raw["episode_start"]}
    windows = {"obs": {k: np.array(v, dtype=object) if isinstance(v, list) else v.numpy()
                       for k, v in raw["obs"].items()},
               "actions": raw["action"].numpy(), "mask": raw["loss_mask"].numpy()}
    # forward(batch) on the collate's tensors (ids from the processor) equals loss() on raw windows
    torch.testing.assert_close(policy(batch)["loss"], policy.loss(windows), rtol=1e-5, atol=1e-6)
    crossing = make_batches(source, policy.processor, window=40, burn_in=0, batch_size=2, seed=0,
                            sampling="window", target="action", num_workers=0)
    with pytest.raises(ValueError, match="sampling=episode"):
        policy(next(crossing(0, 0, 1)))


def test_group_sampling_gives_ordered_frames_of_one_episode_with_their_timesteps(dataset: Path,
                                                                                 tmp_path: Path) -> None:
    """`train.sampling=group` (MemoryVLA): each row is `window` frames of one episode in time order,
    ending at any frame, each with its real timestep; the batch of a step depends on (seed, step)."""
    from embodied.train.batches import make_batches

    source = open_dataset(dataset)
    policy = embodied.policies.make("gru", observation_space=source.observation_space,
                                    action_space=source.action_space, dim=16)
    batches = make_batches(source, policy.processor, window=4, burn_in=0, batch_size=6, seed=1, sampling="group",
                           target="action", num_workers=0, group_span=10)
    it = batches(0, 0, 1)
    firsts = [next(it) for _ in range(5)]
    lengths = source.episode_lengths
    for batch in firsts:
        ts, mask = batch["timestep"].numpy(), batch["loss_mask"].numpy()
        assert ts.shape == (6, 4)
        for row, valid in zip(ts, mask):
            real = row[valid]
            assert len(real) == min(4, real[-1] + 1), "a group holds min(window, t+1) real frames"
            assert np.all(np.diff(real) > 0), f"frames out of time order: {row}"
            assert real[-1] - real[0] <= 10, "earlier frames come from the span before the last frame"
            assert real[-1] < lengths.max()
        np.testing.assert_array_equal(batch["episode_start"].numpy() & mask, (ts == 0) & mask)
    assert any(b["timestep"][:, -1].max() > 3 for b in firsts), "groups should end beyond an episode's start"
    again = next(batches(3, 0, 1))
    torch.testing.assert_close(again["timestep"], firsts[3]["timestep"])
    out = tmp_path / "group"
    r = run_train(train_args(dataset, out, 2, "train.sampling=group", "train.group_span=8"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "checkpoints/last/pretrained_model/model.safetensors").exists()
    r = run_train(train_args(dataset, tmp_path / "bad", 2, "train.sampling=group", "train.group_span=3"))
    assert r.returncode != 0 and "train.group_span" in r.stderr
