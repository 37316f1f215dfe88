"""The collaborators a job run and its worker slots use, handed down by the scheduler.

:class:`EngineTools` bundles what the engine's parts *call* (as :class:`EngineSettings` bundles
what they *read*): the client factory, the clock, the retrying :class:`ServerCall`, the shared
speed record, the health monitor and the transfer factory. Tests swap any of them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol

from comfy_cluster.core.engine.attempt import Aborted
from comfy_cluster.core.errors import ServerUnreachable, UnexpectedStatus
from comfy_cluster.core.retry import RetryPolicy
from comfy_cluster.core.server import ServerConfig
from comfy_cluster.core.transfer import Transfer

__all__ = ["ClientFactory", "EngineTools", "ServerCall", "SpeedRecord"]

#: ``client_factory(server) -> client``: one client per worker slot (and per sweep).
ClientFactory = Callable[[ServerConfig], Any]


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
    #: Seconds per frame per server, shared by every job of the scheduler.
    speed: SpeedRecord
    #: ``transfer_factory(shared_storage) -> Transfer``: how frames reach and leave servers.
    transfer_factory: Callable[[bool], Transfer]
    #: The health monitor (``snapshot()``, ``set_active()``), or ``None``: learn from failures.
    health: Any = None
