"""One job's controller, :class:`_JobRun`: run on its own thread, ``comfy-cluster-job-<id>``.

It checks the job before anything is sent (workflow, servers, existing and input frames), cuts
the frames into chunks, builds the ``JobState``, starts the worker
slots (``core/engine/worker.py``) and supervises them, then sweeps the job's prompts off every
server and verifies the frames on disk. Servers *pull*: a slot asks ``JobState`` for work only
when it is free, so a server never holds more of our prompts than it has slots, and faster servers
take more. The balancer (``core/balance.py``) picks which free server gets the next chunk; a
completion-aware one (``fastest``) may leave a slow server idle at the tail when the others would
finish sooner (:meth:`_JobRun._hold_for_faster`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from comfy_cluster.core.engine.events import EventSink, JobCancelled, JobDone, JobFailed, JobStarted
from comfy_cluster.core.engine.job import JobResult, JobState, JobStatus, RenderJob
from comfy_cluster.core.engine.worker import _safe, _Worker
from comfy_cluster.core.errors import ComfyClusterError, ConfigError, ErrorInfo, WorkflowError
from comfy_cluster.core.frames import AutoChunker, Chunk, FixedChunker, frames_text
from comfy_cluster.core.server import ServerConfig
from comfy_cluster.core.transfer import Transfer, existing_frames, frame_path
from comfy_cluster.core.workflow import Workflow, WorkflowTargets, validate_workflow

if TYPE_CHECKING:
    from comfy_cluster.core.engine.scheduler import InputHook, JobHandle, Scheduler

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Prepared:
    """What the controller worked out before sending anything."""

    workflow: Workflow
    targets: WorkflowTargets
    servers: tuple[ServerConfig, ...]
    strategy: Any
    requested: tuple[int, ...]
    to_render: tuple[int, ...]
    skipped: tuple[int, ...]
    chunks: tuple[Chunk, ...]


class _JobRun:
    """The controller of one job: checks, chunking, worker slots, the end. Its own thread."""

    def __init__(
        self,
        scheduler: Scheduler,
        job: RenderJob,
        handle: JobHandle,
        sink: EventSink,
        wait_for_input: Optional[InputHook] = None,
    ):
        self.s = scheduler
        self.wait_for_input = wait_for_input
        self.job = job
        self.handle = handle
        self.sink = sink
        self.clock = scheduler.clock
        self.state: Optional[JobState] = None
        self.prepared: Optional[_Prepared] = None
        self.transfer: Transfer = scheduler.transfer_factory(job.shared_storage)
        self.started = self.clock()
        self.threads: list[threading.Thread] = []

    # -- entry ------------------------------------------------------------------------------

    def main(self) -> None:
        try:
            result = self._main()
        except Exception as exc:  # a bug: still end the job cleanly
            log.exception("job %s crashed", self.job.job_id)
            result = self._early_fail(f"internal error: {exc!r}", error=exc)
        self.handle._finish(result)

    def _early_fail(
        self,
        message: str,
        *,
        node_id: Optional[str] = None,
        error: Optional[BaseException] = None,
        existing: tuple[int, ...] = (),
    ) -> JobResult:
        """Fail before any work was sent (no JobState yet, or the state is irrelevant)."""
        state = self.state
        if state is not None:
            state.fail(message, node_id, error)
            self._stop_workers()
            self._sweep()
            return self._finish()
        progress = 0.0
        self.sink.emit(
            JobFailed(
                job_id=self.job.job_id,
                progress=progress,
                eta_seconds=None,
                message=message,
                node_id=node_id,
            )
        )
        return JobResult(
            job_id=self.job.job_id,
            status=JobStatus.FAILED,
            frames_requested=self.job.frame_range.frames,
            frames_missing=self.job.frame_range.frames,
            seconds=self.clock() - self.started,
            message=message,
            node_id=node_id,
            error=ErrorInfo.from_exception(error) if error is not None else None,
            existing=existing,
        )

    def _main(self) -> JobResult:
        try:
            prepared = self._prepare()
        except _EarlyFailure as failure:
            return self._early_fail(
                failure.message,
                node_id=failure.node_id,
                error=failure.error,
                existing=failure.existing,
            )
        self.prepared = prepared
        slots = [(srv.name, max(1, int(srv.max_in_flight))) for srv in prepared.servers]
        state = JobState(
            self.job,
            prepared.chunks,
            slots,
            frames_to_render=prepared.to_render,
            skipped=prepared.skipped,
            chooser=self._chooser,
            sink=self.sink,
            clock=self.clock,
            eta=self._eta,
            blocklist_after=self.s.blocklist_after,
            max_chunk_servers=self.s.max_chunk_servers,
            probe_interval=self.s.probe_interval,
            probe_interval_max=self.s.probe_interval_max,
        )
        self.state = state
        self.handle._state = state
        state.post(
            JobStarted,
            total_frames=len(prepared.to_render),
            servers=tuple(srv.name for srv in prepared.servers),
            skipped_frames=prepared.skipped,
        )
        state.flush()
        health = self.s.health
        who = f"job-{self.job.job_id}"
        if health is not None:
            _safe(lambda: health.set_active(True, who))
        try:
            if prepared.to_render:
                self._start_workers(prepared, slots)
                self._supervise()
        finally:
            if health is not None:
                _safe(lambda: health.set_active(False, who))
        self._stop_workers()
        self._sweep()
        return self._finish()

    # -- before anything is sent ----------------------------------------------------------------

    def _prepare(self) -> _Prepared:
        job = self.job
        try:
            workflow = Workflow.load(job.workflow)
            targets = validate_workflow(
                workflow,
                needs_image_input=bool(job.input_pattern),
                output_node=job.output_node,
                loader=job.image_loader,
            )
        except WorkflowError as exc:
            raise _EarlyFailure(str(exc), node_id=exc.node_id, error=exc) from None
        try:
            from comfy_cluster.core.balance import make_strategy

            strategy = make_strategy(job.strategy)
        except ConfigError as exc:
            raise _EarlyFailure(str(exc), error=exc) from None

        known = {srv.name: srv for srv in self.s.servers}
        if job.servers is not None:
            unknown = [name for name in job.servers if name not in known]
            if unknown:
                raise _EarlyFailure(
                    f"unknown server(s) in the job's allow-list: {', '.join(unknown)}"
                )
        servers = tuple(
            srv
            for srv in self.s.servers
            if srv.enabled and (job.servers is None or srv.name in job.servers)
        )
        if not servers:
            raise _EarlyFailure("no enabled server may take this job")

        requested = job.frame_range.frames
        existing = existing_frames(job.output_pattern, requested)
        if existing and job.existing == "error":
            raise _EarlyFailure(
                f"{len(existing)} output frame(s) already exist ({frames_text(existing)} in "
                f"{job.output_pattern}); choose resume to skip them or overwrite to replace them",
                existing=existing,
            )
        skipped = existing if job.existing == "resume" else ()
        to_render = tuple(f for f in requested if f not in set(skipped))
        chunks: tuple[Chunk, ...] = ()
        if to_render:
            chunks = tuple(self._chunker(len(servers), servers).split(to_render))
        if job.input_pattern and self.wait_for_input is None:
            # With wait_for_input the host is still writing them; workers wait per chunk.
            needed = sorted({f for c in chunks for f in c.all_frames})
            missing = [f for f in needed if not frame_path(job.input_pattern, f).is_file()]
            if missing:
                raise _EarlyFailure(
                    f"{len(missing)} input frame(s) missing ({frames_text(missing)} of "
                    f"{job.input_pattern})"
                )
        return _Prepared(
            workflow, targets, servers, strategy, requested, to_render, skipped, chunks
        )

    def _chunker(self, n_servers: int, servers: Sequence[ServerConfig]) -> Any:
        job = self.job
        if job.mode == "frame":
            # One prompt per frame anyway: one-frame chunks balance best at no extra cost.
            return FixedChunker(job.chunk_size or 1)
        if job.chunk_size:
            return FixedChunker(job.chunk_size, job.handles)
        known = [self.s.speed.seconds_per_frame(srv.name) for srv in servers]
        measured = [x for x in known if x]
        spf = sum(measured) / len(measured) if measured else None
        workers = sum(max(1, srv.max_in_flight) for srv in servers)
        return AutoChunker(
            target_seconds=self.s.target_chunk_seconds,
            seconds_per_frame=spf,
            workers=workers,
            handles=job.handles,
        )

    # -- balancing ------------------------------------------------------------------------------

    def _statuses(self) -> dict[str, Any]:
        """ServerStatus per job server: from health when there is one, else synthesised READY."""
        from comfy_cluster.core.health import ServerState

        assert self.prepared is not None
        snapshot = None
        if self.s.health is not None:
            try:
                snapshot = self.s.health.snapshot()
            except Exception:
                log.exception("health snapshot failed; treating servers as ready")
        out = {}
        for srv in self.prepared.servers:
            status = snapshot.get(srv.name) if snapshot is not None else None
            if status is None:
                status = _synthetic_status(srv, ServerState.READY)
            out[srv.name] = status
        return out

    def _chooser(
        self,
        chunk: Chunk,
        free: Sequence[str],
        in_flight: Any,
        remaining: int,
        able: Sequence[str] = (),
    ) -> Optional[tuple[str, str]]:
        """Called by JobState under its lock: must not block (health snapshots never do)."""
        from comfy_cluster.core.balance import BalanceContext

        assert self.prepared is not None and self.state is not None
        statuses = self._statuses()
        speeds = {
            name: spf
            for name in statuses
            if (spf := self.s.speed.seconds_per_frame(name)) is not None
        }
        ctx = BalanceContext(
            priorities={srv.name: srv.priority for srv in self.prepared.servers},
            in_flight=dict(in_flight),
            seconds_per_frame=speeds,
            remaining_frames=remaining,
            chunk_frames=len(chunk.frames),
        )
        strategy = self.prepared.strategy
        choice = strategy.choose([statuses[name] for name in free], ctx)
        if choice is None or choice.name not in free:
            return None
        usable = [n for n in able if n in statuses and _usable(statuses[n])]
        if hasattr(strategy, "expected_seconds") and self._hold_for_faster(
            choice.name, chunk, in_flight, speeds, remaining, usable
        ):
            return None
        return choice.name, choice.reason

    def _hold_for_faster(
        self,
        name: str,
        chunk: Chunk,
        in_flight: Any,
        speeds: dict[str, float],
        remaining: int,
        able: Sequence[str],
    ) -> bool:
        """Tail rule: leave ``name`` idle when giving it this chunk would end the job later than
        letting the other servers that may take it do the rest.

        ``name`` would finish its queued work plus this chunk at ``(queued + chunk) * spf``; the
        others finish everything not on ``name`` (``remaining`` minus ``name``'s queue) at their
        combined rate. Hold when the makespan without this chunk on ``name`` is shorter. Only
        while one of the others is busy (it will come back for the work); never for an
        unmeasured server (it must seed its speed)."""
        spf = speeds.get(name)
        if spf is None:
            return False
        others = [n for n in able if n != name and n in speeds]
        if not others or not any(in_flight.get(n, 0) for n in others):
            return False
        rate = sum(1.0 / speeds[n] for n in others)
        size = len(chunk.frames)
        # ``remaining`` counts every undelivered frame, in flight or queued, this chunk included;
        # ``in_flight`` counts chunks, taken as this chunk's size.
        mine = min(in_flight.get(name, 0) * size, max(0, remaining - size))
        rest = max(remaining, mine + size) - mine  # frames not on ``name`` now
        with_chunk = max((mine + size) * spf, (rest - size) / rate)
        without = max(mine * spf, rest / rate)
        return without < with_chunk

    def _eta(self, remaining: float, active: Sequence[str]) -> Optional[float]:
        rates = [1.0 / spf for n in active if (spf := self.s.speed.seconds_per_frame(n))]
        return remaining / sum(rates) if rates else None

    # -- workers --------------------------------------------------------------------------------

    def _start_workers(self, prepared: _Prepared, slots: Sequence[tuple[str, int]]) -> None:
        assert self.state is not None
        by_name = {srv.name: srv for srv in prepared.servers}
        for name, count in slots:
            for n in range(count):
                slot = f"comfy-cluster-{name}-{n}"
                self.state.add_slot(slot, name)
                worker = _Worker(self, by_name[name], slot)
                thread = threading.Thread(target=worker.main, name=slot, daemon=True)
                self.threads.append(thread)
        for thread in self.threads:
            thread.start()

    def _supervise(self) -> None:
        state = self.state
        assert state is not None
        while not state.wait_ended(self.s.poll_interval * 5):
            if self.job.cancel_token.is_set():
                state.cancel()
                break
            idle = state.idle_for()
            if idle > self.s.no_server_timeout:
                statuses = self._statuses()
                detail = ", ".join(
                    f"{n} {getattr(st.state, 'value', st.state)}" for n, st in statuses.items()
                )
                state.fail(f"no server took work for {idle:.0f} s ({detail})")
            state.flush()
        if self.job.cancel_token.is_set():
            state.cancel()
        state.flush()

    def _stop_workers(self) -> None:
        state = self.state
        if state is None:
            return
        state.wake()
        deadline = time.monotonic() + self.s.join_timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("worker %s did not stop in time", thread.name)

    def _sweep(self) -> None:
        """Delete/interrupt every prompt of this job still on a server (cancel, failure)."""
        state = self.state
        if state is None or self.prepared is None:
            return
        by_name = {srv.name: srv for srv in self.prepared.servers}
        for name, ids in state.live_prompts().items():
            client = None
            try:
                client = self.s.client_factory(by_name[name])
                q = client.queue()
                pending = [pid for pid in ids if pid in q.pending]
                if pending:
                    client.delete_queued(pending)
                    q = client.queue()
                for pid in ids:
                    if pid in q.running:
                        client.interrupt(pid)
                    state.prompt_finished(name, pid)
            except ComfyClusterError as exc:
                log.info("%s: could not clean up prompts %s: %s", name, ids, exc)
            finally:
                if client is not None:
                    _safe(client.close)

    def _finish(self) -> JobResult:
        state = self.state
        assert state is not None
        delivered = state.delivered_frames()
        requested = self.job.frame_range.frames
        missing = tuple(
            f for f in requested if not frame_path(self.job.output_pattern, f).is_file()
        )
        end = state.end_state()
        if end is None and missing:
            state.fail(
                f"{len(missing)} frame(s) missing on disk at the end: {frames_text(missing)}"
            )
            end = state.end_state()
        seconds = self.clock() - self.started
        per_server: dict[str, int] = {}
        for _path, server in delivered.values():
            per_server[server] = per_server.get(server, 0) + 1
        common = dict(
            job_id=self.job.job_id,
            frames_requested=requested,
            frames_written=tuple(sorted(delivered)),
            frames_skipped=state.skipped,
            frames_missing=missing,
            paths={f: p for f, (p, _s) in sorted(delivered.items())},
            per_server=per_server,
            retries=state.retries,
            blocklisted=dict(state.blocklist),
            seconds=seconds,
        )
        if end is None:
            state.post(
                JobDone,
                frames_written=len(delivered),
                per_server=dict(per_server),
                retries=state.retries,
                seconds=seconds,
            )
            state.flush()
            return JobResult(status=JobStatus.DONE, message="done", **common)
        if end[0] == "cancelled":
            state.post(JobCancelled)
            state.flush()
            return JobResult(status=JobStatus.CANCELLED, message="cancelled", **common)
        _, message, node_id, error = end
        state.post(JobFailed, message=message, node_id=node_id)
        state.flush()
        info = ErrorInfo.from_exception(error) if isinstance(error, BaseException) else None
        return JobResult(
            status=JobStatus.FAILED, message=message, node_id=node_id, error=info, **common
        )


class _EarlyFailure(Exception):
    def __init__(
        self,
        message: str,
        *,
        node_id: Optional[str] = None,
        error: Optional[BaseException] = None,
        existing: tuple[int, ...] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.node_id = node_id
        self.error = error
        self.existing = existing


def _synthetic_status(server: ServerConfig, state: Any) -> Any:
    from comfy_cluster.core.health import ServerStatus

    return ServerStatus(name=server.name, url=server.url, state=state)


def _usable(status: Any) -> bool:
    from comfy_cluster.core.health import ServerState

    return status.state in (ServerState.READY, ServerState.BUSY)
