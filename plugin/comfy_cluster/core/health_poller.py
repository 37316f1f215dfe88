"""One server's health poller: a named daemon thread that polls that server only.

A dead or black-holed server costs one timeout on its own thread and never delays the others.
A poll is one HTTP request: ``/queue``, or ``/system_stats`` every ``stats_interval`` (the queue
then stays as the previous poll saw it); both only while the state is unknown (the first poll,
after a failure). Besides, a websocket greeting (re-checked every ``ws_check_interval`` and after
any failure) and ``/object_info`` while node classes are required (cached for
``object_info_ttl``). A server in use by a job (``note_in_use``, or heard from by a job's client
lately: ``note_alive``) is polled every ``interval_in_use`` at most: the job's
own traffic is its sign of life. The poller reports to its :class:`PollerHost` (the monitor),
which owns the snapshot; the per-server numbers below are written by this thread only.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Optional, Protocol

from comfy_cluster.core.client import ComfyClient
from comfy_cluster.core.connection_settings import Timeouts
from comfy_cluster.core.errors import ComfyClusterError
from comfy_cluster.core.health_facts import PollFacts
from comfy_cluster.core.protocol import parse_system_stats
from comfy_cluster.core.server import ServerConfig
from comfy_cluster.core.server_text import ServerText

log = logging.getLogger(__name__)

__all__ = [
    "ClientFactory",
    "PollSettings",
    "PollerHost",
    "ServerPoller",
    "default_client_factory",
]

ClientFactory = Callable[[ServerConfig, Timeouts], Any]


def default_client_factory(server: ServerConfig, timeouts: Timeouts) -> ComfyClient:
    return ComfyClient(server, timeouts=timeouts)


@dataclass(frozen=True)
class PollSettings:
    """How often and how patiently to poll; the same for every server of a monitor.

    Fast (``interval_busy``) while the monitor is held active, slow (``interval_idle``)
    otherwise; a server that stays down backs off exponentially up to ``max_backoff``.
    """

    interval_busy: float = 1.0
    interval_idle: float = 10.0
    #: Pace of a server a job is using (its own traffic is the liveness signal), if slower.
    interval_in_use: float = 5.0
    #: ``/system_stats`` (device, VRAM, versions) at most this often while the state is known.
    stats_interval: float = 30.0
    timeout: float = 2.0
    max_backoff: float = 60.0
    ws_check_interval: float = 60.0
    object_info_ttl: float = 300.0
    #: Weight of the newest round trip in the latency moving average.
    latency_alpha: float = 0.3

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.interval_busy <= 0 or self.interval_idle <= 0:
            raise ValueError("timeout and intervals must be > 0")

    def interval_for(self, failures: int, active: bool, in_use: bool = False) -> float:
        """Seconds to wait before the next poll after ``failures`` consecutive failed polls."""
        base = self.interval_busy if active else self.interval_idle
        if failures <= 0:
            return max(base, self.interval_in_use) if in_use else base
        cap = max(self.max_backoff, self.interval_busy)
        return min(max(base, self.interval_busy) * (2 ** (failures - 1)), cap)


class PollerHost(Protocol):
    """What a poller needs from its monitor; every method is safe from any poller thread."""

    @property
    def required(self) -> frozenset: ...

    def poll_started(self, name: str) -> int:
        """The poll-request number this poll serves (see HealthMonitor.wait_for_poll)."""
        ...

    def facts_of(self, name: str) -> PollFacts: ...

    def interval_for(self, failures: int, name: Optional[str] = None) -> float: ...

    def publish(
        self, server: ServerConfig, facts: PollFacts, seq: int, *, info: Any, queue: Any
    ) -> int:
        """Install the poll's result; returns the consecutive failure count."""
        ...


class ServerPoller:
    """One server's polling thread and the per-server state only that thread writes."""

    def __init__(
        self,
        host: PollerHost,
        server: ServerConfig,
        settings: PollSettings,
        client_factory: ClientFactory,
        clock: Callable[[], float],
    ) -> None:
        self.host = host
        self.server = server
        self.settings = settings
        self.client_factory = client_factory
        self.clock = clock
        self.timeouts = Timeouts(connect=settings.timeout, read=settings.timeout)
        #: Cleans the device name, versions... the server reports (its secrets masked).
        self.text = ServerText.of(server)
        self.wake = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=self.run, name=f"comfy-cluster-health-{server.name}", daemon=True
        )
        self.latency_ms: Optional[float] = None
        self.ws_checked_at: Optional[float] = None
        self.classes_at: Optional[float] = None
        #: When ``/system_stats`` last answered (None: the state is unknown, ask both).
        self.stats_at: Optional[float] = None
        #: HTTP requests sent (tests and benchmarks count them).
        self.requests = 0

    def stop_soon(self) -> None:
        """Ask the thread to end after its current request (it is a daemon; nothing waits)."""
        self.stop.set()
        self.wake.set()

    def join_until(self, deadline: float) -> None:
        """Wait for the thread to end, until ``deadline`` (time.monotonic); never joins itself."""
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(max(0.0, deadline - time.monotonic()))

    def run(self) -> None:
        host = self.host
        name = self.server.name
        client = None
        try:
            while not self.stop.is_set():
                seq = host.poll_started(name)
                if client is None:
                    client = self.client_factory(self.server, self.timeouts)
                try:
                    failures = self.poll(client, seq)
                except Exception:
                    log.exception("health poll of %s crashed", name)
                    failures = 1
                if self.stop.is_set():
                    break
                self.wake.wait(host.interval_for(failures, name))
                self.wake.clear()
        finally:
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()

    def _stats_due(self, now: float) -> bool:
        return self.stats_at is None or now - self.stats_at >= self.settings.stats_interval

    def _http(self, client: Any, now: float) -> tuple[Any, Any, float]:
        """The poll's HTTP part: (info or None, queue or None, round trip in ms).

        One request: ``/queue``, or ``/system_stats`` when due; both while the state is unknown.
        """
        unknown = self.stats_at is None
        info = queue = None
        t0 = time.perf_counter()
        if self._stats_due(now):
            self.requests += 1
            info = parse_system_stats(client.system_stats(), text=self.text)
        rtt = (time.perf_counter() - t0) * 1000.0
        if info is None or unknown:
            t1 = time.perf_counter()
            self.requests += 1
            queue = client.queue()
            if info is None:
                rtt = (time.perf_counter() - t1) * 1000.0
        if info is not None:
            self.stats_at = now
        return info, queue, rtt

    def poll(self, client: Any, seq: int) -> int:
        """One poll; publishes the new status and returns the consecutive failure count."""
        prev = self.host.facts_of(self.server.name)
        try:
            info, queue, rtt = self._http(client, self.clock())
        except ComfyClusterError as exc:
            self.latency_ms = None
            self.ws_checked_at = None  # re-check everything once it is back
            self.classes_at = None
            self.stats_at = None
            facts = replace(prev, http_error=exc)
            return self.host.publish(self.server, facts, seq, info=None, queue=None)
        alpha = self.settings.latency_alpha
        self.latency_ms = (
            rtt if self.latency_ms is None else self.latency_ms + alpha * (rtt - self.latency_ms)
        )
        now = self.clock()
        ws_error = self._websocket_error(client, prev, now)
        classes, classes_error = self._node_classes(client, prev, now)
        facts = PollFacts(
            http_error=None,
            ws_error=ws_error,
            classes=classes,
            classes_error=classes_error,
            queue_depth=prev.queue_depth if queue is None else queue.depth,
        )
        return self.host.publish(self.server, facts, seq, info=info, queue=queue)

    def _websocket_error(
        self, client: Any, prev: PollFacts, now: float
    ) -> Optional[ComfyClusterError]:
        """Probe the websocket when due (after any failure, or every ws_check_interval)."""
        if (
            prev.ws_error is None
            and prev.http_error is None
            and self.ws_checked_at is not None
            and now - self.ws_checked_at < self.settings.ws_check_interval
        ):
            return prev.ws_error
        try:
            client.probe_websocket(self.settings.timeout)
            error = None
        except ComfyClusterError as exc:
            error = exc
        self.ws_checked_at = now
        return error

    def _node_classes(
        self, client: Any, prev: PollFacts, now: float
    ) -> tuple[Optional[frozenset], Optional[ComfyClusterError]]:
        """Fetch /object_info while classes are required and the cached list is stale."""
        classes = prev.classes
        if self.host.required and (
            classes is None
            or self.classes_at is None
            or now - self.classes_at >= self.settings.object_info_ttl
        ):
            try:
                classes = frozenset(client.object_info())
                self.classes_at = now
            except ComfyClusterError as exc:
                return classes, exc
        return classes, None
