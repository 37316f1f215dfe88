"""ComfyUI's wire messages parsed into typed, immutable values (the one parsing boundary).

Everything here is pure: no I/O, no threads, safe to call from any thread. The websocket listener
(``core/event_stream.py``) feeds text frames to :func:`parse_message`; HTTP bodies go through
:func:`parse_node_errors`, :func:`parse_queue`, :func:`parse_history_entry` and
:func:`parse_system_stats`.
Shapes follow ComfyUI 0.3.64's ``server.py`` and ``execution.py`` (the recordings in
``tests/fixtures/`` are real frames from such a server); fields only some versions send are
optional, and queue/history tuples are read by position 0-4 only.

Raises :class:`~comfy_cluster.core.errors.ProtocolError` for frames that are not ComfyUI's protocol
(bad JSON, no ``type``, wrong field types). Unknown message types become :class:`UnknownEvent`.

Server text is cleaned here, where it becomes our events and errors: every string field of an
event, a NodeError or a SystemInfo, and any server data quoted in a ProtocolError, goes through
the caller's ``text`` (a :class:`~comfy_cluster.core.server_text.ServerText`: no control
characters, no secret values, at most 500 characters). Data that is not text (``Executed.output``,
``UnknownEvent.data``, ``FeatureFlags.flags``) is kept as sent; output file names are checked where
they are used (``core/transfer.py``).
"""

from __future__ import annotations

import json
import logging
import math
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Optional, Union

from comfy_cluster.core.errors import (
    ExecutionFailed,
    Interrupted,
    NodeError,
    ProtocolError,
    WorkflowRejected,
)
from comfy_cluster.core.limits import MAX_TRACEBACK_LINES
from comfy_cluster.core.server_text import PLAIN, ServerText

log = logging.getLogger(__name__)

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _frozen(mapping: Optional[Mapping[str, Any]]) -> Mapping[str, Any]:
    """A read-only view of a shallow copy (events are shared between threads)."""
    return MappingProxyType(dict(mapping)) if mapping else _EMPTY


# --- events -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """Base of every event; ``prompt_id`` is None for broadcasts and connection pseudo-events."""

    prompt_id: Optional[str] = None


@dataclass(frozen=True)
class StatusEvent(Event):
    """``status``: the server's queue changed. ``sid`` is set only in the greeting after connect."""

    queue_remaining: int = 0
    sid: Optional[str] = None


@dataclass(frozen=True)
class ExecutionStart(Event):
    """``execution_start``: the worker took the prompt."""

    timestamp: Optional[int] = None


@dataclass(frozen=True)
class ExecutionCached(Event):
    """``execution_cached``: these nodes reuse cached outputs and will not run."""

    nodes: tuple[str, ...] = ()
    timestamp: Optional[int] = None


@dataclass(frozen=True)
class Executing(Event):
    """``executing``: ``node`` started; ``node is None``: the prompt finished (history written).

    Right after a reconnect the server may send it with the running node and no ``prompt_id``.
    """

    node: Optional[str] = None
    display_node: Optional[str] = None

    @property
    def finished(self) -> bool:
        """True for the completion signal ``executing{node: null, prompt_id}``."""
        return self.node is None and self.prompt_id is not None


@dataclass(frozen=True)
class ProgressEvent(Event):
    """``progress``: a node's progress bar (samplers, SaveImageWebsocket...)."""

    node: Optional[str] = None
    value: float = 0.0
    max: float = 1.0


@dataclass(frozen=True)
class NodeProgress:
    """One node inside a ``progress_state`` snapshot."""

    node_id: str
    value: float
    max: float
    state: str  # "running" | "finished" (| "error", defined but unused in 0.3.64)


@dataclass(frozen=True)
class ProgressState(Event):
    """``progress_state``: every node that is not pending, with its value/max/state."""

    nodes: Mapping[str, NodeProgress] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True)
class Executed(Event):
    """``executed``: a node produced UI output (``{"images": [...]}`` for savers)."""

    node: str = ""
    output: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    display_node: Optional[str] = None


@dataclass(frozen=True)
class ExecutionSuccess(Event):
    """``execution_success``: sent *before* history is written; wait for ``Executing.finished``."""

    timestamp: Optional[int] = None


@dataclass(frozen=True)
class ExecutionErrorEvent(Event):
    """``execution_error``: a node raised while running the prompt."""

    node_id: Optional[str] = None
    node_type: str = ""
    exception_type: str = ""
    exception_message: str = ""
    executed: tuple[str, ...] = ()
    traceback: tuple[str, ...] = ()

    def to_error(self, server: Optional[str] = None) -> ExecutionFailed:
        """The typed error a caller raises for this event."""
        message = self.exception_message.strip() or self.exception_type or "execution failed"
        where = f"node {self.node_id} ({self.node_type})" if self.node_id else "prompt"
        return ExecutionFailed(
            f"{where} failed: {self.exception_type}: {message}",
            server=server,
            prompt_id=self.prompt_id,
            node_id=self.node_id,
            node_type=self.node_type,
            exception_type=self.exception_type,
        )


@dataclass(frozen=True)
class ExecutionInterrupted(Event):
    """``execution_interrupted``: someone (maybe not us) interrupted the prompt."""

    node_id: Optional[str] = None
    node_type: str = ""
    executed: tuple[str, ...] = ()

    def to_error(self, server: Optional[str] = None) -> Interrupted:
        where = f" at node {self.node_id} ({self.node_type})" if self.node_id else ""
        return Interrupted(f"prompt interrupted{where}", server=server, prompt_id=self.prompt_id)


@dataclass(frozen=True)
class FeatureFlags(Event):
    """``feature_flags``: the server's answer to our handshake."""

    flags: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True)
class UnknownEvent(Event):
    """A message type this module does not know (``logs``, custom nodes' messages...)."""

    type: str = ""
    data: Any = None


@dataclass(frozen=True)
class Connected(Event):
    """Pseudo-event from the listener: a websocket is open (``attempt`` 1 = first connect)."""

    client_id: str = ""
    attempt: int = 1


@dataclass(frozen=True)
class Disconnected(Event):
    """Pseudo-event from the listener: the websocket closed; missed events are not replayed."""

    reason: str = ""


# --- text frames --------------------------------------------------------------------------------


def _text_or_none(value: Any, text: ServerText) -> Optional[str]:
    return None if value is None else text.clean(str(value))


def _text(value: Any, text: ServerText) -> str:
    """A string field, cleaned; ``None`` (and other empty values) are ``""``."""
    return text.clean(str(value or ""))


def _ids(value: Any, text: ServerText) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        raise ProtocolError(f"expected a list of node ids, got {type(value).__name__}")
    return tuple(text.clean(str(v)) for v in value)


def _number(value: Any, name: str, text: ServerText) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProtocolError(f"{name}: expected a number, got {text.clean(value, 80)}")
    return float(value)


def _status(data: Mapping[str, Any], pid: Optional[str], text: ServerText) -> Event:
    try:
        remaining = data["status"]["exec_info"]["queue_remaining"]
    except (KeyError, TypeError) as exc:
        shown = text.clean(data, 120)
        raise ProtocolError(f"status message without queue_remaining: {shown}") from exc
    return StatusEvent(
        prompt_id=pid,
        queue_remaining=int(_number(remaining, "queue_remaining", text)),
        sid=_text_or_none(data.get("sid"), text),
    )


def _progress_state(data: Mapping[str, Any], pid: Optional[str], text: ServerText) -> Event:
    nodes = data.get("nodes") or {}
    if not isinstance(nodes, Mapping):
        raise ProtocolError("progress_state.nodes is not an object")
    parsed: dict[str, NodeProgress] = {}
    for key, info in nodes.items():
        node_id = text.clean(str(key))
        if not isinstance(info, Mapping):
            raise ProtocolError(f"progress_state node {node_id!r} is not an object")
        parsed[node_id] = NodeProgress(
            node_id=text.clean(str(info.get("node_id", key))),
            value=_number(info.get("value", 0.0), "value", text),
            max=_number(info.get("max", 1.0), "max", text),
            state=_text(info.get("state", ""), text),
        )
    return ProgressState(prompt_id=pid, nodes=MappingProxyType(parsed))


def _executed(data: Mapping[str, Any], pid: Optional[str], text: ServerText) -> Event:
    output = data.get("output") or {}
    if not isinstance(output, Mapping):
        raise ProtocolError("executed.output is not an object")
    return Executed(
        prompt_id=pid,
        node=text.clean(str(data.get("node", ""))),
        output=_frozen(output),
        display_node=_text_or_none(data.get("display_node"), text),
    )


def _traceback(value: Any, text: ServerText) -> tuple[str, ...]:
    lines = value if isinstance(value, (list, tuple)) else (value,)
    return tuple(text.clean(str(line)) for line in lines[-MAX_TRACEBACK_LINES:])


def _execution_error(data: Mapping[str, Any], pid: Optional[str], text: ServerText) -> Event:
    return ExecutionErrorEvent(
        prompt_id=pid,
        node_id=_text_or_none(data.get("node_id"), text),
        node_type=_text(data.get("node_type"), text),
        exception_type=_text(data.get("exception_type"), text),
        exception_message=_text(data.get("exception_message"), text),
        executed=_ids(data.get("executed"), text),
        traceback=_traceback(data.get("traceback") or (), text),
    )


_Parser = Callable[[Mapping[str, Any], Optional[str], ServerText], Event]

#: Message type -> parser ``(data, prompt_id, text)``; read-only.
_PARSERS: Mapping[str, _Parser] = MappingProxyType(
    {
        "status": _status,
        "execution_start": lambda d, p, t: ExecutionStart(
            prompt_id=p, timestamp=d.get("timestamp")
        ),
        "execution_cached": lambda d, p, t: ExecutionCached(
            prompt_id=p, nodes=_ids(d.get("nodes"), t), timestamp=d.get("timestamp")
        ),
        "executing": lambda d, p, t: Executing(
            prompt_id=p,
            node=_text_or_none(d.get("node"), t),
            display_node=_text_or_none(d.get("display_node"), t),
        ),
        "progress": lambda d, p, t: ProgressEvent(
            prompt_id=p,
            node=_text_or_none(d.get("node"), t),
            value=_number(d.get("value", 0), "value", t),
            max=_number(d.get("max", 1), "max", t),
        ),
        "progress_state": _progress_state,
        "executed": _executed,
        "execution_success": lambda d, p, t: ExecutionSuccess(
            prompt_id=p, timestamp=d.get("timestamp")
        ),
        "execution_error": _execution_error,
        "execution_interrupted": lambda d, p, t: ExecutionInterrupted(
            prompt_id=p,
            node_id=_text_or_none(d.get("node_id"), t),
            node_type=_text(d.get("node_type"), t),
            executed=_ids(d.get("executed"), t),
        ),
        "feature_flags": lambda d, p, t: FeatureFlags(prompt_id=p, flags=_frozen(d)),
    }
)


@dataclass(frozen=True)
class Skipped(Event):
    """Pseudo-event from the listener: ``count`` messages arrived that it dropped unparsed (see
    :class:`MessageFilter`). A sign of life only; at most one per listener poll interval."""

    count: int = 0


#: Start of every text frame ComfyUI (``json.dumps``) and aiohttp's ``send_json`` write.
_TYPE_PREFIX = b'{"type": "'


def peek_type(frame: Union[str, bytes]) -> Optional[str]:
    """The ``type`` of a text frame read from its first bytes, without parsing it; None when the
    frame does not start the way ComfyUI writes it (then parse it in full)."""
    head = frame[:120].encode("utf-8", "replace") if isinstance(frame, str) else bytes(frame[:120])
    if not head.startswith(_TYPE_PREFIX):
        return None
    end = head.find(b'"', len(_TYPE_PREFIX))
    if end < 0 or b"\\" in head[len(_TYPE_PREFIX) : end]:
        return None
    return head[len(_TYPE_PREFIX) : end].decode("utf-8", "replace")


@dataclass(frozen=True)
class MessageFilter:
    """Message types a listener drops before parsing them: by name, or by name prefix."""

    types: frozenset = frozenset()
    prefixes: tuple[str, ...] = ()

    def drops(self, frame: Union[str, bytes]) -> bool:
        """Whether to drop ``frame`` unparsed (a cheap look at its start; never raises)."""
        if not self.types and not self.prefixes:
            return False
        kind = peek_type(frame)
        if kind is None:
            return False
        return kind in self.types or kind.startswith(self.prefixes)

    def __or__(self, other: MessageFilter) -> MessageFilter:
        return MessageFilter(self.types | other.types, self.prefixes + other.prefixes)


#: Keep everything.
KEEP_ALL = MessageFilter()
#: What no listener of ours uses: per-node progress snapshots (several per sampler step) and
#: the Crystools resource monitor (every second). ComfyClient.listen drops these by default.
UNUSED = MessageFilter(frozenset({"progress_state"}), ("crystools.",))
#: Besides :data:`UNUSED`, what a render job never looks at (engine/prompt_watch.py uses
#: executing, execution_start, executed, progress, execution_error, execution_interrupted).
JOB_UNUSED = UNUSED | MessageFilter(
    frozenset({"status", "execution_cached", "execution_success", "feature_flags", "logs"})
)


def parse_message(frame: Union[str, bytes], *, text: ServerText = PLAIN) -> Event:
    """Parse one websocket text frame ``{"type": ..., "data": {...}}`` into an :class:`Event`.

    ``text`` cleans the server's strings (pass ``ServerText.of(server)`` to mask its secrets).
    Raises ProtocolError if it is not JSON or not shaped like a ComfyUI message.
    """
    try:
        msg = json.loads(frame)
    except (ValueError, TypeError) as exc:
        raise ProtocolError(f"websocket frame is not JSON: {_start(frame, text)}") from exc
    return parse_message_obj(msg, text=text)


def _start(frame: Union[str, bytes], text: ServerText) -> str:
    """The start of a frame, cleaned, for a message."""
    if isinstance(frame, (bytes, bytearray)):
        frame = bytes(frame[:400]).decode("utf-8", "replace")
    return repr(text.clean(frame[:400], 80))


def parse_message_obj(msg: Any, *, text: ServerText = PLAIN) -> Event:
    """Like :func:`parse_message` for an already-decoded object (e.g. a recorded transcript)."""
    if not isinstance(msg, Mapping) or not isinstance(msg.get("type"), str):
        raise ProtocolError(f"websocket message without a type: {text.clean(msg, 80)}")
    kind = text.clean(msg["type"], 80)
    data = msg.get("data")
    if data is None:
        data = {}
    parser = _PARSERS.get(kind)
    if parser is None:
        pid = data.get("prompt_id") if isinstance(data, Mapping) else None
        log.debug("ignoring unknown ComfyUI message type %r", kind)
        return UnknownEvent(prompt_id=_text_or_none(pid, text), type=kind, data=data)
    if not isinstance(data, Mapping):
        raise ProtocolError(f"{kind}: data is not an object")
    try:
        return parser(data, _text_or_none(data.get("prompt_id"), text), text)
    except ProtocolError:
        raise
    except (TypeError, ValueError, AttributeError) as exc:
        raise ProtocolError(f"{kind}: malformed data: {text.clean(str(exc))}") from exc


# --- binary frames ------------------------------------------------------------------------------

#: Binary event types (first 4 bytes, big-endian).
PREVIEW_IMAGE = 1
TEXT = 3
PREVIEW_IMAGE_WITH_METADATA = 4


@dataclass(frozen=True)
class BinaryFrame:
    """What a binary frame is, without its payload (we only log and skip them)."""

    kind: int  # 1 preview, 3 text, 4 preview with metadata, other = unknown; -1 = too short
    size: int
    prompt_id: Optional[str] = None
    node_id: Optional[str] = None


def describe_binary(data: bytes) -> BinaryFrame:
    """Identify a binary frame. Never raises: a malformed frame is just described as such."""
    size = len(data)
    if size < 4:
        return BinaryFrame(kind=-1, size=size)
    (kind,) = struct.unpack(">I", data[:4])
    try:
        if kind == TEXT and size >= 8:
            (n,) = struct.unpack(">I", data[4:8])
            node_id = PLAIN.clean(data[8 : 8 + min(n, 400)].decode("utf-8", "replace"))
            return BinaryFrame(kind, size, node_id=node_id)
        if kind == PREVIEW_IMAGE_WITH_METADATA and size >= 8:
            (n,) = struct.unpack(">I", data[4:8])
            meta = json.loads(data[8 : 8 + n].decode("utf-8"))
            if isinstance(meta, Mapping):
                return BinaryFrame(
                    kind,
                    size,
                    prompt_id=_text_or_none(meta.get("prompt_id"), PLAIN),
                    node_id=_text_or_none(meta.get("node_id"), PLAIN),
                )
    except (ValueError, struct.error):
        pass
    return BinaryFrame(kind, size)


# --- HTTP bodies --------------------------------------------------------------------------------

_NODE_ID_IN_DETAILS = re.compile(r"Node ID '#?([^']+)'")


def parse_node_errors(
    body: Any,
    *,
    server: Optional[str] = None,
    prompt_id: Optional[str] = None,
    text: ServerText = PLAIN,
) -> WorkflowRejected:
    """Turn a POST /prompt 400 body into a :class:`WorkflowRejected` with one NodeError per error.

    Never raises: an unexpected body still gives a WorkflowRejected (with the raw text as message).
    ``text`` cleans every string the server sent.
    """
    if not isinstance(body, Mapping):
        return WorkflowRejected(
            f"workflow rejected: {text.clean(body)}", server=server, prompt_id=prompt_id
        )
    error = body.get("error")
    if not isinstance(error, Mapping):
        error = {"message": error} if error else {}
    error_type = _text(error.get("type"), text)
    message = _text(error.get("message"), text) or "workflow rejected"
    details = _text(error.get("details"), text)
    node_errors = _node_errors(body.get("node_errors"), text)
    if not node_errors and error_type == "invalid_prompt":
        # "Cannot execute because node X does not exist." + "Node ID '#1'": still name the node.
        match = _NODE_ID_IN_DETAILS.search(details)
        if match:
            rejected = WorkflowRejected(message, error_type=error_type)
            missing = rejected.missing_classes
            node_errors.append(
                NodeError(
                    node_id=match.group(1),
                    class_type=missing[0] if missing else "",
                    type=error_type,
                    message=message,
                )
            )
    summary = message
    if node_errors:
        summary += ": " + "; ".join(e.describe() for e in node_errors)
    elif details:
        summary += f" ({details})"
    return WorkflowRejected(
        summary,
        server=server,
        error_type=error_type,
        node_errors=tuple(node_errors),
        prompt_id=prompt_id,
    )


def _node_errors(raw: Any, text: ServerText) -> list[NodeError]:
    """One NodeError per error of ``node_errors`` ``{node_id: {class_type, errors: [...]}}``."""
    found: list[NodeError] = []
    if not isinstance(raw, Mapping):
        return found
    for node_id, entry in raw.items():
        if not isinstance(entry, Mapping):
            continue
        class_type = _text(entry.get("class_type"), text)
        for err in entry.get("errors") or ():
            if not isinstance(err, Mapping):
                continue
            extra = err.get("extra_info")
            input_name = extra.get("input_name") if isinstance(extra, Mapping) else None
            found.append(
                NodeError(
                    node_id=text.clean(str(node_id)),
                    class_type=class_type,
                    type=_text(err.get("type"), text),
                    message=_text(err.get("message"), text),
                    details=_text(err.get("details"), text),
                    input_name=_text_or_none(input_name, text),
                )
            )
    return found


@dataclass(frozen=True)
class ImageRef:
    """One output file as ComfyUI names it; ``/view?filename=&subfolder=&type=`` downloads it."""

    filename: str
    subfolder: str = ""
    type: str = "output"
    node_id: Optional[str] = None

    @property
    def relpath(self) -> str:
        """``subfolder/filename`` (forward slashes) under the server's ``type`` directory."""
        return f"{self.subfolder}/{self.filename}" if self.subfolder else self.filename


def _images_of(ui: Any, node_id: Optional[str]) -> tuple[ImageRef, ...]:
    if not isinstance(ui, Mapping):
        return ()
    refs = []
    for item in ui.get("images") or ():
        if isinstance(item, Mapping) and item.get("filename"):
            refs.append(
                ImageRef(
                    filename=str(item["filename"]),
                    subfolder=str(item.get("subfolder") or ""),
                    type=str(item.get("type") or "output"),
                    node_id=node_id,
                )
            )
    return tuple(refs)


def output_images(source: Any, *, node_id: Optional[str] = None) -> tuple[ImageRef, ...]:
    """Images of a history entry (``{"outputs": {node: ui}}``), an :class:`Executed` or a ui dict.

    History entries keep ComfyUI's node order. Never raises; unknown shapes give ``()``.
    """
    if isinstance(source, Executed):
        return _images_of(source.output, source.node)
    if isinstance(source, Mapping) and isinstance(source.get("outputs"), Mapping):
        refs: tuple[ImageRef, ...] = ()
        for nid, ui in source["outputs"].items():
            if node_id is None or str(nid) == node_id:
                refs += _images_of(ui, str(nid))
        return refs
    return _images_of(source, node_id)


@dataclass(frozen=True)
class QueueState:
    """GET /queue: prompt ids running and pending, pending in run order (number, then id)."""

    running: tuple[str, ...] = ()
    pending: tuple[str, ...] = ()
    #: prompt id -> client_id from extra_data (None when the prompt had none).
    owners: Mapping[str, Optional[str]] = field(default_factory=lambda: _EMPTY)

    def __contains__(self, prompt_id: object) -> bool:
        return prompt_id in self.running or prompt_id in self.pending

    @property
    def depth(self) -> int:
        return len(self.running) + len(self.pending)


def _queue_items(items: Any, name: str, text: ServerText) -> list:
    if not isinstance(items, list):
        raise ProtocolError(f"/queue: {name} is not a list")
    parsed = []
    for item in items:
        # Positions 0-4 only: newer servers append a 6th element.
        if not isinstance(item, (list, tuple)) or len(item) < 2:
            raise ProtocolError(f"/queue: malformed {name} item")
        number = item[0] if isinstance(item[0], (int, float)) else 0
        extra = item[3] if len(item) > 3 and isinstance(item[3], Mapping) else {}
        parsed.append(
            (number, text.clean(str(item[1])), _text_or_none(extra.get("client_id"), text))
        )
    return parsed


def parse_queue(body: Any, *, text: ServerText = PLAIN) -> QueueState:
    """Parse GET /queue (prompt and client ids cleaned by ``text``).

    Raises ProtocolError on a body that is not a queue.
    """
    if not isinstance(body, Mapping):
        raise ProtocolError("/queue: body is not an object")
    running = _queue_items(body.get("queue_running", []), "queue_running", text)
    pending = sorted(_queue_items(body.get("queue_pending", []), "queue_pending", text))
    owners = {pid: owner for _, pid, owner in running + pending}
    return QueueState(
        running=tuple(pid for _, pid, _ in running),
        pending=tuple(pid for _, pid, _ in pending),
        owners=MappingProxyType(owners),
    )


@dataclass(frozen=True)
class HistoryResult:
    """A finished prompt as GET /history/{id} reports it.

    ``outcome`` is "success", "error" or "interrupted" (told apart by the last status message).
    """

    prompt_id: str
    outcome: str
    completed: bool
    images: tuple[ImageRef, ...]
    outputs: Mapping[str, Any]
    error: Optional[ExecutionErrorEvent] = None
    interrupted: Optional[ExecutionInterrupted] = None

    def raise_for_outcome(self, server: Optional[str] = None) -> None:
        """Raise ExecutionFailed / Interrupted unless the prompt succeeded."""
        if self.error is not None:
            raise self.error.to_error(server)
        if self.interrupted is not None:
            raise self.interrupted.to_error(server)
        if self.outcome != "success":
            raise ExecutionFailed(
                f"prompt ended with status {self.outcome!r}",
                server=server,
                prompt_id=self.prompt_id,
            )


def parse_history_entry(prompt_id: str, entry: Any, *, text: ServerText = PLAIN) -> HistoryResult:
    """Parse one history ENTRY. Servers without ``status`` (pre-2024) count as success.

    ``text`` cleans the texts of its error (pass ``ServerText.of(server)`` to mask its secrets).
    """
    if not isinstance(entry, Mapping):
        raise ProtocolError(f"history entry for {prompt_id} is not an object")
    status = entry.get("status")
    error = interrupted = None
    if isinstance(status, Mapping):
        completed = bool(status.get("completed"))
        outcome = "success" if status.get("status_str") == "success" and completed else "error"
        for item in status.get("messages") or ():
            if not isinstance(item, (list, tuple)) or len(item) < 2:
                continue
            event = parse_message_obj({"type": item[0], "data": item[1]}, text=text)
            if isinstance(event, ExecutionErrorEvent):
                error = event
            elif isinstance(event, ExecutionInterrupted):
                interrupted = event
                outcome = "interrupted"
    else:
        completed, outcome = True, "success"
    outputs = entry.get("outputs") if isinstance(entry.get("outputs"), Mapping) else {}
    return HistoryResult(
        prompt_id=prompt_id,
        outcome=outcome,
        completed=completed,
        images=output_images({"outputs": outputs}),
        outputs=_frozen(outputs),
        error=error,
        interrupted=interrupted,
    )


@dataclass(frozen=True)
class SystemInfo:
    """The parts of GET /system_stats the health cache shows."""

    os: Optional[str] = None
    comfyui_version: Optional[str] = None
    python_version: Optional[str] = None
    device: Optional[str] = None
    device_type: Optional[str] = None
    vram_total: Optional[int] = None
    vram_free: Optional[int] = None


def parse_system_stats(body: Any, *, text: ServerText = PLAIN) -> SystemInfo:
    """Parse GET /system_stats, its strings cleaned by ``text``.

    Raises ProtocolError unless it has a ``system`` object.
    """
    if not isinstance(body, Mapping) or not isinstance(body.get("system"), Mapping):
        raise ProtocolError("/system_stats: no 'system' object (is this a ComfyUI server?)")
    system = body["system"]
    devices = body.get("devices")
    device: Mapping[str, Any] = {}
    if isinstance(devices, list) and devices and isinstance(devices[0], Mapping):
        device = devices[0]

    def as_int(value: Any) -> Optional[int]:
        # json.loads accepts NaN and Infinity, which int() refuses with ValueError/OverflowError.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return int(value) if math.isfinite(value) else None

    return SystemInfo(
        os=_text_or_none(system.get("os"), text),
        comfyui_version=_text_or_none(system.get("comfyui_version"), text),
        python_version=_text_or_none(system.get("python_version"), text),
        device=_text_or_none(device.get("name"), text),
        device_type=_text_or_none(device.get("type"), text),
        vram_total=as_int(device.get("vram_total")),
        vram_free=as_int(device.get("vram_free")),
    )
