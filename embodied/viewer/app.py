"""`embodied-view`: build the session from the Hydra config, serve the page, shut down cleanly.

    embodied-view env=objectrecall policy=memory_agent policy.untrained=true
    embodied-view env=pointnav policy=hcam_agent policy.checkpoint=outputs/train/run view.port=0

Ctrl-C (SIGINT), SIGTERM or closing the last tab stop the server; then the simulation thread finishes
its step, a recording in progress is committed and the simulator is closed (an out-of-process
backend's worker with it), before the process exits.
"""

from __future__ import annotations

import ipaddress
import signal
import socket
import sys
import threading
from dataclasses import dataclass, fields
from typing import Any

from embodied.viewer.server import create_app
from embodied.viewer.session import Session


@dataclass(frozen=True)
class ViewOptions:
    host: str = "127.0.0.1"
    port: int = 8765
    episode: int = 0
    task: int | None = None
    run_hz: float = 10.0
    ee_delta: float = 0.5
    record: bool = False
    record_dir: str = "outputs/view/recordings"
    exit_on_close: bool = True
    close_grace_s: float = 3.0

    @classmethod
    def from_config(cls, section: Any) -> ViewOptions:
        """The `view:` section, type-checked (an error names the field and what it accepts)."""
        from omegaconf import OmegaConf

        values = OmegaConf.to_container(section, resolve=True) if not isinstance(section, dict) else dict(section)
        unknown = sorted(set(values) - set(_TYPES))
        if unknown:
            raise ValueError(f"view: unknown option(s) {unknown}; accepted: {sorted(_TYPES)}")
        for name, value in values.items():
            kinds, what = _TYPES[name]
            if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
                raise ValueError(f"view.{name} must be {what}, got {value!r}")
        opts = cls(**values)
        if not 0 <= opts.port <= 65535:
            raise ValueError(f"view.port must be in [0, 65535] (0: any free port), got {opts.port}")
        if opts.close_grace_s < 0:
            raise ValueError(f"view.close_grace_s must be >= 0, got {opts.close_grace_s}")
        return opts


_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "host": ((str,), "an address (str)"), "port": ((int,), "an int"), "episode": ((int,), "an int"),
    "task": ((int, type(None)), "an int or null"), "run_hz": ((int, float), "a number"),
    "ee_delta": ((int, float), "a number"), "record": ((bool,), "true or false"),
    "record_dir": ((str,), "a path (str)"), "exit_on_close": ((bool,), "true or false"),
    "close_grace_s": ((int, float), "a number"),
}
assert set(_TYPES) == {f.name for f in fields(ViewOptions)}


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one), so the printed URL has the real port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(f"view.host/view.port: cannot listen on {host}:{port} ({e.strerror}); "
                      "pick another view.port (0: any free port)") from e
    sock.listen(16)
    return sock


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def serve(session: Session, opts: ViewOptions) -> None:
    """Serve `session` until Ctrl-C / SIGTERM / the last tab closes; then close the session."""
    import uvicorn

    sock = bind(opts.host, opts.port)
    holder: dict[str, uvicorn.Server] = {}

    def stop() -> None:
        holder["server"].should_exit = True

    app = create_app(session, on_last_close=stop if opts.exit_on_close else None, close_grace_s=opts.close_grace_s)
    config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2)
    server = holder["server"] = uvicorn.Server(config)
    port = sock.getsockname()[1]
    shown = f"[{opts.host}]" if ":" in opts.host else opts.host
    if not _is_loopback(opts.host):
        print(f"embodied-view: listening on {opts.host}: anyone who can reach it can drive the simulator",
              file=sys.stderr)
    # uvicorn shuts down gracefully on SIGINT / SIGTERM and then re-raises the signal to the handler that was
    # there before: make SIGTERM's one an exception too, so the session below is closed either way.
    previous = signal.signal(signal.SIGTERM, _interrupt) if threading.current_thread() is threading.main_thread() \
        else None
    try:
        session.start()
        if opts.record:
            session.submit("record", on=True)
        print(f"embodied-view: open http://{shown}:{port}/  (Ctrl-C or closing the tab quits)", flush=True)
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # stopping the viewer is its normal end
        pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        session.close()
        sock.close()
        recorded = session.recorder.committed
        if recorded:
            print(f"embodied-view: recorded episodes {recorded} in {session.recorder.dataset_dir}", flush=True)


def main(cfg: Any) -> int:
    """The `embodied-view` entry point's body (a Hydra config: env, policy, view, output_dir)."""
    from omegaconf import OmegaConf

    from embodied.config import component_kwargs

    opts = ViewOptions.from_config(cfg.view)
    env_name, env_kwargs = component_kwargs(cfg.env)
    policy_cfg = OmegaConf.to_container(cfg.policy, resolve=True)
    assert isinstance(policy_cfg, dict)
    session = Session(env_name, env_kwargs, policy_cfg, opts.record_dir, seed=opts.episode, task=opts.task,
                      run_hz=opts.run_hz, ee_delta=opts.ee_delta)
    try:
        serve(session, opts)
    finally:
        session.close()  # idempotent: serve closes it too, unless it failed before serving (a busy port)
    return 0
