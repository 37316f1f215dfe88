"""The ComfyClusterRender node's behaviour: render, cancel, and the node callbacks.

:class:`RenderController` is created by the host install (one per Nuke session) and reached from
the gizmo's buttons and the node callbacks. Its public methods run on the **main thread**; the
scheduler's worker threads only ever see node *names*, a
:class:`~comfy_cluster.host.jobs.JobMonitor` and the
:class:`~comfy_cluster.host.dispatch.Dispatcher`.

Render, step by step:

1. main thread: check that the runtime packages are installed
   (:mod:`~comfy_cluster.host.deps`), read and check the knobs
   (:mod:`~comfy_cluster.host.settings`), resolve the frame range and the servers;
2. an :class:`~comfy_cluster.host.export.InputExporter` thread asks the main thread to write the
   input frames batch by batch (one temporary Write + ``nuke.execute``, one progress task);
3. the scheduler starts at once with the exporter's ``wait_for`` as its ``wait_for_input`` hook,
   so the first chunks render while later input frames are still being exported. It renders on
   its worker threads; every event becomes coalesced knob updates (``cc_progress``,
   ``cc_status``) through the dispatcher, and landing frames make the internal Read look again
   (throttled); the end of the job is posted once, and reloads the Read whatever the outcome;
4. GUI: the button returns at once. Terminal (``nuke -t``): the button blocks, draining the
   dispatcher's queue (export batches, knob updates, progress lines) until the job ends.

Jobs are keyed by node *full* name; a node renamed while it renders takes its job along
(:mod:`~comfy_cluster.host.renames`). Names are always resolved from the root
(:mod:`~comfy_cluster.host.graph`): the Render button runs with the gizmo itself as Nuke's current
context, and in a terminal session the whole job runs inside that button.

The controller's collaborators are handed to it, typed by the protocols in
:mod:`~comfy_cluster.host.collaborators`:

* a :class:`~comfy_cluster.host.collaborators.ClusterSource` gives the cluster for each use: the
  session's ``ClusterService`` (or a plain server list when there is none). Each render re-reads
  its server list (``reload()``: panel edits, hand edits of the user file) and uses only its
  enabled servers;
* the scheduler (built by a ``SchedulerFactory``, one per server list) gets the cluster's health
  monitor, so servers it sees offline, disabled or degraded get no new work;
* while a job runs (export included) the monitor is held active (fast polls) under the job id,
  and ``require_classes`` holds the node classes of every running job's workflow, so a server
  missing one is degraded and skipped;
* the job monitor reports each server's current chunks into the cluster (``report_job``, from
  the scheduler's threads) and clears them when the job ends: the panel's Job column.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from typing import Any, Callable, Optional

from comfy_cluster.core.engine.events import JobCancelled, JobDone, JobEvent, JobFailed
from comfy_cluster.core.engine.job import RenderJob
from comfy_cluster.core.frames import FrameRange
from comfy_cluster.core.server import ServerConfig
from comfy_cluster.core.workflow import Workflow
from comfy_cluster.host import knobs as K
from comfy_cluster.host.collaborators import ClusterSource, RenderCluster, SchedulerFactory
from comfy_cluster.host.deps import missing_dependencies, missing_from_error, missing_message
from comfy_cluster.host.dispatch import Dispatcher
from comfy_cluster.host.export import InputExporter
from comfy_cluster.host.graph import find_node
from comfy_cluster.host.jobs import RELOAD_INTERVAL, JobMonitor, JobRegistry, RunningJob
from comfy_cluster.host.node_status import (
    apply_missing_frames,
    colour_after,
    mark_unsaved,
    reload_read,
    set_read_range,
    show_cancelled,
    show_done,
    show_error,
    show_loaded,
    show_starting,
)
from comfy_cluster.host.renames import JobRenames
from comfy_cluster.host.schedulers import SchedulerCache
from comfy_cluster.host.server_knob import (
    adopt_menu_choice,
    refresh_server_knob,
    remember_choice,
    saved_choice,
)
from comfy_cluster.host.settings import RenderSettingsError, read_settings

__all__ = ["RenderController"]

_log = logging.getLogger(__name__)


class RenderController:
    """Render/cancel/refresh for every ComfyClusterRender node of one Nuke session.

    Every public method: main thread only. ``clusters`` gives the servers, health and Job column;
    ``scheduler_factory(servers, health)`` builds the engine (tests inject short timeouts).
    """

    def __init__(
        self,
        nuke: Any,
        dispatcher: Dispatcher,
        clusters: ClusterSource,
        scheduler_factory: SchedulerFactory,
        *,
        export_batch: int = 4,
        temp_root: Optional[str] = None,
        reload_interval: float = RELOAD_INTERVAL,
    ) -> None:
        self._nuke = nuke
        self._dispatcher = dispatcher
        self._clusters = clusters
        self._export_batch = export_batch
        self._temp_root = temp_root
        self._reload_interval = reload_interval
        self.schedulers = SchedulerCache(scheduler_factory)
        self.jobs = JobRegistry()
        self._renames = JobRenames(nuke, self.jobs, dispatcher)

    # -- servers ---------------------------------------------------------------------------------

    def configured(self, *, render: bool = False) -> tuple[tuple[ServerConfig, ...], RenderCluster]:
        """(configured servers, the cluster they come from). Never waits on the network.

        ``render``: the cluster's pollers are started and its list is re-read first
        (``reload``), so any edit, the panel's or by hand, applies to this render. Without it
        (knob refreshes at script load) the cluster may be built but starts no thread.
        """
        cluster = self._clusters.render_cluster(start=render)
        if render:
            cluster.reload()
        return tuple(cluster.servers()), cluster

    def server_names(self) -> list[str]:
        """Names of the configured, enabled servers; [] when the configuration is broken."""
        try:
            return [s.name for s in self.configured()[0] if s.enabled]
        except Exception as exc:  # ConfigError: the status line of a render reports it
            _log.warning("comfy_cluster: cannot read the server list: %s", exc)
            return []

    def refresh_server_knob(self, node: Any, names: Optional[Sequence[str]] = None) -> None:
        """Rebuild ``cc_server``'s items from the live list, keep the saved choice. Idempotent."""
        refresh_server_knob(node, self.server_names() if names is None else names)

    # -- callbacks -------------------------------------------------------------------------------

    def on_create(self, node: Any) -> None:
        """onCreate (create, script load, paste): only idempotent refreshes, no prompts. A node
        that runs no job shows a saved status as a past fact, gets its colour back, and its
        Read follows Missing frames."""
        mark_unsaved(node, self._nuke.DO_NOT_WRITE)
        self.refresh_server_knob(node)
        if self.jobs.get(node.fullName()) is None:
            show_loaded(node)

    def on_knob_changed(self, node: Any, knob: Any) -> None:
        """knobChanged: follow a rename; remember the server choice; refresh the menu when the
        panel opens; show the Frames range and the Missing frames choice on the internal Read.
        Idempotent and cheap for every other knob: a Nuke may call it for every programmatic
        ``setValue`` too (the progress updates included)."""
        name = knob.name()
        if name == "name":
            # Nuke fires knobChanged with the "name" knob after a rename: move the node's running
            # job (registry, monitor, pending knob updates, exporter) to the new name.
            self.job_for(node, renamed=True)
        elif name == K.SERVER:
            remember_choice(node, knob)
        elif name == "showPanel":
            self.job_for(node)
            self.refresh_server_knob(node)
        elif name == K.FRAMES:
            text = node.knob(K.FRAMES).value().strip()
            if text:
                try:
                    set_read_range(node, FrameRange.parse(text))
                except ValueError:
                    pass  # reported when the user presses Render
        elif name == K.MISSING_FRAMES:
            apply_missing_frames(node, running=self.jobs.get(node.fullName()) is not None)

    def on_destroy(self, node: Any) -> None:
        """onDestroy: a deleted node cancels its job; the job's end then touches nothing."""
        record = self.job_for(node)
        if record is not None:
            record.node_gone = True
            record.cancel()

    # -- buttons ---------------------------------------------------------------------------------

    def render(self, node: Any) -> None:
        """The Render button. GUI: starts the job and returns. Terminal: blocks until it ends."""
        name = node.fullName()
        if self.job_for(node) is not None:
            self._report(f"{name} is already rendering; cancel it first", error=False)
            return
        missing = missing_dependencies()
        if missing:
            self._fail(name, missing_message(self._nuke, missing))
            return
        try:
            record = self._start(node)
        except Exception as exc:
            missing = missing_from_error(exc)
            message = missing_message(self._nuke, missing) if missing else str(exc)
            self._fail(name, message or type(exc).__name__)
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
        """Cancel every running job (uninstall, quit)."""
        for record in self.jobs.all():
            record.cancel()

    # -- renames ---------------------------------------------------------------------------------

    def job_for(self, node: Any, *, renamed: bool = False) -> Optional[RunningJob]:
        """``node``'s running job, following a rename the registry has not seen yet
        (:meth:`JobRenames.job_for <comfy_cluster.host.renames.JobRenames.job_for>`)."""
        return self._renames.job_for(node, renamed=renamed)

    def rename_job(self, old_name: str, new_name: str) -> Optional[RunningJob]:
        """Move the job of node ``old_name`` to ``new_name``; it keeps running."""
        return self._renames.rename_job(old_name, new_name)

    # -- job start -------------------------------------------------------------------------------

    def _choose_servers(
        self, node: Any
    ) -> tuple[list[ServerConfig], Optional[tuple[str, ...]], RenderCluster]:
        """(enabled servers, the allow-list of a pinned server or None for Auto, the cluster)."""
        servers, cluster = self.configured(render=True)
        enabled = [s for s in servers if s.enabled]
        adopt_menu_choice(node)  # a menu item set without knobChanged
        refresh_server_knob(node, [s.name for s in enabled])
        choice = saved_choice(node)
        if not enabled:
            raise RenderSettingsError(
                "No ComfyUI server is configured and enabled (NUKE_COMFYUI_SERVERS, server panel)"
            )
        if choice == K.AUTO:
            return enabled, None, cluster
        if all(s.name != choice for s in enabled):
            raise RenderSettingsError(f"Server {choice} is not configured any more (missing)")
        return enabled, (choice,), cluster

    def _start(self, node: Any) -> RunningJob:
        name = node.fullName()
        settings = read_settings(node)
        servers, allow, cluster = self._choose_servers(node)
        health = cluster.monitor
        temp_dir = tempfile.mkdtemp(prefix="comfy_cluster_in_", dir=self._temp_root)
        input_pattern = os.path.join(temp_dir, name.replace(".", "_") + ".####.png")
        job = RenderJob(
            settings.workflow,
            settings.frames,
            settings.output,
            input_pattern=input_pattern,
            mode=settings.mode,
            chunk_size=settings.chunk_size,
            strategy=settings.strategy,
            servers=allow,
            existing=settings.existing,
            order=settings.order,
        )
        colour = show_starting(node, settings.frames)
        monitor = JobMonitor(
            name,
            self._dispatcher,
            len(settings.frames),
            self._finish,
            print_line=None if self._dispatcher.gui else self._print,
            job_id=job.job_id,
            cluster=cluster,
            on_frames=self._frames_landed,
            reload_interval=self._reload_interval,
        )
        try:
            scheduler = self.schedulers.get(servers, health)
        except BaseException:
            shutil.rmtree(temp_dir, ignore_errors=True)
            raise
        exporter = InputExporter(
            self._nuke,
            self._dispatcher,
            name,
            tuple(settings.frames),
            input_pattern,
            batch_size=self._export_batch,
            chunk_size=settings.chunk_size,
            on_end=lambda error, stopped: record.inputs_finished(error, stopped),
        )
        record = RunningJob(
            name,
            job,
            monitor,
            exporter,
            temp_dir,
            scheduler,
            health=health,
            classes=_workflow_classes(settings.workflow) if health is not None else frozenset(),
            colour=colour_after(colour),
        )
        self.jobs.add(record)
        _hold_health(record, self.jobs)
        record.start_scheduler(exporter.wait_for)  # renders while the inputs are exported
        exporter.start()
        return record

    # -- job end ---------------------------------------------------------------------------------

    def _finish(self, node_name: str, event: JobEvent) -> None:
        """The job ended (posted once by its monitor)."""
        record = self.jobs.pop(node_name)
        self._dispatcher.discard(node_name)
        if record is not None:
            _release_health(record, self.jobs)
            record.monitor.clear_reports()  # done at the final event already; idempotent
        try:
            # A node renamed without knobChanged is still found (renames.node_of).
            node = self._renames.node_of(record) if record is not None else self._node(node_name)
            if node is not None:
                node_name = node.fullName()
                self._show_end(node, node_name, record, event)
        finally:
            if record is not None:
                record.exporter.close()  # main thread: the temporary Write goes now
                if record.temp_dir:
                    shutil.rmtree(record.temp_dir, ignore_errors=True)
                record.finished.set()

    def _frames_landed(self, node_name: str) -> None:
        """Frames landed (main thread, throttled by the monitor): the Read looks again."""
        node = self._node(node_name)
        if node is not None:
            reload_read(node)

    def _show_end(
        self, node: Any, node_name: str, record: Optional[RunningJob], event: JobEvent
    ) -> None:
        colour = record.colour if record is not None else K.COLOR_GIZMO
        if isinstance(event, JobDone):
            text = show_done(node, event, colour)
            if not self._dispatcher.gui:
                self._print(f"{node_name}: {text}")
        elif isinstance(event, JobCancelled):
            done = record.monitor.done if record is not None else 0
            total = record.monitor.total if record is not None else 0
            show_cancelled(node, done, total, colour)
            if not self._dispatcher.gui:
                self._print(f"{node_name}: cancelled at {done}/{total} frames")
        else:
            message = event.message if isinstance(event, JobFailed) else ""
            self._fail(node_name, message or "render failed")

    def _fail(self, node_name: str, message: str) -> None:
        """Put an error on the node (status, red tile) and report it once."""
        node = self._node(node_name)
        if node is not None:
            show_error(node, message)
        self._report(f"{node_name}: {message}", error=True)

    def _node(self, node_name: str) -> Optional[Any]:
        """The node called ``node_name``, found from the root (never the current context)."""
        return find_node(self._nuke, node_name)

    def _report(self, text: str, *, error: bool) -> None:
        """A message the artist must see: a dialog in the GUI, a printed line in a terminal."""
        if self._dispatcher.gui:
            self._nuke.message(f"ComfyUI Cluster\n\n{text}")
        else:
            self._print(("ERROR " if error else "") + text)

    def _print(self, line: str) -> None:
        self._nuke.tprint(f"comfy_cluster: {line}")


def _hold_health(record: RunningJob, jobs: JobRegistry) -> None:
    """A job starts: poll fast under its id, require its workflow's classes."""
    health = record.health
    if health is not None:
        _hint(health.set_active, True, who=record.job.job_id)
        _hint(health.require_classes, jobs.classes_on(health))


def _release_health(record: RunningJob, jobs: JobRegistry) -> None:
    """A job ended (already out of the registry): its id and classes are no longer held."""
    health = record.health
    if health is not None:
        _hint(health.set_active, False, who=record.job.job_id)
        _hint(health.require_classes, jobs.classes_on(health))


def _hint(call: Callable[..., object], *args: Any, **kwargs: Any) -> None:
    """Call a health hint; errors are logged, never raised (hints must not fail a render)."""
    try:
        call(*args, **kwargs)
    except Exception:
        _log.warning("comfy_cluster: health hint %s failed", _name(call), exc_info=True)


def _name(call: Callable[..., object]) -> str:
    return getattr(call, "__qualname__", None) or repr(call)


def _workflow_classes(path: str) -> frozenset[str]:
    """The node classes of the workflow file (empty if it cannot be read: the scheduler then
    reports the real problem)."""
    try:
        return frozenset(Workflow.load(path).classes())
    except Exception:
        _log.debug("comfy_cluster: cannot list the classes of %s", path, exc_info=True)
        return frozenset()
