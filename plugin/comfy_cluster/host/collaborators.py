"""What the render node needs from the engine and the cluster: the host layer's typed seams.

:class:`~comfy_cluster.host.render_node.RenderController` is handed its collaborators; it never
probes them. Each protocol below is the narrow part of a core object the Nuke layer actually
calls, so a test can stand in for the engine or the cluster with a few lines (nukeserversocket's
controller seam is the model: one small host boundary).

The real implementations, for reference:

* :class:`RenderScheduler` is ``core.engine.scheduler.Scheduler`` (``start`` returns a
  ``JobHandle``, which is a :class:`CancellableJob`);
* :class:`RenderCluster` is ``core.cluster.ClusterService`` (its ``monitor``, a ``HealthMonitor``,
  is the :class:`HealthHints`), or :class:`~comfy_cluster.host.session_cluster.FixedServers`
  when the session has no service;
* :class:`ClusterSource` is :class:`~comfy_cluster.host.session_cluster.SessionCluster`.

They live in ``host`` (not ``ui``) because the host uses them; imports flow core <- host <- ui.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Callable, Optional, Protocol

from comfy_cluster.core.engine.events import OnEvent
from comfy_cluster.core.engine.job import RenderJob
from comfy_cluster.core.server import ServerConfig

if TYPE_CHECKING:  # the scheduler module loads tenacity: not at Nuke start-up for a type name
    from comfy_cluster.core.engine.scheduler import InputHook

__all__ = [
    "CancellableJob",
    "ClusterSource",
    "HealthHints",
    "JobBoard",
    "RenderCluster",
    "RenderScheduler",
    "SchedulerFactory",
]


class CancellableJob(Protocol):
    """A started job, as the node holds it: all it ever does is ask it to stop."""

    def cancel(self) -> None:
        """Ask the job to stop; returns at once (its end arrives as an event)."""
        ...


class RenderScheduler(Protocol):
    """The engine, as the render node drives it."""

    def start(
        self,
        job: RenderJob,
        on_event: Optional[OnEvent] = None,
        *,
        wait_for_input: Optional[InputHook] = None,
    ) -> CancellableJob:
        """Start ``job`` and return at once. ``wait_for_input(frame, timeout) -> ready`` lets it
        render the first chunks while the node is still exporting later input frames."""
        ...


class HealthHints(Protocol):
    """What the node tells the health monitor while its jobs run (hints: they never fail it)."""

    def set_active(self, active: bool, who: str = ...) -> None:
        """Poll fast while ``who`` (a job id) runs; slow again when it stops."""
        ...

    def require_classes(self, names: Iterable[str]) -> None:
        """Node classes every server must offer (a server missing one is degraded)."""
        ...


#: Builds a scheduler for a server list and the health monitor it should consult (None: none).
SchedulerFactory = Callable[[Sequence[ServerConfig], Optional[HealthHints]], RenderScheduler]


class JobBoard(Protocol):
    """The server panel's Job column: what each server is doing for which job. Any thread."""

    def report_job(self, server: str, text: Optional[str], *, job: str = "") -> None:
        """Show ``text`` for ``job`` on ``server`` ("" or None clears it)."""
        ...

    def clear_job(self, job: str) -> None:
        """Clear everything shown for ``job`` (it ended)."""
        ...


class RenderCluster(JobBoard, Protocol):
    """The servers a render may use, their health, and the Job column. Main thread, except the
    :class:`JobBoard` methods (scheduler threads report chunks)."""

    @property
    def monitor(self) -> Optional[HealthHints]:
        """The health monitor the scheduler consults (None: no health checks)."""
        ...

    def servers(self) -> Sequence[ServerConfig]:
        """The configured servers, enabled or not (cached: never waits on the network)."""
        ...

    def reload(self) -> None:
        """Re-read the configuration (panel or hand edits apply to the next render)."""
        ...


class ClusterSource(Protocol):
    """Where the render node gets its cluster each time it needs one. Main thread."""

    def render_cluster(self, *, start: bool) -> RenderCluster:
        """The cluster now. ``start``: a render needs health, so its pollers must run; without
        it (a knob refresh at script load) nothing may start a thread. Raises ``ConfigError``
        when the configuration is broken."""
        ...
