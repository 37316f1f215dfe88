"""The cluster as one object: configured servers, their health, and the user's edits to them.

:class:`ClusterService` is what a Nuke session shares: the host layer owns exactly one (its render
node takes the server list and the health monitor from it, and reports each job's chunks into it)
and the server panel shows it. It owns one :class:`~comfy_cluster.core.health.HealthMonitor` and
the user config file; every edit is saved at once and the monitor is told about the new server
list. Pure core: no Qt, no ``nuke``.

Threads: any thread may call any method. Reads (:meth:`snapshot`, :meth:`servers`,
:meth:`active_jobs`) return cached values and never block on the network, so the Qt main thread
can call them on every timer tick. Edits take a lock, read and write the small user file, and
hand the new server list to the monitor; they never wait for a health check either.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, Union

from comfy_cluster.core.config.loading import (
    load_base_servers,
    load_servers,
    load_user_config,
    save_user_config,
    user_config_path,
)
from comfy_cluster.core.errors import ClosedError, ConfigError
from comfy_cluster.core.server import ServerConfig

log = logging.getLogger(__name__)

__all__ = ["ClusterService", "MonitorFactory", "MonitorLike"]


class MonitorLike(Protocol):
    """The part of ``HealthMonitor`` the service and its users (the render node) rely on; tests
    substitute a fake."""

    def start(self) -> Any: ...

    def close(self, timeout: float = 1.0) -> Any: ...

    def snapshot(self) -> Any: ...

    def poll_now(self) -> Any: ...

    def set_active(self, active: bool, who: str = ...) -> Any: ...

    def set_servers(self, servers: Sequence[ServerConfig]) -> Any: ...

    def require_classes(self, names: Iterable[str]) -> Any: ...


#: Builds a monitor for a server list; the service starts it and closes it.
MonitorFactory = Callable[[Sequence[ServerConfig]], MonitorLike]

#: The name panels hold the monitor active under (jobs use their own).
WATCHER = "panels"


def default_monitor_factory(servers: Sequence[ServerConfig]) -> MonitorLike:
    """A real :class:`~comfy_cluster.core.health.HealthMonitor` with its default client."""
    from comfy_cluster.core.health import HealthMonitor

    return HealthMonitor(tuple(servers))


class ClusterService:
    """Servers + health + user edits behind the small interface the panel needs.

    ``environ`` and ``user_path`` are read at construction (``COMFY_CLUSTER_CONFIG`` picks the
    user file, as everywhere else). Raises :class:`ConfigError` if the configuration is broken.
    Edits raise :class:`ConfigError` for an unknown server name or a bad value, and leave both
    the file and the running monitor untouched when they do. After :meth:`close`, edits raise
    :class:`ClosedError`; reads keep returning the last values.
    """

    def __init__(
        self,
        *,
        environ: Optional[Mapping[str, str]] = None,
        user_path: Union[str, Path, None] = None,
        monitor_factory: Optional[MonitorFactory] = None,
        start: bool = True,
    ) -> None:
        self._environ: Mapping[str, str] = dict(os.environ if environ is None else environ)
        self._user_path = (
            Path(user_path) if user_path is not None else user_config_path(self._environ)
        )
        self._monitor_factory = monitor_factory or default_monitor_factory
        self._lock = threading.RLock()
        self._servers = load_servers(self._environ, self._user_path)
        #: server -> {job key -> text}; insertion-ordered.
        self._jobs: dict[str, dict[str, str]] = {}
        self._watchers = 0
        self._closed = False
        self._started = False
        self._monitor = self._monitor_factory(self._servers)
        if start:
            self.start()

    # -- reads (cached, any thread) -------------------------------------------------------
    @property
    def user_path(self) -> Path:
        """The user config file edits are saved to."""
        return self._user_path

    @property
    def monitor(self) -> MonitorLike:
        """The health monitor (shared with anyone who needs the same snapshots)."""
        return self._monitor

    def servers(self) -> tuple[ServerConfig, ...]:
        """The configured servers, environment first, then those the user added."""
        return self._servers

    def snapshot(self) -> Any:
        """The monitor's latest :class:`~comfy_cluster.core.health.HealthSnapshot`."""
        return self._monitor.snapshot()

    def active_jobs(self) -> dict[str, str]:
        """Server name -> "job / chunk" text, as last reported with :meth:`report_job`."""
        with self._lock:
            return {server: "; ".join(per_job.values()) for server, per_job in self._jobs.items()}

    def report_job(self, server: str, text: Optional[str], *, job: str = "") -> None:
        """Record (or clear, with None/"") what ``server`` is working on for ``job``; any thread.

        Each ``job`` (any key, e.g. a job id) has its own entry per server, so one job clearing
        its text never wipes another's; :meth:`active_jobs` joins a server's entries with "; "
        in the order they were first reported.
        """
        with self._lock:
            per_job = self._jobs.get(server)
            if text:
                if per_job is None:
                    per_job = self._jobs[server] = {}
                per_job[job] = text
            elif per_job is not None:
                per_job.pop(job, None)
                if not per_job:
                    del self._jobs[server]

    def clear_job(self, job: str) -> None:
        """Clear everything reported under ``job`` (its end), on every server; any thread."""
        with self._lock:
            for server in list(self._jobs):
                per_job = self._jobs[server]
                per_job.pop(job, None)
                if not per_job:
                    del self._jobs[server]

    # -- polling -------------------------------------------------------------------------
    def poll_now(self) -> None:
        """Wake the poller to check every server soon; returns at once."""
        self._monitor.poll_now()

    def set_active(self, active: bool) -> None:
        """Count watchers (panels, running jobs): the monitor polls fast while any watch."""
        with self._lock:
            self._watchers = max(0, self._watchers + (1 if active else -1))
            if not self._closed:
                self._monitor.set_active(self._watchers > 0, WATCHER)

    # -- edits (saved to the user file at once) ------------------------------------------
    def set_enabled(self, name: str, enabled: bool) -> None:
        """Enable or disable ``name``."""
        self._edit(name, lambda cfg: cfg.set_enabled(name, enabled))

    def set_priority(self, name: str, priority: int) -> None:
        """Set the priority of ``name`` (1 = most preferred)."""
        self._edit(name, lambda cfg: cfg.set_priority(name, priority))

    def add_server(self, config: ServerConfig) -> None:
        """Add ``config``, replacing a server of the same name."""
        if not isinstance(config, ServerConfig):
            raise TypeError(f"add_server needs a ServerConfig, got {type(config).__name__}")
        self._edit(None, lambda cfg: cfg.add_server(config))

    def remove_server(self, name: str) -> None:
        """Remove ``name``; an environment server stays hidden until the user re-adds it."""
        self._edit(name, lambda cfg: cfg.remove_server(name))

    def reload(self) -> None:
        """Re-read the environment and user file (e.g. after editing the file by hand)."""
        with self._lock:
            self._check_open()
            self._apply(load_servers(self._environ, self._user_path))

    def _edit(self, name: Optional[str], change: Callable[[Any], Any]) -> None:
        with self._lock:
            self._check_open()
            if name is not None and all(s.name != name for s in self._servers):
                raise ConfigError(
                    f"no server named {name!r}", source=f"user file {self._user_path}", server=name
                )
            cfg = change(load_user_config(self._user_path))
            # Apply before writing: an edit that cannot be applied must not reach the file.
            servers = cfg.apply(load_base_servers(self._environ))
            save_user_config(cfg, self._user_path)
            self._apply(servers)

    def _apply(self, servers: tuple[ServerConfig, ...]) -> None:
        """Swap in a new server list and give the monitor the same list (lock held).

        ``set_servers`` only swaps pollers (stale ones are told to stop, never joined), so this
        does not wait for a health check.
        """
        if servers == self._servers:
            return
        self._servers = servers
        self._monitor.set_servers(servers)
        self._monitor.poll_now()

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the cluster service is closed")

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Start the monitor's poller threads (once; never waits on the network). Idempotent;
        does nothing after :meth:`close`. ``ClusterService(start=False)`` defers this, so
        building the service (reading the config) never starts threads by itself."""
        with self._lock:
            if self._started or self._closed:
                return
            self._started = True
            self._monitor.start()

    @property
    def started(self) -> bool:
        """True once the monitor was started."""
        return self._started

    def close(self, timeout: float = 1.0) -> None:
        """Stop the monitor's threads, waiting at most ``timeout`` for them; idempotent.

        The pollers are daemons, so a caller that must not wait (Nuke's main thread at quit)
        passes ``timeout=0``: they end on their own within one poll timeout.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            monitor = self._monitor
        monitor.close(timeout=timeout)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return self._closed

    def __enter__(self) -> ClusterService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
