"""One ComfyUI server's API: what each request means, over a translated transport.

The pieces, each in its own module: :mod:`.connection_settings` (timeouts, TLS, headers),
:mod:`.wire_errors` (the one place library exceptions and HTTP statuses become our error tree),
:mod:`.http_session` (the request plumbing), :mod:`.server_files` (uploads and downloads) and
:mod:`.event_stream` (the websocket). :class:`ComfyClient` composes them; its methods raise only
``core/errors.py`` types.

A server is not trusted (docs/trust.md): every answer is read up to its cap (:mod:`.limits`),
redirects are never followed, downloads are checked (:mod:`.image_check`) and server text is
cleaned (:mod:`.server_text`) before it is part of an error or event.

Threads: a :class:`ComfyClient` holds one ``requests.Session`` and is meant for one thread at a
time (requests does not promise a thread-safe Session); create one client per server per worker.
:class:`EventListener` is its own named daemon thread; ``close()`` may be called from any thread.

The names that moved out are still importable from here (ERROR_MAP, map_errors, Timeouts,
UploadCache, EventListener, ...); new code should import them from their own modules.
"""

from __future__ import annotations

import enum
import json
import logging
import threading
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Callable, Optional, Union

import requests

from comfy_cluster.core import protocol
from comfy_cluster.core.connection_settings import (
    DEFAULT_TIMEOUTS,
    Timeouts,
    check_ca_bundle,
    check_headers,
    tls_verify,
)
from comfy_cluster.core.errors import ClosedError, ProtocolError, UnexpectedStatus, WorkflowRejected
from comfy_cluster.core.event_stream import EventListener, probe_greeting
from comfy_cluster.core.http_session import HttpSession
from comfy_cluster.core.limits import DEFAULT_LIMITS, RECENT_HISTORY_ITEMS, Limits, is_too_large
from comfy_cluster.core.protocol import Event, HistoryResult, ImageRef, QueueState
from comfy_cluster.core.server import ServerConfig
from comfy_cluster.core.server_files import ServerFiles, UploadCache, file_sha256
from comfy_cluster.core.server_text import ServerText
from comfy_cluster.core.wire_errors import ERROR_MAP, map_errors, translate_error

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
    "file_sha256",
    "map_errors",
    "tls_verify",
    "translate_error",
]


class ClientState(enum.Enum):
    """Lifecycle of a :class:`ComfyClient`."""

    OPEN = "open"  #: usable; the session opens connections lazily
    CLOSED = "closed"  #: close() was called; every call raises ClosedError


class ComfyClient:
    """ComfyUI's HTTP API for one server, plus websocket listeners.

    One thread at a time (one client per server per worker thread); ``close()`` from any thread.
    Methods raise only ``core/errors.py`` types: ServerUnreachable / ServerTimeout (transient),
    WorkflowRejected, AuthenticationFailed, UnexpectedStatus / ProtocolError, ClosedError.
    An answer over its cap (``limits``) is a ProtocolError for which ``limits.is_too_large`` is
    true; a redirect is an UnexpectedStatus (3xx).
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
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.server = server
        self.timeouts = timeouts
        #: The caps on what this server may send (downloads: ``server.max_download_bytes``).
        self.limits = limits
        #: Sent with every prompt and as the websocket ``clientId``: routes per-prompt events to us.
        self.client_id = client_id or uuid.uuid4().hex
        self._lock = threading.Lock()
        self._state = ClientState.OPEN
        self._listeners: list[EventListener] = []
        self._http = HttpSession(server, timeouts, self._check_open, limits)
        uploads = upload_cache if upload_cache is not None else UploadCache()
        self._files = ServerFiles(self._http, uploads)

    # lifecycle ------------------------------------------------------------------------------------

    @property
    def state(self) -> ClientState:
        return self._state

    @property
    def name(self) -> str:
        return self.server.name

    @property
    def server_text(self) -> ServerText:
        """How this server's text is cleaned (pass it to ``protocol.parse_*(..., text=)``)."""
        return self._http.text

    def close(self) -> None:
        """Close the session and any listener this client started. Idempotent; any thread."""
        with self._lock:
            if self._state is ClientState.CLOSED:
                return
            self._state = ClientState.CLOSED
            listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener.close()
        self._http.close()

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

    # queries --------------------------------------------------------------------------------------

    def system_stats(self, *, timeouts: Optional[Timeouts] = None) -> dict[str, Any]:
        """GET /system_stats (OS, versions, device, VRAM). Raises ProtocolError if not ComfyUI."""
        body = self._http.json("GET", "/system_stats", timeouts=timeouts)
        protocol.parse_system_stats(body)  # validates the shape
        return body

    def queue_remaining(self, *, timeouts: Optional[Timeouts] = None) -> int:
        """GET /prompt: running + pending prompts (everyone's)."""
        body = self._http.json("GET", "/prompt", timeouts=timeouts)
        try:
            return int(body["exec_info"]["queue_remaining"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(
                f"GET /prompt: unexpected body {self.server_text.clean(body, 80)}",
                server=self.name,
            ) from exc

    def queue(self, *, timeouts: Optional[Timeouts] = None) -> QueueState:
        """GET /queue: running and pending prompt ids (positions 0-4 of each item only)."""
        body = self._http.json("GET", "/queue", timeouts=timeouts)
        try:
            return protocol.parse_queue(body, text=self.server_text)
        except ProtocolError as exc:
            exc.server = self.name
            raise

    def object_info(self, *, timeouts: Optional[Timeouts] = None) -> dict[str, Any]:
        """GET /object_info: class name -> info (0.5 MB stock, 100+ MB on some; capped)."""
        limit = self.limits.object_info_bytes
        body = self._http.json("GET", "/object_info", timeouts=timeouts, limit=limit)
        if not isinstance(body, dict):
            raise ProtocolError("GET /object_info: not an object", server=self.name)
        return body

    def features(self) -> Optional[dict[str, Any]]:
        """GET /features, or None on servers older than mid-2025 (404) and when the answer is
        over its cap (an optional read: skipped, not held against the server)."""
        try:
            body = self._http.json("GET", "/features")
        except UnexpectedStatus as exc:
            if exc.status == 404:
                return None
            raise
        except ProtocolError as exc:
            return self._skipped(exc)
        return body if isinstance(body, dict) else None

    def recent_history(self, max_items: int = RECENT_HISTORY_ITEMS) -> dict[str, Any]:
        """GET /history?max_items=N: the newest N entries, prompt id -> entry.

        An optional read: an answer over its cap gives ``{}`` (logged, not held against the
        server). Raises like every call otherwise.
        """
        try:
            body = self._http.json("GET", f"/history?max_items={int(max_items)}")
        except ProtocolError as exc:
            return self._skipped(exc) or {}
        if not isinstance(body, dict):
            raise ProtocolError("GET /history: not an object", server=self.name)
        return body

    def _skipped(self, exc: ProtocolError) -> None:
        """Skip an optional read whose answer is over its cap; re-raise any other error."""
        if not is_too_large(exc):
            raise exc
        log.warning("%s: optional answer skipped: %s", self.name, exc)

    def history(self, prompt_id: str) -> Optional[dict[str, Any]]:
        """GET /history/{id}: the entry, or None while unknown, queued or running."""
        body = self._http.json("GET", f"/history/{prompt_id}", what="GET /history")
        if not isinstance(body, dict):
            raise ProtocolError("GET /history: not an object", server=self.name)
        if not body:
            return None
        entry = body.get(prompt_id)
        if not isinstance(entry, dict):
            raise ProtocolError(f"GET /history: no entry for {prompt_id}", server=self.name)
        return entry

    def history_result(self, prompt_id: str) -> Optional[HistoryResult]:
        """:meth:`history` parsed, its error texts cleaned with this server's secrets masked."""
        entry = self.history(prompt_id)
        if entry is None:
            return None
        return protocol.parse_history_entry(prompt_id, entry, text=self.server_text)

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
        what = "POST /prompt"
        response = self._http.send("POST", "/prompt", what=what, json=payload)
        if response.status_code == 400:
            raise self._rejection(response, what, prompt_id)
        self._http.check_status(response, what)
        body = self._http.read_json(response, what)
        returned = body.get("prompt_id") if isinstance(body, dict) else None
        if returned is not None and str(returned) != prompt_id:
            # Servers before mid-2025 ignore our id; events would be routed under theirs.
            returned = self.server_text.clean(returned, 80)
            raise ProtocolError(
                f"{what}: server assigned prompt id {returned} instead of ours ({prompt_id}); "
                "it is too old (needs ComfyUI >= mid-2025)",
                server=self.name,
            )
        if isinstance(body, dict) and body.get("node_errors"):
            rejected = protocol.parse_node_errors(
                body, server=self.name, prompt_id=prompt_id, text=self.server_text
            )
            log.warning(
                "%s: prompt %s queued with some outputs dropped: %s", self.name, prompt_id, rejected
            )
        return prompt_id

    def _rejection(
        self, response: requests.Response, what: str, prompt_id: str
    ) -> WorkflowRejected:
        """The WorkflowRejected a 400 on /prompt carries (its body names the bad nodes)."""
        with response:
            data = b"".join(self._http.body(response, what, self.limits.json_bytes))
        try:
            body = json.loads(data)
        except ValueError:
            body = data.decode("utf-8", "replace")
        return protocol.parse_node_errors(
            body, server=self.name, prompt_id=prompt_id, text=self.server_text
        )

    def interrupt(self, prompt_id: str) -> bool:
        """Interrupt ``prompt_id`` if and only if /queue shows it running; True if we sent it.

        Never sends a bodiless interrupt: servers older than late 2025 ignore the ``prompt_id`` and
        would stop whatever runs, so we check first (a small race remains on such servers).
        """
        if prompt_id not in self.queue().running:
            return False
        self._http.request("POST", "/interrupt", json={"prompt_id": prompt_id})
        return True

    def delete_queued(self, prompt_ids: Iterable[str]) -> None:
        """Remove our prompts from the pending queue. Never ``clear``: it holds others' work too."""
        ids = [str(pid) for pid in prompt_ids]
        if ids:
            self._http.request("POST", "/queue", json={"delete": ids})

    def cancel(self, prompt_id: str) -> None:
        """Delete ``prompt_id`` if pending, interrupt it if running; a no-op when already gone."""
        state = self.queue()
        if prompt_id in state.pending:
            self.delete_queued([prompt_id])
            state = self.queue()  # it may have started between the two calls
        if prompt_id in state.running:
            self._http.request("POST", "/interrupt", json={"prompt_id": prompt_id})

    # files ----------------------------------------------------------------------------------------

    def upload_image(
        self, path: Union[str, Path], *, subfolder: str = "", name: Optional[str] = None
    ) -> str:
        """POST /upload/image; returns the LoadImage value ``"subfolder/name"`` the server chose.

        The same bytes are sent to a server once (see :class:`UploadCache`).
        """
        return self._files.upload_image(path, subfolder=subfolder, name=name)

    def download(
        self, image_ref: Union[ImageRef, Mapping[str, Any]], dest: Union[str, Path]
    ) -> Path:
        """GET /view, streamed to a hidden temporary file beside ``dest``, then renamed onto it."""
        return self._files.download(image_ref, dest)

    # websocket ------------------------------------------------------------------------------------

    def listen(
        self,
        on_event: Callable[[Event], None],
        stop: Optional[threading.Event] = None,
        **options: Any,
    ) -> EventListener:
        """Start a websocket listener thread for this client's ``client_id``; returns it started.

        ``on_event`` runs on the listener thread. ``options`` go to :class:`EventListener`
        (``drop``: :data:`protocol.UNUSED` unless given; a render job passes ``JOB_UNUSED``).
        """
        self._check_open()
        options.setdefault("limits", self.limits)
        options.setdefault("drop", protocol.UNUSED)
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
        Raises WebsocketClosed / ServerUnreachable / ServerTimeout / ProtocolError."""
        self._check_open()
        return probe_greeting(self.server, timeout or self.timeouts.connect, self.limits)

    def queue_body(self) -> dict[str, Any]:
        """GET /queue as sent: the whole items, for reading other prompts' loader inputs.

        Callers read positions 0-2 only (number, id, prompt): never ``extra_data``, which can
        hold another client's API keys.
        """
        body = self._http.json("GET", "/queue")
        if not isinstance(body, dict):
            raise ProtocolError("GET /queue: not an object", server=self.name)
        return body
