"""ComfyUI's websocket: the long-lived event listener thread and the one-shot greeting probe.

Frames become :mod:`~comfy_cluster.core.protocol` events (the server's text cleaned with its
secrets masked); socket failures are translated by
:func:`~comfy_cluster.core.wire_errors.map_errors` like every other client failure. Sockets are
always closed for certain (:func:`close_websocket`) before a new one opens with the same clientId.
Each socket refuses a message over ``limits.ws_message_bytes`` before reading it
(:mod:`.ws_limits`): the listener then drops that socket with a clear error and reconnects.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from typing import Any, Callable, Optional

import websocket

from comfy_cluster.core import protocol
from comfy_cluster.core.connection_settings import DEFAULT_TIMEOUTS, Timeouts, websocket_options
from comfy_cluster.core.errors import ComfyClusterError, ProtocolError, ServerTimeout
from comfy_cluster.core.limits import DEFAULT_LIMITS, Limits, is_too_large
from comfy_cluster.core.protocol import Event
from comfy_cluster.core.server import ServerConfig
from comfy_cluster.core.server_text import ServerText
from comfy_cluster.core.wire_errors import map_errors, raise_for_handshake
from comfy_cluster.core.ws_limits import bound_messages

log = logging.getLogger(__name__)

__all__ = ["EventListener", "close_websocket", "open_websocket", "probe_greeting"]


def open_websocket(
    connect: Callable[..., Any], url: str, timeout: float, server: ServerConfig, limits: Limits
) -> Any:
    """``connect(url, ...)`` with our options, refusing a redirect, messages bounded.

    Call inside ``map_errors``; the socket is closed again if it cannot be used.
    """
    ws = connect(url, timeout=timeout, **websocket_options(server))
    try:
        raise_for_handshake(ws, "websocket", server.name, ServerText.of(server, limits.text_chars))
        return bound_messages(ws, limits.ws_message_bytes, server.name)
    except BaseException:
        close_websocket(ws, min(timeout, 1.0))
        raise


def probe_greeting(server: ServerConfig, timeout: float, limits: Limits = DEFAULT_LIMITS) -> float:
    """Open a websocket with a throwaway clientId, wait for the greeting; return seconds taken.

    A fresh id never collides with a listener (see the same-clientId reconnect pitfall).
    Raises WebsocketClosed / ServerUnreachable / ServerTimeout / ProtocolError (also for a
    message over ``limits.ws_message_bytes`` or a redirect).
    """
    start = time.monotonic()
    url = f"{server.ws_url}/ws?clientId=probe-{uuid.uuid4().hex}"
    text = ServerText.of(server, limits.text_chars)
    ws = None
    with map_errors(server.name, "websocket", text):
        try:
            ws = open_websocket(websocket.create_connection, url, timeout, server, limits)
            opcode, data = ws.recv_data()
            while opcode != websocket.ABNF.OPCODE_TEXT:
                opcode, data = ws.recv_data()
        finally:
            if ws is not None:
                close_websocket(ws, min(timeout, 1.0))
    event = protocol.parse_message(data, text=text)
    if not isinstance(event, protocol.StatusEvent):
        raise ProtocolError(
            f"websocket greeting was {type(event).__name__}, not status", server=server.name
        )
    return time.monotonic() - start


def close_websocket(ws: Any, timeout: float) -> None:
    """Close ``ws`` and its socket for certain; never raises.

    websocket-client's ``close()`` returns at once, leaving the socket open, once the peer's close
    frame has been answered (``recv_data`` replies and marks it disconnected); ``shutdown()``
    releases the socket whatever state it is in.
    """
    with contextlib.suppress(Exception):
        ws.close(timeout=timeout)
    with contextlib.suppress(Exception):
        ws.shutdown()


class EventListener(threading.Thread):
    """A named daemon thread owning one websocket; turns frames into :mod:`protocol` events.

    Reconnects with backoff, always closing the old socket *before* opening a new one with the
    same clientId (ComfyUI keys sockets by clientId, and a late close of the old socket would
    unregister the new one). Emits :class:`~protocol.Connected` / :class:`~protocol.Disconnected`;
    after a reconnect, missed events are gone: re-sync from /queue and /history. Binary frames
    (previews, text) are skipped. Exceptions raised by ``on_event`` are logged, not fatal. A
    message over ``limits.ws_message_bytes`` is refused unread: the socket is dropped, the
    ``Disconnected`` reason and ``last_error`` say why, and the listener reconnects.

    Text messages ``drop`` names (:class:`~protocol.MessageFilter`, by a look at their first
    bytes) are dropped unparsed; a :class:`~protocol.Skipped` sign of life stands for them, at
    most once per ``poll_interval``.

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
        limits: Limits = DEFAULT_LIMITS,
        drop: protocol.MessageFilter = protocol.KEEP_ALL,
    ) -> None:
        super().__init__(name=f"comfy-cluster-ws-{server.name}", daemon=True)
        self.server = server
        self.client_id = client_id
        self.on_event = on_event
        self.timeouts = timeouts
        self.poll_interval = poll_interval
        self.reconnect_initial = reconnect_initial
        self.reconnect_max = reconnect_max
        self.limits = limits
        self.drop = drop
        #: Text messages dropped unparsed so far.
        self.dropped = 0
        self._text = ServerText.of(server, limits.text_chars)
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
                with map_errors(self.server.name, "websocket connect", self._text):
                    ws = open_websocket(
                        self._connect, self.url, self.timeouts.connect, self.server, self.limits
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
            close_websocket(ws, min(1.0, self.timeouts.connect))
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
        drops = self.drop.drops if (self.drop.types or self.drop.prefixes) else None
        unsaid = 0  # dropped since the last Skipped
        said_at = 0.0
        while not self._stopping():
            try:
                with map_errors(self.server.name, "websocket", self._text):
                    opcode, data = ws.recv_data()
            except ServerTimeout:
                continue  # no message within poll_interval: check stop and wait again
            except ComfyClusterError as exc:
                self.last_error = exc
                if is_too_large(exc):
                    log.warning("%s: dropping the websocket: %s", self.server.name, exc)
                return str(exc)
            if opcode == websocket.ABNF.OPCODE_TEXT:
                if drops is not None and drops(data):
                    self.dropped += 1
                    unsaid += 1
                    now = time.monotonic()
                    if now - said_at >= self.poll_interval:
                        self._emit(protocol.Skipped(count=unsaid))
                        unsaid, said_at = 0, now
                    continue
                try:
                    event = protocol.parse_message(data, text=self._text)
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
