"""embodied-view in a real browser: the real CLI (server, MuJoCo env, an untrained HCAM memory policy)
driven by Debian's headless Chromium through Playwright (which never downloads a browser here).

The page loads; a key press moves the agent (the pose shown changes); the camera panel shows a
non-blank image; the memory inspector shows the HCAM read (chosen chunks with thumbnails) once the
policy acts; a recorded episode appears on disk and loads as a dataset episode; closing the tab stops
the viewer. The screenshot goes to EMBODIED_VIEWER_SCREENSHOT when set (the README's
docs/img/viewer.png is made that way).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embodied.data import open_dataset

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("EMBODIED_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
CHUNK = 4
STEPS = 2 * CHUNK  # policy steps after the first key press

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install -y chromium chromium-driver, "
                                                "or set EMBODIED_CHROMIUM=/path/to/chromium)"),
    pytest.mark.timeout(180),
]


def pixel_std(page, selector: str) -> float:
    """Standard deviation of an <img>'s pixel values, read back through a canvas (0 for a blank image)."""
    return page.evaluate("""(sel) => {
        const img = document.querySelector(sel);
        const c = document.createElement("canvas"); c.width = img.naturalWidth; c.height = img.naturalHeight;
        const g = c.getContext("2d"); g.drawImage(img, 0, 0);
        const d = g.getImageData(0, 0, c.width, c.height).data;
        let s = 0, s2 = 0, n = 0;
        for (let i = 0; i < d.length; i += 4) for (let j = 0; j < 3; j++) { s += d[i + j]; s2 += d[i + j] ** 2; n++; }
        return Math.sqrt(Math.max(0, s2 / n - (s / n) ** 2));
    }""", selector)


def test_the_viewer_in_headless_chromium(tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")
    from test_viewer import read_url

    env = {**os.environ, "PYTHONPATH": str(ROOT), "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    cmd = [sys.executable, "-m", "embodied.viewer", "env=pointnav", "policy=memory_agent", "policy.untrained=true",
           f"policy.chunk_size={CHUNK}", "view.port=0", "view.close_grace_s=0.5", f"output_dir={tmp_path}"]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = read_url(proc)
        assert re.match(r"http://127\.0\.0\.1:\d+/$", url), url  # loopback unless asked
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 1400, "height": 1150})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            outside: list[str] = []
            page.on("request", lambda r: None if r.url.startswith((url, "data:", url.replace("http", "ws")))
                    else outside.append(r.url))
            page.goto(url)

            # the camera panel shows a real image (not blank)
            page.wait_for_function("() => { const i = document.querySelector('#cam-rgb');"
                                   " return i && i.complete && i.naturalWidth > 0; }", timeout=30000)
            assert pixel_std(page, "#cam-rgb") > 5.0
            page.wait_for_function("() => document.querySelector('#pose').textContent.includes('yaw')")

            # a key press moves the agent: turning left always changes the pose shown
            before = page.text_content("#pose")
            page.keyboard.press("a")
            page.wait_for_function("(b) => document.querySelector('#pose').textContent !== b", arg=before,
                                   timeout=15000)
            assert "by human" in page.inner_text("#last-action")

            # the memory policy acts; once a chunk is complete its read shows the chosen chunks with thumbnails
            page.click("#btn-record")
            page.wait_for_selector(".badge.rec", timeout=10000)
            for _ in range(STEPS):
                page.click("#btn-step")
            page.wait_for_function(f"() => document.querySelector('#frame-no').textContent === '{STEPS + 1}'",
                                   timeout=30000)
            page.wait_for_selector("#memory .read[data-kind=hcam] .chunk .thumbs img", timeout=15000)
            memory = page.inner_text("#memory")
            # the last read saw frames 0 .. STEPS-1: two complete chunks, both chosen (top-k is 4)
            assert "memory · hcam" in memory and "steps 0–3" in memory and "steps 4–7" in memory, memory
            assert "by policy" in page.inner_text("#last-action")

            # scrubbing back shows an earlier frame (and its read)
            page.fill("#scrub", "1")
            page.dispatch_event("#scrub", "input")
            page.wait_for_function("() => document.querySelector('#frame-no').textContent === '1'")
            assert "by human" in page.inner_text("#last-action")
            page.click("#btn-live")

            # stop recording: the episode is committed, and the page says which one
            page.click("#btn-record")
            page.wait_for_function("() => document.querySelector('#status').textContent.includes('recorded: 0')",
                                   timeout=30000)
            shot = tmp_path / "viewer.png"
            page.screenshot(path=str(shot), full_page=True)
            if os.environ.get("EMBODIED_VIEWER_SCREENSHOT"):  # palette PNG: a third of the size, for the repo
                from PIL import Image

                Image.open(shot).convert("RGB").quantize(256).save(os.environ["EMBODIED_VIEWER_SCREENSHOT"],
                                                                   optimize=True)
            assert not errors, errors
            assert not outside, f"the page loaded something from elsewhere: {outside}"
            page.close()  # closing the tab stops the viewer
            browser.close()
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out[-3000:]

    src = open_dataset(tmp_path / "recordings" / "dataset")
    assert src.num_episodes == 1
    ep = src.read(0, keys=["rgb", "gps"])
    assert len(ep["action"]) == STEPS + 1  # the key press and the policy's steps, from the reset
    assert ep["action"][0] == 2 and ep["truncated"][-1]
    assert ep["obs"]["rgb"].shape == (STEPS + 1, 128, 128, 3) and np.asarray(ep["obs"]["rgb"]).std() > 5
    assert (tmp_path / "recordings" / "videos" / "episode_000000.mp4").stat().st_size > 0
