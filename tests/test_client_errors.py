"""Error translation (core/wire_errors.py, through the client): every library exception is
mapped; statuses mean something.

Runs without a server: statuses come from a stub transport adapter (httpx's MockTransport idea).
"""

from __future__ import annotations

import inspect
import io
import json
import socket
import ssl
from typing import Any, Callable

import pytest
import requests
import requests.adapters
import requests.exceptions
import urllib3
import websocket._exceptions

from comfy_cluster.core import wire_errors
from comfy_cluster.core.client import ClientState, ComfyClient
from comfy_cluster.core.connection_settings import Timeouts
from comfy_cluster.core.errors import (
    AuthenticationFailed,
    ClosedError,
    ComfyClusterError,
    ConfigError,
    PermanentError,
    ProtocolError,
    ServerTimeout,
    ServerUnreachable,
    TransientError,
    UnexpectedStatus,
    WebsocketClosed,
    WorkflowRejected,
)
from comfy_cluster.core.server import ServerConfig
from comfy_cluster.core.wire_errors import ERROR_MAP, map_errors, translate_error

SERVER = ServerConfig(name="r1", host="127.0.0.1", port=9)


def _library_exceptions() -> list[type]:
    found = []
    for module in (requests.exceptions, websocket._exceptions):
        for _, klass in inspect.getmembers(module, inspect.isclass):
            if not issubclass(klass, BaseException) or issubclass(klass, Warning):
                continue
            if klass.__module__ == module.__name__:
                found.append(klass)
    return found


LIBRARY_EXCEPTIONS = _library_exceptions()


def _instance(klass: type) -> BaseException:
    if klass is websocket._exceptions.WebSocketBadStatusException:
        return klass("Handshake status %d %s", 500, "Internal Server Error")
    if issubclass(klass, requests.exceptions.JSONDecodeError):
        return klass("Expecting value", "x", 0)
    return klass("boom")


def test_the_walk_finds_both_libraries() -> None:
    names = {k.__name__ for k in LIBRARY_EXCEPTIONS}
    assert {"ConnectTimeout", "ReadTimeout", "SSLError", "JSONDecodeError"} <= names
    assert {"WebSocketTimeoutException", "WebSocketBadStatusException"} <= names


@pytest.mark.parametrize("klass", LIBRARY_EXCEPTIONS, ids=lambda k: k.__name__)
def test_every_library_exception_is_explicitly_mapped(klass: type) -> None:
    assert klass in ERROR_MAP, f"{klass.__module__}.{klass.__name__} is not in ERROR_MAP"
    original = _instance(klass)
    with pytest.raises(ComfyClusterError) as info, map_errors("r1", "GET /x"):
        raise original
    if klass is requests.exceptions.InvalidHeader:
        # Its message quotes the header value (maybe a token): deliberately not chained.
        assert info.value.__cause__ is None and info.value.__suppress_context__
    else:  # a cleaned copy: the original's message may quote the server (see test_hostile_server)
        cause = info.value.__cause__
        assert isinstance(cause, wire_errors.LibraryFailure) and info.value.__suppress_context__
        assert str(cause).startswith(f"{klass.__module__}.{klass.__qualname__}: ")
        assert cause.__traceback__ is original.__traceback__
    assert info.value.server == "r1" and "GET /x" in str(info.value)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (requests.exceptions.ConnectionError("refused"), ServerUnreachable),
        (requests.exceptions.ConnectTimeout("black hole"), ServerTimeout),
        (requests.exceptions.ReadTimeout("slow"), ServerTimeout),
        (requests.exceptions.ChunkedEncodingError("reset"), ServerUnreachable),
        (requests.exceptions.SSLError("cert"), ServerUnreachable),
        (requests.exceptions.InvalidURL("x"), ConfigError),
        (requests.exceptions.JSONDecodeError("x", "y", 0), ProtocolError),
        (websocket._exceptions.WebSocketConnectionClosedException("gone"), WebsocketClosed),
        (websocket._exceptions.WebSocketTimeoutException("t"), ServerTimeout),
        (
            websocket._exceptions.WebSocketBadStatusException("h %d %s", 401, "no"),
            AuthenticationFailed,
        ),
        (
            websocket._exceptions.WebSocketBadStatusException("h %d %s", 503, "no"),
            ServerUnreachable,
        ),
        (ConnectionRefusedError(111, "refused"), ServerUnreachable),
        (ConnectionResetError(104, "reset"), ServerUnreachable),
        (socket.timeout("timed out"), ServerTimeout),
        (ssl.SSLError("bad"), ServerUnreachable),
    ],
)
def test_meaningful_mapping(exc: BaseException, expected: type) -> None:
    assert type(translate_error(exc, "r1", "call")) is expected


def test_transient_means_retryable() -> None:
    for klass in (ServerUnreachable, ServerTimeout, WebsocketClosed):
        assert issubclass(klass, TransientError)
    for klass in (WorkflowRejected, AuthenticationFailed, UnexpectedStatus, ConfigError):
        assert issubclass(klass, PermanentError)


def test_errors_of_our_own_pass_through_untouched() -> None:
    mine = WorkflowRejected("x")
    with pytest.raises(WorkflowRejected) as info, map_errors("r1", "x"):
        raise mine
    assert info.value is mine


def test_names_that_moved_out_of_client_are_still_importable_from_it() -> None:
    """Other layers import these from core.client; the split must not break them."""
    from comfy_cluster.core import client, connection_settings, event_stream, server_files

    assert client.ERROR_MAP is wire_errors.ERROR_MAP
    assert client.map_errors is wire_errors.map_errors
    assert client.translate_error is wire_errors.translate_error
    assert client.Timeouts is connection_settings.Timeouts
    assert client.DEFAULT_TIMEOUTS is connection_settings.DEFAULT_TIMEOUTS
    assert client.tls_verify is connection_settings.tls_verify
    assert client.check_headers is connection_settings.check_headers
    assert client.check_ca_bundle is connection_settings.check_ca_bundle
    assert client.EventListener is event_stream.EventListener
    assert client.UploadCache is server_files.UploadCache
    assert client.file_sha256 is server_files.file_sha256
    assert set(client.__all__) <= set(dir(client))


#: The client's transport modules: the only core modules that may import requests / websocket.
TRANSPORT_MODULES = frozenset(
    {"client.py", "event_stream.py", "http_session.py", "wire_errors.py", "ws_limits.py"}
)


def test_only_wire_errors_names_library_exceptions() -> None:
    """The one translation seam: only wire_errors.py mentions requests/websocket exceptions, and
    only the client's transport modules import those libraries at all."""
    from pathlib import Path

    core = Path(wire_errors.__file__).parent
    for path in core.rglob("*.py"):
        name = path.relative_to(core).as_posix()
        text = path.read_text(encoding="utf-8")
        if name != "wire_errors.py":
            for needle in (
                "requests.exceptions",
                "RequestException",
                "WebSocketException",
                "websocket._exceptions",
            ):
                assert needle not in text, f"{name} mentions {needle}"
        if name not in TRANSPORT_MODULES:
            for needle in ("import websocket", "import requests"):
                assert needle not in text, f"{name} mentions {needle}"


# --- statuses, through a stub transport ---------------------------------------------------------


class StubAdapter(requests.adapters.BaseAdapter):
    """Answers every request with ``handler(request) -> (status, body)``; records requests."""

    def __init__(self, handler: Callable[[requests.PreparedRequest], tuple[int, Any]]) -> None:
        super().__init__()
        self.handler = handler
        self.requests: list[requests.PreparedRequest] = []
        self.timeouts: list[Any] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.requests.append(request)
        self.timeouts.append(kwargs.get("timeout"))
        status, body = self.handler(request)
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        # A streamed urllib3 response, as the real transport gives (the client reads it in caps).
        raw = urllib3.HTTPResponse(
            body=io.BytesIO(data), status=status, preload_content=False, decode_content=False
        )
        return requests.adapters.HTTPAdapter().build_response(request, raw)

    def close(self) -> None:
        pass


def stub_client(
    handler: Callable[[requests.PreparedRequest], tuple[int, Any]], **kw: Any
) -> tuple[ComfyClient, StubAdapter]:
    server = kw.pop("server", SERVER)
    client = ComfyClient(server, timeouts=Timeouts(0.5, 1.5), **kw)
    adapter = StubAdapter(handler)
    client._http.session.mount("http://", adapter)
    client._http.session.mount("https://", adapter)
    return client, adapter


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (500, UnexpectedStatus),
        (404, UnexpectedStatus),
        (413, UnexpectedStatus),
        (401, AuthenticationFailed),
        (403, AuthenticationFailed),
        (502, ServerUnreachable),
        (503, ServerUnreachable),
        (504, ServerUnreachable),
    ],
)
def test_http_status_translation(status: int, expected: type) -> None:
    client, _ = stub_client(lambda r: (status, b"500 Internal Server Error"))
    with pytest.raises(expected) as info:
        client.queue_remaining()
    assert f"HTTP {status}" in str(info.value) and info.value.server == "r1"


def test_every_call_has_explicit_connect_and_read_timeouts() -> None:
    client, adapter = stub_client(lambda r: (200, {"exec_info": {"queue_remaining": 3}}))
    assert client.queue_remaining() == 3
    assert adapter.timeouts == [(0.5, 1.5)]


def test_400_on_prompt_is_workflow_rejected_with_node_errors() -> None:
    body = {
        "error": {
            "type": "prompt_outputs_failed_validation",
            "message": "Prompt outputs failed validation",
        },
        "node_errors": {
            "5": {
                "errors": [
                    {
                        "type": "value_smaller_than_min",
                        "message": "Value 0 smaller than min of 1",
                        "details": "width",
                        "extra_info": {"input_name": "width"},
                    }
                ],
                "dependent_outputs": ["9"],
                "class_type": "EmptyImage",
            }
        },
    }
    client, adapter = stub_client(lambda r: (400, body))
    with pytest.raises(WorkflowRejected) as info:
        client.submit({"5": {"class_type": "EmptyImage", "inputs": {}}}, prompt_id="pid-1")
    (err,) = info.value.node_errors
    assert (err.node_id, err.class_type, err.input_name) == ("5", "EmptyImage", "width")
    assert info.value.prompt_id == "pid-1"
    sent = json.loads(adapter.requests[0].body)  # type: ignore[arg-type]
    assert sent["client_id"] == client.client_id and sent["prompt_id"] == "pid-1"


def test_submit_refuses_a_server_that_ignores_our_prompt_id() -> None:
    client, _ = stub_client(
        lambda r: (200, {"prompt_id": "theirs", "number": 1, "node_errors": {}})
    )
    with pytest.raises(ProtocolError, match="too old"):
        client.submit({}, prompt_id="ours")


def test_non_json_answer_is_protocol_error() -> None:
    client, _ = stub_client(lambda r: (200, b"<html>proxy login</html>"))
    with pytest.raises(ProtocolError, match="not JSON"):
        client.system_stats()


def test_token_and_headers_go_on_every_request_and_tls_verify_follows_config() -> None:
    server = ServerConfig(
        name="s",
        host="h",
        port=443,
        scheme="https",
        token="sekrit",
        headers={"X-Farm": "a"},
        verify_tls=False,
    )
    client, adapter = stub_client(
        lambda r: (200, {"exec_info": {"queue_remaining": 0}}), server=server
    )
    client.queue_remaining()
    headers = adapter.requests[0].headers
    assert headers["Authorization"] == "Bearer sekrit" and headers["X-Farm"] == "a"
    assert adapter.requests[0].url == "https://h:443/prompt"
    assert client._http.session.verify is False
    assert ComfyClient(SERVER)._http.session.verify is True


def test_use_after_close_raises_closed_error() -> None:
    client, adapter = stub_client(lambda r: (200, {}))
    with client:
        assert client.state is ClientState.OPEN
    assert client.state is ClientState.CLOSED
    for call in (
        client.system_stats,
        client.queue,
        lambda: client.submit({}),
        lambda: client.listen(print),
    ):
        with pytest.raises(ClosedError):
            call()
    client.close()  # idempotent
    assert adapter.requests == []


def test_interrupt_only_when_our_prompt_is_running_and_never_bodiless() -> None:
    queue = {
        "queue_running": [[1, "theirs", {}, {}, []]],
        "queue_pending": [[2, "mine", {}, {}, []]],
    }

    def handler(r: requests.PreparedRequest) -> tuple[int, Any]:
        return (200, queue) if r.method == "GET" else (200, b"")

    client, adapter = stub_client(handler)
    assert client.interrupt("mine") is False  # pending, not running
    assert client.interrupt("gone") is False
    assert [r.method for r in adapter.requests] == ["GET", "GET"]
    client.cancel("mine")
    posts = [(r.path_url, json.loads(r.body)) for r in adapter.requests if r.method == "POST"]  # type: ignore[arg-type]
    assert posts == [("/queue", {"delete": ["mine"]})]
    queue["queue_running"] = [[2, "mine", {}, {}, []]]
    queue["queue_pending"] = []
    assert client.interrupt("mine") is True
    posts = [(r.path_url, json.loads(r.body)) for r in adapter.requests if r.method == "POST"]  # type: ignore[arg-type]
    assert posts[-1] == ("/interrupt", {"prompt_id": "mine"})
    for _, body in posts:
        assert "clear" not in body
    client.delete_queued([])  # nothing to do: no request
    assert len([r for r in adapter.requests if r.method == "POST"]) == 2


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"headers": {"X-Api-Key": " s3cret"}}, "headers"),
        ({"headers": {"X-Api-Key": "s3cret\n"}}, "headers"),
        ({"token": "s3cret\n"}, "token"),
        ({"token": "s3cret\r\nX-Evil: 1"}, "token"),
    ],
    ids=["header-leading-space", "header-newline", "token-newline", "token-injection"],
)
@pytest.mark.parametrize("call", ["queue_remaining", "submit", "probe_websocket"])
def test_an_invalid_header_value_is_a_config_error_that_never_shows_it(
    fields: dict[str, Any], field: str, call: str
) -> None:
    """Regression: requests' InvalidHeader (or, on requests 2.32, http.client's raw ValueError
    for a trailing newline) quoted the value, a token, in our error; the websocket sent it as is."""
    import traceback

    config = ServerConfig(name="r1", host="127.0.0.1", port=9, **fields)
    args = ({"1": {"class_type": "X", "inputs": {}}},) if call == "submit" else ()
    client = ComfyClient(config, timeouts=Timeouts(0.2, 0.2))
    with client, pytest.raises(ConfigError) as info:
        getattr(client, call)(*args)
    error = info.value
    assert (error.server, error.field) == ("r1", field)
    assert "r1" in str(error)
    shown = str(error) + repr(error) + "".join(traceback.format_exception(*info._excinfo))
    assert "s3cret" not in shown


def test_invalid_header_from_requests_is_not_chained_or_quoted() -> None:
    original = requests.exceptions.InvalidHeader("bad header value: ' s3cret'")
    with pytest.raises(ConfigError) as info, map_errors("r1", "GET /x"):
        raise original
    assert info.value.field == "headers" and "s3cret" not in str(info.value)
    assert info.value.__cause__ is None


@pytest.mark.parametrize(
    ("exc", "plain"),
    [
        (
            requests.exceptions.ConnectionError(
                "HTTPConnectionPool(host='h', port=1): Max retries exceeded (Caused by "
                "NewConnectionError('<urllib3.connection.HTTPConnection object>: Failed to "
                "establish a new connection: [Errno 111] Connection refused'))"
            ),
            "connection refused: is ComfyUI running on that port?",
        ),
        (
            requests.exceptions.ConnectionError("[Errno -2] Name or service not known"),
            "host name not found",
        ),
        (
            requests.exceptions.SSLError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify"),
            "TLS certificate not trusted (set ca_bundle, or verify_tls false)",
        ),
        (requests.exceptions.ReadTimeout("Read timed out. (read timeout=3)"), "no answer in time"),
        (ConnectionResetError(104, "Connection reset by peer"), "connection reset by the server"),
    ],
)
def test_low_level_causes_read_as_what_to_check(exc: BaseException, plain: str) -> None:
    error = translate_error(exc, "gpu1", "GET /prompt")
    assert str(error).startswith("gpu1: GET /prompt: ")
    assert plain in str(error)
    assert "urllib3" not in str(error) and "Errno" not in str(error)


def test_a_refused_port_says_so_in_plain_words() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = ServerConfig(name="gpu1", host="127.0.0.1", port=port)
    with ComfyClient(config) as client, pytest.raises(ServerUnreachable) as info:
        client.queue_remaining()
    assert str(info.value) == (
        "gpu1: GET /prompt: unreachable (connection refused: is ComfyUI running on that port?)"
    )
