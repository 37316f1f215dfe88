"""The one error tree of comfy_cluster.

Every error a user can meet is one of these; the branch decides whether it is worth retrying::

    ComfyClusterError
    ├── TransientError                  (retry, maybe on another server)
    │   ├── ServerUnreachable           refused, reset, DNS, 502/503/504
    │   ├── ServerTimeout               connect or read timeout, stalled prompt
    │   ├── WebsocketClosed             the event stream dropped
    │   ├── RetriesExhausted            the retry policy gave up (attempts, last_error)
    │   ├── PromptStuck                 no progress on our prompt: move it elsewhere
    │   └── ServerHung                  a stuck prompt ignores interrupts
    ├── PermanentError                  (never retried)
    │   ├── ConfigError(ValueError)     bad server configuration
    │   ├── FrameRangeError(ValueError) bad frame range text
    │   ├── WorkflowError(ValueError)   workflow unusable before anything is sent
    │   ├── WorkflowRejected            ComfyUI answered 400 (node_errors)
    │   │   └── WorkflowInvalid         every server rejected it for the same validation reason
    │   ├── ExecutionFailed             execution_error during a prompt
    │   ├── Interrupted                 the prompt was interrupted
    │   ├── AuthenticationFailed        401/403: token or headers are wrong
    │   ├── OutputLocked                another job holds the output pattern
    │   └── ProtocolError               the server said something we cannot parse
    │       ├── UnexpectedStatus        an HTTP status ComfyUI does not use for that call
    │       ├── ResponseTooLarge        an answer over its cap (not read further)
    │       └── DownloadRefused         an output file that is not the image named
    ├── ServerGone                      refused while our websocket is down (not retried)
    │   └── ServerSilent                no answer in time (HTTP and websocket): call abandoned
    ├── JobFailedError                  a render job gave up (raise_for_status)
    ├── JobCancelledError               the user cancelled
    └── ClosedError(RuntimeError)       use of a closed client or scheduler

Not errors, so not in the tree: :class:`ErrorInfo` and :class:`NodeError` are values that
describe one. Exception names never repeat an event's name (``JobFailed`` is the event,
``JobFailedError`` the exception).

Each error carries the fields a user acts on (``server``, ``field``, ``node_id``, ``prompt_id``)
so the UI can say *which* server, field or node is at fault without parsing the message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


class ComfyClusterError(Exception):
    """Root of every comfy_cluster error."""

    def __init__(self, message: str, *, server: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        #: Name of the server at fault, when one is.
        self.server = server

    def __str__(self) -> str:
        if self.server and not self.message.startswith(f"{self.server}:"):
            return f"{self.server}: {self.message}"
        return self.message


class TransientError(ComfyClusterError):
    """A failure that may go away: retry, then move the work elsewhere."""


class ServerUnreachable(TransientError):
    """Connection refused or reset, name not resolved, or a 502/503/504 from a proxy."""


class ServerTimeout(TransientError):
    """The server accepted the connection but did not answer in time."""


class WebsocketClosed(TransientError):
    """The websocket event stream closed or could not be opened."""


class PermanentError(ComfyClusterError):
    """A failure that will happen again: never retried."""


class ConfigError(PermanentError, ValueError):
    """Bad configuration; ``source`` names the variable or file, ``field`` the key at fault."""

    def __init__(
        self,
        message: str,
        *,
        source: Optional[str] = None,
        field: Optional[str] = None,
        server: Optional[str] = None,
    ) -> None:
        super().__init__(message, server=server)
        self.source = source
        self.field = field

    def __str__(self) -> str:
        where = ": ".join(part for part in (self.source, self.field) if part)
        return f"{where}: {self.message}" if where else self.message


class FrameRangeError(PermanentError, ValueError):
    """A frame range that cannot be parsed; ``part`` quotes the offending piece."""

    def __init__(self, message: str, *, text: str = "", part: str = "") -> None:
        super().__init__(message)
        self.text = text
        self.part = part


class WorkflowError(PermanentError, ValueError):
    """A workflow we refuse before sending it anywhere (not API format, no output node...)."""

    def __init__(self, message: str, *, node_id: Optional[str] = None) -> None:
        super().__init__(message)
        self.node_id = node_id


@dataclass(frozen=True)
class NodeError:
    """One validation error ComfyUI reported for one node."""

    node_id: str
    class_type: str
    type: str
    message: str
    details: str = ""
    input_name: Optional[str] = None

    def describe(self) -> str:
        where = f"node {self.node_id} ({self.class_type})"
        if self.input_name:
            where += f" input '{self.input_name}'"
        text = self.message + (f": {self.details}" if self.details else "")
        return f"{where}: {text}"


class WorkflowRejected(PermanentError):
    """ComfyUI answered 400 to POST /prompt: the workflow does not validate on that server."""

    def __init__(
        self,
        message: str,
        *,
        server: Optional[str] = None,
        error_type: str = "",
        node_errors: tuple[NodeError, ...] = (),
        prompt_id: Optional[str] = None,
    ) -> None:
        super().__init__(message, server=server)
        #: ComfyUI's ``error.type``: invalid_prompt, prompt_no_outputs,
        #: prompt_outputs_failed_validation...
        self.error_type = error_type
        self.node_errors = node_errors
        self.prompt_id = prompt_id

    @property
    def node_ids(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(e.node_id for e in self.node_errors))

    @property
    def missing_classes(self) -> tuple[str, ...]:
        """Node classes the server said do not exist (a model or custom node missing there)."""
        return _missing_classes(self.message) if self.error_type == "invalid_prompt" else ()


def _missing_classes(message: str) -> tuple[str, ...]:
    marker = "Cannot execute because node "
    if marker in message:
        rest = message.split(marker, 1)[1]
        return (rest.split(" does not exist", 1)[0].strip(),)
    return ()


class WorkflowInvalid(WorkflowRejected):
    """The workflow is wrong: every server that saw it rejected it for the same validation reason
    (a value out of range, a wrong type, no outputs...), so no server can run it. A bad argument
    (exit status 2), unlike a node class or model missing on some servers."""

    @classmethod
    def from_rejection(cls, error: WorkflowRejected, message: str) -> WorkflowInvalid:
        return cls(
            message,
            server=error.server,
            error_type=error.error_type,
            node_errors=error.node_errors,
            prompt_id=error.prompt_id,
        )


class ExecutionFailed(PermanentError):
    """ComfyUI sent ``execution_error``: a node raised while running the prompt."""

    def __init__(
        self,
        message: str,
        *,
        server: Optional[str] = None,
        prompt_id: Optional[str] = None,
        node_id: Optional[str] = None,
        node_type: str = "",
        exception_type: str = "",
    ) -> None:
        super().__init__(message, server=server)
        self.prompt_id = prompt_id
        self.node_id = node_id
        self.node_type = node_type
        self.exception_type = exception_type


class Interrupted(PermanentError):
    """The prompt was interrupted (by us, or by someone else on that server)."""

    def __init__(
        self, message: str, *, server: Optional[str] = None, prompt_id: Optional[str] = None
    ) -> None:
        super().__init__(message, server=server)
        self.prompt_id = prompt_id


class ProtocolError(PermanentError):
    """The server answered something that is not ComfyUI's protocol."""


class JobFailedError(ComfyClusterError):
    """A render job gave up; ``cause`` is the error that decided it."""

    def __init__(self, message: str, *, cause: Optional[BaseException] = None) -> None:
        super().__init__(message)
        self.cause = cause


class JobCancelledError(ComfyClusterError):
    """The user cancelled the job."""


class ClosedError(ComfyClusterError, RuntimeError):
    """A client, poller or scheduler was used after ``close()``."""


@dataclass(frozen=True)
class ErrorInfo:
    """A picklable, printable summary of an error for events and snapshots."""

    kind: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorInfo:
        return cls(kind=type(exc).__name__, message=str(exc))


# --- added with core/client.py, core/retry.py (issue 4) -------------------------------------------


class RetriesExhausted(TransientError):
    """The retry policy gave up: ``attempts`` tries made, ``last_error`` the last cause.

    Still a ``TransientError``: the work may succeed on another server.
    """

    def __init__(
        self,
        message: str,
        *,
        attempts: int,
        last_error: BaseException,
        server: Optional[str] = None,
    ) -> None:
        super().__init__(message, server=server)
        self.attempts = attempts
        self.last_error = last_error


class AuthenticationFailed(PermanentError):
    """The server (or a proxy in front of it) answered 401/403: token or headers are wrong."""

    def __init__(self, message: str, *, server: Optional[str] = None, status: int = 0) -> None:
        super().__init__(message, server=server)
        self.status = status


class UnexpectedStatus(ProtocolError):
    """An HTTP status ComfyUI does not use for that call (404, 413, 500...); ``status`` holds it."""

    def __init__(self, message: str, *, server: Optional[str] = None, status: int = 0) -> None:
        super().__init__(message, server=server)
        self.status = status


class ResponseTooLarge(ProtocolError):
    """A server's answer went over its cap (``cap`` bytes); we stopped reading it."""

    def __init__(self, message: str, *, server: Optional[str] = None, cap: int = 0) -> None:
        super().__init__(message, server=server)
        self.cap = cap


class DownloadRefused(ProtocolError):
    """An output file that is not the image the server named (or over ``max_download_bytes``).

    Nothing was written. The frame goes to another server; the sender leaves the job.
    """


class OutputLocked(PermanentError):
    """Another job holds the output pattern (``holder`` describes it: host, pid, job, start)."""

    def __init__(self, message: str, *, holder: str = "", lock_path: str = "") -> None:
        super().__init__(message)
        self.holder = holder
        self.lock_path = lock_path


# --- raised by the render engine's worker slots (core/engine/) ------------------------------------


class PromptStuck(TransientError):
    """The server stopped making progress on our prompt (silent past its limit, queued too long
    behind others, or vanished): the prompt is cancelled and its frames move elsewhere."""


class ServerHung(TransientError):
    """A stuck prompt kept running after we interrupted it: the server is hung, out of the job."""


class ServerGone(ComfyClusterError):
    """Connection refused while our websocket is down: the server is gone. Not retried: the
    chunk moves at once and the server is suspended until a probe answers."""


class ServerSilent(ServerGone):
    """The server answered neither its websocket nor an HTTP request in time: the request was
    abandoned (its thread runs on, as a daemon) and the server is treated as gone."""
