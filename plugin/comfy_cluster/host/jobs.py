"""The render node's running jobs: one record per node, the registry of them, and the monitor
that turns a job's events into knob updates.

Threads: the scheduler's worker threads only ever see a :class:`JobMonitor` (which holds the
node's *name*, never the node) and the dispatcher; everything that touches Nuke is posted to the
main thread. The :class:`JobRegistry` is changed on the main thread and may be read anywhere.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Optional

from comfy_cluster.core.engine.events import (
    FrameWritten,
    JobCancelled,
    JobEvent,
    JobFailed,
    JobStarted,
    ServerBlocklisted,
    ServerChecked,
    ServerRejoined,
)
from comfy_cluster.core.engine.job import RenderJob
from comfy_cluster.core.frames import frames_text
from comfy_cluster.core.progress import JobProgress
from comfy_cluster.host import knobs as K
from comfy_cluster.host.collaborators import (
    CancellableJob,
    HealthHints,
    JobBoard,
    RenderScheduler,
)
from comfy_cluster.host.dispatch import Dispatcher
from comfy_cluster.host.export import InputExporter
from comfy_cluster.host.node_status import format_status

if TYPE_CHECKING:  # the scheduler module loads tenacity: not at Nuke start-up for a type name
    from comfy_cluster.core.engine.scheduler import InputHook

__all__ = ["JobMonitor", "JobRegistry", "RunningJob"]

_log = logging.getLogger(__name__)

#: ``on_end(node_name, final_event)``: the job ended; called once, on the main thread.
OnEnd = Callable[[str, JobEvent], None]
#: ``on_frames(node_name)``: new frames landed; called on the main thread, throttled.
OnFrames = Callable[[str], None]
#: Seconds between two "frames landed" calls of one job (the Read reload as frames land).
RELOAD_INTERVAL = 2.0


@dataclass
class RunningJob:
    """One node's running job: the input export and the scheduler's job. Any thread.

    The scheduler is started at once with the exporter's ``wait_for`` as its input hook, so the
    first chunks render while later input frames are still being written. ``cancel`` works in
    every phase: before the scheduler started it ends the export and reports ``JobCancelled``
    itself; afterwards the scheduler does.
    """

    node_name: str
    job: RenderJob
    monitor: JobMonitor
    exporter: InputExporter
    temp_dir: Optional[str]
    scheduler: RenderScheduler
    handle: Optional[CancellableJob] = None
    #: The health monitor held active for this job (None without health checks).
    health: Optional[HealthHints] = None
    #: Node classes this job's workflow needs (``require_classes`` while it runs).
    classes: frozenset[str] = frozenset()
    #: Set once the node is deleted: the end of the job must not touch it.
    node_gone: bool = False
    #: The tile colour to give the node back at the end (what it had before the job).
    colour: int = K.COLOR_GIZMO
    finished: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _cancelled: bool = False

    def start_scheduler(self, wait_for_input: InputHook) -> None:
        """Hand the job to the scheduler; a start that fails ends the job with its reason."""
        with self._lock:
            if not self._cancelled:
                try:
                    self.handle = self.scheduler.start(
                        self.job, self.monitor.on_event, wait_for_input=wait_for_input
                    )
                except Exception as exc:
                    self.monitor.fail(f"could not start: {exc}")
                return
        self.monitor.cancelled()

    def inputs_finished(self, error: Optional[BaseException], stopped: bool) -> None:
        """The exporter's end (exporter thread): a failed export fails the job; a stopped one
        reports the cancel itself when the scheduler never started."""
        if error is not None:
            self.monitor.fail(f"writing the input frames failed: {error}")
            self.cancel()
        elif stopped:
            with self._lock:
                handle = self.handle
            if handle is None:
                self.monitor.cancelled()
            elif self.exporter.cancelled_by_user:  # Cancel on the export's progress task
                handle.cancel()

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
        must be free (the caller retires a stale occupant first)."""
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

    def classes_on(self, health: HealthHints) -> frozenset[str]:
        """Node classes every running job that uses ``health`` needs (its ``require_classes``)."""
        needed: set[str] = set()
        for record in self.all():
            if record.health is health:
                needed |= record.classes
        return frozenset(needed)


class JobMonitor:
    """Turns one job's events into knob updates; runs on the scheduler's threads.

    The counting is a :class:`~comfy_cluster.core.progress.JobProgress` (``progress``); this
    class decides what the node shows. Non-final events become coalesced ``set_knob_later``
    calls; in terminal mode a progress line is posted every 10 %. The final event is posted once
    to ``on_end`` (main thread); events after it are ignored so a late progress update can never
    overwrite the final status.

    ``on_frames(node_name)`` (optional) is posted to the main thread when frames land, at most
    once per ``reload_interval`` seconds and never twice in the queue at once: the node's Read
    looks at its files again, so the frames come back as they land (the first frame at once).

    ``cluster`` (optional, the Job column): each server's chunks of this job are reported with
    ``report_job(server, text, job=job_id)`` as they are assigned and delivered, and cleared with
    ``clear_job(job_id)`` at the final event. Reports are made under this monitor's lock, so they
    reach the board in event order; the board's own lock is a leaf (it calls nothing back).
    """

    def __init__(
        self,
        node_name: str,
        dispatcher: Dispatcher,
        total: int,
        on_end: OnEnd,
        *,
        print_line: Optional[Callable[[str], None]] = None,
        job_id: str = "",
        cluster: Optional[JobBoard] = None,
        on_frames: Optional[OnFrames] = None,
        reload_interval: float = RELOAD_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node_name = node_name
        self.job_id = job_id
        self.progress = JobProgress(total)
        self.last_status = ""
        self._cluster = cluster
        self._dispatcher = dispatcher
        self._on_end = on_end
        self._print_line = print_line
        self._lock = threading.Lock()
        self._ended = False
        self._last_decile = -1
        #: Per server, the phrase its failed check printed, so leaving for it is not said twice.
        self._check_said: dict[str, str] = {}
        self._on_frames = on_frames
        self._reload_interval = reload_interval
        self._clock = clock
        self._last_reload = float("-inf")
        self._reload_queued = False

    @property
    def total(self) -> int:
        return self.progress.total

    @property
    def done(self) -> int:
        return self.progress.done

    @property
    def ended(self) -> bool:
        with self._lock:
            return self._ended

    def on_event(self, event: JobEvent) -> None:
        """The scheduler's ``on_event`` callback. Any thread; never touches Nuke."""
        with self._lock:
            if self._ended:
                return
            change = self.progress.apply(event)
            final = self._ended = self.progress.ended
            look_again = False
            if final:
                self._clear_reports()
            else:
                self._report(change.servers)
                self._show(event)
                look_again = isinstance(event, FrameWritten) and self._reload_due()
        if look_again:
            self._dispatcher.post(self._frames_landed)
        if final:
            # Outside the lock: on the main thread the end runs at once and reads this monitor.
            # The node name is read when the end runs (main thread), not now: a rename between
            # the post and the run must not send the end to the old name.
            self._dispatcher.post(self._end, event)

    def _show(self, event: JobEvent) -> None:
        """Hand the node's new progress and status to the dispatcher (lock held).

        Under the lock: an update computed before the final event must reach the dispatcher
        before the end is posted, or it would land after the end's discard() and overwrite the
        final status. (The dispatcher never calls back into this monitor: on the main thread it
        only sets knobs or prints.)
        """
        p = self.progress
        status = format_status(p.done, p.total, p.working(), p.eta_seconds, p.idle_reasons())
        self.last_status = status
        line = self._progress_line(event, status)
        self._dispatcher.set_knob_later(self.node_name, K.PROGRESS, p.percent)
        self._dispatcher.set_knob_later(self.node_name, K.STATUS, status)
        if line is not None and self._print_line is not None:
            self._dispatcher.post(self._print_line, line)

    def _reload_due(self) -> bool:
        """Lock held: whether a frame that just landed should make the Read look again."""
        if self._on_frames is None or self._reload_queued:
            return False
        now = self._clock()
        if now - self._last_reload < self._reload_interval:
            return False
        self._last_reload = now
        self._reload_queued = True
        return True

    def _frames_landed(self) -> None:
        """Main thread: frames landed since the last look (the end reloads by itself)."""
        with self._lock:
            self._reload_queued = False
            name, ended = self.node_name, self._ended
        if not ended and self._on_frames is not None:
            self._on_frames(name)

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
                self._report(self.progress.working())

    def fail(self, message: str) -> None:
        """Report a failure found outside the scheduler (export, start). Any thread."""
        self.on_event(
            JobFailed(job_id=self.job_id, progress=0.0, eta_seconds=None, message=message)
        )

    def cancelled(self) -> None:
        """Report a cancel that happened before the scheduler ran. Any thread."""
        self.on_event(JobCancelled(job_id=self.job_id, progress=0.0, eta_seconds=None))

    # -- the Job column (called with the lock held) ----------------------------------------------

    def job_text(self, server: str) -> str:
        """What this job has on ``server``: ``"Render1 chunk 2 (5-8)"``, or why the server does
        nothing in it (``"Render1: out: unusable: node 4 ..."``); "" for nothing."""
        held = self.progress.held_chunks(server)
        if not held:
            why = self.progress.idle_reasons().get(server, "")
            return f"{self.node_name}: {why}" if why else ""
        parts = [f"chunk {chunk.index + 1} ({frames_text(chunk.frames)})" for chunk in held]
        return f"{self.node_name} " + ", ".join(parts)

    def _report(self, servers: Iterable[str]) -> None:
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
            self._clear_reports()

    def _clear_reports(self) -> None:
        if self._cluster is None:
            return
        try:
            self._cluster.clear_job(self.job_id)
        except Exception:  # cosmetic, as above
            _log.debug("comfy_cluster: clear_job failed", exc_info=True)

    # -- terminal lines --------------------------------------------------------------------------

    def _progress_line(self, event: JobEvent, status: str) -> Optional[str]:
        """A terminal progress line at each new 10 % step (never one per frame)."""
        if self._print_line is None:
            return None
        if isinstance(event, JobStarted):
            self._last_decile = 0
            servers = ", ".join(event.servers)
            return f"{self.node_name}: started, {self.progress.total} frames on {servers}"
        server_line = self._server_line(event)
        if server_line is not None:
            return f"{self.node_name}: {server_line}"
        decile = int(event.progress * 10 + 1e-9)
        if decile > self._last_decile and isinstance(event, FrameWritten):
            self._last_decile = decile
            return f"{self.node_name}: {self.progress.percent:.0f}% {status}"
        return None

    def _server_line(self, event: JobEvent) -> Optional[str]:
        """A terminal line for a server that cannot work, leaves the job or comes back (a farm log
        must say why a server did nothing, as the status line does), each reason said once."""
        if isinstance(event, ServerChecked) and not event.ok:
            state = event.state or "unusable"
            reasons = "; ".join(event.reasons)
            self._check_said[event.server] = f"{state}: {reasons}" if reasons else state
            return f"server {event.server} failed its check ({state}): {reasons}"
        if isinstance(event, ServerBlocklisted):
            if self._check_said.get(event.server) == event.why:
                return f"server {event.server} left the job"
            return f"server {event.server} left the job: {event.why}"
        if isinstance(event, ServerRejoined):
            self._check_said.pop(event.server, None)
            return f"server {event.server} is back in the job"
        return None
