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
#: ``wait_for_input(frame, timeout) -> ready``: see :meth:`Scheduler.start`.
InputHook = Callable[[int, float], bool]


class SchedulerState(enum.Enum):
    OPEN = "open"  #: accepts jobs
    CLOSED = "closed"  #: close() was called; start() raises ClosedError


class _Aborted(Exception):
    """The attempt must stop: the job was cancelled or ended elsewhere."""


class _Stuck(TransientError):
    """The server stopped making progress on our prompt."""


class _Wedged(TransientError):
    """A stuck prompt kept running after we interrupted it: the server is hung."""


class _ServerDown(ComfyClusterError):
    """Connection refused while our websocket is down: the server is gone. Not retried: the
    chunk moves at once and the server is suspended until a probe answers."""


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
    ``no_server_timeout`` (fail when work waits this long with nothing running anywhere),
    ``probe_interval`` (first wait before probing a server that looked dead; doubles up to
    ``probe_interval_max``), ``input_timeout`` (how long a worker waits in all for one input
    frame when the job is started with ``wait_for_input``).
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
        probe_interval: float = 0.5,
        probe_interval_max: float = 10.0,
        input_timeout: float = 600.0,
        input_poll: float = 0.25,
    ) -> None:
        if stall_timeout <= 0 or poll_interval <= 0 or history_interval <= 0:
            raise ValueError("stall_timeout, poll_interval and history_interval must be > 0")
        if probe_interval <= 0 or input_timeout <= 0 or input_poll <= 0:
            raise ValueError("probe_interval, input_timeout and input_poll must be > 0")
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
        self.probe_interval = probe_interval
        self.probe_interval_max = max(probe_interval, probe_interval_max)
        self.input_timeout = input_timeout
        self.input_poll = input_poll
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

    def run(
        self,
        job: RenderJob,
        on_event: Optional[OnEvent] = None,
        *,
        wait_for_input: Optional[InputHook] = None,
    ) -> JobResult:
        """Render ``job`` and block until it ends; returns its result (never raises for job
        failures: see ``JobResult.raise_for_status``). Raises ClosedError after close().
        ``wait_for_input``: as for :meth:`start`."""
        handle = self.start(job, on_event, wait_for_input=wait_for_input)
        result = handle.wait()
        assert result is not None
        return result

    def start(
        self,
        job: RenderJob,
        on_event: Optional[OnEvent] = None,
        *,
        wait_for_input: Optional[InputHook] = None,
    ) -> JobHandle:
        """Start ``job`` on a controller thread; returns its handle at once.

        ``wait_for_input(frame, timeout) -> bool`` (optional) says whether input ``frame`` is
        ready, blocking up to ``timeout`` seconds. With it the input frames need not exist yet:
        the check at job start is skipped and a worker waits for each input frame of its chunk
        (handles included) before rendering it, so rendering starts while later frames are still
        being written (the Nuke host exports them chunk by chunk). A frame not ready after
        ``input_timeout`` seconds, or a hook that raises, fails the job naming the frame. The hook
        is called on worker threads, with short timeouts so cancel stays responsive.
        """
        handle = JobHandle(job)
        with self._lock:
            if self._state is SchedulerState.CLOSED:
                raise ClosedError("the scheduler is closed")
            self._handles = [h for h in self._handles if not h.done]
            self._handles.append(handle)
        run = _JobRun(self, job, handle, EventSink(on_event), wait_for_input)
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
        if job.input_pattern and self.wait_for_input is None:
            # With wait_for_input the host is still writing them; workers wait per chunk.
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

    Owns its client (one ``requests.Session`` per thread) and listener. Events arrive on the
    listener thread; :meth:`_on_ws_event` notes the time (for stall detection), when the watched
    prompt started and its output node's images, and hands over only what the worker must act
    on (progress, the end, an error, connection changes) through a queue: the worker thread
    wakes once per prompt plus once per progress step, not for every message.
    """

    def __init__(self, run: _JobRun, server: ServerConfig, slot: str) -> None:
        assert run.prepared is not None
        self.run = run
        self.s = run.s
        self.clock = run.s.clock
        self.server = server
        self.name = server.name
        self.slot = slot
        self.state = run.state
        self.job = run.job
        self.client: Any = None
        self.listener: Any = None
        self.stop = threading.Event()
        self.inbox: queue.Queue[Any] = queue.Queue()
        self.output_node = run.prepared.targets.output_node
        # Shared with the listener thread (single assignments only):
        #: The prompt whose events go to the inbox; set before POST (events may beat its reply).
        self._watch: Optional[str] = None
        #: Clock time the watched prompt started running (its first start/executing event).
        self._started_at: Optional[float] = None
        #: Images of the watched prompt's output node, from its ``executed`` event.
        self._images: Optional[tuple[Any, ...]] = None
        #: Clock time of the last websocket message (any prompt): the stall detector's input.
        self._last_event = self.clock()
        #: The websocket dropped and has not reconnected.
        self._ws_down = False

    def main(self) -> None:
        state = self.state
        assert state is not None
        try:
            while True:
                attempt = state.next_attempt(self.slot, self.s.poll_interval * 5)
                if attempt is None:
                    break
                if attempt is False:
                    if state.probe_due(self.slot):
                        self._probe()
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
        self.listener = self.client.listen(self._on_ws_event, self.stop)
        wait = getattr(self.listener, "wait_connected", None)
        if wait is not None:
            # Events of a fast prompt can come before POST returns: listen first.
            wait(min(2.0, self.s.stall_timeout))

    def _on_ws_event(self, event: Any) -> None:
        """Listener thread: note liveness, start and images; hand over what :meth:`_await`
        acts on; drop the rest (broadcasts, other prompts, per-node chatter)."""
        cls = type(event)
        if cls is protocol.Disconnected:
            self._ws_down = True
            self.inbox.put(event)
            return
        if cls is protocol.Connected:
            self._ws_down = False
            self.inbox.put(event)
            return
        now = self._last_event = self.clock()
        pid = event.prompt_id
        if pid is None or pid != self._watch:
            return
        if cls is protocol.Executing:
            if event.node is None:
                self.inbox.put(event)
            elif self._started_at is None:
                self._started_at = now
        elif cls is protocol.ExecutionStart:
            if self._started_at is None:
                self._started_at = now
        elif cls is protocol.Executed:
            if event.node == self.output_node:
                self._images = protocol.output_images(event)
        elif cls in _HANDED_OVER:
            self.inbox.put(event)

    def _ws_lost(self) -> bool:
        """Whether our websocket is down (dropped, or never connected)."""
        return self._ws_down or not getattr(self.listener, "connected", True)

    def _probe(self) -> None:
        """Probe this (suspended) server once: does it answer ``/queue`` again?"""
        assert self.state is not None
        try:
            self._connect()
            self.client.queue()
        except ComfyClusterError as exc:
            self.state.probe_result(self.name, False, _why(exc))
        except Exception as exc:  # a bug in a client: count it as a failed probe
            log.exception("%s: probe failed", self.slot)
            self.state.probe_result(self.name, False, repr(exc))
        else:
            log.info("%s: answers again; resuming", self.name)
            self.state.probe_result(self.name, True)

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
        except _ServerDown as exc:
            return Outcome("server", str(exc), None, exc, down=True)
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
        """``fn`` under the retry policy, except that a refused connection while our websocket is
        down means the server is gone: no retries, the chunk moves at once (_ServerDown)."""

        def guarded() -> Any:
            try:
                return fn()
            except ServerUnreachable as exc:
                if self._ws_lost():
                    raise _ServerDown(
                        f"server down (websocket dropped; {exc.message})", server=self.name
                    ) from exc
                raise

        return self.s.call(guarded, cancel=self.job.cancel_token)

    def _input_value(self, attempt: Attempt, frame: int) -> str:
        assert self.job.input_pattern
        path = frame_path(self.job.input_pattern, frame)
        if self.run.wait_for_input is not None:
            self._wait_input(attempt, frame, path)
        try:
            return self._call(
                lambda: self.run.transfer.prepare_input(self.client, self.server, path)
            )
        except OSError as exc:  # our disk: the input frame is not readable here
            raise ConfigError(f"cannot read input frame {frame}: {exc}", field="input") from exc

    def _wait_input(self, attempt: Attempt, frame: int, path: Any) -> None:
        """Block until the host says input ``frame`` is ready (``wait_for_input``), in short
        steps that check cancel; raise ConfigError (the job's fault) naming the frame when it
        is not ready within ``input_timeout`` or the hook raises."""
        hook = self.run.wait_for_input
        assert hook is not None
        clock = self.clock
        limit = self.s.input_timeout
        deadline = clock() + limit
        while True:
            self._check(attempt)
            began = clock()
            step = max(0.0, min(self.s.input_poll, deadline - began))
            try:
                ready = hook(frame, step)
            except Exception as exc:
                raise ConfigError(
                    f"waiting for input frame {frame} ({path}) failed: {exc!r}", field="input"
                ) from exc
            if ready:
                return
            now = clock()
            if now >= deadline:
                raise ConfigError(
                    f"input frame {frame} ({path}) was not ready after {limit:.0f} s",
                    field="input",
                )
            # A hook that says no at once (its export stopped) must not make us spin.
            rest = step - (now - began)
            if rest > 0 and self.job.cancel_token.wait(rest):
                raise _Aborted()

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
            image_value = self._input_value(attempt, frame) if self.job.input_pattern else None
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
        values = [self._input_value(attempt, f) for f in rendered]
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
            self._watch = None
            self._started_at = None
            self._images = None
            self._watch = pid
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
        finally:
            self._watch = None
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

    def _alive_after_drop(self) -> None:
        """The websocket dropped: a refused connection now means the server is gone."""
        try:
            self.client.queue()
        except ServerUnreachable as exc:
            raise _ServerDown(
                f"server down (websocket dropped; {exc.message})", server=self.name
            ) from exc
        except ComfyClusterError:
            pass  # it answers somehow (timeout, odd status): the normal checks decide

    def _await(self, attempt: Attempt, pid: str, frames: int) -> tuple[Any, ...]:
        """Wait for ``pid`` to finish; return the output node's images.

        The images come from the ``executed`` event of the output node, confirmed by
        ``executing`` node=None; ``/history`` is read only when events may have been missed
        (a reconnect, or the end without ``executed``) and, as a safety net, every
        ``history_interval``. Silence for ``stall_timeout`` triggers a ``/queue`` check (stuck,
        vanished, or pending for too long behind others).
        """
        state = self.state
        assert state is not None
        clock = self.clock
        output_node = self.output_node
        inbox_get = self.inbox.get
        poll = self.s.poll_interval
        submitted = clock()
        checked = submitted  # last /queue check (stall detection counts from here too)
        next_history = submitted + self.s.history_interval
        pending_since: Optional[float] = None
        missed = self._ws_lost()
        while True:
            self._check(attempt)
            try:
                event = inbox_get(timeout=poll)
            except queue.Empty:
                event = None
            now = clock()
            if event is not None:
                cls = type(event)
                if cls is protocol.Disconnected:
                    missed = True
                    self._alive_after_drop()
                elif cls is protocol.Connected:
                    missed = True
                    next_history = now  # events were missed while disconnected: re-sync
                elif event.prompt_id == pid:
                    if cls is protocol.ProgressEvent:
                        if event.max > 0:
                            state.set_fraction(attempt, event.value / event.max, frames=frames)
                            state.flush()
                    elif cls is protocol.Executing:  # node None: finished, history written
                        images = self._images
                        started = self._started_at or submitted
                        if images and not missed:
                            return self._done(images, started, frames)
                        next_history = now
                    elif cls in (protocol.ExecutionErrorEvent, protocol.ExecutionInterrupted):
                        raise event.to_error(self.name)
            if now >= next_history:
                entry = self._call(lambda: self.client.history(pid))
                if entry is not None:
                    started = self._started_at or submitted
                    return self._result(pid, entry, output_node, started, frames)
                next_history = now + self.s.history_interval
            if now - max(self._last_event, checked) > self.s.stall_timeout:
                q = self._call(lambda: self.client.queue())
                now = clock()
                checked = now
                if pid in q.running:
                    if self._started_at is None:
                        self._started_at = pending_since or submitted
                    running_since = self._started_at
                    limit = self._run_limit(frames)
                    if limit is not None and now - running_since > limit:
                        raise _Stuck(
                            f"stuck: no event for {now - self._last_event:.1f} s, running "
                            f"{now - running_since:.1f} s (limit {limit:.1f} s)",
                            server=self.name,
                        )
                elif pid in q.pending:
                    pending_since = pending_since or now
                    self._check_pending(q, pid, now - pending_since, frames)
                else:
                    entry = self._call(lambda: self.client.history(pid))
                    if entry is not None:
                        started = self._started_at or submitted
                        return self._result(pid, entry, output_node, started, frames)
                    raise _Stuck(
                        "prompt vanished from the server's queue without a result (restarted?)",
                        server=self.name,
                    )

    def _check_pending(self, q: Any, pid: str, waited: float, frames: int) -> None:
        """Our prompt waits in the server's queue. Raise _Stuck when it waited longer than the
        prompts ahead of it should take (``_run_limit`` each), or when the server is out of the
        job: a prompt ahead that never ends must not hold the chunk (and the job) forever."""
        assert self.state is not None
        if self.name in self.state.blocklist:
            raise _Stuck("queued on a server that is out of the job", server=self.name)
        limit = self._run_limit(frames)
        if limit is None:
            return
        ahead = len(q.running) + q.pending.index(pid) + 1
        if waited > limit * ahead:
            raise _Stuck(
                f"stuck: queued {waited:.1f} s behind {ahead - 1} prompt(s) "
                f"(limit {limit * ahead:.1f} s)",
                server=self.name,
            )

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

    def _done(self, images: tuple[Any, ...], started: float, frames: int) -> tuple[Any, ...]:
        seconds = max(0.0, self.s.clock() - started)
        _safe(lambda: self.s.speed.record(self.name, seconds, max(1, frames)))
        return images

    def _result(
        self, pid: str, entry: Any, output_node: str, started: float, frames: int
    ) -> tuple[Any, ...]:
        result = protocol.parse_history_entry(pid, entry)
        result.raise_for_outcome(self.name)
        images = tuple(protocol.output_images(entry, node_id=output_node))
        return self._done(images, started, frames)


#: Events of the watched prompt handed to :meth:`_Worker._await` besides ``executing`` None.
_HANDED_OVER = frozenset(
    {protocol.ProgressEvent, protocol.ExecutionErrorEvent, protocol.ExecutionInterrupted}
)


def _why(exc: BaseException) -> str:
    text = str(exc)
    return text or type(exc).__name__
