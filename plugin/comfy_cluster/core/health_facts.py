"""What one poll of a server found, and the status that follows from it. Pure: any thread.

A poller gathers :class:`PollFacts` (which requests failed, which node classes exist, how deep the
queue is); the state is *derived* from the facts and the currently required node classes, never
stored on its own, so a change of requirements re-derives every state without a new poll.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Optional

from comfy_cluster.core.errors import ComfyClusterError
from comfy_cluster.core.health_status import ServerState, ServerStatus
from comfy_cluster.core.limits import is_too_large
from comfy_cluster.core.server import ServerConfig

__all__ = ["PollFacts", "derive_state", "initial_status", "next_status", "rederive_status"]


@dataclass(frozen=True)
class PollFacts:
    """What the last poll of one server found; the state is derived from it (see derive_state)."""

    http_error: Optional[ComfyClusterError] = None
    ws_error: Optional[ComfyClusterError] = None
    classes: Optional[frozenset] = None  # node classes from /object_info, None if never fetched
    classes_error: Optional[ComfyClusterError] = None
    queue_depth: int = 0


def derive_state(facts: PollFacts, required: frozenset) -> tuple[ServerState, Optional[str]]:
    """State and reason for one enabled server.

    An answer over its cap (``limits.too_large``) means the server is there but talks nonsense:
    DEGRADED with that reason, not OFFLINE.
    """
    if facts.http_error is not None:
        if is_too_large(facts.http_error):
            return ServerState.DEGRADED, f"answer too large: {facts.http_error.message}"
        return ServerState.OFFLINE, None
    if facts.ws_error is not None:
        return ServerState.DEGRADED, f"websocket fails: {facts.ws_error}"
    if required:
        if facts.classes is None and facts.classes_error is not None:
            return ServerState.DEGRADED, f"cannot list node classes: {facts.classes_error}"
        # classes None without an error: not fetched yet (the next poll does); do not flap.
        missing = sorted(required - facts.classes) if facts.classes is not None else []
        if missing:
            return ServerState.DEGRADED, "missing node classes: " + ", ".join(missing)
    if facts.queue_depth > 0:
        return ServerState.BUSY, None
    return ServerState.READY, None


def initial_status(server: ServerConfig, now: float) -> ServerStatus:
    """A server's status before its first poll (or DISABLED, which is never polled)."""
    if not server.enabled:
        return ServerStatus(server.name, server.url, ServerState.DISABLED, since=now)
    return ServerStatus(
        server.name, server.url, ServerState.OFFLINE, since=now, reason="not checked yet"
    )


def rederive_status(
    old: ServerStatus, facts: PollFacts, required: frozenset, now: float
) -> ServerStatus:
    """``old`` with its state re-derived for new ``required`` classes, without a new poll.

    DISABLED and OFFLINE servers stay as they are: requirements cannot change either.
    """
    if old.state in (ServerState.DISABLED, ServerState.OFFLINE):
        return old
    state, reason = derive_state(facts, required)
    since = old.since if state is old.state else now
    return replace(old, state=state, reason=reason, since=since)


def next_status(
    old: ServerStatus,
    facts: PollFacts,
    required: frozenset,
    *,
    info: Any,
    queue: Any,
    latency_ms: Optional[float],
    now: float,
) -> ServerStatus:
    """The status after a poll that found ``facts`` (``info``/``queue`` None when offline, or
    either None when that poll did not ask for it: the last values stay).

    Offline keeps what we knew about the machine (device, versions) but drops the live numbers;
    ``since`` moves only when the state changes; ``failures`` counts consecutive HTTP failures.
    """
    state, reason = derive_state(facts, required)
    error = facts.http_error or facts.ws_error or facts.classes_error
    failures = old.failures + 1 if facts.http_error is not None else 0
    if facts.http_error is not None or (info is None and queue is None):
        status = replace(
            old,
            state=state,
            reason=reason,
            queue_running=0,
            queue_pending=0,
            latency_ms=None,
        )
    else:
        status = replace(old, state=state, reason=reason, latency_ms=latency_ms)
        if queue is not None:  # else the queue stays as the last poll saw it
            status = replace(
                status, queue_running=len(queue.running), queue_pending=len(queue.pending)
            )
        if info is not None:  # else the machine's numbers stay as last read
            status = replace(
                status,
                device=info.device,
                vram_free=info.vram_free,
                vram_total=info.vram_total,
                os=info.os,
                comfyui_version=info.comfyui_version,
            )
    return replace(
        status,
        since=old.since if state is old.state else now,
        checked_at=now,
        last_error=None if error is None else getattr(error, "message", str(error)),
        error_kind=None if error is None else type(error).__name__,
        failures=failures,
    )
