"""A hostile or broken server cannot exhaust our memory, steal our secrets or reach the terminal.

Against the simulator's hostile faults (sim/hostile.py) over real sockets on 127.0.0.1: every
answer stops at its cap (core/limits.py), redirects are refused, server text is cleaned
(core/server_text.py). The websocket frame checks also run on a socket pair, without a server.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
import traceback
from typing import Any, Callable

import pytest
import websocket
from fixtures_sim import INVERT_PROMPT, Recorder, wait_until

from comfy_cluster.core import protocol as p
from comfy_cluster.core.client import ComfyClient
from comfy_cluster.core.connection_settings import Timeouts
from comfy_cluster.core.errors import (
    AuthenticationFailed,
    ProtocolError,
    UnexpectedStatus,
)
from comfy_cluster.core.health import HealthMonitor, ServerState
from comfy_cluster.core.limits import MAX_JSON_BYTES, MAX_TEXT_CHARS, Limits, is_too_large
from comfy_cluster.core.server import ServerConfig
from comfy_cluster.core.ws_limits import bound_messages
from comfy_cluster.sim.harness import SimServer

FAST = Timeouts(connect=1.0, read=5.0)
TOKEN = "client-token-0123456789"
API_KEY = "api-key-abcdefghij"
SECRETS = {"token": TOKEN, "headers": {"X-Api-Key": API_KEY}}
ESCAPES = "\x1b[2J\x1b[H\x1b]0;pwned\x07\x07"
HOSTILE_TEXT = f"{ESCAPES}boom\r\nINJECTED fake log line\x9b2J {TOKEN} {API_KEY}"

SimFactory = Callable[..., SimServer]


def cfg(sim: SimServer, **kw: Any) -> ServerConfig:
    return ServerConfig(name="s1", host="127.0.0.1", port=sim.port, **kw)


def assert_clean(message: str) -> None:
    """No control character, no secret."""
    bad = [c for c in message if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0]
    assert not bad, f"control characters {bad!r} in {message!r}"
    assert TOKEN not in message and API_KEY not in message, message


# --- 6. caps on every answer --------------------------------------------------------------------


def test_an_endless_json_answer_stops_at_the_default_cap(
    sim_factory: SimFactory, read_meter: dict[str, int]
) -> None:
    sim = sim_factory(endless_route="/system_stats")
    with ComfyClient(cfg(sim), timeouts=FAST) as client:
        read_meter["bytes"] = 0
        start = time.monotonic()
        with pytest.raises(ProtocolError) as info:
            client.system_stats()
    assert time.monotonic() - start < 5.0
    assert read_meter["bytes"] == MAX_JSON_BYTES + 1  # never more than cap + 1
    assert is_too_large(info.value) and info.value.server == "s1"
    assert str(info.value).startswith("s1: GET /system_stats: answer over the 16 MiB cap")


def test_an_announced_size_over_the_cap_is_refused_unread(
    sim_factory: SimFactory, read_meter: dict[str, int]
) -> None:
    sim = sim_factory()
    limits = Limits(json_bytes=200)  # /system_stats is about 1 KB, sent with Content-Length
    with ComfyClient(cfg(sim), timeouts=FAST, limits=limits) as client:
        assert client.queue().depth == 0  # a small answer is fine
        read_meter["bytes"] = 0
        with pytest.raises(ProtocolError) as info:
            client.system_stats()
    assert read_meter["bytes"] == 0 and "bytes announced" in str(info.value)


def test_object_info_has_its_own_larger_cap(sim_factory: SimFactory) -> None:
    sim = sim_factory()
    limits = Limits(json_bytes=2000, object_info_bytes=8 << 20)
    with ComfyClient(cfg(sim), timeouts=FAST, limits=limits) as client:
        assert "SaveImage" in client.object_info()  # tens of KB: over json_bytes, still read
    client = ComfyClient(cfg(sim), timeouts=FAST, limits=Limits(object_info_bytes=2000))
    with client, pytest.raises(ProtocolError) as info:
        client.object_info()
    assert is_too_large(info.value)


def test_an_optional_read_over_its_cap_is_skipped_not_held_against_the_server(
    sim_factory: SimFactory, caplog: pytest.LogCaptureFixture
) -> None:
    sim = sim_factory(endless_route="/history")
    with ComfyClient(cfg(sim), timeouts=FAST) as client:
        asked: list[str] = []
        original = client._http.send

        def spy(method: str, path: str, **kwargs: Any) -> Any:
            asked.append(path)
            return original(method, path, **kwargs)

        client._http.send = spy  # type: ignore[method-assign]
        with caplog.at_level(logging.WARNING):
            assert client.recent_history(max_items=5) == {}
        assert asked[-1].endswith("/history?max_items=5")  # asks for less where it can
        assert "optional answer skipped" in caplog.text and "cap" in caplog.text
        sim.set_faults(endless_route="/features")
        assert client.features() is None
        sim.set_faults(endless_route=None)
        assert client.queue().depth == 0  # the server is still used
        pid = client.submit(INVERT_PROMPT)
        wait_until(lambda: client.history(pid))
        assert pid in client.recent_history(max_items=5)


def test_health_calls_a_server_with_over_cap_answers_degraded(sim_factory: SimFactory) -> None:
    sim = sim_factory(endless_route="/system_stats")
    with HealthMonitor([cfg(sim)], timeout=3.0, interval_idle=30.0) as monitor:
        assert monitor.wait_for_poll(10.0)
        status = monitor.snapshot()["s1"]
    assert status.state is ServerState.DEGRADED
    assert status.reason is not None and "answer too large" in status.reason
    assert "/system_stats" in status.reason and "16 MiB cap" in status.reason


# --- 6. websocket messages ----------------------------------------------------------------------


class Events:
    def __init__(self) -> None:
        self.items: list[p.Event] = []
        self.lock = threading.Lock()

    def __call__(self, event: p.Event) -> None:
        with self.lock:
            self.items.append(event)

    def find(self, kind: type) -> list[Any]:
        with self.lock:
            return [e for e in self.items if isinstance(e, kind)]


def test_a_giant_websocket_message_is_refused_before_it_is_read(sim_factory: SimFactory) -> None:
    """Announced as 64 MiB + 1 (the default cap + 1); only 1 MiB of it is ever sent, so a client
    that waits for the payload waits for ever."""
    sim = sim_factory(ws_message_bytes=(64 << 20) + 1)
    events = Events()
    with ComfyClient(cfg(sim), timeouts=FAST) as client:
        with pytest.raises(ProtocolError) as info:
            client.probe_websocket(2.0)
        assert is_too_large(info.value) and "message over the 64 MiB cap" in str(info.value)
        listener = client.listen(events, reconnect_initial=0.05)
        wait_until(lambda: events.find(p.Disconnected), timeout=5.0)
        reason = events.find(p.Disconnected)[0].reason
        assert "websocket: message over the 64 MiB cap (67,108,865 bytes announced)" in reason
        wait_until(lambda: listener.connects >= 2, timeout=5.0)  # and it reconnects
        assert not events.find(p.StatusEvent)  # nothing after the giant message was parsed


def test_a_message_within_the_cap_arrives_and_one_over_an_injected_cap_does_not(
    sim_factory: SimFactory,
) -> None:
    sim = sim_factory(ws_message_bytes=3000)
    events = Events()
    with ComfyClient(cfg(sim), timeouts=FAST, limits=Limits(ws_message_bytes=4000)) as client:
        client.listen(events)
        wait_until(lambda: events.find(p.StatusEvent))
        assert [e.type for e in events.find(p.UnknownEvent)] == ["sim_padding"]
    client = ComfyClient(cfg(sim), timeouts=FAST, limits=Limits(ws_message_bytes=2999))
    with client, pytest.raises(ProtocolError, match=r"message over the 2\.9 KiB cap"):
        client.probe_websocket(2.0)


def test_health_calls_a_server_with_giant_websocket_messages_degraded(
    sim_factory: SimFactory,
) -> None:
    sim = sim_factory(ws_message_bytes=(64 << 20) + 1)
    with HealthMonitor([cfg(sim)], timeout=2.0, interval_idle=30.0) as monitor:
        assert monitor.wait_for_poll(10.0)
        status = monitor.snapshot()["s1"]
    assert status.state is ServerState.DEGRADED
    assert status.reason is not None and "64 MiB cap" in status.reason


@pytest.fixture
def ws_pair() -> Any:
    """A websocket-client ``WebSocket`` on one end of a socket pair (bounded to 1000-byte
    messages) and the raw socket a test writes frames into."""
    ours, theirs = socket.socketpair()
    ws = websocket.WebSocket(skip_utf8_validation=True)
    ws.sock, ws.connected = ours, True
    ws.settimeout(2.0)
    bound_messages(ws, 1000, "s1")
    yield ws, theirs
    ours.close()
    theirs.close()


def frame(payload: bytes, *, opcode: int = 0x1, fin: bool = True, length: Any = None) -> bytes:
    size = len(payload) if length is None else length
    first = (0x80 if fin else 0) | opcode
    if size < 126:
        header = struct.pack("!BB", first, size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", first, 126, size)
    else:
        header = struct.pack("!BBQ", first, 127, size)
    return header + payload


def test_an_announced_length_over_the_cap_is_refused_from_the_header(ws_pair: Any) -> None:
    ws, peer = ws_pair
    peer.sendall(frame(b"", length=1 << 62))  # 4 EiB announced, nothing sent after it
    with pytest.raises(ProtocolError, match=r"4,611,686,018,427,387,904 bytes announced"):
        ws.recv_data()
    with pytest.raises(ProtocolError):
        ws.recv_data()  # the stream is mid-payload: every later read is refused too
    start = time.monotonic()
    ws.close(timeout=2.0)  # websocket-client's close() reads frames: it must not wait or read
    assert time.monotonic() - start < 0.5


def test_fragments_count_together_against_the_cap(ws_pair: Any) -> None:
    ws, peer = ws_pair
    peer.sendall(frame(b"a" * 600, fin=False) + frame(b"b" * 600, opcode=0x0))
    with pytest.raises(ProtocolError, match="1,200 bytes announced"):
        ws.recv_data()


def test_fragments_within_the_cap_are_joined(ws_pair: Any) -> None:
    ws, peer = ws_pair
    parts = [b'{"type": "x", ', b'"data": {}}']
    peer.sendall(frame(parts[0], fin=False) + frame(b"p", opcode=0x9) + frame(parts[1], opcode=0))
    opcode, data = ws.recv_data()  # the ping in between is answered and skipped
    assert opcode == websocket.ABNF.OPCODE_TEXT and data == b"".join(parts)
    assert isinstance(data, bytes)
    peer.sendall(frame(b'{"type": "y"}'))  # the next message counts from zero again
    assert ws.recv_data()[1] == b'{"type": "y"}'


def test_many_small_fragments_are_joined_in_linear_time() -> None:
    ours, theirs = socket.socketpair()
    try:
        ws = websocket.WebSocket(skip_utf8_validation=True)
        ws.sock, ws.connected = ours, True
        ws.settimeout(5.0)
        bound_messages(ws, 64 << 20, "s1")
        count, piece = 20_000, b"x" * 512  # 10 MiB in 20,000 fragments
        data = frame(piece, fin=False) + frame(piece, opcode=0, fin=False) * (count - 2)
        data += frame(piece, opcode=0)
        sender = threading.Thread(target=theirs.sendall, args=(data,), daemon=True)
        sender.start()
        start = time.monotonic()
        _, message = ws.recv_data()
        assert len(message) == count * len(piece)
        assert time.monotonic() - start < 5.0  # quadratic joining takes minutes here
        sender.join(5.0)
    finally:
        ours.close()
        theirs.close()


# --- 7. no redirects ----------------------------------------------------------------------------


def test_redirects_are_refused_and_no_header_reaches_the_other_host(
    sim_factory: SimFactory, recorder: Recorder, tmp_path: Any
) -> None:
    sim = sim_factory()
    with ComfyClient(cfg(sim, **SECRETS), timeouts=FAST) as client:
        pid = client.submit(INVERT_PROMPT)
        entry = wait_until(lambda: client.history(pid))
        (image,) = [i for node in entry["outputs"].values() for i in node.get("images", [])]
        sim.set_faults(redirect_to=recorder.url + "/steal?keep=1")
        calls: list[Callable[[], Any]] = [
            client.queue,
            lambda: client.download(image, tmp_path / "x.png"),
            lambda: client.submit(INVERT_PROMPT),
            lambda: client.delete_queued(["someone-elses"]),
        ]
        for call in calls:
            with pytest.raises(UnexpectedStatus) as info:
                call()
            message = str(info.value)
            assert info.value.status == 302 and info.value.server == "s1"
            assert f"redirect to {recorder.url};" in message  # where it points: host and port
            assert "steal" not in message and "keep" not in message
            assert_clean(message)
        with pytest.raises(UnexpectedStatus, match="redirect"):
            client.probe_websocket(2.0)
    assert recorder.requests == []  # nothing, and so no header, reached the other host
    assert list(tmp_path.iterdir()) == []


# --- 8. server text reaches no terminal raw, secrets appear nowhere ------------------------------


def test_a_401_that_echoes_the_request_shows_no_secret(
    sim_factory: SimFactory, caplog: pytest.LogCaptureFixture
) -> None:
    sim = sim_factory(token="the-server-wants-another", echo_401=True)
    client = ComfyClient(cfg(sim, **SECRETS), timeouts=FAST)
    with caplog.at_level(logging.DEBUG), client, pytest.raises(AuthenticationFailed) as info:
        client.queue()
    message = str(info.value)
    assert "Your request was:" in message  # the body is shown, but
    assert "Authorization: Bearer ***" in message and "X-Api-Key: ***" in message
    assert_clean(message)
    assert TOKEN not in caplog.text and API_KEY not in caplog.text


def test_a_websocket_401_that_echoes_the_request_shows_no_secret_even_in_a_traceback(
    sim_factory: SimFactory,
) -> None:
    """websocket-client's exception quotes the refusal's headers and body; our error's cause is a
    cleaned copy, so no traceback of it (``log.exception``...) prints the token."""
    sim = sim_factory(token="the-server-wants-another", echo_401=True)
    client = ComfyClient(cfg(sim, **SECRETS), timeouts=FAST)
    with client, pytest.raises(AuthenticationFailed) as info:
        client.probe_websocket(2.0)
    printed = "".join(traceback.format_exception(info.type, info.value, info.tb))
    assert "Your request was" in printed  # the cause is there, cleaned
    assert TOKEN not in printed and API_KEY not in printed and "\x1b" not in printed


def test_a_500_body_with_escape_sequences_is_shown_as_one_clean_line(
    sim_factory: SimFactory,
) -> None:
    sim = sim_factory(error_text=HOSTILE_TEXT + "z" * 100_000)
    client = ComfyClient(cfg(sim, **SECRETS), timeouts=FAST)
    with client, pytest.raises(UnexpectedStatus) as info:
        client.queue()
    message = str(info.value)
    assert_clean(message)
    assert "pwned" not in message and "boom | INJECTED fake log line" in message
    assert len(message) <= MAX_TEXT_CHARS + 40


def test_an_error_body_is_read_only_as_far_as_the_message_needs(
    sim_factory: SimFactory, read_meter: dict[str, int]
) -> None:
    sim = sim_factory(error_text="e" * (8 << 20))
    with ComfyClient(cfg(sim), timeouts=FAST) as client:
        read_meter["bytes"] = 0
        with pytest.raises(UnexpectedStatus):
            client.queue()
    assert read_meter["bytes"] <= 16 * 1024


def test_execution_error_texts_are_cleaned_in_events_and_history(sim_factory: SimFactory) -> None:
    sim = sim_factory(fail_node="ImageInvert", fail_message=HOSTILE_TEXT)
    events = Events()
    with ComfyClient(cfg(sim, **SECRETS), timeouts=FAST) as client:
        client.listen(events)
        wait_until(lambda: events.find(p.StatusEvent))
        pid = client.submit(INVERT_PROMPT)
        wait_until(lambda: events.find(p.ExecutionErrorEvent))
        (event,) = events.find(p.ExecutionErrorEvent)
        result = wait_until(lambda: client.history_result(pid))
    assert event.prompt_id == pid and event.node_type == "ImageInvert"
    for error in (event, result.error):
        assert error is not None
        assert error.exception_message.startswith("boom | INJECTED fake log line")
        assert error.exception_message.endswith("*** ***")
        assert_clean(error.exception_message)
        assert all("\n" not in line for line in error.traceback)
        assert_clean(str(error.to_error("s1")))
