"""What the health cache tells its readers: each server's state and one immutable snapshot.

Plain frozen values, built by the pollers and read by everyone else (the scheduler, the panel,
``comfy-cluster status``); they hold no references to threads or clients, so they are safe to
pass between threads and to keep.

States: ``disabled`` (by config), ``offline`` (HTTP fails), ``degraded`` (reachable but cannot run
the current work: websocket fails, or required node classes are missing; ``reason`` says which),
``busy`` (works; prompts queued or running), ``ready`` (works and idle).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Optional

__all__ = ["USABLE_STATES", "HealthSnapshot", "ServerState", "ServerStatus"]

_EMPTY: Mapping = MappingProxyType({})


class ServerState(enum.Enum):
    """What a server can do right now."""

    DISABLED = "disabled"  #: turned off in the configuration; never polled
    OFFLINE = "offline"  #: HTTP does not answer (refused, timeout, 5xx, not ComfyUI...)
    READY = "ready"  #: HTTP and websocket work, required node classes present, queue empty
    BUSY = "busy"  #: like READY, with prompts (anyone's) running or pending
    DEGRADED = "degraded"  #: reachable but cannot run the current work; see ``reason``


USABLE_STATES = frozenset({ServerState.READY, ServerState.BUSY})


@dataclass(frozen=True)
class ServerStatus:
    """One server as last polled. Immutable.

    ``since``: clock time the current state began. ``checked_at``: clock time of the last finished
    poll, None before the first. ``last_error``: why the last poll failed (None after a good one).
    ``latency_ms``: moving average of the ``/system_stats`` round trip. ``failures``: consecutive
    failed polls.
    """

    name: str
    url: str
    state: ServerState = ServerState.OFFLINE
    queue_running: int = 0
    queue_pending: int = 0
    latency_ms: Optional[float] = None
    device: Optional[str] = None
    vram_free: Optional[int] = None
    vram_total: Optional[int] = None
    os: Optional[str] = None
    comfyui_version: Optional[str] = None
    last_error: Optional[str] = None
    since: float = 0.0
    reason: Optional[str] = None
    checked_at: Optional[float] = None
    failures: int = 0
    error_kind: Optional[str] = None

    @property
    def usable(self) -> bool:
        """READY or BUSY: may be given work."""
        return self.state in USABLE_STATES

    @property
    def queue_depth(self) -> int:
        return self.queue_running + self.queue_pending

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able view (state as its string value)."""
        return {
            "name": self.name,
            "url": self.url,
            "state": self.state.value,
            "queue_running": self.queue_running,
            "queue_pending": self.queue_pending,
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 2),
            "device": self.device,
            "vram_free": self.vram_free,
            "vram_total": self.vram_total,
            "os": self.os,
            "comfyui_version": self.comfyui_version,
            "last_error": self.last_error,
            "error_kind": self.error_kind,
            "reason": self.reason,
            "since": self.since,
            "checked_at": self.checked_at,
            "failures": self.failures,
        }


@dataclass(frozen=True)
class HealthSnapshot:
    """Every server's status at one moment; immutable and cheap to pass between threads.

    Iterates in configuration order.
    """

    statuses: Mapping[str, ServerStatus] = field(default_factory=lambda: _EMPTY)
    taken_at: float = 0.0

    def get(self, name: str) -> Optional[ServerStatus]:
        return self.statuses.get(name)

    def __getitem__(self, name: str) -> ServerStatus:
        return self.statuses[name]

    def __iter__(self) -> Iterator[ServerStatus]:
        return iter(self.statuses.values())

    def __len__(self) -> int:
        return len(self.statuses)

    def __contains__(self, name: object) -> bool:
        return name in self.statuses

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.statuses)

    def ready(self) -> tuple[ServerStatus, ...]:
        """Servers in state READY (idle and working)."""
        return tuple(s for s in self if s.state is ServerState.READY)

    def usable(self) -> tuple[ServerStatus, ...]:
        """Servers that may take work: READY or BUSY."""
        return tuple(s for s in self if s.usable)

    def in_state(self, state: ServerState) -> tuple[ServerStatus, ...]:
        return tuple(s for s in self if s.state is state)

    def to_dict(self) -> dict[str, Any]:
        return {"taken_at": self.taken_at, "servers": [s.to_dict() for s in self]}
