"""The one translation seam: library exceptions and HTTP statuses become our error tree.

Like httpx, we translate in exactly one place. This is the only module that names ``requests``
or ``websocket`` exception classes; the rest of the client wraps its I/O in :func:`map_errors`
and checks statuses with :func:`raise_for_status`. :data:`ERROR_MAP` is read-only, and a test
walks both libraries' exception modules and fails on any class missing from it.

Statuses: 401/403 -> AuthenticationFailed, 502/503/504 -> ServerUnreachable (transient), 3xx ->
UnexpectedStatus saying that redirects are not followed (they would carry the token and headers
to wherever the server points), others -> UnexpectedStatus. (400 on ``/prompt`` is a
WorkflowRejected, parsed by the client's submit.)

Server text (error bodies, library messages quoting what the server sent) goes through the
caller's :class:`~comfy_cluster.core.server_text.ServerText` before it is part of a message; an
error body is read only up to ``limits.MAX_ERROR_BODY_BYTES``.
Everything here is pure or stateless: any thread.
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any, Optional
from urllib.parse import urlsplit

import requests
import requests.exceptions as rex
import websocket
import websocket._exceptions as wex

from comfy_cluster.core.errors import (
    AuthenticationFailed,
    ComfyClusterError,
    ConfigError,
    ProtocolError,
    ServerTimeout,
    ServerUnreachable,
    UnexpectedStatus,
    WebsocketClosed,
)
from comfy_cluster.core.limits import MAX_ERROR_BODY_BYTES
from comfy_cluster.core.server_text import PLAIN, ServerText

__all__ = [
    "ERROR_MAP",
    "map_errors",
    "raise_for_handshake",
    "raise_for_status",
    "redirect_refused",
    "translate_error",
]

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


def translate_error(
    exc: BaseException, server: str, what: str, text: ServerText = PLAIN
) -> ComfyClusterError:
    """Our error for a library exception raised while doing ``what`` on ``server``. Pure.

    The library's message may quote what the server sent: it is cleaned by ``text``.
    """
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
        if 300 <= status < 400:
            return redirect_refused(what, status, None, server)
    if isinstance(exc, wex.WebSocketException) and str(exc).startswith("Redirect"):
        # websocket-client with redirect_limit=0: "Redirect limit exhausted" (status not kept).
        return redirect_refused(what, 0, None, server)
    if isinstance(exc, rex.InvalidHeader):
        # requests quotes the offending header value, and that value may be the token.
        return ConfigError(
            f"{what}: a header name or value is invalid (leading whitespace, a newline or another "
            "reserved character; value not shown)",
            server=server,
            field="headers",
        )
    klass = _mapped_class(exc) or ServerUnreachable
    detail = text.clean(_short(exc))
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


def redirect_refused(
    what: str, status: int, location: Optional[str], server: str, text: ServerText = PLAIN
) -> UnexpectedStatus:
    """The error for a redirect: we follow none, as it would carry our token and headers along.

    Names where it points (scheme, host and port only: never the path, query or credentials).
    """
    where = _origin(location, text)
    answer = f"HTTP {status}, a redirect" if status else "a redirect"
    return UnexpectedStatus(
        f"{what}: the server answered {answer}{where}; API calls follow no redirects (they would "
        "take the token and headers along): set the server's address to where it points",
        server=server,
        status=status,
    )


def _origin(location: Optional[str], text: ServerText) -> str:
    """`` to https://host:port`` for a redirect's Location, or ``""`` when it names no host."""
    if not location:
        return ""
    try:
        parts = urlsplit(location.strip())
        host, port = parts.hostname, parts.port
    except ValueError:
        return ""
    if not host or parts.scheme not in ("http", "https"):
        return ""
    shown = f"[{host}]" if ":" in host else host
    return " to " + text.clean(f"{parts.scheme}://{shown}" + (f":{port}" if port else ""))


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


class LibraryFailure(Exception):
    """The ``__cause__`` of our translated errors: the library's exception, its text cleaned.

    Never the original itself: its message may quote what the server sent (websocket-client's
    bad-status exception quotes the answer's headers and body, http.client a malformed status
    line), and every traceback prints the cause. Keeps the original's type name and traceback.
    """


def _cause(exc: BaseException, text: ServerText) -> LibraryFailure:
    kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
    return LibraryFailure(f"{kind}: {text.clean(str(exc))}").with_traceback(exc.__traceback__)


@contextlib.contextmanager
def map_errors(server: str, what: str, text: ServerText = PLAIN) -> Iterator[None]:
    """Translate any library exception raised inside into our error tree, chained to a cleaned
    copy of it (:class:`LibraryFailure`).

    Except ``InvalidHeader``: its message quotes the header value, which may be a secret.
    ``text`` cleans whatever of the server's the library's message quotes.
    """
    try:
        yield
    except ComfyClusterError:
        raise
    except rex.InvalidHeader as exc:
        # Not chained: the original's message holds the (possibly secret) header value.
        raise translate_error(exc, server, what, text) from None
    except (requests.RequestException, websocket.WebSocketException, OSError) as exc:
        raise translate_error(exc, server, what, text) from _cause(exc, text)
    except rex.BaseHTTPError as exc:  # urllib3, when a body is read from response.raw
        raise translate_error(exc, server, what, text) from _cause(exc, text)


def raise_for_status(
    response: requests.Response,
    what: str,
    server: str,
    text: ServerText = PLAIN,
    body_bytes: int = MAX_ERROR_BODY_BYTES,
) -> None:
    """Raise our error for a non-2xx ``response`` (closing it first); return on 2xx.

    Reads at most ``body_bytes`` of an error body, for the message (cleaned by ``text``).
    """
    status = response.status_code
    if 200 <= status < 300:
        return
    if 300 <= status < 400:
        location = response.headers.get("Location")
        response.close()
        raise redirect_refused(what, status, location, server, text)
    body = _snippet(response, text, body_bytes)
    response.close()
    if status in (401, 403):
        raise AuthenticationFailed(
            f"{what}: HTTP {status} (check the server's token and headers){body}",
            server=server,
            status=status,
        )
    if status in (502, 503, 504):
        raise ServerUnreachable(f"{what}: HTTP {status}{body}", server=server)
    raise UnexpectedStatus(f"{what}: HTTP {status}{body}", server=server, status=status)


def raise_for_handshake(ws: Any, what: str, server: str, text: ServerText = PLAIN) -> None:
    """Raise for a websocket "opened" by a redirect: websocket-client 1.4-1.9 with
    ``redirect_limit=0`` returns the socket as if upgraded (later versions raise, see above)."""
    answer = getattr(ws, "handshake_response", None)
    status = int(getattr(answer, "status", 101) or 101)
    if 300 <= status < 400:
        headers = getattr(answer, "headers", None) or {}
        raise redirect_refused(what, status, headers.get("location"), server, text)


def _snippet(response: requests.Response, text: ServerText, body_bytes: int) -> str:
    """The start of an error body, cleaned, for the message (servers often say why there)."""
    try:
        start = next(response.iter_content(body_bytes), b"")
    except Exception:
        return ""
    shown = text.clean(start.decode("utf-8", "replace"))
    return f": {shown}" if shown else ""
