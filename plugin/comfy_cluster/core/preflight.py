"""Preflight: can each configured server run this workflow, before any prompt is sent?

A workflow that names a node class or a model a server lacks fails there only once a prompt is
queued, and then the engine's retries move it from server to server. Checking first lets
``render --check`` answer "will this job run, and where?" without sending or writing anything,
and lets a render keep each server out of the job with a reason the user can act on.

Two layers:

- :func:`check_server` is pure: a workflow and one server's ``/object_info`` in, a
  :class:`ServerVerdict` out. It finds node classes the server does not have, and literal values
  of combo inputs (checkpoints, LoRAs, VAEs, samplers...) the server does not offer. ComfyUI
  lists a combo's choices as ``[[choice, ...], {...}]`` or, in newer versions,
  ``["COMBO", {"options": [choice, ...]}]``; a model folder with no file is an empty list.
- :func:`check_cluster` / :func:`iter_checks` / :class:`CheckRun` ask every server at once, one
  daemon thread each, every thread bounded by ``timeout``; verdicts come out as they are known,
  so a render can gate each server on its own verdict instead of waiting for the slowest.

Only ``GET /system_stats`` and ``GET /object_info`` are sent: no prompt, no upload, no file.
"""

from __future__ import annotations

import queue
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

from comfy_cluster.core.connection_settings import Timeouts
from comfy_cluster.core.errors import (
    AuthenticationFailed,
    ComfyClusterError,
    ServerTimeout,
    ServerUnreachable,
)
from comfy_cluster.core.server import ServerConfig
from comfy_cluster.core.workflow import Workflow

__all__ = [
    "AUTH_REASON",
    "CheckRun",
    "ServerVerdict",
    "VerdictState",
    "check_cluster",
    "check_server",
    "combo_choices",
    "iter_checks",
]

#: The reason given when a server refuses our credentials (401/403).
AUTH_REASON = "authentication refused: check its token/headers"
#: Choices quoted in a message before "... and N more": a server may list hundreds of models.
MAX_CHOICES_SHOWN = 5
#: Longest quoted value or choice in a message.
MAX_VALUE_CHARS = 80

WorkflowLike = Union[Workflow, Mapping[str, Any]]
#: ``client_factory(server, timeouts)`` -> an object with ``system_stats()``, ``object_info()``
#: and, optionally, ``close()`` (``ComfyClient`` fits; so does the health poller's factory).
ClientFactory = Callable[[ServerConfig, Timeouts], Any]


class VerdictState:
    """The one word a verdict's :attr:`ServerVerdict.state` holds (plain strings, JSON-ready)."""

    OK = "ok"
    #: Reachable, but lacks a node class or a model the workflow needs.
    UNUSABLE = "unusable"
    #: Refused, timed out, or answered nothing we could use.
    UNREACHABLE = "unreachable"
    #: 401/403: the token or headers are wrong.
    AUTH = "auth"
    #: Turned off in the configuration: not asked at all.
    DISABLED = "disabled"
    #: Any other failure (not ComfyUI, a bad answer...).
    ERROR = "error"


@dataclass(frozen=True)
class ServerVerdict:
    """Whether one server can run the job, and if not, every reason why (each one line)."""

    name: str
    ok: bool
    reasons: tuple[str, ...] = ()
    #: One of :class:`VerdictState`'s values.
    state: str = VerdictState.OK

    @property
    def text(self) -> str:
        """The verdict as one phrase: ``ok`` / ``unusable: a; b`` / ``unreachable: refused``."""
        if self.ok:
            return VerdictState.OK
        joined = "; ".join(self.reasons)
        if self.state == VerdictState.UNUSABLE:
            return f"unusable: {joined}" if joined else "unusable"
        return joined or self.state


# ---------------------------------------------------------------------------------------------
# The pure check


def combo_choices(spec: object) -> Optional[list[Any]]:
    """The choices of a combo input spec from ``/object_info``, or None if it is not a combo.

    ``[["a", "b"], {...}]`` (list form) and ``["COMBO", {"options": [...]}]`` (newer form) are
    combos; ``["INT", {...}]`` or ``["MODEL"]`` are not.
    """
    if not isinstance(spec, (list, tuple)) or not spec:
        return None
    kind = spec[0]
    if isinstance(kind, (list, tuple)):
        return list(kind)
    if kind == "COMBO":
        extra = spec[1] if len(spec) > 1 and isinstance(spec[1], Mapping) else {}
        options = extra.get("options", [])
        return list(options) if isinstance(options, (list, tuple)) else []
    return None


def _input_specs(info: object) -> dict[str, Any]:
    """An ``/object_info`` entry's required and optional input specs by input name."""
    inputs = info.get("input") if isinstance(info, Mapping) else None
    specs: dict[str, Any] = {}
    if isinstance(inputs, Mapping):
        for section in ("optional", "required"):  # required wins on a clash, as in ComfyUI
            part = inputs.get(section)
            if isinstance(part, Mapping):
                specs.update(part)
    return specs


def _checkable(value: object) -> bool:
    """A literal worth checking: not a link (any list), not a wrapped value, no ``{frame}``."""
    if isinstance(value, (list, tuple, Mapping)) or value is None:
        return False
    return not (isinstance(value, str) and "{frame" in value)


def _quote(value: object) -> str:
    text = repr(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 4] + "...'"


def _offered(choices: Sequence[Any]) -> str:
    """What the server offers, clipped: ``it has none`` / ``it has: 'a', 'b' and 3 more``."""
    if not choices:
        return "it has none"
    shown = ", ".join(_quote(c) for c in choices[:MAX_CHOICES_SHOWN])
    more = len(choices) - MAX_CHOICES_SHOWN
    return f"it has: {shown}" + (f" and {more} more" if more > 0 else "")


def _nodes_of(workflow: WorkflowLike) -> Mapping[str, Any]:
    return workflow.nodes if isinstance(workflow, Workflow) else workflow


def _node_order(node_id: str) -> tuple[int, Union[int, str]]:
    """Numeric ids in number order (API exports use "1", "2", "10"), others after by name."""
    return (0, int(node_id)) if node_id.isdigit() else (1, node_id)


def check_server(
    workflow: WorkflowLike,
    object_info: Mapping[str, Any],
    *,
    server_name: str,
    skip_inputs: Iterable[tuple[str, str]] = (),
) -> ServerVerdict:
    """Check ``workflow`` (a :class:`Workflow` or its prompt dict) against one server's
    ``/object_info``: every node class present, every literal combo value offered.

    ``skip_inputs`` are ``(node_id, input_name)`` pairs the render sets itself (the image
    loader's ``image`` when frames are uploaded), so the workflow's placeholder is not held
    against the server. Links, wrapped values and values with ``{frame}`` tokens are not checked.
    Pure: no network, no files.
    """
    nodes = _nodes_of(workflow)
    skipped = {(str(n), str(i)) for n, i in skip_inputs}
    missing: set[str] = set()
    reasons: list[str] = []
    for node_id in sorted(nodes, key=lambda n: _node_order(str(n))):
        node = nodes[node_id]
        class_type = node.get("class_type") if isinstance(node, Mapping) else None
        if not isinstance(class_type, str):
            continue
        if class_type not in object_info:
            missing.add(class_type)
            continue
        specs = _input_specs(object_info[class_type])
        inputs = node.get("inputs")
        for name, value in inputs.items() if isinstance(inputs, Mapping) else ():
            if (str(node_id), name) in skipped or not _checkable(value):
                continue
            choices = combo_choices(specs.get(name))
            if choices is None or value in choices:
                continue
            reasons.append(
                f"node {node_id} ({class_type}) input {name}: {_quote(value)} is not on this "
                f"server ({_offered(choices)})"
            )
    if missing:
        reasons.insert(0, f"missing node classes: {', '.join(sorted(missing))}")
    if reasons:
        return ServerVerdict(server_name, False, tuple(reasons), VerdictState.UNUSABLE)
    return ServerVerdict(server_name, True)


# ---------------------------------------------------------------------------------------------
# Asking the servers


#: The client's wording of a failed contact: ``GET /system_stats: unreachable (connection
#: refused: ...)``; the verdict says "unreachable" once and keeps what is inside the brackets.
_CONTACT = re.compile(r"^[A-Z]+ \S+: (unreachable|timed out) \((.*)\)$", re.DOTALL)


def _contact_text(message: str) -> str:
    match = _CONTACT.match(message)
    if match is None:
        return message
    return match.group(2) if match.group(1) == "unreachable" else f"timed out: {match.group(2)}"


def _failure(name: str, exc: BaseException) -> ServerVerdict:
    """A verdict for a server we could not ask, from our error tree (anything else: its text)."""
    message = exc.message if isinstance(exc, ComfyClusterError) else str(exc)
    message = message or type(exc).__name__
    if isinstance(exc, AuthenticationFailed):
        return ServerVerdict(name, False, (AUTH_REASON,), VerdictState.AUTH)
    if isinstance(exc, (ServerUnreachable, ServerTimeout)):
        return ServerVerdict(
            name, False, (f"unreachable: {_contact_text(message)}",), VerdictState.UNREACHABLE
        )
    return ServerVerdict(name, False, (message,), VerdictState.ERROR)


def _ask(
    workflow: WorkflowLike,
    server: ServerConfig,
    client_factory: ClientFactory,
    timeouts: Timeouts,
    skip_inputs: tuple[tuple[str, str], ...],
) -> ServerVerdict:
    """One server's verdict: ``/system_stats`` (is it ComfyUI, do we get in), then the check."""
    client = None
    try:
        client = client_factory(server, timeouts)
        client.system_stats()
        info = client.object_info()
        return check_server(workflow, info, server_name=server.name, skip_inputs=skip_inputs)
    except Exception as exc:  # a verdict, whatever went wrong: one server never fails the check
        return _failure(server.name, exc)
    finally:
        close = getattr(client, "close", None)
        if close is not None:
            try:
                close()
            except Exception:
                pass


class CheckRun:
    """Checks of several servers running at once, each on its own daemon thread.

    Started by :meth:`start`; any thread may then wait for one server's verdict
    (:meth:`verdict`: a render worker before its first prompt) or take them all as they come
    (:meth:`as_completed`). A server still silent at ``timeout`` after the start gets an
    "unreachable: no answer in N s" verdict; its thread is left to finish on its own (daemon:
    it never keeps the process alive).
    """

    def __init__(
        self,
        workflow: WorkflowLike,
        servers: Sequence[ServerConfig],
        client_factory: ClientFactory,
        *,
        timeout: float,
        skip_inputs: Iterable[tuple[str, str]] = (),
        on_verdict: Optional[Callable[[ServerVerdict], None]] = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        names = [s.name for s in servers]
        if len(set(names)) != len(names):
            raise ValueError(f"server names repeat: {names}")
        self.workflow = workflow
        self.servers = tuple(servers)
        self.timeout = float(timeout)
        self._factory = client_factory
        self._skip = tuple((str(n), str(i)) for n, i in skip_inputs)
        self._on_verdict = on_verdict
        self._lock = threading.Lock()
        self._callback_lock = threading.Lock()
        self._done: dict[str, ServerVerdict] = {}
        self._events = {name: threading.Event() for name in names}
        self._arrivals: queue.Queue[ServerVerdict] = queue.Queue()
        self._deadline = 0.0

    def start(self) -> CheckRun:
        """Ask every enabled server now (disabled ones get their verdict at once)."""
        self._deadline = time.monotonic() + self.timeout
        timeouts = Timeouts(connect=self.timeout, read=self.timeout)
        for server in self.servers:
            if not server.enabled:
                self._record(
                    ServerVerdict(server.name, False, ("disabled",), VerdictState.DISABLED)
                )
                continue
            thread = threading.Thread(
                target=lambda s=server: self._record(
                    _ask(self.workflow, s, self._factory, timeouts, self._skip)
                ),
                name=f"comfy-cluster-check-{server.name}",
                daemon=True,
            )
            thread.start()
        return self

    def _record(self, verdict: ServerVerdict) -> None:
        with self._lock:
            if verdict.name in self._done:
                return  # the deadline already spoke for it
            self._done[verdict.name] = verdict
        self._events[verdict.name].set()
        self._arrivals.put(verdict)
        if self._on_verdict is not None:
            with self._callback_lock:  # one call at a time, whichever thread decided
                self._on_verdict(verdict)

    def _expire(self) -> None:
        """Give every server still silent past the deadline its timeout verdict."""
        for server in self.servers:
            if server.name not in self._done:
                reason = f"unreachable: no answer in {self.timeout:g} s"
                self._record(ServerVerdict(server.name, False, (reason,), VerdictState.UNREACHABLE))

    def verdict(self, name: str) -> ServerVerdict:
        """``name``'s verdict, waiting for it at most until the run's deadline."""
        if not self._events[name].wait(max(0.0, self._deadline - time.monotonic())):
            self._expire()
        return self._done[name]

    def as_completed(self) -> Iterator[ServerVerdict]:
        """Every verdict once, in the order they are known; ends by the deadline."""
        for _ in self.servers:
            left = self._deadline - time.monotonic()
            try:
                yield self._arrivals.get(timeout=max(0.0, left))
            except queue.Empty:
                self._expire()
                yield self._arrivals.get_nowait()

    def results(self) -> list[ServerVerdict]:
        """Every verdict in the servers' configured order (waits up to the deadline)."""
        return [self.verdict(server.name) for server in self.servers]


def iter_checks(
    workflow: WorkflowLike,
    servers: Sequence[ServerConfig],
    client_factory: ClientFactory,
    *,
    timeout: float,
    skip_inputs: Iterable[tuple[str, str]] = (),
) -> Iterator[ServerVerdict]:
    """Check every server in parallel; yield each verdict as soon as it is known."""
    run = CheckRun(workflow, servers, client_factory, timeout=timeout, skip_inputs=skip_inputs)
    return run.start().as_completed()


def check_cluster(
    workflow: WorkflowLike,
    servers: Sequence[ServerConfig],
    client_factory: ClientFactory,
    *,
    timeout: float,
    skip_inputs: Iterable[tuple[str, str]] = (),
    on_verdict: Optional[Callable[[ServerVerdict], None]] = None,
) -> list[ServerVerdict]:
    """Check every server in parallel; the verdicts in the servers' configured order.

    ``on_verdict`` is called with each verdict as it is known (from the checking threads, one
    call per server), so a caller can act on the first good server before the slowest answers.
    """
    run = CheckRun(
        workflow,
        servers,
        client_factory,
        timeout=timeout,
        skip_inputs=skip_inputs,
        on_verdict=on_verdict,
    )
    return run.start().results()
