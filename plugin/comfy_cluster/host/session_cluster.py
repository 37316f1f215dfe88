"""The Nuke session's one cluster service, built on first use and closed once, and its stand-in.

:class:`SessionCluster` is the render node's
:class:`~comfy_cluster.host.collaborators.ClusterSource`. It owns the session's
:class:`~comfy_cluster.core.cluster.ClusterService` (configured servers, their health monitor,
the Job column), which the server panel shows too:

* built lazily by :meth:`SessionCluster.service`, never at install: reading the configuration is
  cheap, so a knob refresh (``onCreate`` at script load) may *build* it, but its poller threads
  *start* only when a render or a panel needs health. Nothing here waits on the network;
* closed by :meth:`SessionCluster.shutdown` (Nuke quitting, the host uninstall). An ``atexit``
  hook registered when the service is built does the same in sessions without Qt. The pollers
  are daemons, so this only stops them cleanly. After shutdown no new service is built.

When there is no service (a test gave a fixed server list, or the session shut down) the render
node still gets a cluster: :class:`FixedServers`, a plain server list with no health checks and
no Job column. So the controller has one source of servers whatever the session holds.
"""

from __future__ import annotations

import atexit
import logging
from collections.abc import Sequence
from typing import Callable, Optional

from comfy_cluster.core.cluster import ClusterService
from comfy_cluster.core.server import ServerConfig
from comfy_cluster.host.collaborators import HealthHints, RenderCluster

__all__ = ["FixedServers", "ServerList", "ServiceFactory", "SessionCluster"]

_log = logging.getLogger(__name__)

#: Returns the configured servers (read at each call, so edits apply).
ServerList = Callable[[], Sequence[ServerConfig]]
#: Builds the session's cluster service (tests build one over sims with fast polls).
ServiceFactory = Callable[[], ClusterService]


class FixedServers:
    """A cluster that is only a server list: no health monitor, and a Job column nobody shows.

    ``servers()`` calls ``source`` every time, so it is as fresh as the source (for
    ``load_servers``: the environment and the user file as they are now).
    """

    def __init__(self, source: ServerList) -> None:
        self._source = source

    @property
    def monitor(self) -> Optional[HealthHints]:
        return None

    def servers(self) -> Sequence[ServerConfig]:
        return tuple(self._source())

    def reload(self) -> None:
        """Nothing to re-read: :meth:`servers` reads its source at every call."""

    def report_job(self, server: str, text: Optional[str], *, job: str = "") -> None:
        """No panel shows this cluster's jobs."""

    def clear_job(self, job: str) -> None:
        """No panel shows this cluster's jobs."""


class SessionCluster:
    """Owns the session's cluster service; hands the render node a cluster. Main thread.

    ``factory`` None: the session has no service, and :meth:`render_cluster` is always
    ``without_service``; so it is too after :meth:`shutdown`.
    """

    def __init__(self, factory: Optional[ServiceFactory], without_service: FixedServers) -> None:
        self._factory = factory
        self._without_service = without_service
        self._service: Optional[ClusterService] = None
        self._shut_down = False
        self._atexit = False

    def service(self, start: bool = True) -> Optional[ClusterService]:
        """The session's service, built on first use; None when there is none (no factory, or
        after :meth:`shutdown`). ``start``: also start its health pollers (returns at once).

        Raises what the factory raises (``ConfigError`` for a broken configuration); a failed
        build is retried on the next call.
        """
        if self._shut_down or self._factory is None:
            return None
        service = self._service
        if service is None:
            service = self._service = self._factory()
            if not self._atexit:
                atexit.register(self.shutdown)
                self._atexit = True
        if start:
            service.start()
        return service

    def peek(self) -> Optional[ClusterService]:
        """The service if it was built (started or not), else None; never builds one."""
        return self._service

    def render_cluster(self, *, start: bool) -> RenderCluster:
        """The service, or the plain server list when there is none (see the class)."""
        service = self.service(start)
        return service if service is not None else self._without_service

    def shutdown(self) -> None:
        """Close the service (its health threads end) and build no new one. Idempotent.

        Never waits for the pollers: they are daemons and end on their own within one poll
        timeout, so quitting Nuke is not held up by a dead server.
        """
        self._shut_down = True
        service, self._service = self._service, None
        if service is not None:
            try:
                service.close(timeout=0.0)
            except Exception:  # quitting: report, never raise
                _log.exception("comfy_cluster: closing the cluster service failed")

    def close(self) -> None:
        """:meth:`shutdown` for good: also drop the ``atexit`` hook (the host uninstall)."""
        self.shutdown()
        if self._atexit:
            atexit.unregister(self.shutdown)
            self._atexit = False
