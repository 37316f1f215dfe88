"""The cluster's health cache: background pollers and immutable snapshots.

One named daemon thread per enabled server (``comfy-cluster-health-<server>``, see
:mod:`.health_poller`) polls that server only, so a dead or black-holed server costs one timeout
on its own thread and never delays the others: a full poll of the cluster takes about one timeout
however many servers are down. A server's thread never runs two polls at once. Polls are fast
(``interval_busy``) while someone holds the monitor active (a running job, an open panel) and slow
(``interval_idle``) otherwise; a server that stays down is polled with exponential backoff up to
``max_backoff``.

Readers call :meth:`HealthMonitor.snapshot` from any thread: it returns the current
:class:`HealthSnapshot` (a reference read, no network, no waiting on pollers). Pollers report what
they found (:mod:`.health_facts`); the monitor derives each status, builds a new snapshot and
swaps it in whole under a lock. The values themselves live in :mod:`.health_status`.

"Works" (READY/BUSY) means HTTP *and* a websocket greeting (cached for ``ws_check_interval``,
re-checked after any failure), plus every node class named by :meth:`require_classes`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from types import MappingProxyType
from typing import Any, Callable, Optional

from comfy_cluster.core.errors import ClosedError
from comfy_cluster.core.health_facts import PollFacts, initial_status, next_status, rederive_status
from comfy_cluster.core.health_poller import (
    ClientFactory,
    PollSettings,
    ServerPoller,
    default_client_factory,
)
from comfy_cluster.core.health_status import (
    USABLE_STATES,
    HealthSnapshot,
    ServerState,
    ServerStatus,
)
from comfy_cluster.core.server import ServerConfig

log = logging.getLogger(__name__)

__all__ = [
    "USABLE_STATES",
    "HealthMonitor",
    "HealthSnapshot",
    "ServerState",
    "ServerStatus",
    "alive_feed",
    "mark_in_use",
]


SnapshotCallback = Callable[[HealthSnapshot], None]


class _Subscribers:
    """The callbacks told of each new snapshot. Any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: list[SnapshotCallback] = []

    def add(self, callback: SnapshotCallback) -> Callable[[], None]:
        """Add ``callback``; returns the function that removes it (idempotent)."""
        with self._lock:
            self._callbacks.append(callback)

        def remove() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._callbacks.remove(callback)

        return remove

    def current(self) -> list[SnapshotCallback]:
        """A copy, taken with the snapshot it will be told of (so none is told out of order)."""
        with self._lock:
            return list(self._callbacks)


class _JobUse:
    """Which servers jobs are using: said (``note_in_use``, counted) or seen (heard from within
    ``recent`` seconds: ``note_alive``, fed by the job's own events). Any thread.

    ``note_alive`` may run on every websocket message of a job: one dict store (atomic under the
    GIL); the counts change a few times per job, under a lock.
    """

    def __init__(self, recent: float) -> None:
        self.recent = recent
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.alive: dict[str, float] = {}

    def note_alive(self, name: str) -> None:
        self.alive[name] = time.monotonic()

    def note_in_use(self, name: str, in_use: bool) -> None:
        with self._lock:
            count = self.counts.get(name, 0) + (1 if in_use else -1)
            if count > 0:
                self.counts[name] = count
            else:
                self.counts.pop(name, None)

    def in_use(self, server: Optional[ServerConfig]) -> bool:
        if server is None:
            return False
        if server.name in self.counts:
            return True
        heard = self.alive.get(server.name, 0.0)
        return heard > 0.0 and time.monotonic() - heard < self.recent


def mark_in_use(health: Any, server: str, in_use: bool) -> None:
    """``health.note_in_use(server, in_use)`` when there is a monitor that has it; never raises
    (for the engine: a worker slot starts/stops using ``server``)."""
    note = getattr(health, "note_in_use", None)
    if note is not None:
        try:
            note(server, in_use)
        except Exception:
            log.exception("health.note_in_use failed")


def alive_feed(health: Any, server: str, on_event: Callable[[Any], None]) -> Callable[[Any], None]:
    """``on_event``, telling ``health`` first that ``server`` is alive (every websocket event of
    a job is a sign of life); ``on_event`` itself when there is no monitor."""
    note = getattr(health, "note_alive", None)
    if note is None:
        return on_event

    def feed(event: Any) -> None:
        note(server)
        on_event(event)

    return feed


def _notify_each(callbacks: list[SnapshotCallback], snapshot: HealthSnapshot) -> None:
    """Call every callback; one that raises is logged and never stops the others or the poller."""
    for callback in callbacks:
        try:
            callback(snapshot)
        except Exception:
            log.exception("health subscriber %r failed", callback)


class _PollerSide:
    """The monitor's side facing its pollers (:class:`PollerHost`): called by ServerPoller
    threads. State is :class:`HealthMonitor`'s."""

    _lock: threading.Lock
    _cond: threading.Condition
    _closed: bool
    _clock: Callable[[], float]
    _settings: PollSettings
    _active: set[str]
    _required: frozenset
    _facts: dict[str, PollFacts]
    _pollers: dict[str, ServerPoller]
    _retired: list[ServerPoller]
    _served: dict[str, int]
    _request_seq: int
    _snapshot: HealthSnapshot
    _subscribers: _Subscribers
    _use: _JobUse
    _servers: dict[str, ServerConfig]

    @property
    def required(self) -> frozenset:
        """Node classes every usable server must have (see require_classes)."""
        return self._required

    def poll_started(self, name: str) -> int:
        with self._lock:
            return self._request_seq

    def facts_of(self, name: str) -> PollFacts:
        with self._lock:
            return self._facts.get(name) or PollFacts()

    def interval_for(self, failures: int, name: Optional[str] = None) -> float:
        in_use = name is not None and self._use.in_use(self._servers.get(name))
        return self._settings.interval_for(failures, bool(self._active), in_use)

    def in_use(self, name: str) -> bool:
        """Whether a job uses ``name`` (said so, or talked to it within ``interval_in_use``)."""
        return self._use.in_use(self._servers.get(name))

    def _swap(self, statuses: dict[str, ServerStatus]) -> HealthSnapshot:
        """Install a new snapshot. Caller holds the lock."""
        snapshot = HealthSnapshot(MappingProxyType(statuses), self._clock())
        self._snapshot = snapshot
        self._cond.notify_all()
        return snapshot

    def publish(
        self, server: ServerConfig, facts: PollFacts, seq: int, *, info: Any, queue: Any
    ) -> int:
        """Install a poll's result unless its poller was replaced or the monitor closed."""
        name = server.name
        with self._lock:
            poller = self._pollers.get(name)
            if poller is None or poller.server != server or self._closed:
                return 0  # replaced or closed meanwhile: drop the result
            old = self._snapshot.statuses.get(name) or initial_status(server, self._clock())
            status = next_status(
                old,
                facts,
                self._required,
                info=info,
                queue=queue,
                latency_ms=poller.latency_ms,
                now=self._clock(),
            )
            self._facts[name] = facts
            self._served[name] = max(self._served.get(name, -1), seq)
            statuses = dict(self._snapshot.statuses)
            statuses[name] = status
            snapshot = self._swap(statuses)
            subscribers = self._subscribers.current()
        _notify_each(subscribers, snapshot)
        return status.failures


class HealthMonitor(_PollerSide):
    """Polls every enabled server in the background and serves immutable snapshots.

    ``snapshot()``, ``set_active()``, ``require_classes()``, ``poll_now()``, ``subscribe()``,
    ``close()``: any thread, never blocking on the network. ``wait_for_poll()`` /
    ``refresh()`` block the caller (bounded). Subscribers run on poller threads.
    ``client_factory(server, Timeouts)`` returns an object with ``system_stats()``, ``queue()``,
    ``probe_websocket(timeout)``, ``object_info()`` and ``close()`` (a :class:`ComfyClient`).
    ``clock`` stamps ``since``/``checked_at``/``taken_at`` and paces re-checks.
    ``note_in_use()``/``note_alive()`` (any thread, cheap) let a job's own traffic stand in for
    polls of the servers it uses (see :mod:`.health_poller`).
    """

    def __init__(
        self,
        servers: Sequence[ServerConfig],
        *,
        client_factory: Optional[ClientFactory] = None,
        clock: Callable[[], float] = time.monotonic,
        interval_busy: float = 1.0,
        interval_idle: float = 10.0,
        interval_in_use: float = 5.0,
        stats_interval: float = 30.0,
        timeout: float = 2.0,
        max_backoff: float = 60.0,
        ws_check_interval: float = 60.0,
        object_info_ttl: float = 300.0,
        latency_alpha: float = 0.3,
    ) -> None:
        self._settings = PollSettings(
            interval_busy=interval_busy,
            interval_idle=interval_idle,
            interval_in_use=interval_in_use,
            stats_interval=stats_interval,
            timeout=timeout,
            max_backoff=max_backoff,
            ws_check_interval=ws_check_interval,
            object_info_ttl=object_info_ttl,
            latency_alpha=latency_alpha,
        )
        names = [s.name for s in servers]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate server names: {names}")
        self._client_factory = client_factory or default_client_factory
        self._clock = clock

        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._closed = False
        self._started = False
        self._active: set[str] = set()
        self._required: frozenset = frozenset()
        self._servers: dict[str, ServerConfig] = {s.name: s for s in servers}
        self._facts: dict[str, PollFacts] = {}
        self._pollers: dict[str, ServerPoller] = {}
        #: Pollers of removed or changed servers, told to stop: ``close`` waits for them too.
        self._retired: list[ServerPoller] = []
        self._subscribers = _Subscribers()
        self._use = _JobUse(interval_in_use)
        #: Poll requests: a poll that *starts* after request n serves it (see wait_for_poll).
        self._request_seq = 0
        self._served: dict[str, int] = {}
        now = clock()
        self._snapshot = HealthSnapshot(
            MappingProxyType({s.name: initial_status(s, now) for s in servers}), now
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
            pollers = [*self._pollers.values(), *self._retired]
            self._pollers.clear()
            self._retired.clear()
            self._cond.notify_all()
        for poller in pollers:
            poller.stop_soon()
        deadline = time.monotonic() + timeout
        for poller in pollers:
            poller.join_until(deadline)

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
        poller = ServerPoller(self, server, self._settings, self._client_factory, self._clock)
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
        return self._subscribers.add(callback)

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

    def note_in_use(self, server: str, in_use: bool) -> None:
        """A job (slot) starts (True) or stops (False) using ``server``; counted, any thread.

        While in use, ``server`` is polled every ``interval_in_use`` at most, one cheap request
        (so does a server the job's events reached lately, through :func:`alive_feed`).
        """
        self._use.note_in_use(server, in_use)

    def note_alive(self, server: str) -> None:
        """A job heard from ``server`` (a websocket message, an answer): cheap, any thread.

        It then counts as in use for ``interval_in_use`` seconds.
        """
        self._use.note_alive(server)

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
                if name in statuses:
                    statuses[name] = rederive_status(statuses[name], facts, required, now)
            snapshot = self._swap(statuses)
            subscribers = self._subscribers.current()
        _notify_each(subscribers, snapshot)
        self.poll_now()

    def poll_now(self) -> None:
        """Wake every poller for an immediate poll (skips backoff). Never blocks."""
        self._request_poll()

    def _request_poll(self) -> int:
        """Count a poll request and wake every poller; returns the request's number."""
        with self._lock:
            self._request_seq += 1
            number = self._request_seq
            pollers = list(self._pollers.values())
        for poller in pollers:
            poller.wake.set()
        return number

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
        complete = self.wait_for_poll(timeout, after=self._request_poll())
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
            self._retired = [p for p in self._retired if p.thread.is_alive()] + stale
            now = self._clock()
            statuses = {}
            for name, server in new.items():
                current = self._snapshot.statuses.get(name)
                if current is None or server != old.get(name):
                    statuses[name] = initial_status(server, now)
                    self._facts.pop(name, None)
                    self._served.pop(name, None)
                else:
                    statuses[name] = current
            self._facts = {n: f for n, f in self._facts.items() if n in new}
            snapshot = self._swap(statuses)
            subscribers = self._subscribers.current()
            to_start = [
                s for n, s in new.items() if self._started and s.enabled and n not in self._pollers
            ]
        for poller in stale:
            poller.stop_soon()
        for server in to_start:
            self._start_poller(server)
        _notify_each(subscribers, snapshot)
