"""The render engine: a frame range spread over a cluster of ComfyUI servers.

Shape (modelled on ``concurrent.futures.thread``, with daemon threads we own)::

    Scheduler.start(job) ─► controller thread  comfy-cluster-job-<id>
                               │ checks, chunks, JobState, final verification, cancel sweep
                               └─► worker slots  comfy-cluster-<server>-<n>   (max_in_flight each)
                                     pull an Attempt from JobState, run its prompts, write frames

Servers *pull*: a slot asks :class:`~comfy_cluster.core.job.JobState` for work only when it is
free, so a server never holds more of our prompts than it has slots, and faster servers take more.
The balancer (``core/balance.py``) picks which free server gets the next chunk; a completion-aware
one (``fastest``) may leave a slow server idle at the tail when the others would finish sooner.

Failover: transient errors are retried on the same server (``core/retry.py``), then the chunk's
undelivered frames go back to the queue for another server. A prompt with no websocket event for
``stall_timeout`` is checked against ``/queue``: gone (and no history) or running far longer than
that server's measured time per frame means stuck; it is interrupted and deleted where the server
still answers *before* its frames are handed on, and a late result is discarded by the frame
ledger. Job-or-server fault decisions live in ``JobState``.

Threads: :meth:`Scheduler.run` blocks its caller; :meth:`Scheduler.start` returns a
:class:`JobHandle` at once. ``on_event`` is called from worker threads, never concurrently.
Nothing here knows about Nuke or the CLI.
"""

from __future__ import annotations

import enum
import logging
import queue
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional

from comfy_cluster.core import protocol
from comfy_cluster.core.errors import (
    AuthenticationFailed,
    ClosedError,
    ComfyClusterError,
    ConfigError,
    ErrorInfo,
    ExecutionFailed,
    ProtocolError,
    ServerUnreachable,
    TransientError,
    UnexpectedStatus,
    WorkflowError,
    WorkflowRejected,
)
from comfy_cluster.core.events import (
    EventSink,
    JobCancelled,
    JobDone,
    JobFailed,
    JobStarted,
    OnEvent,
)
from comfy_cluster.core.frames import AutoChunker, Chunk, FixedChunker
from comfy_cluster.core.job import Attempt, JobResult, JobState, JobStatus, Outcome, RenderJob
from comfy_cluster.core.retry import RetryPolicy, retry_transient
from comfy_cluster.core.server import ServerConfig
from comfy_cluster.core.transfer import Transfer, existing_frames, frame_path, make_transfer
from comfy_cluster.core.workflow import (
    Workflow,
    WorkflowTargets,
    build_batch_prompt,
    build_frame_prompt,
    map_batch_outputs,
    validate_workflow,
)

__all__ = ["JobHandle", "Scheduler", "SchedulerState"]

log = logging.getLogger(__name__)

ClientFactory = Callable[[ServerConfig], Any]


class SchedulerState(enum.Enum):
    OPEN = "open"  #: accepts jobs
    CLOSED = "closed"  #: close() was called; start() raises ClosedError


class _Aborted(Exception):
    """The attempt must stop: the job was cancelled or ended elsewhere."""


class _Stuck(TransientError):
    """The server stopped making progress on our prompt."""


class _Wedged(TransientError):
    """A stuck prompt kept running after we interrupted it: the server is hung."""


def _default_client_factory(server: ServerConfig) -> Any:
    from comfy_cluster.core.client import ComfyClient

    return ComfyClient(server)


class JobHandle:
    """A running job. Any thread may call any method.

    ``cancel()`` interrupts and deletes every prompt of the job on every server and returns at
    once; ``wait(timeout)`` returns the :class:`JobResult` (``None`` on timeout).
    """

    def __init__(self, job: RenderJob) -> None:
        self.job = job
        self._done = threading.Event()
        self._result: Optional[JobResult] = None
        self._state: Optional[JobState] = None

    @property
    def job_id(self) -> str:
        return self.job.job_id

    def cancel(self) -> None:
        """Ask the job to stop; nothing is left queued on any server when it ends."""
        self.job.cancel_token.set()
        state = self._state
        if state is not None:
            state.wake()

    def wait(self, timeout: Optional[float] = None) -> Optional[JobResult]:
        """Block until the job ends (or ``timeout`` seconds pass: ``None``)."""
        if not self._done.wait(timeout):
            return None
        return self._result

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def result(self) -> Optional[JobResult]:
        """The result once the job ended, else ``None``."""
        return self._result if self._done.is_set() else None

    @property
    def progress(self) -> float:
        state = self._state
        return state.progress()[0] if state is not None else 0.0

    def _finish(self, result: JobResult) -> None:
        self._result = result
        self._done.set()

    def __repr__(self) -> str:
        status = self._result.status.value if self.done and self._result else "running"
        return f"JobHandle({self.job_id[:8]}, {status})"


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


class Scheduler:
    """Renders :class:`RenderJob` s on a set of servers. A context manager; any thread.

    ``client_factory(server) -> client`` builds one client per worker slot (a ``ComfyClient`` by
    default; tests pass an in-process fake). ``health`` (optional) filters out servers the health
    monitor sees offline or degraded; without it every enabled server is a candidate and the
    scheduler learns from failures. ``clock``/``sleep`` are injected for tests.

    Timing knobs: ``stall_timeout`` (no websocket event for this long triggers a queue check),
    ``stuck_factor`` (a running prompt is stuck past this many times its expected time),
    ``first_prompt_timeout`` (the limit while no server has a measured speed; ``None``: none),
    ``no_server_timeout`` (fail when work waits this long with nothing running anywhere).
    """

    def __init__(
        self,
        servers: Sequence[ServerConfig],
        *,
        client_factory: Optional[ClientFactory] = None,
        health: Any = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        stall_timeout: float = 30.0,
        stuck_factor: float = 4.0,
        first_prompt_timeout: Optional[float] = 900.0,
        no_server_timeout: float = 120.0,
        poll_interval: float = 0.1,
        history_interval: float = 2.0,
        retry: Optional[RetryPolicy] = None,
        blocklist_after: int = 3,
        max_chunk_servers: int = 3,
        target_chunk_seconds: float = 30.0,
        speed: Any = None,
        transfer_factory: Callable[[bool], Transfer] = make_transfer,
        join_timeout: float = 10.0,
    ) -> None:
        if stall_timeout <= 0 or poll_interval <= 0 or history_interval <= 0:
            raise ValueError("stall_timeout, poll_interval and history_interval must be > 0")
        if blocklist_after < 1 or max_chunk_servers < 1:
            raise ValueError("blocklist_after and max_chunk_servers must be >= 1")
        names = [s.name for s in servers]
        if len(set(names)) != len(names):
            raise ValueError(f"server names must be unique: {names}")
        self.servers: tuple[ServerConfig, ...] = tuple(servers)
        self.client_factory = client_factory or _default_client_factory
        self.health = health
        self.clock = clock
        self.sleep = sleep
        self.stall_timeout = stall_timeout
        self.stuck_factor = stuck_factor
        self.first_prompt_timeout = first_prompt_timeout
        self.no_server_timeout = no_server_timeout
        self.poll_interval = poll_interval
        self.history_interval = history_interval
        self.retry = retry or retry_transient(
            attempts=3, max_seconds=20.0, sleep=sleep, clock=clock
        )
        self.blocklist_after = blocklist_after
        self.max_chunk_servers = max_chunk_servers
        self.target_chunk_seconds = target_chunk_seconds
        if speed is None:
            from comfy_cluster.core.balance import SpeedTracker

            speed = SpeedTracker()
        #: Seconds per frame per server, shared by every job of this scheduler.
        self.speed = speed
        self.transfer_factory = transfer_factory
        self.join_timeout = join_timeout
        self._lock = threading.Lock()
        self._state = SchedulerState.OPEN
        self._handles: list[JobHandle] = []

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def state(self) -> SchedulerState:
        return self._state

    def __enter__(self) -> Scheduler:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self, timeout: Optional[float] = None) -> None:
        """Cancel running jobs and wait up to ``timeout`` (default ``join_timeout``) for them."""
        with self._lock:
            self._state = SchedulerState.CLOSED
            handles = list(self._handles)
        deadline = time.monotonic() + (self.join_timeout if timeout is None else timeout)
        for handle in handles:
            handle.cancel()
        for handle in handles:
            handle.wait(max(0.0, deadline - time.monotonic()))

    def active_jobs(self) -> tuple[JobHandle, ...]:
        with self._lock:
            return tuple(h for h in self._handles if not h.done)

    # -- running jobs ---------------------------------------------------------------------------

    def run(self, job: RenderJob, on_event: Optional[OnEvent] = None) -> JobResult:
        """Render ``job`` and block until it ends; returns its result (never raises for job
        failures: see ``JobResult.raise_for_status``). Raises ClosedError after close()."""
        handle = self.start(job, on_event)
        result = handle.wait()
        assert result is not None
        return result

    def start(self, job: RenderJob, on_event: Optional[OnEvent] = None) -> JobHandle:
        """Start ``job`` on a controller thread; returns its handle at once."""
        handle = JobHandle(job)
        with self._lock:
            if self._state is SchedulerState.CLOSED:
                raise ClosedError("the scheduler is closed")
            self._handles = [h for h in self._handles if not h.done]
            self._handles.append(handle)
        run = _JobRun(self, job, handle, EventSink(on_event))
        thread = threading.Thread(
            target=run.main, name=f"comfy-cluster-job-{job.job_id[:8]}", daemon=True
        )
        thread.start()
        return handle

    # -- helpers used by job runs ----------------------------------------------------------------

    def call(self, fn: Callable[[], Any], *, cancel: Optional[threading.Event] = None) -> Any:
        """Call ``fn`` with the transient-retry policy; a 5xx answer counts as transient.

        Raises the permanent error, or RetriesExhausted (a TransientError).
        """

        def once() -> Any:
            if cancel is not None and cancel.is_set():
                raise _Aborted()
            try:
                return fn()
            except UnexpectedStatus as exc:
                if exc.status >= 500:
                    raise ServerUnreachable(str(exc), server=exc.server) from exc
                raise

        return self.retry.call(once)


# ---------------------------------------------------------------------------------------------
# One job


class _JobRun:
    """The controller of one job: checks, chunking, worker slots, the end. Its own thread."""

    def __init__(self, scheduler: Scheduler, job: RenderJob, handle: JobHandle, sink: EventSink):
        self.s = scheduler
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
            from comfy_cluster.core.job import frames_text

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
        if job.input_pattern:
            needed = sorted({f for c in chunks for f in c.all_frames})
            missing = [f for f in needed if not frame_path(job.input_pattern, f).is_file()]
            if missing:
                from comfy_cluster.core.job import frames_text

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
        """Tail rule: leave ``name`` idle when the other servers that may take this chunk would
        finish everything left (this chunk included) before ``name`` finished this chunk alone.

        Only while one of them is busy (it will come back for the work); never for an
        unmeasured server (it must seed its speed)."""
        spf = speeds.get(name)
        if spf is None:
            return False
        others = [n for n in able if n != name and n in speeds]
        if not others or not any(in_flight.get(n, 0) for n in others):
            return False
        rate = sum(1.0 / speeds[n] for n in others)
        # ``remaining`` counts every undelivered frame, in flight or queued, this chunk included.
        return len(chunk.frames) * spf > max(remaining, len(chunk.frames)) / rate

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
            from comfy_cluster.core.job import frames_text

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


def _safe(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except Exception:
        log.debug("ignored error in %r", fn, exc_info=True)


# ---------------------------------------------------------------------------------------------
# One worker slot


class _Worker:
    """One slot on one server: runs attempts one after another on its own client and websocket.

    Owns its client (one ``requests.Session`` per thread) and listener; events arrive on the
    listener thread and are handed over through a queue, routed by prompt id.
    """

    def __init__(self, run: _JobRun, server: ServerConfig, slot: str) -> None:
        self.run = run
        self.s = run.s
        self.server = server
        self.name = server.name
        self.slot = slot
        self.state = run.state
        self.job = run.job
        self.client: Any = None
        self.listener: Any = None
        self.stop = threading.Event()
        self.inbox: queue.Queue[Any] = queue.Queue()

    def main(self) -> None:
        state = self.state
        assert state is not None
        try:
            while True:
                attempt = state.next_attempt(self.slot, self.s.poll_interval * 5)
                if attempt is None:
                    break
                if attempt is False:
                    continue
                outcome = self._attempt(attempt)
                state.finish_attempt(attempt, outcome)
        except Exception:
            log.exception("worker %s crashed", self.slot)
        finally:
            self.stop.set()
            if self.listener is not None:
                _safe(self.listener.close)
            if self.client is not None:
                _safe(self.client.close)
            state.close_slot(self.slot)
            state.flush()

    def _connect(self) -> None:
        if self.client is not None:
            return
        self.client = self.s.client_factory(self.server)
        self.listener = self.client.listen(self.inbox.put, self.stop)
        wait = getattr(self.listener, "wait_connected", None)
        if wait is not None:
            # Events of a fast prompt can come before POST returns: listen first.
            wait(min(2.0, self.s.stall_timeout))

    # -- one attempt ------------------------------------------------------------------------

    def _attempt(self, attempt: Attempt) -> Outcome:
        state = self.state
        assert state is not None
        try:
            self._connect()
            if self.job.mode == "batch":
                self._batch(attempt)
            else:
                self._frames(attempt)
            return Outcome.ok()
        except _Aborted:
            return Outcome("aborted")
        except WorkflowRejected as exc:
            return state.judge_rejection(self.name, exc)
        except ExecutionFailed as exc:
            return state.judge_execution_error(self.name, exc)
        except WorkflowError as exc:
            return Outcome("job", str(exc), exc.node_id, exc)
        except (AuthenticationFailed, _Wedged) as exc:
            return Outcome("degraded", str(exc), None, exc)
        except ConfigError as exc:
            if exc.server:
                return Outcome("degraded", str(exc), None, exc)
            return Outcome("job", str(exc), None, exc)
        except ComfyClusterError as exc:
            return Outcome("server", _why(exc), None, exc)
        except OSError as exc:
            # Our own disk (output folder): every server would hit it.
            return Outcome("job", f"cannot write output: {exc}", None, exc)
        except Exception as exc:
            log.exception("%s: unexpected error in chunk %s", self.slot, attempt.chunk.index)
            return Outcome("server", f"internal error: {exc!r}", None, exc)

    def _check(self, attempt: Attempt) -> None:
        assert self.state is not None
        if not self.state.is_current(attempt):
            raise _Aborted()

    def _call(self, fn: Callable[[], Any]) -> Any:
        return self.s.call(fn, cancel=self.job.cancel_token)

    def _input_value(self, frame: int) -> str:
        assert self.job.input_pattern
        path = frame_path(self.job.input_pattern, frame)
        return self._call(lambda: self.run.transfer.prepare_input(self.client, self.server, path))

    def _prefix(self, prompt_id: str, frame: int) -> str:
        # Unique per prompt: SaveImage then always writes a new file (no stale cached names).
        return f"comfy_cluster/{self.job.job_id[:8]}/f{frame}_{prompt_id[:8]}"

    def _frames(self, attempt: Attempt) -> None:
        state = self.state
        prepared = self.run.prepared
        assert state is not None and prepared is not None
        for frame in attempt.chunk.frames:
            self._check(attempt)
            if state.delivered(frame):
                continue
            image_value = self._input_value(frame) if self.job.input_pattern else None
            prompt_id = uuid.uuid4().hex
            prompt = build_frame_prompt(
                prepared.workflow,
                frame,
                image_value=image_value,
                overrides=self.job.overrides,
                output_prefix=self._prefix(prompt_id, frame),
                loader=prepared.targets.image_loader,
                output_node=prepared.targets.output_node,
            )
            images = self._run_prompt(attempt, prompt, prompt_id, frames=1)
            if not images:
                raise ProtocolError(
                    f"frame {frame}: output node {prepared.targets.output_node} produced no image",
                    server=self.name,
                )
            self._deliver(attempt, frame, images[0])

    def _batch(self, attempt: Attempt) -> None:
        state = self.state
        prepared = self.run.prepared
        assert state is not None and prepared is not None
        chunk = attempt.chunk
        if not state.undelivered(chunk.frames):
            return
        rendered = chunk.all_frames
        values = [self._input_value(f) for f in rendered]
        self._check(attempt)
        prompt_id = uuid.uuid4().hex
        prompt = build_batch_prompt(
            prepared.workflow,
            chunk,
            image_values=values,
            overrides=self.job.overrides,
            output_prefix=self._prefix(prompt_id, chunk.frames[0]),
            loader=prepared.targets.image_loader,
            output_node=prepared.targets.output_node,
        )
        images = self._run_prompt(attempt, prompt, prompt_id, frames=len(chunk.frames))
        mapping = map_batch_outputs(images, rendered, chunk.frames)
        for frame in chunk.frames:
            self._check(attempt)
            self._deliver(attempt, frame, mapping[frame])

    def _deliver(self, attempt: Attempt, frame: int, ref: Any) -> None:
        """Write ``frame`` once: claim it in the ledger, write atomically, record it."""
        state = self.state
        assert state is not None
        if not state.claim_frame(attempt, frame):
            log.info("%s: frame %s already delivered; late result discarded", self.name, frame)
            return
        dest = frame_path(self.job.output_pattern, frame)
        try:
            self._call(lambda: self.run.transfer.fetch_output(self.client, self.server, ref, dest))
        except BaseException:
            state.release_frame(attempt, frame)
            raise
        state.frame_written(attempt, frame, str(dest))
        state.flush()

    # -- one prompt -------------------------------------------------------------------------

    def _submit(self, prompt: dict, prompt_id: str) -> str:
        """POST the prompt; on an ambiguous failure look for it before sending a fresh id."""
        state = self.state
        assert state is not None
        ids = [prompt_id]

        def once() -> str:
            pid = ids[-1]
            state.prompt_submitted(self.name, pid)
            try:
                return self.client.submit(prompt, prompt_id=pid)
            except (TransientError, UnexpectedStatus) as exc:
                if isinstance(exc, UnexpectedStatus) and exc.status < 500:
                    raise
                if self._landed(pid):
                    return pid
                ids.append(uuid.uuid4().hex)
                raise

        return self._call(once)

    def _landed(self, pid: str) -> bool:
        try:
            if pid in self.client.queue():
                return True
            return self.client.history(pid) is not None
        except ComfyClusterError:
            return False

    def _run_prompt(
        self, attempt: Attempt, prompt: dict, prompt_id: str, *, frames: int
    ) -> tuple[Any, ...]:
        """Submit ``prompt`` and wait for its output images (of the output node).

        Raises ExecutionFailed / Interrupted / WorkflowRejected, _Stuck, _Aborted or a transient
        error; on anything but success the prompt is cancelled on the server first.
        """
        state = self.state
        assert state is not None
        self._drain()
        pid = self._submit(prompt, prompt_id)
        state.mark_validated(self.name)
        try:
            result = self._await(attempt, pid, frames)
        except _Stuck as exc:
            self._abandon(pid)
            if self._still_running(pid):
                raise _Wedged(f"{exc.message}; it ignores interrupts", server=self.name) from exc
            raise
        except BaseException:
            self._abandon(pid)
            raise
        state.prompt_finished(self.name, pid)
        return result

    def _still_running(self, pid: str) -> bool:
        """Whether ``pid`` still runs ``stall_timeout`` after our interrupt (a hung server)."""
        deadline = self.s.clock() + self.s.stall_timeout
        while True:
            try:
                if pid not in self.client.queue().running:
                    return False
            except ComfyClusterError:
                return False
            if self.s.clock() >= deadline or self.job.cancel_token.wait(self.s.poll_interval * 5):
                return True

    def _abandon(self, pid: str) -> None:
        """Interrupt/delete ``pid`` where the server still answers (best effort, bounded)."""
        assert self.state is not None
        try:
            self.client.cancel(pid)
            self.state.prompt_finished(self.name, pid)
        except ComfyClusterError as exc:
            log.info("%s: could not cancel prompt %s: %s", self.name, pid, exc)

    def _drain(self) -> None:
        while True:
            try:
                self.inbox.get_nowait()
            except queue.Empty:
                return

    def _await(self, attempt: Attempt, pid: str, frames: int) -> tuple[Any, ...]:
        state = self.state
        prepared = self.run.prepared
        assert state is not None and prepared is not None
        clock = self.clock = self.s.clock
        output_node = prepared.targets.output_node
        submitted = clock()
        last_event = submitted
        next_history = submitted + self.s.history_interval
        running_since: Optional[float] = None
        pending_seen: Optional[float] = None
        while True:
            self._check(attempt)
            try:
                event = self.inbox.get(timeout=self.s.poll_interval)
            except queue.Empty:
                event = None
            now = clock()
            if event is not None:
                if isinstance(event, protocol.Connected):
                    next_history = now  # events were missed while disconnected: re-sync
                elif not isinstance(event, protocol.Disconnected):
                    last_event = now
                if event.prompt_id == pid:
                    if isinstance(event, (protocol.ExecutionStart, protocol.Executing)):
                        running_since = running_since or now
                    if isinstance(event, protocol.ProgressEvent) and event.max > 0:
                        state.set_fraction(attempt, event.value / event.max, frames=frames)
                        state.flush()
                    elif isinstance(
                        event, (protocol.ExecutionErrorEvent, protocol.ExecutionInterrupted)
                    ):
                        raise event.to_error(self.name)
                    elif isinstance(event, protocol.Executing) and event.finished:
                        next_history = now
            if now >= next_history:
                entry = self._call(lambda: self.client.history(pid))
                if entry is not None:
                    return self._result(pid, entry, output_node, running_since or submitted, frames)
                next_history = now + self.s.history_interval
            if now - last_event > self.s.stall_timeout:
                q = self._call(lambda: self.client.queue())
                now = clock()
                if pid in q.running:
                    running_since = running_since or pending_seen or submitted
                    limit = self._run_limit(frames)
                    if limit is not None and now - running_since > limit:
                        raise _Stuck(
                            f"stuck: no event for {now - last_event:.1f} s, running "
                            f"{now - running_since:.1f} s (limit {limit:.1f} s)",
                            server=self.name,
                        )
                elif pid in q.pending:
                    pending_seen = now
                else:
                    entry = self._call(lambda: self.client.history(pid))
                    if entry is not None:
                        return self._result(
                            pid, entry, output_node, running_since or submitted, frames
                        )
                    raise _Stuck(
                        "prompt vanished from the server's queue without a result (restarted?)",
                        server=self.name,
                    )
                last_event = now

    def _run_limit(self, frames: int) -> Optional[float]:
        """How long a silent running prompt may run before it counts as stuck."""
        spf = self.s.speed.seconds_per_frame(self.name)
        if spf is None:
            assert self.state is not None
            known = [
                x
                for n in self.state.servers
                if (x := self.s.speed.seconds_per_frame(n)) is not None
            ]
            spf = max(known) if known else None
        if spf is None:
            return self.s.first_prompt_timeout
        return max(self.s.stall_timeout, self.s.stuck_factor * spf * max(1, frames))

    def _result(
        self, pid: str, entry: Any, output_node: str, started: float, frames: int
    ) -> tuple[Any, ...]:
        result = protocol.parse_history_entry(pid, entry)
        result.raise_for_outcome(self.name)
        images = tuple(protocol.output_images(entry, node_id=output_node))
        seconds = max(0.0, self.s.clock() - started)
        _safe(lambda: self.s.speed.record(self.name, seconds, max(1, frames)))
        return images


def _why(exc: BaseException) -> str:
    text = str(exc)
    return text or type(exc).__name__
