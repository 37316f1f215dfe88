"""The cluster's health cache: background pollers and immutable snapshots.

One named daemon thread per enabled server (``comfy-cluster-health-<server>``) polls that server
only, so a dead or black-holed server costs one timeout on its own thread and never delays the
others: a full poll of the cluster takes about one timeout however many servers are down. A
server's thread never runs two polls at once. Polls are fast (``interval_busy``) while someone
holds the monitor active (a running job, an open panel) and slow (``interval_idle``) otherwise;
a server that stays down is polled with exponential backoff up to ``max_backoff``.

Readers call :meth:`HealthMonitor.snapshot` from any thread: it returns the current
:class:`HealthSnapshot` (a reference read, no network, no waiting on pollers). Pollers build a
new snapshot and swap it in whole under a lock.

States: ``disabled`` (by config), ``offline`` (HTTP fails), ``degraded`` (reachable but cannot run
the current work: websocket fails, or node classes required by :meth:`require_classes` are missing
from ``/object_info``; ``reason`` says which), ``busy`` (works; prompts queued or running),
``ready`` (works and idle). "Works" means HTTP *and* a websocket greeting (cached for
``ws_check_interval``, re-checked after any failure).
"""

from __future__ import annotations

import contextlib
import enum
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Callable, Optional

from comfy_cluster.core.client import ComfyClient, Timeouts
from comfy_cluster.core.errors import ClosedError, ComfyClusterError
from comfy_cluster.core.protocol import parse_system_stats
from comfy_cluster.core.server import ServerConfig

log = logging.getLogger(__name__)

__all__ = [
    "HealthMonitor",
    "HealthSnapshot",
    "ServerState",
    "ServerStatus",
]

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


@dataclass(frozen=True)
class _Facts:
    """What the last poll of one server found; the state is derived from it (see _derive)."""

    http_error: Optional[ComfyClusterError] = None
    ws_error: Optional[ComfyClusterError] = None
    classes: Optional[frozenset] = None  # node classes from /object_info, None if never fetched
    classes_error: Optional[ComfyClusterError] = None
    queue_depth: int = 0


def _derive(facts: _Facts, required: frozenset) -> tuple[ServerState, Optional[str]]:
    """State and reason for one enabled server. Pure."""
    if facts.http_error is not None:
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


ClientFactory = Callable[[ServerConfig, Timeouts], Any]


def default_client_factory(server: ServerConfig, timeouts: Timeouts) -> ComfyClient:
    return ComfyClient(server, timeouts=timeouts)


class _Poller:
    """One server's polling thread and the per-server state only that thread writes."""

    def __init__(self, monitor: HealthMonitor, server: ServerConfig) -> None:
        self.monitor = monitor
        self.server = server
        self.wake = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=self.run, name=f"comfy-cluster-health-{server.name}", daemon=True
        )
        self.latency_ms: Optional[float] = None
        self.ws_checked_at: Optional[float] = None
        self.classes_at: Optional[float] = None

    def run(self) -> None:
        mon = self.monitor
        client = None
        try:
            while not self.stop.is_set():
                seq = mon._poll_started(self.server.name)
                if client is None:
                    client = mon._client_factory(self.server, mon._timeouts)
                try:
                    failures = self.poll(client, seq)
                except Exception:
                    log.exception("health poll of %s crashed", self.server.name)
                    failures = 1
                if self.stop.is_set():
                    break
                self.wake.wait(mon._interval_for(failures))
                self.wake.clear()
        finally:
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()

    def poll(self, client: Any, seq: int) -> int:
        """One poll; publishes the new status and returns the consecutive failure count."""
        mon = self.monitor
        name = self.server.name
        clock = mon._clock
        prev_facts = mon._facts_of(name)
        info = None
        queue = None
        try:
            t0 = time.perf_counter()
            info = parse_system_stats(client.system_stats())
            rtt = (time.perf_counter() - t0) * 1000.0
            queue = client.queue()
        except ComfyClusterError as exc:
            facts = replace(prev_facts, http_error=exc)
            self.latency_ms = None
            self.ws_checked_at = None  # re-check everything once it is back
            self.classes_at = None
            return mon._publish(self.server, facts, seq, info=None, queue=None)
        alpha = mon._latency_alpha
        self.latency_ms = (
            rtt if self.latency_ms is None else self.latency_ms + alpha * (rtt - self.latency_ms)
        )
        now = clock()
        ws_error = prev_facts.ws_error
        if (
            ws_error is not None
            or prev_facts.http_error is not None
            or self.ws_checked_at is None
            or now - self.ws_checked_at >= mon._ws_check_interval
        ):
            try:
                client.probe_websocket(mon._timeout)
                ws_error = None
            except ComfyClusterError as exc:
                ws_error = exc
            self.ws_checked_at = now
        classes, classes_error = prev_facts.classes, None
        if mon._required and (
            classes is None
            or self.classes_at is None
            or now - self.classes_at >= mon._object_info_ttl
        ):
            try:
                classes = frozenset(client.object_info())
                self.classes_at = now
            except ComfyClusterError as exc:
                classes_error = exc
        facts = _Facts(
            http_error=None,
            ws_error=ws_error,
            classes=classes,
            classes_error=classes_error,
            queue_depth=queue.depth,
        )
        return mon._publish(self.server, facts, seq, info=info, queue=queue)


class HealthMonitor:
    """Polls every enabled server in the background and serves immutable snapshots.

    ``snapshot()``, ``set_active()``, ``require_classes()``, ``poll_now()``, ``subscribe()``,
    ``close()``: any thread, never blocking on the network. ``wait_for_poll()`` /
    ``refresh()`` block the caller (bounded). Subscribers run on poller threads.
    ``client_factory(server, Timeouts)`` returns an object with ``system_stats()``, ``queue()``,
    ``probe_websocket(timeout)``, ``object_info()`` and ``close()`` (a :class:`ComfyClient`).
    ``clock`` stamps ``since``/``checked_at``/``taken_at`` and paces re-checks.
    """

    def __init__(
        self,
        servers: Sequence[ServerConfig],
        *,
        client_factory: Optional[ClientFactory] = None,
        clock: Callable[[], float] = time.monotonic,
        interval_busy: float = 1.0,
        interval_idle: float = 10.0,
        timeout: float = 2.0,
        max_backoff: float = 60.0,
        ws_check_interval: float = 60.0,
        object_info_ttl: float = 300.0,
        latency_alpha: float = 0.3,
    ) -> None:
        if timeout <= 0 or interval_busy <= 0 or interval_idle <= 0:
            raise ValueError("timeout and intervals must be > 0")
        names = [s.name for s in servers]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate server names: {names}")
        self._client_factory = client_factory or default_client_factory
        self._clock = clock
        self._interval_busy = interval_busy
        self._interval_idle = interval_idle
        self._timeout = timeout
        self._timeouts = Timeouts(connect=timeout, read=timeout)
        self._max_backoff = max(max_backoff, interval_busy)
        self._ws_check_interval = ws_check_interval
        self._object_info_ttl = object_info_ttl
        self._latency_alpha = latency_alpha

        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._closed = False
        self._started = False
        self._active: set[str] = set()
        self._required: frozenset = frozenset()
        self._servers: dict[str, ServerConfig] = {s.name: s for s in servers}
        self._facts: dict[str, _Facts] = {}
        self._pollers: dict[str, _Poller] = {}
        self._subscribers: list[Callable[[HealthSnapshot], None]] = []
        #: Poll requests: a poll that *starts* after request n serves it (see wait_for_poll).
        self._request_seq = 0
        self._served: dict[str, int] = {}
        now = clock()
        self._snapshot = HealthSnapshot(
            MappingProxyType({s.name: self._initial_status(s, now) for s in servers}), now
        )

    # lifecycle ---------------------------------------------------------------------------------

    def start(self) -> HealthMonitor:
        """Start one poller thread per enabled server (first polls begin at once)."""
        with self._lock:
            self._check_open()
            if self._started:
                return self
            self._started = True
            servers = list(self._servers.values())
        for server in servers:
            self._start_poller(server)
        return self

    def close(self, timeout: float = 1.0) -> None:
        """Stop all pollers; waits up to ``timeout`` in total. Idempotent; any thread.

        A poller blocked in a request exits when its (short) timeout ends; it is a daemon.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pollers = list(self._pollers.values())
            self._pollers.clear()
            self._cond.notify_all()
        for poller in pollers:
            poller.stop.set()
            poller.wake.set()
        deadline = time.monotonic() + timeout
        for poller in pollers:
            if poller.thread.is_alive() and poller.thread is not threading.current_thread():
                poller.thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> HealthMonitor:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("health monitor is closed")

    def _start_poller(self, server: ServerConfig) -> None:
        if not server.enabled:
            return
        poller = _Poller(self, server)
        with self._lock:
            if self._closed:
                return
            self._pollers[server.name] = poller
        poller.thread.start()

    # readers -----------------------------------------------------------------------------------

    def snapshot(self) -> HealthSnapshot:
        """The current snapshot. Never blocks on the network; any thread."""
        return self._snapshot  # a reference read; writers swap whole snapshots under the lock

    def subscribe(self, callback: Callable[[HealthSnapshot], None]) -> Callable[[], None]:
        """Call ``callback(snapshot)`` on the poller thread after each change; returns unsubscribe.

        Callbacks must be quick and must not block (marshal to your own thread).
        """
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._subscribers.remove(callback)

        return unsubscribe

    # controls ----------------------------------------------------------------------------------

    def set_active(self, active: bool, who: str = "default") -> None:
        """Poll fast while any ``who`` holds the monitor active (a job, a watching panel)."""
        with self._lock:
            was = bool(self._active)
            if active:
                self._active.add(who)
            else:
                self._active.discard(who)
            now_active = bool(self._active)
        if now_active and not was:
            self.poll_now()

    @property
    def active(self) -> bool:
        return bool(self._active)

    def require_classes(self, names: Iterable[str]) -> None:
        """Mark servers lacking any of these node classes DEGRADED (with the missing names).

        Re-derives states at once from cached ``/object_info``; servers without a cache are
        polled now.
        """
        required = frozenset(names)
        with self._lock:
            if required == self._required:
                return
            self._required = required
            statuses = dict(self._snapshot.statuses)
            now = self._clock()
            for name, facts in self._facts.items():
                old = statuses.get(name)
                if old is None or old.state in (ServerState.DISABLED, ServerState.OFFLINE):
                    continue
                state, reason = _derive(facts, required)
                since = old.since if state is old.state else now
                statuses[name] = replace(old, state=state, reason=reason, since=since)
            snapshot = self._swap(statuses)
            subscribers = list(self._subscribers)
        self._notify(subscribers, snapshot)
        self.poll_now()

    def poll_now(self) -> None:
        """Wake every poller for an immediate poll (skips backoff). Never blocks."""
        with self._lock:
            self._request_seq += 1
            pollers = list(self._pollers.values())
        for poller in pollers:
            poller.wake.set()

    def wait_for_poll(self, timeout: float, *, after: Optional[int] = None) -> bool:
        """Block until every polled server finished a poll started after request ``after``.

        ``after`` defaults to 0: the first poll since start(). Returns False on timeout.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            target = 0 if after is None else after
            while True:
                if self._closed:
                    return False
                pending = [n for n in self._pollers if self._served.get(n, -1) < target]
                if not pending:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)

    def refresh(self, timeout: float) -> tuple[HealthSnapshot, bool]:
        """Request a poll of every server and wait (bounded) for it; returns (snapshot, complete).

        A poller mid-poll finishes that one first, so this can take up to two timeouts.
        """
        with self._lock:
            self._request_seq += 1
            target = self._request_seq
            pollers = list(self._pollers.values())
        for poller in pollers:
            poller.wake.set()
        complete = self.wait_for_poll(timeout, after=target)
        return self.snapshot(), complete

    def set_servers(self, servers: Sequence[ServerConfig]) -> None:
        """Replace the server list (user edits): changed or new servers get a fresh poller."""
        new = {s.name: s for s in servers}
        with self._lock:
            self._check_open()
            old = self._servers
            self._servers = dict(new)
            stale = [
                self._pollers.pop(n)
                for n in list(self._pollers)
                if n not in new or new[n] != old.get(n)
            ]
            now = self._clock()
            statuses = {}
            for name, server in new.items():
                current = self._snapshot.statuses.get(name)
                if current is None or server != old.get(name):
                    statuses[name] = self._initial_status(server, now)
                    self._facts.pop(name, None)
                    self._served.pop(name, None)
                else:
                    statuses[name] = current
            for name in list(self._facts):
                if name not in new:
                    del self._facts[name]
            snapshot = self._swap(statuses)
            subscribers = list(self._subscribers)
            to_start = [
                s for n, s in new.items() if self._started and s.enabled and n not in self._pollers
            ]
        for poller in stale:
            poller.stop.set()
            poller.wake.set()
        for server in to_start:
            self._start_poller(server)
        self._notify(subscribers, snapshot)

    # poller side -------------------------------------------------------------------------------

    def _initial_status(self, server: ServerConfig, now: float) -> ServerStatus:
        if not server.enabled:
            return ServerStatus(server.name, server.url, ServerState.DISABLED, since=now)
        return ServerStatus(
            server.name, server.url, ServerState.OFFLINE, since=now, reason="not checked yet"
        )

    def _poll_started(self, name: str) -> int:
        with self._lock:
            return self._request_seq

    def _facts_of(self, name: str) -> _Facts:
        with self._lock:
            return self._facts.get(name) or _Facts()

    def _interval_for(self, failures: int) -> float:
        base = self._interval_busy if self._active else self._interval_idle
        if failures <= 0:
            return base
        return min(max(base, self._interval_busy) * (2 ** (failures - 1)), self._max_backoff)

    def _swap(self, statuses: dict[str, ServerStatus]) -> HealthSnapshot:
        """Install a new snapshot. Caller holds the lock."""
        snapshot = HealthSnapshot(MappingProxyType(statuses), self._clock())
        self._snapshot = snapshot
        self._cond.notify_all()
        return snapshot

    def _notify(self, subscribers: list, snapshot: HealthSnapshot) -> None:
        for callback in subscribers:
            try:
                callback(snapshot)
            except Exception:
                log.exception("health subscriber %r failed", callback)

    def _publish(
        self, server: ServerConfig, facts: _Facts, seq: int, *, info: Any, queue: Any
    ) -> int:
        name = server.name
        poller_latency = None
        with self._lock:
            poller = self._pollers.get(name)
            if poller is None or poller.server != server or self._closed:
                return 0  # replaced or closed meanwhile: drop the result
            poller_latency = poller.latency_ms
            old = self._snapshot.statuses.get(name) or self._initial_status(server, self._clock())
            now = self._clock()
            state, reason = _derive(facts, self._required)
            error = facts.http_error or facts.ws_error or facts.classes_error
            failures = old.failures + 1 if facts.http_error is not None else 0
            if info is None:  # offline: keep what we knew about the machine, drop live numbers
                status = replace(
                    old,
                    state=state,
                    reason=reason,
                    queue_running=0,
                    queue_pending=0,
                    latency_ms=None,
                )
            else:
                status = replace(
                    old,
                    state=state,
                    reason=reason,
                    queue_running=len(queue.running),
                    queue_pending=len(queue.pending),
                    latency_ms=poller_latency,
                    device=info.device,
                    vram_free=info.vram_free,
                    vram_total=info.vram_total,
                    os=info.os,
                    comfyui_version=info.comfyui_version,
                )
            status = replace(
                status,
                since=old.since if state is old.state else now,
                checked_at=now,
                last_error=None if error is None else getattr(error, "message", str(error)),
                error_kind=None if error is None else type(error).__name__,
                failures=failures,
            )
            self._facts[name] = facts
            self._served[name] = max(self._served.get(name, -1), seq)
            statuses = dict(self._snapshot.statuses)
            statuses[name] = status
            snapshot = self._swap(statuses)
            subscribers = list(self._subscribers)
        self._notify(subscribers, snapshot)
        return failures
