"""The collaborators a job run and its worker slots use, handed down by the scheduler.

:class:`EngineTools` bundles what the engine's parts *call* (as :class:`EngineSettings` bundles
what they *read*): the client factory, the clock, the retrying :class:`ServerCall`, the shared
speed record, the health monitor, the transfer factory and the preflight check (how servers
are asked, at the start of each job, whether they can run its workflow). Tests swap any of them.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol

from comfy_cluster.core.connection_settings import Timeouts
from comfy_cluster.core.engine.attempt import Aborted
from comfy_cluster.core.engine.cleanup import ignore_errors
from comfy_cluster.core.engine.waits import QueueWaits
from comfy_cluster.core.errors import ServerSilent, ServerUnreachable, UnexpectedStatus
from comfy_cluster.core.retry import RetryPolicy
from comfy_cluster.core.server import ServerConfig
from comfy_cluster.core.transfer import Transfer

__all__ = [
    "Bounded",
    "CheckFactory",
    "ClientFactory",
    "EngineTools",
    "Preflight",
    "ServerCall",
    "SpeedRecord",
    "in_background",
]

#: ``client_factory(server) -> client``: one client per worker slot (and per sweep).
ClientFactory = Callable[[ServerConfig], Any]
#: ``check_factory(server, timeouts) -> client`` with ``system_stats()`` and ``object_info()``.
CheckFactory = Callable[[ServerConfig, Timeouts], Any]


@dataclass(frozen=True)
class Preflight:
    """How a scheduler checks its servers at the start of each job (``server_gate.py``).

    ``timeout`` bounds the wait for one server's verdict; a server silent that long counts as
    unreachable (and is then handled like any server that does not answer).
    """

    client_factory: CheckFactory
    timeout: float = 30.0

    def __post_init__(self) -> None:
        if not self.timeout > 0:  # refused at the scheduler's construction, not mid-job
            raise ValueError(f"check_timeout must be > 0, got {self.timeout!r}")


class SpeedRecord(Protocol):
    """Seconds per frame per server, learnt from finished prompts (``balance.SpeedTracker``)."""

    def record(self, server: str, seconds: float, frames: int = 1) -> float: ...

    def seconds_per_frame(self, server: str) -> Optional[float]: ...


class ServerCall:
    """Calls a server under the transient-retry policy; a 5xx answer counts as transient.

    ``call(fn, cancel=event)`` raises :class:`Aborted` instead of trying (again) once ``cancel``
    is set, the permanent error as is, or ``RetriesExhausted`` (a ``TransientError``). Any
    thread: the policy is immutable.
    """

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy

    def __call__(self, fn: Callable[[], Any], *, cancel: Optional[threading.Event] = None) -> Any:
        def once() -> Any:
            if cancel is not None and cancel.is_set():
                raise Aborted()
            try:
                return fn()
            except UnexpectedStatus as exc:
                if exc.status >= 500:
                    raise ServerUnreachable(str(exc), server=exc.server) from exc
                raise

        return self.policy.call(once)


@dataclass(frozen=True)
class EngineTools:
    """What the engine's parts call, shared by every job of one scheduler. Any thread."""

    client_factory: ClientFactory
    clock: Callable[[], float]
    call: ServerCall
    #: Seconds per frame per server: the record of the job's workflow once the job starts.
    speed: SpeedRecord
    #: ``transfer_factory(shared_storage) -> Transfer``: how frames reach and leave servers.
    transfer_factory: Callable[[bool], Transfer]
    #: The health monitor (``snapshot()``, ``set_active()``), or ``None``: learn from failures.
    health: Any = None
    #: Our prompts' waits behind other clients' work, per server (shared by every job).
    waits: QueueWaits = field(default_factory=QueueWaits)
    #: How each job checks its servers before their first prompt; ``None``: no check, every
    #: server takes work at once.
    preflight: Optional[Preflight] = None
    #: ``speed_for(workflow)``: the speed record of a workflow's shape (``speed_book.py``);
    #: ``None``: every job shares ``speed``.
    speed_for: Optional[Callable[[Any], SpeedRecord]] = None


class Bounded:
    """Runs one request at a time on a daemon thread and waits for it at most ``timeout``.

    A request that does not answer in time is *abandoned*: its thread runs on until the client's
    own timeout, and :attr:`busy` stays true meanwhile, so the next request (which would share
    the client's session with it) is refused at once with ``ServerSilent`` instead of waiting
    again. ``abort()`` (optional) stops the wait early with :class:`Aborted`. One caller thread.
    """

    def __init__(self, server: str, abort: Optional[Callable[[], bool]] = None) -> None:
        self.server = server
        self.abort = abort
        self._thread: Optional[threading.Thread] = None
        #: ``time.monotonic()`` when the abandoned request (if any) was sent.
        self.sent_at = 0.0

    @property
    def busy(self) -> bool:
        """An abandoned request is still running."""
        return self._thread is not None and self._thread.is_alive()

    def __call__(self, fn: Callable[[], Any], timeout: float, what: str) -> Any:
        if self.busy:
            waited = time.monotonic() - self.sent_at
            raise ServerSilent(
                f"{what}: an earlier request got no answer for {waited:.1f} s", server=self.server
            )
        box: dict[str, Any] = {}
        done = threading.Event()

        def run() -> None:
            try:
                box["value"] = fn()
            except BaseException as exc:  # handed to the caller
                box["error"] = exc
            finally:
                done.set()

        self.sent_at = time.monotonic()
        self._thread = thread = threading.Thread(
            target=run, name=f"comfy-cluster-{self.server}-request", daemon=True
        )
        thread.start()
        deadline = self.sent_at + timeout
        while not done.wait(0.05):  # a few checks a second: abort stays prompt
            if self.abort is not None and self.abort():
                raise Aborted()
            if time.monotonic() >= deadline:  # pragma: no mutate (> is the same on floats)
                raise ServerSilent(f"{what}: no answer in {timeout:.1f} s", server=self.server)
        self._thread = None
        if "error" in box:
            raise box["error"]
        return box.get("value")


def in_background(fn: Callable[[], Any], timeout: float, name: str) -> bool:
    """Call ``fn`` (cleanup) on a daemon thread, waiting at most ``timeout``; errors are dropped.
    Returns whether it finished in time (else it is abandoned)."""
    thread = threading.Thread(target=lambda: ignore_errors(fn), name=name, daemon=True)
    thread.start()
    thread.join(timeout)
    return not thread.is_alive()
