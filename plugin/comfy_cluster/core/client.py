"""One ComfyUI server's HTTP API and websocket, with every failure translated to our error tree.

This is the **only** module that catches ``requests`` / ``websocket`` exceptions, and it does so
in one place, :func:`map_errors`, driven by the read-only table :data:`ERROR_MAP` (a test walks both
libraries' exception modules and fails on any class missing from it). HTTP statuses are translated
in :meth:`ComfyClient._check`: 400 on ``/prompt`` -> WorkflowRejected (with NodeError tuples),
401/403 -> AuthenticationFailed, 502/503/504 -> ServerUnreachable (transient), others ->
UnexpectedStatus.

Threads: a :class:`ComfyClient` holds one ``requests.Session`` and is meant for one thread at a
time (requests does not promise a thread-safe Session); create one client per server per worker.
:class:`EventListener` is its own named daemon thread; ``close()`` may be called from any thread.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import logging
import os
import re
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Optional, Union

import requests
import requests.exceptions as rex
import websocket
import websocket._exceptions as wex

from comfy_cluster.core import protocol
from comfy_cluster.core.errors import (
    AuthenticationFailed,
    ClosedError,
    ComfyClusterError,
    ConfigError,
    ProtocolError,
    ServerTimeout,
    ServerUnreachable,
    UnexpectedStatus,
    WebsocketClosed,
)
from comfy_cluster.core.protocol import Event, ImageRef, QueueState
from comfy_cluster.core.server import ServerConfig

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_TIMEOUTS",
    "ERROR_MAP",
    "ClientState",
    "ComfyClient",
    "EventListener",
    "Timeouts",
    "UploadCache",
    "check_ca_bundle",
    "check_headers",
    "map_errors",
    "tls_verify",
    "translate_error",
]


# --- configuration ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timeouts:
    """Seconds to wait for a TCP/TLS connect and for each read (not the whole response).

    ``Timeouts(connect=0.5, read=2.0)``; ``DEFAULT_TIMEOUTS`` is ``Timeouts(3.0, 30.0)``: a LAN
    connect is milliseconds, while ``/object_info`` or a big upload can take seconds.
    """

    connect: float = 3.0
    read: float = 30.0

    def __post_init__(self) -> None:
        if self.connect <= 0 or self.read <= 0:
            raise ValueError(f"timeouts must be > 0, got connect={self.connect} read={self.read}")

    def as_requests(self) -> tuple[float, float]:
        return (self.connect, self.read)


DEFAULT_TIMEOUTS = Timeouts()


class ClientState(enum.Enum):
    """Lifecycle of a :class:`ComfyClient`."""

    OPEN = "open"  #: usable; the session opens connections lazily
    CLOSED = "closed"  #: close() was called; every call raises ClosedError


# --- the one translation seam -------------------------------------------------------------------

#: Library exception class -> our error class. The most specific class in an exception's MRO wins.
ERROR_MAP: Mapping[type, type] = MappingProxyType(
    {
        # requests: transport failures are transient, malformed requests are our configuration.
        rex.RequestException: ServerUnreachable,
        rex.ConnectionError: ServerUnreachable,
        rex.ProxyError: ServerUnreachable,
        rex.SSLError: ServerUnreachable,
        rex.Timeout: ServerTimeout,
        rex.ConnectTimeout: ServerTimeout,
        rex.ReadTimeout: ServerTimeout,
        rex.ChunkedEncodingError: ServerUnreachable,  # connection dropped mid-body
        rex.RetryError: ServerUnreachable,
        rex.HTTPError: UnexpectedStatus,
        rex.ContentDecodingError: ProtocolError,
        rex.TooManyRedirects: ProtocolError,
        rex.StreamConsumedError: ProtocolError,
        rex.UnrewindableBodyError: ProtocolError,
        rex.InvalidJSONError: ProtocolError,
        rex.JSONDecodeError: ProtocolError,
        rex.URLRequired: ConfigError,
        rex.MissingSchema: ConfigError,
        rex.InvalidSchema: ConfigError,
        rex.InvalidURL: ConfigError,
        rex.InvalidHeader: ConfigError,
        rex.InvalidProxyURL: ConfigError,
        # urllib3 normally arrives wrapped by requests; a leak is still a transport failure.
        rex.BaseHTTPError: ServerUnreachable,
        # websocket-client
        wex.WebSocketException: WebsocketClosed,
        wex.WebSocketConnectionClosedException: WebsocketClosed,
        wex.WebSocketBadStatusException: WebsocketClosed,  # 401/403 handled in translate_error
        wex.WebSocketTimeoutException: ServerTimeout,
        wex.WebSocketAddressException: ServerUnreachable,
        wex.WebSocketProxyException: ServerUnreachable,
        wex.WebSocketProtocolException: ProtocolError,
        wex.WebSocketPayloadException: ProtocolError,
        # websocket-client lets raw socket errors through on connect and send.
        socket.timeout: ServerTimeout,
        TimeoutError: ServerTimeout,
        ssl.SSLError: ServerUnreachable,
        ConnectionError: ServerUnreachable,
        OSError: ServerUnreachable,
    }
)


def _mapped_class(exc: BaseException) -> Optional[type]:
    for klass in type(exc).__mro__:
        if klass in ERROR_MAP:
            return ERROR_MAP[klass]
    return None


def translate_error(exc: BaseException, server: str, what: str) -> ComfyClusterError:
    """Our error for a library exception raised while doing ``what`` on ``server``. Pure."""
    if isinstance(exc, ComfyClusterError):
        return exc
    if isinstance(exc, wex.WebSocketBadStatusException):
        status = int(getattr(exc, "status_code", 0) or 0)
        if status in (401, 403):
            return AuthenticationFailed(
                f"{what}: websocket refused with {status}", server=server, status=status
            )
        if status in (502, 503, 504):
            return ServerUnreachable(f"{what}: websocket got HTTP {status}", server=server)
    if isinstance(exc, rex.InvalidHeader):
        # requests quotes the offending header value, and that value may be the token.
        return ConfigError(
            f"{what}: a header name or value is invalid (leading whitespace, a newline or another "
            "reserved character; value not shown)",
            server=server,
            field="headers",
        )
    klass = _mapped_class(exc) or ServerUnreachable
    detail = _short(exc)
    if klass is ServerTimeout:
        message = f"{what}: timed out ({detail})"
    elif klass is ServerUnreachable:
        message = f"{what}: unreachable ({detail})"
    elif klass is WebsocketClosed:
        message = f"{what}: websocket closed ({detail})"
    else:
        message = f"{what}: {detail}"
    if klass is ConfigError:
        return ConfigError(message, server=server, field="url")
    if klass is UnexpectedStatus:
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", 0) or 0
        return UnexpectedStatus(message, server=server, status=int(status))
    return klass(message, server=server)


#: Low-level failure texts (sockets, urllib3, ssl) and the phrase a user can act on.
_PLAIN_CAUSES: tuple[tuple[str, str], ...] = (
    (
        "CERTIFICATE_VERIFY_FAILED",
        "TLS certificate not trusted (set ca_bundle, or verify_tls false)",
    ),
    ("Connection refused", "connection refused: is ComfyUI running on that port?"),
    ("Name or service not known", "host name not found"),
    ("nodename nor servname", "host name not found"),
    ("getaddrinfo failed", "host name not found"),
    ("No route to host", "no route to host"),
    ("Network is unreachable", "network unreachable"),
    ("Connection reset", "connection reset by the server"),
    ("RemoteDisconnected", "the server closed the connection"),
    ("Connection aborted", "the server closed the connection"),
    ("timed out", "no answer in time"),
)


def _short(exc: BaseException) -> str:
    """A one-line description a user can act on, e.g. ``connection refused: is ComfyUI running on
    that port?``; otherwise the exception's own text, without urllib3's nested reprs."""
    raw = f"{type(exc).__name__}: {exc}"
    for marker, plain in _PLAIN_CAUSES:
        if marker in raw:
            return plain
    text = str(exc) or type(exc).__name__
    if "(Caused by " in text:
        inner = text.split("(Caused by ", 1)[1].rstrip(")")
        text = inner.split(": ", 1)[-1] if ": " in inner else inner
    text = re.sub(r"HTTP(S)?ConnectionPool\([^)]*\):\s*", "", text)
    text = re.sub(r"<urllib3\.[^>]*>:\s*", "", text).strip("\"' ")
    text = text.replace("\n", " ").strip()
    return f"{type(exc).__name__}: {text[:200]}"


@contextlib.contextmanager
def map_errors(server: str, what: str) -> Iterator[None]:
    """Translate any library exception raised inside into our error tree (chained as __cause__).

    Except ``InvalidHeader``: its message quotes the header value, which may be a secret.
    """
    try:
        yield
    except ComfyClusterError:
        raise
    except rex.InvalidHeader as exc:
        # Not chained: the original's message holds the (possibly secret) header value.
        raise translate_error(exc, server, what) from None
    except (requests.RequestException, websocket.WebSocketException, OSError) as exc:
        raise translate_error(exc, server, what) from exc
    except rex.BaseHTTPError as exc:  # pragma: no cover - requests normally wraps these
        raise translate_error(exc, server, what) from exc


# --- uploads cache ------------------------------------------------------------------------------


class UploadCache:
    """Which contents a server already holds: (server, sha256, subfolder, name) -> LoadImage value.

    Share one between the clients of a job so an identical file is sent once per server.
    Any thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[tuple[str, str, str, str], str] = {}

    def get(self, key: tuple[str, str, str, str]) -> Optional[str]:
        with self._lock:
            return self._values.get(key)

    def put(self, key: tuple[str, str, str, str], value: str) -> None:
        with self._lock:
            self._values[key] = value

    def forget_server(self, server: str) -> None:
        """Drop a server's entries (after a restart its input folder may have been wiped)."""
        with self._lock:
            for key in [k for k in self._values if k[0] == server]:
                del self._values[key]


def file_sha256(path: Union[str, Path], chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


# --- the client ---------------------------------------------------------------------------------


class ComfyClient:
    """ComfyUI's HTTP API for one server, plus websocket listeners.

    One thread at a time (one client per server per worker thread); ``close()`` from any thread.
    Methods raise only ``core/errors.py`` types: ServerUnreachable / ServerTimeout (transient),
    WorkflowRejected, AuthenticationFailed, UnexpectedStatus / ProtocolError, ClosedError.
    """

    #: :meth:`download` writes a temporary file and renames it onto ``dest`` (callers need not).
    downloads_atomically = True

    def __init__(
        self,
        server: ServerConfig,
        *,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        client_id: Optional[str] = None,
        upload_cache: Optional[UploadCache] = None,
    ) -> None:
        self.server = server
        self.timeouts = timeouts
        #: Sent with every prompt and as the websocket ``clientId``: routes per-prompt events to us.
        self.client_id = client_id or uuid.uuid4().hex
        self._uploads = upload_cache if upload_cache is not None else UploadCache()
        self._lock = threading.Lock()
        self._state = ClientState.OPEN
        self._listeners: list[EventListener] = []
        session = requests.Session()
        session.headers.update(server.request_headers())
        # Passed again on every call: a session-level False (or CA path) loses to
        # REQUESTS_CA_BUNDLE, which many studios set (requests merges the environment over the
        # session's own setting).
        session.verify = tls_verify(server)
        self._session = session

    # lifecycle ------------------------------------------------------------------------------------

    @property
    def state(self) -> ClientState:
        return self._state

    @property
    def name(self) -> str:
        return self.server.name

    def close(self) -> None:
        """Close the session and any listener this client started. Idempotent; any thread."""
        with self._lock:
            if self._state is ClientState.CLOSED:
                return
            self._state = ClientState.CLOSED
            listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener.close()
        self._session.close()

    def __enter__(self) -> ComfyClient:
        self._check_open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ComfyClient({self.server.name!r}, {self.server.url!r}, {self._state.value})"

    def _check_open(self) -> None:
        if self._state is ClientState.CLOSED:
            raise ClosedError(f"client for {self.server.name} is closed", server=self.server.name)

    # HTTP plumbing --------------------------------------------------------------------------------

    def _verify(self) -> Union[bool, str]:
        """requests' ``verify=`` for this server, after the local checks of its configuration.

        ConfigError if its ``ca_bundle`` has gone or a header (or the token) cannot be sent.
        """
        check_headers(self.server)
        check_ca_bundle(self.server)
        return self._session.verify

    def _request(
        self,
        method: str,
        path: str,
        *,
        what: Optional[str] = None,
        timeouts: Optional[Timeouts] = None,
        **kwargs: Any,
    ) -> requests.Response:
        self._check_open()
        what = what or f"{method} {path.split('?')[0]}"
        t = timeouts or self.timeouts
        with map_errors(self.server.name, what):
            response = self._session.request(
                method,
                self.server.url + path,
                timeout=t.as_requests(),
                verify=self._verify(),
                **kwargs,
            )
        self._check(response, what)
        return response

    def _check(self, response: requests.Response, what: str) -> None:
        """Translate a non-2xx status (400 on /prompt is handled by submit)."""
        status = response.status_code
        if 200 <= status < 300:
            return
        name = self.server.name
        body = _snippet(response)
        response.close()
        if status in (401, 403):
            raise AuthenticationFailed(
                f"{what}: HTTP {status} (check the server's token and headers){body}",
                server=name,
                status=status,
            )
        if status in (502, 503, 504):
            raise ServerUnreachable(f"{what}: HTTP {status}{body}", server=name)
        raise UnexpectedStatus(f"{what}: HTTP {status}{body}", server=name, status=status)

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        what = kwargs.pop("what", None) or f"{method} {path.split('?')[0]}"
        response = self._request(method, path, what=what, **kwargs)
        with map_errors(self.server.name, what):
            text = response.text
        try:
            return json.loads(text)
        except ValueError as exc:
            raise ProtocolError(
                f"{what}: answer is not JSON: {text[:80]!r}", server=self.server.name
            ) from exc

    # queries --------------------------------------------------------------------------------------

    def system_stats(self, *, timeouts: Optional[Timeouts] = None) -> dict[str, Any]:
        """GET /system_stats (OS, versions, device, VRAM). Raises ProtocolError if not ComfyUI."""
        body = self._json("GET", "/system_stats", timeouts=timeouts)
        protocol.parse_system_stats(body)  # validates the shape
        return body

    def queue_remaining(self, *, timeouts: Optional[Timeouts] = None) -> int:
        """GET /prompt: running + pending prompts (everyone's)."""
        body = self._json("GET", "/prompt", timeouts=timeouts)
        try:
            return int(body["exec_info"]["queue_remaining"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(
                f"GET /prompt: unexpected body {str(body)[:80]!r}", server=self.name
            ) from exc

    def queue(self, *, timeouts: Optional[Timeouts] = None) -> QueueState:
        """GET /queue: running and pending prompt ids (positions 0-4 of each item only)."""
        body = self._json("GET", "/queue", timeouts=timeouts)
        try:
            return protocol.parse_queue(body)
        except ProtocolError as exc:
            exc.server = self.name
            raise

    def object_info(self, *, timeouts: Optional[Timeouts] = None) -> dict[str, Any]:
        """GET /object_info: node class name -> info (about 0.5 MB on a stock install)."""
        body = self._json("GET", "/object_info", timeouts=timeouts)
        if not isinstance(body, dict):
            raise ProtocolError("GET /object_info: not an object", server=self.name)
        return body

    def features(self) -> Optional[dict[str, Any]]:
        """GET /features, or None on servers older than mid-2025 (404)."""
        try:
            body = self._json("GET", "/features")
        except UnexpectedStatus as exc:
            if exc.status == 404:
                return None
            raise
        return body if isinstance(body, dict) else None

    def history(self, prompt_id: str) -> Optional[dict[str, Any]]:
        """GET /history/{id}: the entry, or None while unknown, queued or running."""
        body = self._json("GET", f"/history/{prompt_id}", what="GET /history")
        if not isinstance(body, dict):
            raise ProtocolError("GET /history: not an object", server=self.name)
        if not body:
            return None
        entry = body.get(prompt_id)
        if not isinstance(entry, dict):
            raise ProtocolError(f"GET /history: no entry for {prompt_id}", server=self.name)
        return entry

    # prompts --------------------------------------------------------------------------------------

    def submit(
        self,
        workflow: Mapping[str, Any],
        *,
        prompt_id: Optional[str] = None,
        extra_data: Optional[Mapping[str, Any]] = None,
    ) -> str:
        """POST /prompt with our ``client_id`` and a ``prompt_id`` we choose; returns that id.

        Raises WorkflowRejected (400, with NodeError tuples; never worth retrying),
        ServerUnreachable / ServerTimeout (transient; but a read timeout is *ambiguous*: the prompt
        may be queued, so check queue()/history(prompt_id) before resubmitting), ProtocolError if
        the reply names another id.
        """
        prompt_id = prompt_id or str(uuid.uuid4())
        payload: dict[str, Any] = {
            "prompt": dict(workflow),
            "client_id": self.client_id,
            "prompt_id": prompt_id,
        }
        if extra_data:
            payload["extra_data"] = dict(extra_data)
        self._check_open()
        what = "POST /prompt"
        with map_errors(self.name, what):
            response = self._session.post(
                self.server.url + "/prompt",
                json=payload,
                timeout=self.timeouts.as_requests(),
                verify=self._verify(),
            )
        if response.status_code == 400:
            with map_errors(self.name, what):
                text = response.text
            try:
                body = json.loads(text)
            except ValueError:
                body = text
            raise protocol.parse_node_errors(body, server=self.name, prompt_id=prompt_id)
        self._check(response, what)
        try:
            body = response.json()
        except ValueError as exc:
            raise ProtocolError(f"{what}: answer is not JSON", server=self.name) from exc
        returned = body.get("prompt_id") if isinstance(body, dict) else None
        if returned is not None and str(returned) != prompt_id:
            # Servers before mid-2025 ignore our id; events would be routed under theirs.
            raise ProtocolError(
                f"{what}: server assigned prompt id {returned} instead of ours ({prompt_id}); "
                "it is too old (needs ComfyUI >= mid-2025)",
                server=self.name,
            )
        if isinstance(body, dict) and body.get("node_errors"):
            rejected = protocol.parse_node_errors(body, server=self.name, prompt_id=prompt_id)
            log.warning(
                "%s: prompt %s queued with some outputs dropped: %s", self.name, prompt_id, rejected
            )
        return prompt_id

    def interrupt(self, prompt_id: str) -> bool:
        """Interrupt ``prompt_id`` if and only if /queue shows it running; True if we sent it.

        Never sends a bodiless interrupt: servers older than late 2025 ignore the ``prompt_id`` and
        would stop whatever runs, so we check first (a small race remains on such servers).
        """
        if prompt_id not in self.queue().running:
            return False
        self._request("POST", "/interrupt", json={"prompt_id": prompt_id})
        return True

    def delete_queued(self, prompt_ids: Iterable[str]) -> None:
        """Remove our prompts from the pending queue. Never ``clear``: it holds others' work too."""
        ids = [str(pid) for pid in prompt_ids]
        if ids:
            self._request("POST", "/queue", json={"delete": ids})

    def cancel(self, prompt_id: str) -> None:
        """Delete ``prompt_id`` if pending, interrupt it if running; a no-op when already gone."""
        state = self.queue()
        if prompt_id in state.pending:
            self.delete_queued([prompt_id])
            state = self.queue()  # it may have started between the two calls
        if prompt_id in state.running:
            self._request("POST", "/interrupt", json={"prompt_id": prompt_id})

    # files ----------------------------------------------------------------------------------------

    def upload_image(
        self, path: Union[str, Path], *, subfolder: str = "", name: Optional[str] = None
    ) -> str:
        """POST /upload/image; returns the LoadImage value ``"subfolder/name"`` the server chose.

        The content's sha256 is remembered per server, so the same bytes are not sent twice.
        """
        path = Path(path)
        name = name or path.name
        try:
            digest = file_sha256(path)
        except OSError as exc:
            raise ConfigError(f"cannot read input file {path}: {exc}", field="input") from exc
        key = (self.name, digest, subfolder, name)
        cached = self._uploads.get(key)
        if cached is not None:
            return cached
        with open(path, "rb") as fh:
            body = self._json(
                "POST",
                "/upload/image",
                files={"image": (name, fh, "application/octet-stream")},
                data={"subfolder": subfolder, "type": "input"},
            )
        if not isinstance(body, dict) or not body.get("name"):
            raise ProtocolError(
                f"POST /upload/image: unexpected answer {str(body)[:80]!r}", server=self.name
            )
        stored_sub = str(body.get("subfolder") or "")
        value = f"{stored_sub}/{body['name']}" if stored_sub else str(body["name"])
        self._uploads.put(key, value)
        return value

    def download(
        self, image_ref: Union[ImageRef, Mapping[str, Any]], dest: Union[str, Path]
    ) -> Path:
        """GET /view, streamed to a hidden temporary file beside ``dest``, then renamed onto it."""
        if isinstance(image_ref, Mapping):
            image_ref = ImageRef(
                filename=str(image_ref["filename"]),
                subfolder=str(image_ref.get("subfolder") or ""),
                type=str(image_ref.get("type") or "output"),
            )
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:8]}.part"
        params = {
            "filename": image_ref.filename,
            "subfolder": image_ref.subfolder,
            "type": image_ref.type,
        }
        what = "GET /view"
        response = self._request("GET", "/view", what=what, params=params, stream=True)
        try:
            blocks = response.iter_content(chunk_size=1 << 20)
            # Only the network side is translated: a local disk error stays an OSError.
            with open(tmp, "wb") as fh:
                while True:
                    with map_errors(self.name, what):
                        block = next(blocks, None)
                    if block is None:
                        break
                    fh.write(block)
            os.replace(tmp, dest)
        finally:
            response.close()
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return dest

    # websocket ------------------------------------------------------------------------------------

    def listen(
        self,
        on_event: Callable[[Event], None],
        stop: Optional[threading.Event] = None,
        **options: Any,
    ) -> EventListener:
        """Start a websocket listener thread for this client's ``client_id``; returns it started.

        ``on_event`` runs on the listener thread. ``options`` go to :class:`EventListener`.
        """
        self._check_open()
        listener = EventListener(
            self.server, self.client_id, on_event, stop=stop, timeouts=self.timeouts, **options
        )
        with self._lock:
            self._check_open()
            self._listeners.append(listener)
        listener.start()
        return listener

    def probe_websocket(self, timeout: Optional[float] = None) -> float:
        """Open a websocket with a throwaway clientId, wait for the greeting; return seconds taken.

        A fresh id never collides with a listener (see the same-clientId reconnect pitfall).
        Raises WebsocketClosed / ServerUnreachable / ServerTimeout / ProtocolError.
        """
        self._check_open()
        timeout = timeout or self.timeouts.connect
        start = time.monotonic()
        url = f"{self.server.ws_url}/ws?clientId=probe-{uuid.uuid4().hex}"
        ws = None
        with map_errors(self.name, "websocket"):
            try:
                ws = websocket.create_connection(url, timeout=timeout, **_ws_options(self.server))
                opcode, data = ws.recv_data()
                while opcode != websocket.ABNF.OPCODE_TEXT:
                    opcode, data = ws.recv_data()
            finally:
                if ws is not None:
                    _close_websocket(ws, min(timeout, 1.0))
        event = protocol.parse_message(data)
        if not isinstance(event, protocol.StatusEvent):
            raise ProtocolError(
                f"websocket greeting was {type(event).__name__}, not status", server=self.name
            )
        return time.monotonic() - start


def _snippet(response: requests.Response) -> str:
    try:
        text = response.text.strip()
    except Exception:
        return ""
    return f": {text[:160]}" if text else ""


def tls_verify(server: ServerConfig) -> Union[bool, str]:
    """requests' ``verify=`` for ``server``: its ``ca_bundle`` path, or ``verify_tls`` as a bool."""
    if server.verify_tls and server.ca_bundle:
        return server.ca_bundle
    return bool(server.verify_tls)


_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_VALUE = re.compile(r"(?:[^\s][^\r\n\x00]*)?")


def check_headers(server: ServerConfig) -> None:
    """Raise ConfigError (naming the header, never its value) for a header that cannot be sent.

    A value with leading whitespace or a line break would otherwise fail inside requests or
    http.client with the value (perhaps the token) quoted in the message, or be injected
    as-is into the websocket handshake.
    """
    for key, value in server.request_headers().items():
        if not _HEADER_NAME.fullmatch(key) or not _HEADER_VALUE.fullmatch(value):
            shown = "the token" if key == "Authorization" and server.token else f"header {key!r}"
            raise ConfigError(
                f"server {server.name!r}: {shown} has leading whitespace, a line break or "
                "another character that cannot be sent (value not shown)",
                source=server.source,
                server=server.name,
                field="token" if shown == "the token" else "headers",
            )


def check_ca_bundle(server: ServerConfig) -> None:
    """Raise ConfigError (permanent, never retried) if ``server`` uses a CA file that is missing.

    Loading the configuration checks this too; a record built in code, or a file deleted since,
    would otherwise surface as a transient "unreachable" and be retried forever.
    """
    if (
        server.scheme == "https"
        and server.verify_tls
        and server.ca_bundle
        and not os.path.isfile(server.ca_bundle)
    ):
        raise ConfigError(
            f"server {server.name!r}: {server.ca_bundle!r}: no such file",
            source=server.source,
            server=server.name,
            field="ca_bundle",
        )


def _ws_options(server: ServerConfig) -> dict[str, Any]:
    check_headers(server)
    headers = [f"{k}: {v}" for k, v in server.request_headers().items()]
    # UTF-8 is checked by json.loads in protocol.parse_message (a bad frame is skipped there);
    # websocket-client's own check is a pure-Python loop over every byte of every message.
    options: dict[str, Any] = {
        "header": headers,
        "enable_multithread": True,
        "skip_utf8_validation": True,
    }
    if server.scheme == "https" and not server.verify_tls:
        options["sslopt"] = {"cert_reqs": ssl.CERT_NONE, "check_hostname": False}
    elif server.scheme == "https" and server.ca_bundle:
        check_ca_bundle(server)
        options["sslopt"] = {"ca_certs": server.ca_bundle}
    return options


def _close_websocket(ws: Any, timeout: float) -> None:
    """Close ``ws`` and its socket for certain; never raises.

    websocket-client's ``close()`` returns at once, leaving the socket open, once the peer's close
    frame has been answered (``recv_data`` replies and marks it disconnected); ``shutdown()``
    releases the socket whatever state it is in.
    """
    with contextlib.suppress(Exception):
        ws.close(timeout=timeout)
    with contextlib.suppress(Exception):
        ws.shutdown()


# --- websocket listener -------------------------------------------------------------------------


class EventListener(threading.Thread):
    """A named daemon thread owning one websocket; turns frames into :mod:`protocol` events.

    Reconnects with backoff, always closing the old socket *before* opening a new one with the
    same clientId (ComfyUI keys sockets by clientId, and a late close of the old socket would
    unregister the new one). Emits :class:`~protocol.Connected` / :class:`~protocol.Disconnected`;
    after a reconnect, missed events are gone: re-sync from /queue and /history. Binary frames
    (previews, text) are skipped. Exceptions raised by ``on_event`` are logged, not fatal.

    ``on_event`` runs on this thread. ``close()`` and ``stop`` may be used from any thread.
    """

    def __init__(
        self,
        server: ServerConfig,
        client_id: str,
        on_event: Callable[[Event], None],
        *,
        stop: Optional[threading.Event] = None,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        poll_interval: float = 0.25,
        reconnect_initial: float = 0.2,
        reconnect_max: float = 5.0,
        connect: Optional[Callable[..., Any]] = None,
    ) -> None:
        super().__init__(name=f"comfy-cluster-ws-{server.name}", daemon=True)
        self.server = server
        self.client_id = client_id
        self.on_event = on_event
        self.timeouts = timeouts
        self.poll_interval = poll_interval
        self.reconnect_initial = reconnect_initial
        self.reconnect_max = reconnect_max
        self._connect = connect or websocket.create_connection
        self._stop_event = stop or threading.Event()
        self._closing = threading.Event()
        self._connected = threading.Event()
        self._ws: Any = None
        #: Number of successful connects so far (1 after the first).
        self.connects = 0
        #: The last connection error, translated (None while healthy).
        self.last_error: Optional[ComfyClusterError] = None

    @property
    def url(self) -> str:
        return f"{self.server.ws_url}/ws?clientId={self.client_id}"

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        """Block until a socket is open (True) or ``timeout`` passes (False)."""
        return self._connected.wait(timeout)

    def _stopping(self) -> bool:
        return self._stop_event.is_set() or self._closing.is_set()

    def close(self, timeout: float = 2.0) -> None:
        """Stop the thread and close its socket; waits up to ``timeout`` for it. Any thread."""
        self._closing.set()
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                ws.abort()  # wakes a blocked recv at once
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)

    def _emit(self, event: Event) -> None:
        try:
            self.on_event(event)
        except Exception:
            log.exception("%s: websocket event handler failed on %r", self.server.name, event)

    def run(self) -> None:
        delay = self.reconnect_initial
        attempt = 0
        while not self._stopping():
            attempt += 1
            try:
                with map_errors(self.server.name, "websocket connect"):
                    ws = self._connect(
                        self.url, timeout=self.timeouts.connect, **_ws_options(self.server)
                    )
            except ComfyClusterError as exc:
                self.last_error = exc
                log.debug("%s: websocket connect failed: %s", self.server.name, exc)
                self._stop_wait(delay)
                delay = min(delay * 2, self.reconnect_max)
                continue
            self._ws = ws
            self.connects += 1
            self.last_error = None
            delay = self.reconnect_initial
            self._connected.set()
            self._emit(protocol.Connected(client_id=self.client_id, attempt=self.connects))
            reason = self._pump(ws)
            self._connected.clear()
            # Close fully before any reconnect with the same clientId.
            _close_websocket(ws, min(1.0, self.timeouts.connect))
            self._ws = None
            self._emit(protocol.Disconnected(reason=reason))
            if not self._stopping():
                self._stop_wait(delay)

    def _stop_wait(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stopping():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._stop_event.wait(min(remaining, self.poll_interval))

    def _pump(self, ws: Any) -> str:
        """Read frames until the socket closes or we stop; returns why it ended."""
        ws.settimeout(self.poll_interval)
        while not self._stopping():
            try:
                with map_errors(self.server.name, "websocket"):
                    opcode, data = ws.recv_data()
            except ServerTimeout:
                continue  # no message within poll_interval: check stop and wait again
            except ComfyClusterError as exc:
                self.last_error = exc
                return str(exc)
            if opcode == websocket.ABNF.OPCODE_TEXT:
                try:
                    event = protocol.parse_message(data)
                except ProtocolError as exc:
                    log.warning("%s: skipping bad websocket frame: %s", self.server.name, exc)
                    continue
                self._emit(event)
            elif opcode == websocket.ABNF.OPCODE_BINARY:
                frame = protocol.describe_binary(data)
                log.debug("%s: skipping binary frame %s", self.server.name, frame)
            elif opcode == websocket.ABNF.OPCODE_CLOSE:
                return "server closed the websocket"
        return "closed by us"
