"""Shared by the evaluation tests: SIGTERM a running `embodied-eval` once it has written some records."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path


def sigterm_after(proc: subprocess.Popen, log: Path, lines: int, wait_s: float = 240) -> str:
    """Wait until `log` holds `lines` lines (at most `wait_s`), send SIGTERM, wait for the process to
    exit and return its stderr."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and (not log.exists() or len(log.read_text().splitlines()) < lines):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    return proc.communicate(timeout=120)[1]
