"""The viewer's web server: one page, its static assets (all served from the package: nothing from a
CDN) and one websocket per open tab.

Server -> page messages (JSON): `hello` (config), `episode` (the episode's scene, task, seed), `frame`
(a frame payload, `live` true for the newest, false for a scrubbed one), `status` (driver, running,
busy, recording, ...), `error`. Page -> server: `{"type": "command", "name": ..., ...arguments}`
(embodied.viewer.session.COMMANDS) and `{"type": "scrub", "frame": k}`.

Each tab's sender waits for a change and then sends only the newest episode / frame / status, so a
slow tab skips frames instead of queueing them. When the last tab closes (and none reconnects within
`close_grace_s`, e.g. a reload), `on_last_close` runs: the CLI uses it to shut down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

try:
    from fastapi import FastAPI, HTTPException, WebSocket, WebSocketDisconnect
    from fastapi.responses import JSONResponse, Response
except ImportError as e:  # pragma: no cover - the view extra is in the default setup
    raise ImportError("embodied-view needs the 'view' extra: .venv/bin/pip install -c constraints.txt "
                      "-e '.[view]'") from e

from embodied.viewer.session import Session

STATIC = resources.files("embodied.viewer") / "static"
MEDIA = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml"}


class Clients:
    """The open tabs: one wake-up event each, set from the simulation thread."""

    def __init__(self, on_last_close: Callable[[], None] | None, close_grace_s: float) -> None:
        self.events: set[asyncio.Event] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.on_last_close, self.close_grace_s = on_last_close, close_grace_s
        self.ever_connected = False

    def wake(self) -> None:
        """Thread-safe: called by the session after every change."""
        if self.loop is not None and not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop is shutting down
                self.loop.call_soon_threadsafe(self._set_all)

    def _set_all(self) -> None:
        for event in self.events:
            event.set()

    async def closed(self, event: asyncio.Event) -> None:
        self.events.discard(event)
        if self.events or self.on_last_close is None:
            return
        await asyncio.sleep(self.close_grace_s)
        if not self.events:
            self.on_last_close()


def create_app(session: Session, on_last_close: Callable[[], None] | None = None,
               close_grace_s: float = 3.0) -> FastAPI:
    """The FastAPI app serving `session` (FastAPI reads the handlers' annotations: keep its names global)."""
    app = FastAPI(title="embodied-view", docs_url=None, redoc_url=None, openapi_url=None)
    clients = Clients(on_last_close, close_grace_s)
    session.subscribe(clients.wake)
    app.state.clients = clients

    @app.get("/")
    async def index() -> Response:
        return _asset("index.html")

    @app.get("/favicon.ico")
    async def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/static/{name}")
    async def static(name: str) -> Response:
        return _asset(name)

    def _asset(name: str) -> Response:
        path = STATIC / name
        suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
        if "/" in name or ".." in name or suffix not in MEDIA or not path.is_file():
            raise HTTPException(status_code=404, detail=f"no asset {name!r}")
        return Response(path.read_bytes(), media_type=MEDIA[suffix], headers={"Cache-Control": "no-store"})

    @app.get("/api/status")
    async def status() -> JSONResponse:
        versions, _, _, state = session.snapshot()
        return JSONResponse({"versions": versions, "status": state, "config": session.config()})

    @app.websocket("/ws")
    async def ws(socket: WebSocket) -> None:
        if not same_origin(socket.headers.get("origin"), socket.headers.get("host")):
            await socket.close(code=1008)  # another site's page in the same browser must not drive the simulator
            return
        await socket.accept()
        clients.loop = asyncio.get_running_loop()
        event = asyncio.Event()
        clients.events.add(event)
        clients.ever_connected = True
        event.set()
        await socket.send_text(json.dumps({"type": "hello", "config": session.config()}))
        sender = asyncio.create_task(_send_changes(socket, session, event))
        try:
            while True:
                await _receive(socket, session)
        except WebSocketDisconnect:
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
            await clients.closed(event)

    return app


def same_origin(origin: str | None, host: str | None) -> bool:
    """Websockets are not covered by the browser's same-origin rules: accept a page only when it was
    served by this server (its Origin names the Host it connects to); non-browser clients send none."""
    if origin is None:
        return True
    return host is not None and urlsplit(origin).netloc == host


async def _send_changes(socket: Any, session: Session, event: asyncio.Event) -> None:
    seen = {"episode": -1, "frame": -1, "status": -1}
    while True:
        await event.wait()
        event.clear()
        versions, episode, frame, status = session.snapshot()
        if versions["episode"] != seen["episode"]:
            await socket.send_text(f'{{"type": "episode", "episode": {episode}}}')
        if versions["frame"] != seen["frame"] and frame is not None:
            await socket.send_text(f'{{"type": "frame", "live": true, "frame": {frame}}}')
        if versions["status"] != seen["status"]:
            await socket.send_text(json.dumps({"type": "status", "status": status}))
        seen = versions


async def _receive(socket: Any, session: Session) -> None:
    text = await socket.receive_text()
    try:
        msg = json.loads(text)
        if not isinstance(msg, dict) or msg.get("type") not in ("command", "scrub"):
            raise ValueError(f"a message must be a JSON object with type 'command' or 'scrub', got {text[:80]!r}")
        if msg["type"] == "scrub":
            k = msg.get("frame")
            if not isinstance(k, int) or isinstance(k, bool):
                raise ValueError(f"scrub: frame must be an int, got {k!r}")
            await socket.send_text(f'{{"type": "frame", "live": false, "frame": {session.frame(k)}}}')
            return
        args = {k: v for k, v in msg.items() if k not in ("type", "name")}
        session.submit(str(msg.get("name")), **args)
    except (ValueError, json.JSONDecodeError) as e:
        await socket.send_text(json.dumps({"type": "error", "message": str(e)}))
