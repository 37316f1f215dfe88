"""Fixtures that start simulated ComfyUI servers on free 127.0.0.1 ports (stopped after the test).

- ``sim``: one running ``SimServer`` with default options.
- ``sim_factory(options=None, **option_fields)``: start more, each with its own options.
- ``black_hole``: a ``BlackHole`` listener that accepts and never answers.
- ``read_meter``: counts the HTTP body bytes the client reads (urllib3), aborting past 256 MiB.
- ``recorder``: a plain HTTP server on 127.0.0.1 that records every request's headers (the
  "other host" a redirect points at).
"""

from __future__ import annotations

import http.server
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any, Callable, Optional

import pytest
from workflows import generated_workflow

from comfy_cluster.sim.harness import BlackHole, SimServer, stop_all
from comfy_cluster.sim.options import SimOptions


@pytest.fixture
def sim_factory() -> Iterator[Callable[..., SimServer]]:
    started: list[SimServer] = []

    def make(options: Optional[SimOptions] = None, **fields: Any) -> SimServer:
        opts = options or SimOptions()
        if fields:
            opts = opts.replace(**fields)
        server = SimServer(opts)
        started.append(server)
        return server.start()

    yield make
    stop_all(started)


@pytest.fixture
def sim(sim_factory: Callable[..., SimServer]) -> SimServer:
    return sim_factory()


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    with BlackHole() as hole:
        yield hole


class ReadWithoutCap(BaseException):
    """Raised by ``read_meter``: the client reads an endless body without a cap (a
    BaseException, so no ``except Exception`` on the way can hide it)."""


@pytest.fixture
def read_meter(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """``meter["bytes"]``: body bytes urllib3 handed out since the test set it to 0, by
    ``read`` or ``read_chunked`` (requests' ``iter_content`` uses the latter for chunked bodies).
    Past ``meter["interrupt_at"]`` bytes (if set > 0) the next read raises KeyboardInterrupt."""
    import urllib3

    meter = {"bytes": 0, "interrupt_at": 0}

    def count(data: Any) -> Any:
        meter["bytes"] += len(data or b"")
        if meter["bytes"] > 256 << 20:
            raise ReadWithoutCap(f"read {meter['bytes']} bytes and still going")
        if 0 < meter["interrupt_at"] < meter["bytes"]:
            raise KeyboardInterrupt
        return data

    read, read_chunked = urllib3.HTTPResponse.read, urllib3.HTTPResponse.read_chunked

    def counted_read(self: Any, *args: Any, **kwargs: Any) -> bytes:
        return count(read(self, *args, **kwargs))

    def counted_chunks(self: Any, *args: Any, **kwargs: Any) -> Iterator[bytes]:
        for chunk in read_chunked(self, *args, **kwargs):
            yield count(chunk)

    monkeypatch.setattr(urllib3.HTTPResponse, "read", counted_read)
    monkeypatch.setattr(urllib3.HTTPResponse, "read_chunked", counted_chunks)
    return meter


class Recorder:
    """A plain HTTP server recording ``(method, path, headers)`` of each request; answers ``{}``."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        recorded = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                recorded.append((self.command, self.path, dict(self.headers)))
                body = b"{}"
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    yield server
    server.close()


# --- plain requests / websocket-client helpers for the sim tests ---------------------------------


INVERT_PROMPT = generated_workflow()


def ws_open(url: str, client_id: Optional[str] = None, *, timeout: float = 10.0, headers=None):
    """A websocket-client connection to ``url`` (http://...) with the greeting already read."""
    import websocket

    client_id = client_id or uuid.uuid4().hex
    ws = websocket.create_connection(
        url.replace("http://", "ws://") + f"/ws?clientId={client_id}",
        timeout=timeout,
        header=headers or [],
    )
    greeting = json.loads(ws.recv())
    assert greeting["type"] == "status" and greeting["data"]["sid"] == client_id
    ws.client_id = client_id  # type: ignore[attr-defined]
    return ws


def ws_recv(ws: Any) -> dict:
    """One frame as {"kind": "text", "msg": {...}} or {"kind": "binary", "data": bytes}."""
    import websocket

    opcode, data = ws.recv_data()
    if opcode == websocket.ABNF.OPCODE_BINARY:
        return {"kind": "binary", "data": data}
    return {"kind": "text", "msg": json.loads(data)}


def ws_until_done(ws: Any, prompt_id: str, *, timeout: float = 15.0) -> list[dict]:
    """Frames up to and including ``executing{node: null, prompt_id}``."""
    deadline = time.monotonic() + timeout
    frames: list[dict] = []
    while time.monotonic() < deadline:
        frame = ws_recv(ws)
        frames.append(frame)
        msg = frame.get("msg") or {}
        if (
            msg.get("type") == "executing"
            and msg["data"].get("node") is None
            and msg["data"].get("prompt_id") == prompt_id
        ):
            return frames
    raise AssertionError(f"prompt {prompt_id} did not finish in {timeout} s: {frames[-3:]}")


def submit(url: str, prompt: dict, client_id: Optional[str] = None, **fields: Any):
    import requests

    body = {"prompt": prompt, **fields}
    if client_id is not None:
        body["client_id"] = client_id
    return requests.post(url + "/prompt", json=body, timeout=10)


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.01) -> Any:
    """Poll ``predicate`` until truthy (returns its value) or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {timeout} s")
        time.sleep(interval)
