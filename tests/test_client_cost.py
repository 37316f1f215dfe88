"""The client is cheap: the environment is read once per client (proxies, CA bundle), then never
again per request; the websocket listener drops what nobody uses before parsing it, and loses
nothing the render engine uses (checked against the recorded ComfyUI transcripts)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket

from comfy_cluster.core import event_stream, protocol
from comfy_cluster.core.client import ComfyClient
from comfy_cluster.core.connection_settings import Timeouts
from comfy_cluster.core.event_stream import EventListener
from comfy_cluster.core.server import ServerConfig

FIXTURES = Path(__file__).parent / "fixtures"
TRANSCRIPTS = json.loads((FIXTURES / "ws_transcripts.json").read_text())["scenarios"]
FAST = Timeouts(connect=2.0, read=2.0)
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
QUEUE = json.dumps({"queue_running": [], "queue_pending": []}).encode()
#: The events engine/prompt_watch.py acts on (besides Connected/Disconnected and liveness).
ENGINE_USES = (
    protocol.Executing,
    protocol.ExecutionStart,
    protocol.Executed,
    protocol.ProgressEvent,
    protocol.ExecutionErrorEvent,
    protocol.ExecutionInterrupted,
)


class _Recorder(BaseHTTPRequestHandler):
    """Answers every GET with an empty queue; records the request line's target (a proxy gets
    the absolute URL, an origin server the path)."""

    def do_GET(self) -> None:
        self.server.targets.append(self.path)  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(QUEUE)))
        self.end_headers()
        self.wfile.write(QUEUE)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[Any]:
    """A tiny HTTP server on 127.0.0.1 that is both proxy and origin."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.targets = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    return monkeypatch


def test_a_proxy_set_at_start_is_used_even_after_the_variable_goes(
    recorder: Any, clean_env: pytest.MonkeyPatch
) -> None:
    port = recorder.server_address[1]
    clean_env.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    server = ServerConfig(name="far", host="comfy.example", port=8188)
    with ComfyClient(server, timeouts=FAST) as client:
        assert client._http.environment.proxies == {"http": f"http://127.0.0.1:{port}"}
        assert client._http.session.trust_env is False
        client.queue()
        clean_env.delenv("HTTP_PROXY")
        client.queue()
    assert recorder.targets == ["http://comfy.example:8188/queue"] * 2


def test_a_proxy_set_later_is_not_read(recorder: Any, clean_env: pytest.MonkeyPatch) -> None:
    server = ServerConfig(name="s", host="127.0.0.1", port=recorder.server_address[1])
    with ComfyClient(server, timeouts=FAST) as client:
        assert client._http.environment.proxies == {}
        clean_env.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
        client.queue()
    assert recorder.targets == ["/queue"]  # straight to the server
    with ComfyClient(server, timeouts=FAST) as client:  # a new client reads it
        assert client._http.environment.proxies == {"http": "http://127.0.0.1:9"}


def test_no_proxy_is_honoured(recorder: Any, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # would fail if used
    clean_env.setenv("NO_PROXY", "localhost,127.0.0.1")
    server = ServerConfig(name="s", host="127.0.0.1", port=recorder.server_address[1])
    with ComfyClient(server, timeouts=FAST) as client:
        assert client._http.environment.proxies == {}
        client.queue()
    assert recorder.targets == ["/queue"]


def test_requests_do_not_read_the_environment(recorder: Any, clean_env: pytest.MonkeyPatch) -> None:
    server = ServerConfig(name="s", host="127.0.0.1", port=recorder.server_address[1])
    with ComfyClient(server, timeouts=FAST) as client:
        reads: list[str] = []

        def spy(url: str, no_proxy: Any = None) -> dict:
            reads.append(url)
            return {}

        clean_env.setattr(requests.sessions, "get_environ_proxies", spy)
        clean_env.setattr(requests.utils, "get_environ_proxies", spy)
        for _ in range(5):
            client.queue()
    assert reads == [] and len(recorder.targets) == 5


def test_the_ca_bundle_of_the_environment_is_read_at_start(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("REQUESTS_CA_BUNDLE", "/studio/ca.pem")
    server = ServerConfig(name="tls", host="127.0.0.1", port=8443, scheme="https")
    client = ComfyClient(server)
    clean_env.delenv("REQUESTS_CA_BUNDLE")
    assert client._http.environment.verify == "/studio/ca.pem"
    assert client._http.session.verify is True  # the server's own setting, as configured
    off = ComfyClient(ServerConfig(name="x", host="127.0.0.1", port=1, verify_tls=False))
    assert off._http.environment.verify is False


# --- websocket ------------------------------------------------------------------------------------


def frames_of(scenario: list[dict]) -> list[tuple[int, bytes]]:
    """The scenario's websocket frames as ComfyUI sent them (json.dumps of the message)."""
    frames = []
    for item in scenario:
        if item["kind"] == "text":
            frames.append((websocket.ABNF.OPCODE_TEXT, json.dumps(item["msg"]).encode()))
        elif item["kind"] == "binary":
            frames.append((websocket.ABNF.OPCODE_BINARY, b"\x00\x00\x00\x01\x00\x00\x00\x01"))
    return frames


class _FakeSocket:
    """Replays frames, then says the server closed."""

    def __init__(self, frames: list[tuple[int, bytes]]) -> None:
        self.frames = list(frames)

    def settimeout(self, timeout: float) -> None:
        pass

    def recv_data(self) -> tuple[int, bytes]:
        if self.frames:
            return self.frames.pop(0)
        return websocket.ABNF.OPCODE_CLOSE, b""

    def close(self, timeout: float = 0) -> None:
        pass

    shutdown = abort = close


def listen_to(
    frames: list[tuple[int, bytes]], drop: protocol.MessageFilter, monkeypatch: Any
) -> tuple[list[Any], EventListener]:
    monkeypatch.setattr(event_stream, "bound_messages", lambda ws, limit, server: ws)
    events: list[Any] = []
    done = threading.Event()

    def on_event(event: Any) -> None:
        events.append(event)
        if isinstance(event, protocol.Disconnected):
            done.set()

    server = ServerConfig(name="rec", host="127.0.0.1", port=1)
    listener = EventListener(
        server,
        "cid",
        on_event,
        connect=lambda url, **kw: _FakeSocket(frames),
        drop=drop,
        poll_interval=0.0,  # a Skipped for every dropped message: counted exactly below
    )
    listener.start()
    assert done.wait(5.0)
    listener.close()
    return events, listener


@pytest.mark.parametrize("name", sorted(TRANSCRIPTS))
def test_dropping_loses_no_event_the_engine_uses(name: str, monkeypatch: Any) -> None:
    frames = frames_of(TRANSCRIPTS[name])
    everything, _ = listen_to(frames, protocol.KEEP_ALL, monkeypatch)
    kept, listener = listen_to(frames, protocol.JOB_UNUSED, monkeypatch)
    used_all = [e for e in everything if isinstance(e, ENGINE_USES)]
    assert used_all  # the transcript has work in it
    assert [e for e in kept if isinstance(e, ENGINE_USES)] == used_all  # identical, same order
    skipped = [e for e in kept if isinstance(e, protocol.Skipped)]
    assert listener.dropped == sum(e.count for e in skipped) > 0
    # what the job does not use was not parsed
    unused = (protocol.StatusEvent, protocol.ProgressState, protocol.ExecutionCached)
    assert not [e for e in kept if isinstance(e, (*unused, protocol.ExecutionSuccess))]
    # and every message still shows up as a sign of life: one event per frame, in order
    assert len(kept) == len(everything)


def test_the_default_drops_only_what_nobody_uses(monkeypatch: Any) -> None:
    frames = frames_of(TRANSCRIPTS["fresh_run_EmptyImage_ImageInvert_SaveImage"])
    frames.append(
        (
            websocket.ABNF.OPCODE_TEXT,
            b'{"type": "crystools.monitor", "data": {"cpu_utilization": 3}}',
        )
    )
    everything, _ = listen_to(frames, protocol.KEEP_ALL, monkeypatch)
    kept, listener = listen_to(frames, protocol.UNUSED, monkeypatch)
    gone = (protocol.ProgressState, protocol.Skipped)
    assert [e for e in kept if not isinstance(e, gone)] == [
        e
        for e in everything
        if not isinstance(e, protocol.ProgressState)
        and not (isinstance(e, protocol.UnknownEvent) and e.type.startswith("crystools."))
    ]
    assert listener.dropped == sum(isinstance(e, protocol.ProgressState) for e in everything) + 1


def test_a_frame_not_written_the_usual_way_is_parsed_in_full() -> None:
    drop = protocol.JOB_UNUSED
    assert drop.drops(b'{"type": "progress_state", "data": {}}')
    assert drop.drops('{"type": "crystools.monitor", "data": {}}')
    assert not drop.drops(b'{"data": {}, "type": "progress_state"}')  # other key order
    assert not drop.drops(b'{"type":"progress_state","data":{}}')  # other spacing
    assert not drop.drops(b'{"type": "executing", "data": {"node": null}}')
    assert not drop.drops(b'{"type": "progress_st\\u0061te", "data": {}}')  # escaped
    assert not drop.drops(b"not json")
    assert protocol.peek_type(b'{"type": "executed", "data"') == "executed"
