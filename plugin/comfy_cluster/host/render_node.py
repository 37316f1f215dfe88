"""The ComfyClusterRender node's behaviour: render, cancel, knob refresh, the job registry.

:class:`RenderController` is created by the host install (one per Nuke session) and reached from
the gizmo's buttons and the node callbacks. Its public methods run on the **main thread**; the
scheduler's worker threads only ever see node *names*, a :class:`JobMonitor` and the
:class:`~comfy_cluster.host.dispatch.Dispatcher`.

Render, step by step:

1. main thread: read and check the knobs, resolve the frame range and the servers;
2. an :class:`~comfy_cluster.host.export.InputExporter` thread asks the main thread to write the
   input frames batch by batch (temporary Write + ``nuke.execute``);
3. the scheduler starts at once with a ``wait_for_input`` hook, so the first chunks render while
   later input frames are still being exported (an injected scheduler without that keyword is
   started only once every input frame is written). It renders on its
   worker threads; every event becomes coalesced knob updates
   (``cc_progress``, ``cc_status``) through the dispatcher; the end of the job is posted once;
4. GUI: the button returns at once. Terminal (``nuke -t``): the button blocks, draining the
   dispatcher's queue (export batches, knob updates, progress lines) until the job ends.

Jobs are keyed by node name. A node renamed while it renders (knobChanged on its ``name`` knob)
takes its job along (:meth:`RenderController.job_for`, :meth:`RenderController.rename_job`): the
registry entry, the monitor, the dispatcher's pending knob updates and the exporter move to the
new name on the main thread, and the job keeps running.

The cluster service (``core.cluster.ClusterService``, one per Nuke session, owned by the host
session and shown by the server panel) is where the servers and their health come from:

* each render re-reads the service's server list (``reload()``: panel edits, hand edits of the
  user file) and uses only its enabled servers;
* the scheduler gets the service's ``HealthMonitor`` as ``health=``, so servers the monitor sees
  offline, disabled or degraded get no new work (a black-holed server costs nothing);
* while a job runs (export included) the monitor is held active (fast polls) under the job id,
  and ``require_classes`` holds the node classes of every running job's workflow, so a server
  missing one is degraded and skipped;
* the job monitor reports each server's current chunks into the service (``report_job``, from
  the scheduler's threads) and clears them when the job ends: the panel's Job column.
"""

from __future__ import annotations

import inspect
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from comfy_cluster.core.engine.events import (
    ChunkAssigned,
    ChunkRetried,
    FrameWritten,
    JobCancelled,
    JobDone,
    JobEvent,
    JobFailed,
    JobStarted,
    ServerBlocklisted,
)
from comfy_cluster.core.formatting import duration_text
from comfy_cluster.core.frames import FrameRange, frames_text, has_frame_token
from comfy_cluster.core.server import ServerConfig
from comfy_cluster.host import knobs as K
from comfy_cluster.host.dispatch import Dispatcher
from comfy_cluster.host.export import InputExporter

__all__ = [
    "JobMonitor",
    "JobRegistry",
    "RenderController",
    "RenderSettingsError",
    "format_status",
    "server_menu",
]

_log = logging.getLogger(__name__)

#: Returns the configured servers (``load_servers`` by default; tests inject sims).
ServerSource = Callable[[], Sequence[ServerConfig]]
#: Builds a scheduler: ``factory(servers, health=monitor) -> Scheduler``; a factory without a
#: ``health`` parameter is called as ``factory(servers)``.
SchedulerFactory = Callable[..., Any]
#: The session's cluster service: ``cluster(start) -> ClusterService | None`` (``start``: with its
#: health pollers running). None: no service (servers injected by a test, or shut down).
ClusterSource = Callable[[bool], Any]


class RenderSettingsError(ValueError):
    """A knob value that makes rendering impossible; the message names the knob."""


# -- pure helpers (any thread) -------------------------------------------------------------------


def format_status(done: int, total: int, servers: Sequence[str], eta: Optional[float]) -> str:
    """The one-line running status: ``"4/10 frames | sim1, sim2 | ETA 12s"``."""
    parts = [f"{done}/{total} frames"]
    if servers:
        parts.append(", ".join(sorted(servers)))
    if eta is not None and eta >= 0:
        parts.append(f"ETA {duration_text(eta)}")
    return " | ".join(parts)


def server_menu(choice: str, names: Sequence[str]) -> tuple[list[str], str]:
    """Menu items and the item to select for a saved ``choice`` and the live server ``names``.

    A choice that is no longer configured stays visible as ``"<name> (missing)"`` rather than
    silently becoming another server.
    """
    items = [K.AUTO, *names]
    choice = choice or K.AUTO
    if choice in items:
        return items, choice
    missing = f"{choice}{K.MISSING_SUFFIX}"
    return [*items, missing], missing


def choice_from_item(item: str) -> str:
    """The server name an enumeration item stands for (``"x (missing)"`` -> ``"x"``)."""
    if item.endswith(K.MISSING_SUFFIX):
        return item[: -len(K.MISSING_SUFFIX)]
    return item or K.AUTO


# -- per-job state -------------------------------------------------------------------------------


@dataclass
class RunningJob:
    """One node's running job: export, then (or meanwhile) the scheduler. Any thread.

    The input export runs first; the scheduler is started when the exporter has written every
    frame, or at once when the scheduler can wait for each input frame itself (``wait_for_input``).
    ``cancel`` works in every phase: before the scheduler started it ends the export and reports
    ``JobCancelled`` itself; afterwards the scheduler does.
    """

    node_name: str
    job: Any
    monitor: JobMonitor
    exporter: InputExporter
    temp_dir: Optional[str]
    scheduler: Any = None
    handle: Any = None
    #: The health monitor held active for this job (None without a cluster service).
    health: Any = None
    #: Node classes this job's workflow needs (``require_classes`` while it runs).
    classes: frozenset = frozenset()
    #: Set once the node is deleted: the end of the job must not touch it.
    node_gone: bool = False
    finished: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _cancelled: bool = False

    def start_scheduler(self, **hooks: Any) -> None:
        """Hand the job to the scheduler (exporter thread or main thread)."""
        with self._lock:
            if self._cancelled:
                start = False
            else:
                start = True
                try:
                    self.handle = self.scheduler.start(self.job, self.monitor.on_event, **hooks)
                except Exception as exc:
                    self.monitor.fail(f"could not start: {exc}")
                    return
        if not start:
            self.monitor.cancelled()

    def inputs_finished(self, error: Optional[BaseException], stopped: bool, start: bool) -> None:
        """The exporter's end (exporter thread): fail, cancel, or start the scheduler."""
        if error is not None:
            self.monitor.fail(f"writing the input frames failed: {error}")
            self.cancel()
        elif stopped:
            with self._lock:
                handle = self.handle
            if handle is None:
                self.monitor.cancelled()
        elif start:
            self.start_scheduler()

    def cancel(self) -> None:
        """Ask the job to stop; returns at once (the end is reported by an event)."""
        with self._lock:
            self._cancelled = True
            handle = self.handle
        self.exporter.stop()
        if handle is not None:
            handle.cancel()


class JobRegistry:
    """Running jobs by node name, one per node. Owned by the host session, never a global.

    Main thread mutates it; ``get``/``names`` may be read from any thread (they take the lock).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, RunningJob] = {}

    def add(self, record: RunningJob) -> None:
        with self._lock:
            self._jobs[record.node_name] = record

    def get(self, node_name: str) -> Optional[RunningJob]:
        with self._lock:
            return self._jobs.get(node_name)

    def pop(self, node_name: str, record: Optional[RunningJob] = None) -> Optional[RunningJob]:
        """Remove ``node_name``'s job (only if it is ``record``, when given)."""
        with self._lock:
            current = self._jobs.get(node_name)
            if current is None or (record is not None and current is not record):
                return None
            return self._jobs.pop(node_name)

    def rename(self, old_name: str, new_name: str) -> Optional[RunningJob]:
        """Move ``old_name``'s job to ``new_name`` (its node was renamed); sets the record's
        ``node_name``. Returns the record, None if there was none. Main thread; ``new_name``
        must be free (the controller retires a stale occupant first)."""
        with self._lock:
            record = self._jobs.pop(old_name, None)
            if record is None:
                return None
            if new_name in self._jobs:
                self._jobs[old_name] = record
                raise KeyError(f"{new_name} already has a job")
            record.node_name = new_name
            self._jobs[new_name] = record
            return record

    def names(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._jobs)

    def all(self) -> tuple[RunningJob, ...]:
        with self._lock:
            return tuple(self._jobs.values())


class JobMonitor:
    """Turns one job's events into knob updates; runs on the scheduler's threads.

    Holds only the node *name*. Non-final events become coalesced ``set_knob_later`` calls; in
    terminal mode a progress line is posted every 10 % or per finished chunk. The final event is
    posted once to ``on_end`` (main thread); events after it are ignored so a late progress
    update can never overwrite the final status.

    ``cluster`` (optional, a ``ClusterService``): each server's chunks of this job are reported
    with ``report_job(server, text, job=job_id)`` as they are assigned and delivered, and all of
    them are cleared at the final event. Reports are made under this monitor's lock, so they
    reach the service in event order; the service's own lock is a leaf (it calls nothing back).
    """

    def __init__(
        self,
        node_name: str,
        dispatcher: Dispatcher,
        total: int,
        on_end: Callable[[str, JobEvent], None],
        *,
        print_line: Optional[Callable[[str], None]] = None,
        job_id: str = "",
        cluster: Any = None,
    ) -> None:
        self.node_name = node_name
        self.job_id = job_id
        self._cluster = cluster
        #: server -> chunk index -> (assigned frames, frames not delivered yet).
        self._chunks: dict[str, dict[int, tuple[tuple[int, ...], set[int]]]] = {}
        self._dispatcher = dispatcher
        self._on_end = on_end
        self._print_line = print_line
        self._lock = threading.Lock()
        self.total = total
        self.done = 0
        self._busy: dict[str, int] = {}
        self._ended = False
        self._last_decile = -1
        self.last_status = ""

    @property
    def ended(self) -> bool:
        with self._lock:
            return self._ended

    def on_event(self, event: JobEvent) -> None:
        """The scheduler's ``on_event`` callback. Any thread; never touches Nuke."""
        with self._lock:
            if self._ended:
                return
            if isinstance(event, (JobDone, JobFailed, JobCancelled)):
                self._ended = True
                final = True
                self._clear_reports_locked()
            else:
                final = False
                self._track(event)
                self._report(self._track_chunks(event))
                status = format_status(self.done, self.total, list(self._busy), event.eta_seconds)
                self.last_status = status
                line = self._progress_line(event, status)
                # Handed over under the lock: an update computed before the final event must
                # reach the dispatcher before the end is posted, or it would land after the
                # end's discard() and overwrite the final status. (The dispatcher never calls
                # back into this monitor: on the main thread it only sets knobs or prints.)
                self._dispatcher.set_knob_later(
                    self.node_name, K.PROGRESS, _percent(event.progress)
                )
                self._dispatcher.set_knob_later(self.node_name, K.STATUS, status)
                if line is not None and self._print_line is not None:
                    self._dispatcher.post(self._print_line, line)
        if final:
            # Outside the lock: on the main thread the end runs at once and reads this monitor.
            # The node name is read when the end runs (main thread), not now: a rename between
            # the post and the run must not send the end to the old name.
            self._dispatcher.post(self._end, event)

    def _end(self, event: JobEvent) -> None:
        """Main thread: hand the final event to ``on_end`` under the node's current name."""
        with self._lock:
            name = self.node_name
        self._on_end(name, event)

    def rename(self, node_name: str, *, report: bool = True) -> None:
        """The node was renamed: every later update goes to ``node_name``. Main thread.

        Taken under the lock, so an update being handed to the dispatcher under the old name
        finishes first (the caller then re-keys the dispatcher's pending updates). ``report``:
        the Job column's text, which shows the node name, is reported again.
        """
        with self._lock:
            self.node_name = node_name
            if report and not self._ended:
                self._report([server for server, chunks in self._chunks.items() if chunks])

    def fail(self, message: str) -> None:
        """Report a failure found outside the scheduler (export, start). Any thread."""
        self.on_event(
            JobFailed(job_id=self.job_id, progress=0.0, eta_seconds=None, message=message)
        )

    def cancelled(self) -> None:
        """Report a cancel that happened before the scheduler ran. Any thread."""
        self.on_event(JobCancelled(job_id=self.job_id, progress=0.0, eta_seconds=None))

    def _track(self, event: JobEvent) -> None:
        # A server is "in use" while it holds frames it has not delivered yet.
        busy = self._busy
        if isinstance(event, JobStarted):
            self.total = event.total_frames or self.total
        elif isinstance(event, ChunkAssigned):
            busy[event.server] = busy.get(event.server, 0) + len(event.frames)
        elif isinstance(event, FrameWritten):
            self.done += 1
            self._release(event.server, 1)
        elif isinstance(event, ChunkRetried):
            self._release(event.server, len(event.frames) or busy.get(event.server, 0))
        elif isinstance(event, ServerBlocklisted):
            busy.pop(event.server, None)

    # -- the cluster service's Job column (called with the lock held) --------------------------

    def _track_chunks(self, event: JobEvent) -> tuple[str, ...]:
        """Update which chunks each server holds; returns the servers whose text changed."""
        chunks = self._chunks
        if isinstance(event, ChunkAssigned):
            frames = tuple(event.frames)
            chunks.setdefault(event.server, {})[event.chunk_index] = (frames, set(frames))
            return (event.server,)
        if isinstance(event, FrameWritten):
            held = chunks.get(event.server, {})
            for index, (_, left) in list(held.items()):
                if event.frame in left:
                    left.discard(event.frame)
                    if not left:
                        del held[index]
                        return (event.server,)
            return ()
        if isinstance(event, ChunkRetried):
            if chunks.get(event.server, {}).pop(event.chunk_index, None) is not None:
                return (event.server,)
            return ()
        if isinstance(event, ServerBlocklisted):
            return (event.server,) if chunks.pop(event.server, None) else ()
        return ()

    def job_text(self, server: str) -> str:
        """What this job has on ``server``: ``"Render1 chunk 2 (5-8)"`` ("" for nothing)."""
        held = self._chunks.get(server)
        if not held:
            return ""
        parts = [
            f"chunk {index + 1} ({frames_text(frames)})"
            for index, (frames, _) in sorted(held.items())
        ]
        return f"{self.node_name} " + ", ".join(parts)

    def _report(self, servers: Sequence[str]) -> None:
        if self._cluster is None:
            return
        for server in servers:
            try:
                self._cluster.report_job(server, self.job_text(server), job=self.job_id)
            except Exception:  # the panel's column is cosmetic: never break the job
                _log.debug("comfy_cluster: report_job failed", exc_info=True)

    def clear_reports(self) -> None:
        """Clear this job's Job-column text on every server. Any thread."""
        with self._lock:
            self._clear_reports_locked()

    def _clear_reports_locked(self) -> None:
        held = [server for server, chunks in self._chunks.items() if chunks]
        self._chunks.clear()
        if self._cluster is None:
            return
        clear_job = getattr(self._cluster, "clear_job", None)
        if callable(clear_job):
            try:
                clear_job(self.job_id)
            except Exception:
                _log.debug("comfy_cluster: clear_job failed", exc_info=True)
        else:  # a service with report_job only: clear what this job still shows
            self._report(held)

    def _release(self, server: str, frames: int) -> None:
        left = self._busy.get(server, 0) - frames
        if left > 0:
            self._busy[server] = left
        else:
            self._busy.pop(server, None)

    def _progress_line(self, event: JobEvent, status: str) -> Optional[str]:
        """A terminal progress line at each new 10 % step (never one per frame)."""
        if self._print_line is None:
            return None
        decile = int(event.progress * 10 + 1e-9)
        if isinstance(event, JobStarted):
            self._last_decile = 0
            return f"{self.node_name}: started, {self.total} frames on {', '.join(event.servers)}"
        if decile > self._last_decile and isinstance(event, FrameWritten):
            self._last_decile = decile
            return f"{self.node_name}: {_percent(event.progress):.0f}% {status}"
        return None


def _percent(progress: float) -> float:
    return round(max(0.0, min(1.0, float(progress))) * 100.0, 1)


# -- the controller ------------------------------------------------------------------------------


class RenderController:
    """Render/cancel/refresh for every ComfyClusterRender node of one Nuke session.

    Every public method: main thread only. Servers come from ``servers()`` when given (tests),
    else from the session's cluster service (``cluster(start)``), else from
    ``fallback_servers()`` (no service: shut down). ``scheduler_factory(servers, health=...)``
    builds a scheduler (tests inject short timeouts).
    """

    def __init__(
        self,
        nuke: Any,
        dispatcher: Dispatcher,
        servers: Optional[ServerSource],
        scheduler_factory: SchedulerFactory,
        *,
        export_batch: int = 4,
        temp_root: Optional[str] = None,
        cluster: Optional[ClusterSource] = None,
        fallback_servers: Optional[ServerSource] = None,
    ) -> None:
        self._nuke = nuke
        self._dispatcher = dispatcher
        self._servers = servers
        self._scheduler_factory = scheduler_factory
        self._export_batch = export_batch
        self._temp_root = temp_root
        #: The session's cluster service source (set by the host install).
        self.cluster: Optional[ClusterSource] = cluster
        self._fallback_servers = fallback_servers
        self.jobs = JobRegistry()
        self._scheduler: Optional[tuple[tuple[ServerConfig, ...], Any, Any]] = None

    # -- servers and health ---------------------------------------------------------------------

    def configured(self, *, render: bool = False) -> tuple[tuple[ServerConfig, ...], Any]:
        """(configured servers, cluster service or None). Main thread; never waits on the network.

        ``render``: the service's pollers are started and its list is re-read from the user
        file first (``reload``), so any edit, the panel's or by hand, applies to this render.
        Without it (knob refreshes at script load) the service is built but starts no thread.
        """
        service = self.cluster(render) if self.cluster is not None else None
        if self._servers is not None:
            return tuple(self._servers()), service
        if service is not None:
            if render:
                reload = getattr(service, "reload", None)
                if callable(reload):
                    reload()
            return tuple(service.servers()), service
        if self._fallback_servers is not None:
            return tuple(self._fallback_servers()), None
        return (), None

    # -- server knob ----------------------------------------------------------------------------

    def server_names(self) -> list[str]:
        """Names of the configured, enabled servers; [] when the configuration is broken."""
        try:
            return [s.name for s in self.configured()[0] if s.enabled]
        except Exception as exc:  # ConfigError: the status line of a render reports it
            _log.warning("comfy_cluster: cannot read the server list: %s", exc)
            return []

    def refresh_server_knob(self, node: Any, names: Optional[Sequence[str]] = None) -> None:
        """Rebuild ``cc_server``'s items from the live list, keep the saved choice. Idempotent."""
        knob = node.knob(K.SERVER)
        choice_knob = node.knob(K.SERVER_CHOICE)
        if knob is None or choice_knob is None:
            return
        choice = choice_knob.value() or K.AUTO
        items, selected = server_menu(choice, self.server_names() if names is None else names)
        if list(knob.values()) != items:
            knob.setValues(items)
        if knob.value() != selected:
            knob.setValue(selected)

    # -- callbacks ------------------------------------------------------------------------------

    def on_create(self, node: Any) -> None:
        """onCreate (create, script load, paste): only idempotent refreshes, no prompts."""
        self.refresh_server_knob(node)

    def on_knob_changed(self, node: Any, knob: Any) -> None:
        """knobChanged: follow a rename; remember the server choice; refresh the menu when the
        panel opens."""
        name = knob.name()
        if name == "name":
            # Nuke fires knobChanged with the "name" knob after a rename: move the node's running
            # job (registry, monitor, pending knob updates, exporter) to the new name.
            self.job_for(node, renamed=True)
        elif name == K.SERVER:
            choice = choice_from_item(knob.value())
            choice_knob = node.knob(K.SERVER_CHOICE)
            if choice_knob is not None and choice_knob.value() != choice:
                choice_knob.setValue(choice)
        elif name == "showPanel":
            self.job_for(node)
            self.refresh_server_knob(node)
        elif name == K.FRAMES:
            text = node.knob(K.FRAMES).value().strip()
            if text:
                try:
                    self._set_read_range(node, FrameRange.parse(text))
                except ValueError:
                    pass  # reported when the user presses Render

    def on_destroy(self, node: Any) -> None:
        """onDestroy: a deleted node cancels its job; the job's end then touches nothing."""
        record = self.job_for(node)
        if record is not None:
            record.node_gone = True
            record.cancel()

    # -- buttons --------------------------------------------------------------------------------

    def render(self, node: Any) -> None:
        """The Render button. GUI: starts the job and returns. Terminal: blocks until it ends."""
        name = node.fullName()
        if self.job_for(node) is not None:
            self._report(name, f"{name} is already rendering; cancel it first", error=False)
            return
        try:
            record = self._start(node)
        except Exception as exc:
            self._fail(name, str(exc) or type(exc).__name__)
            return
        if not self._dispatcher.gui:
            self._dispatcher.run_until(record.finished.is_set)

    def cancel(self, node: Any) -> None:
        """The Cancel button: stop the node's job (prompts are removed from the servers)."""
        record = self.job_for(node)
        if record is None:
            return
        node.knob(K.STATUS).setValue(f"Cancelling... {record.monitor.last_status}".strip())
        record.cancel()

    def cancel_all(self) -> None:
        """Cancel every running job (uninstall, quit). Main thread."""
        for record in self.jobs.all():
            record.cancel()

    # -- renames --------------------------------------------------------------------------------

    def job_for(self, node: Any, *, renamed: bool = False) -> Optional[RunningJob]:
        """``node``'s running job, following a rename the registry has not seen yet. Main thread.

        Jobs are keyed by node name and Nuke does not say what a renamed node was called, so a
        job whose name no longer resolves to a node (and whose node was not deleted) is an
        orphan, and the renamed node adopts it: its registry entry, monitor, pending knob
        updates and exporter move to the new name (:meth:`rename_job`), and the job keeps
        running. ``renamed`` (the node's "name" knob changed): an orphan in the same group is
        this node's; if several are, the one writing this node's Output. Otherwise (Render,
        Cancel, delete, panel open: a rename we did not see, e.g. of an enclosing Group) the
        orphan must also write this node's Output. Ambiguous: nothing is adopted. A job still
        registered under this node's name whose node was deleted (its cancel has not ended) is
        moved out of the way first: this node only took the name.
        """
        name = node.fullName()
        record = self.jobs.get(name)
        if record is not None and record.node_gone:
            # A deleted node's job, still cancelling: this node only took its name.
            self._retire(record)
            record = None
        if record is not None or not self.jobs.names():
            return record
        orphans = [
            r for r in self.jobs.all() if not r.node_gone and self._nuke.toNode(r.node_name) is None
        ]
        if not orphans:
            return None
        parent, _, leaf = name.rpartition(".")
        output = _knob_text(node, K.OUTPUT)
        if renamed:
            candidates = [r for r in orphans if r.node_name.rpartition(".")[0] == parent]
            if len(candidates) > 1:
                candidates = [r for r in candidates if r.job.output_pattern == output]
        else:
            candidates = [
                r
                for r in orphans
                if r.job.output_pattern == output
                and (
                    r.node_name.rpartition(".")[0] == parent
                    or r.node_name.rpartition(".")[2] == leaf
                )
            ]
        if len(candidates) != 1:
            if candidates:
                _log.warning(
                    "comfy_cluster: cannot tell which running job %s is (%s)",
                    name,
                    ", ".join(r.node_name for r in candidates),
                )
            return None
        record = candidates[0]
        self.rename_job(record.node_name, name)
        return record

    def rename_job(self, old_name: str, new_name: str) -> Optional[RunningJob]:
        """Move the job of node ``old_name`` to ``new_name``; it keeps running. Main thread.

        Order matters: the monitor switches names under its lock first (so no worker hands the
        dispatcher another update under the old name), then the dispatcher's pending updates
        are re-keyed, then the exporter's later batches resolve the new name. The job's end,
        posted by the monitor, reads the name when it runs, so it lands on the renamed node even
        if it was queued before the rename. A stale job still registered under ``new_name`` (its
        node was deleted and its cancel has not ended yet) is first moved to a name no node can
        have, so its end still finds it and touches nothing.
        """
        if old_name == new_name:
            return self.jobs.get(new_name)
        record = self.jobs.get(old_name)
        if record is None:
            return None
        occupant = self.jobs.get(new_name)
        if occupant is not None:
            self._retire(occupant)
        self._move_job(record, new_name)
        return record

    def _retire(self, record: RunningJob) -> None:
        """Move a job whose node is gone (or unknown) out of the way of a live node's name."""
        self._move_job(record, f"{_RETIRED_PREFIX}{record.job.job_id}", report=False)

    def _move_job(self, record: RunningJob, new_name: str, *, report: bool = True) -> None:
        old_name = record.node_name
        self.jobs.rename(old_name, new_name)
        record.monitor.rename(new_name, report=report)
        self._dispatcher.rename(old_name, new_name)
        record.exporter.rename(new_name)

    # -- internals ------------------------------------------------------------------------------

    def _settings(self, node: Any) -> dict[str, Any]:
        workflow = node.knob(K.WORKFLOW).value().strip()
        output = node.knob(K.OUTPUT).value().strip()
        if not workflow:
            raise RenderSettingsError("Workflow (cc_workflow) is empty: pick a workflow JSON file")
        if not os.path.isfile(workflow):
            raise RenderSettingsError(f"Workflow file not found: {workflow}")
        if not output:
            raise RenderSettingsError("Output (cc_output) is empty: e.g. /renders/shot.####.png")
        if not has_frame_token(output):
            raise RenderSettingsError(f"Output (cc_output) has no frame number (####): {output}")
        source = node.input(0)
        if source is None:
            raise RenderSettingsError("Nothing is connected to the input")
        text = node.knob(K.FRAMES).value().strip()
        if text:
            frames = FrameRange.parse(text)
        else:
            frames = FrameRange.from_bounds(int(source.firstFrame()), int(source.lastFrame()))
        chunk_size = int(node.knob(K.CHUNK_SIZE).value())
        if chunk_size < 0:
            raise RenderSettingsError("Chunk size must be 0 (automatic) or more")
        existing_knob = node.knob(K.EXISTING)
        existing_item = existing_knob.value() if existing_knob is not None else ""
        existing = K.EXISTING_MODES.get(existing_item or K.EXISTING_OVERWRITE)
        if existing is None:
            raise RenderSettingsError(f"Existing frames (cc_existing) is unknown: {existing_item}")
        return {
            "workflow": workflow,
            "output": output,
            "frames": frames,
            "mode": node.knob(K.MODE).value() or "frame",
            "chunk_size": chunk_size,
            "strategy": node.knob(K.STRATEGY).value() or "fastest",
            "existing": existing,
        }

    def _choose_servers(
        self, node: Any
    ) -> tuple[list[ServerConfig], Optional[tuple[str, ...]], Any]:
        servers, service = self.configured(render=True)
        configured = [s for s in servers if s.enabled]
        self.refresh_server_knob(node, [s.name for s in configured])
        choice = node.knob(K.SERVER_CHOICE).value() or K.AUTO
        if not configured:
            raise RenderSettingsError(
                "No ComfyUI server is configured and enabled (NUKE_COMFYUI_SERVERS, server panel)"
            )
        if choice == K.AUTO:
            return configured, None, service
        if all(s.name != choice for s in configured):
            raise RenderSettingsError(f"Server {choice} is not configured any more (missing)")
        return configured, (choice,), service

    def _start(self, node: Any) -> RunningJob:
        from comfy_cluster.core.engine.job import RenderJob

        name = node.fullName()
        settings = self._settings(node)
        servers, allow, service = self._choose_servers(node)
        health = getattr(service, "monitor", None) if service is not None else None
        frames: FrameRange = settings["frames"]
        temp_dir = tempfile.mkdtemp(prefix="comfy_cluster_in_", dir=self._temp_root)
        input_pattern = os.path.join(temp_dir, name.replace(".", "_") + ".####.png")
        job = RenderJob(
            settings["workflow"],
            frames,
            settings["output"],
            input_pattern=input_pattern,
            mode=settings["mode"],
            chunk_size=settings["chunk_size"],
            strategy=settings["strategy"],
            servers=allow,
            existing=settings["existing"],
        )
        self._set_read_range(node, frames)
        node.knob(K.PROGRESS).setValue(0.0)
        node.knob(K.STATUS).setValue(f"0/{len(frames)} frames | writing input frames")
        node.knob(K.TILE_COLOR).setValue(K.COLOR_RUNNING)
        monitor = JobMonitor(
            name,
            self._dispatcher,
            len(frames),
            self._finish,
            print_line=None if self._dispatcher.gui else self._print,
            job_id=job.job_id,
            cluster=service,
        )
        try:
            scheduler = self._scheduler_for(servers, health)
        except BaseException:
            shutil.rmtree(temp_dir, ignore_errors=True)
            raise
        hook = _input_hook(scheduler)
        exporter = InputExporter(
            self._nuke,
            self._dispatcher,
            name,
            tuple(frames),
            input_pattern,
            batch_size=self._export_batch,
            on_end=lambda error, stopped: record.inputs_finished(error, stopped, hook is None),
        )
        record = RunningJob(
            name,
            job,
            monitor,
            exporter,
            temp_dir,
            scheduler=scheduler,
            health=health,
            classes=_workflow_classes(settings["workflow"]) if health is not None else frozenset(),
        )
        self.jobs.add(record)
        self._hold_health(record)
        if hook is not None:
            # The scheduler waits for each input frame itself: render while exporting.
            record.start_scheduler(**{hook: exporter.wait_for})
        exporter.start()
        return record

    def _scheduler_for(self, servers: Sequence[ServerConfig], health: Any = None) -> Any:
        """One scheduler per server list (and health monitor), reused across renders so its
        measured server speeds carry over; a new list (servers edited) gets a new scheduler."""
        key = tuple(servers)
        cached = self._scheduler
        if cached is None or cached[0] != key or cached[1] is not health:
            if health is not None and _accepts(self._scheduler_factory, "health"):
                scheduler = self._scheduler_factory(key, health=health)
            else:
                scheduler = self._scheduler_factory(key)
            cached = self._scheduler = (key, health, scheduler)
        return cached[2]

    def _hold_health(self, record: RunningJob) -> None:
        """A job starts: poll fast under its id, require its workflow's classes. Main thread."""
        health = record.health
        if health is None:
            return
        _call(health, "set_active", True, who=record.job.job_id)
        self._require_classes(health)

    def _release_health(self, record: RunningJob) -> None:
        """A job ended (already out of the registry). Main thread."""
        health = record.health
        if health is None:
            return
        _call(health, "set_active", False, who=record.job.job_id)
        self._require_classes(health)

    def _require_classes(self, health: Any) -> None:
        """``require_classes`` = what every running job on ``health`` needs (none: nothing)."""
        needed: set[str] = set()
        for other in self.jobs.all():
            if other.health is health:
                needed |= other.classes
        _call(health, "require_classes", frozenset(needed))

    def _set_read_range(self, node: Any, frames: FrameRange) -> None:
        node.knob(K.FIRST).setValue(frames.first)
        node.knob(K.LAST).setValue(frames.last)

    def _finish(self, node_name: str, event: JobEvent) -> None:
        """The job ended (posted once by its monitor). Main thread."""
        record = self.jobs.pop(node_name)
        self._dispatcher.discard(node_name)
        if record is not None:
            self._release_health(record)
            record.monitor.clear_reports()  # done at the final event already; idempotent
        try:
            if record is not None and record.node_gone:
                return
            node = self._nuke.toNode(node_name)
            if node is None:
                return
            if isinstance(event, JobDone):
                seconds = f" in {event.seconds:.1f}s" if event.seconds else ""
                per = ", ".join(f"{k}: {v}" for k, v in sorted(event.per_server.items()))
                text = f"Done: {event.frames_written} frames{seconds}" + (
                    f" ({per})" if per else ""
                )
                node.knob(K.PROGRESS).setValue(100.0)
                node.knob(K.STATUS).setValue(text)
                node.knob(K.TILE_COLOR).setValue(K.COLOR_DEFAULT)
                _reload_read(node)
                if not self._dispatcher.gui:
                    self._print(f"{node_name}: {text}")
            elif isinstance(event, JobCancelled):
                done = record.monitor.done if record is not None else 0
                total = record.monitor.total if record is not None else 0
                node.knob(K.STATUS).setValue(f"Cancelled at {done}/{total} frames")
                node.knob(K.TILE_COLOR).setValue(K.COLOR_DEFAULT)
                if not self._dispatcher.gui:
                    self._print(f"{node_name}: cancelled at {done}/{total} frames")
            else:
                message = getattr(event, "message", "") or "render failed"
                self._fail(node_name, message)
        finally:
            if record is not None:
                record.exporter.stop()
                if record.temp_dir:
                    shutil.rmtree(record.temp_dir, ignore_errors=True)
                record.finished.set()

    def _fail(self, node_name: str, message: str) -> None:
        """Put an error on the node (status, red tile) and report it once. Main thread."""
        node = self._nuke.toNode(node_name)
        if node is not None:
            node.knob(K.STATUS).setValue(f"Error: {message}")
            node.knob(K.TILE_COLOR).setValue(K.COLOR_ERROR)
        self._report(node_name, f"{node_name}: {message}", error=True)

    def _report(self, node_name: str, text: str, *, error: bool) -> None:
        if self._dispatcher.gui:
            self._nuke.message(f"ComfyUI Cluster\n\n{text}")
        else:
            self._print(("ERROR " if error else "") + text)

    def _print(self, line: str) -> None:
        self._nuke.tprint(f"comfy_cluster: {line}")


#: Registry name of a job whose name a renamed node took over (never a valid node name: ``toNode``
#: finds nothing, so the job's end touches no node).
_RETIRED_PREFIX = "-comfy_cluster-retired-"


def _knob_text(node: Any, knob_name: str) -> str:
    knob = node.knob(knob_name)
    return str(knob.value()).strip() if knob is not None else ""


#: Keyword names a scheduler's ``start`` may accept for "block until this input frame exists".
_INPUT_HOOKS = ("wait_for_input",)


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` takes keyword ``name`` (or ``**kwargs``)."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _call(obj: Any, method: str, *args: Any, **kwargs: Any) -> None:
    """``obj.method(*args, **kwargs)`` if it exists; errors are logged, never raised (health
    hints and the Job column must not fail a render)."""
    fn = getattr(obj, method, None)
    if not callable(fn):
        return
    try:
        fn(*args, **kwargs)
    except Exception:
        _log.warning("comfy_cluster: %s.%s failed", type(obj).__name__, method, exc_info=True)


def _workflow_classes(path: str) -> frozenset:
    """The node classes of the workflow file (empty if it cannot be read: the scheduler then
    reports the real problem)."""
    try:
        from comfy_cluster.core.workflow import Workflow

        return frozenset(Workflow.load(path).classes())
    except Exception:
        _log.debug("comfy_cluster: cannot list the classes of %s", path, exc_info=True)
        return frozenset()


def _input_hook(scheduler: Any) -> Optional[str]:
    """The readiness keyword ``scheduler.start`` accepts, or None (then inputs are exported
    completely before the job starts)."""
    try:
        parameters = inspect.signature(scheduler.start).parameters
    except (TypeError, ValueError):
        return None
    return next((name for name in _INPUT_HOOKS if name in parameters), None)


def _reload_read(node: Any) -> None:
    """Make the internal Read look at the files again (they appeared after it first looked)."""
    try:
        read = node.node(K.INTERNAL_READ)
        knob = read.knob("reload") if read is not None else None
        if knob is not None:
            knob.execute()
    except Exception:  # cosmetic: never fail a finished render over a reload
        _log.debug("comfy_cluster: reload of the internal Read failed", exc_info=True)
