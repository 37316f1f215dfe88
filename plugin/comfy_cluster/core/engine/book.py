"""The bookkeeping of one running job, :class:`JobBook`, and how the job ended, :class:`JobEnd`.

The book owns the job's one lock and three plain parts it guards: the frame ledger
(``ledger.py``), the chunk queue and its slots (``chunk_queue.py``) and where each server stands
(``standing.py``). It applies the failover rules that span them, queues events (``outbox.py``)
and does no I/O and starts no threads, so its rules are testable by calling methods.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

from comfy_cluster.core.engine.attempt import Attempt, Outcome, OutcomeKind
from comfy_cluster.core.engine.chunk_queue import Chooser, ChunkQueue, QueuedChunk
from comfy_cluster.core.engine.events import (
    ChunkAssigned,
    ChunkProgress,
    ChunkRetried,
    EventSink,
    FrameWritten,
    ServerBlocklisted,
)
from comfy_cluster.core.engine.job import JobStatus, RenderJob
from comfy_cluster.core.engine.ledger import FrameLedger
from comfy_cluster.core.engine.outbox import EventOutbox
from comfy_cluster.core.engine.standing import ServerStanding
from comfy_cluster.core.errors import ExecutionFailed, WorkflowRejected
from comfy_cluster.core.frames import Chunk

__all__ = ["EtaFn", "JobBook", "JobEnd"]

#: ``eta(remaining_frames, active_servers) -> seconds | None``.
EtaFn = Callable[[float, Sequence[str]], Optional[float]]


@dataclass(frozen=True)
class JobEnd:
    """Why a job stopped before every frame was written: ``FAILED`` (with what is at fault) or
    ``CANCELLED``. The first end wins."""

    status: JobStatus
    message: str = ""
    node_id: Optional[str] = None
    error: Any = None


class JobBook:
    """All mutable state of one running job, under one lock. Any thread may call any method.

    Rules it enforces: chunks wait client-side until a slot of a server is free; a frame is
    written at most once (:meth:`claim_frame`, :meth:`frame_written`, :meth:`release_frame`);
    a failed attempt returns its undelivered frames to the front of the queue, avoiding the
    servers that failed that chunk; a server failing ``blocklist_after`` chunks is out of the
    job; the job fails when a chunk failed on ``max_chunk_servers`` servers (or
    ``max_chunk_attempts`` times), when no eligible server is left, or when the workflow is at
    fault (see ``ServerStanding``). Events are queued under the lock and delivered by
    :meth:`flush` outside it, in order.
    """

    def __init__(
        self,
        job: RenderJob,
        chunks: Iterable[Chunk],
        servers: Sequence[str],
        *,
        frames_to_render: Iterable[int],
        skipped: Iterable[int] = (),
        chooser: Chooser,
        sink: EventSink,
        clock: Callable[[], float],
        eta: Optional[EtaFn] = None,
        blocklist_after: int = 3,
        max_chunk_servers: int = 3,
        max_chunk_attempts: int = 6,
        probe_interval: float = 0.5,
        probe_interval_max: float = 10.0,
    ) -> None:
        self.job = job
        self._cond = threading.Condition(threading.RLock())
        #: Wakes the supervisor (wait_ended): set at the end and by wake().
        self._supervisor = threading.Event()
        self._outbox = EventOutbox(sink, self._cond)
        self._clock = clock
        self._eta = eta
        self._chooser = chooser
        self.started = clock()
        self.max_chunk_servers = max_chunk_servers
        self.max_chunk_attempts = max_chunk_attempts
        #: Server names in configuration order.
        self.servers: tuple[str, ...] = tuple(servers)
        self._ledger = FrameLedger(frames_to_render, skipped)
        self._queue = ChunkQueue(chunks, self.servers, clock)
        self._standing = ServerStanding(
            self.servers,
            clock,
            blocklist_after=blocklist_after,
            probe_interval=probe_interval,
            probe_interval_max=probe_interval_max,
        )
        #: server -> prompts we may have queued there (for the cancel sweep).
        self._live_prompts: dict[str, set[str]] = {}
        #: Chunk attempts that failed and were retried.
        self.retries = 0
        self._end: Optional[JobEnd] = None

    @property
    def blocklist(self) -> dict[str, str]:
        """Servers out of this job, with the reason."""
        return self._standing.blocklist

    @property
    def skipped(self) -> tuple[int, ...]:
        return self._ledger.skipped

    @property
    def discarded(self) -> int:
        return self._ledger.discarded

    # -- events -------------------------------------------------------------------------------

    def _progress_locked(self) -> tuple[float, Optional[float]]:
        progress, remaining = self._ledger.progress()
        if remaining == 0:
            return progress, 0.0
        eta = self._eta(remaining, self._standing.eligible()) if self._eta is not None else None
        if eta is None and progress > 0:
            eta = (self._clock() - self.started) * (1 - progress) / progress
        return progress, eta

    def _post(self, cls: type, **fields: Any) -> None:
        progress, eta = self._progress_locked()
        self._outbox.add(cls(job_id=self.job.job_id, progress=progress, eta_seconds=eta, **fields))

    def post(self, cls: type, **fields: Any) -> None:
        """Queue an event carrying the current progress and ETA; call :meth:`flush` to send."""
        with self._cond:
            self._post(cls, **fields)

    def flush(self) -> None:
        """Deliver queued events in order. Any thread; the callback runs without the lock."""
        self._outbox.flush()

    def progress(self) -> tuple[float, Optional[float]]:
        with self._cond:
            return self._progress_locked()

    # -- lifecycle ----------------------------------------------------------------------------

    def _over_locked(self) -> bool:
        return self._end is not None or self._ledger.complete

    def end(self) -> Optional[JobEnd]:
        """How the job stopped early; ``None`` while it runs or when it completed."""
        with self._cond:
            return self._end

    def fail(self, message: str, node_id: Optional[str] = None, error: Any = None) -> None:
        """End the job as failed (the first reason wins). Any thread."""
        with self._cond:
            self._fail_locked(message, node_id, error)

    def _fail_locked(self, message: str, node_id: Optional[str], error: Any) -> None:
        if not self._over_locked():
            self._end = JobEnd(JobStatus.FAILED, message, node_id, error)
        self._cond.notify_all()
        self._supervisor.set()

    def cancel(self) -> None:
        """End the job as cancelled unless it already ended. Any thread."""
        with self._cond:
            if not self._over_locked():
                self._end = JobEnd(JobStatus.CANCELLED)
            self._cond.notify_all()
        self._supervisor.set()

    def wake(self) -> None:
        """Wake every waiting worker and the supervisor (e.g. after cancel_token was set)."""
        with self._cond:
            self._cond.notify_all()
        self._supervisor.set()

    def wait_ended(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds until the job ended or :meth:`wake`; re-dispatch on
        the way. The supervisor waits on its own event, so the per-frame ``notify_all`` of the
        workers' condition does not wake it."""
        with self._cond:
            if self._over_locked():
                return True
            self._dispatch_locked()
        self._supervisor.wait(timeout)
        self._supervisor.clear()
        with self._cond:
            return self._over_locked()

    # -- slots and dispatch ---------------------------------------------------------------------

    def add_slot(self, slot: str, server: str) -> None:
        with self._cond:
            self._queue.add_slot(slot, server)

    def close_slot(self, slot: str) -> None:
        """The worker of ``slot`` is gone; an attempt it never started goes back to the queue."""
        with self._cond:
            s = self._queue.slot(slot)
            s.closed = True
            self._queue.unassign(s)
            self._dispatch_locked()
            self._cond.notify_all()

    def next_attempt(self, slot: str, timeout: float) -> Union[Attempt, bool, None]:
        """The attempt assigned to ``slot``; ``None`` when the job is over or the server is out;
        ``False`` if nothing came within ``timeout`` (the worker checks cancel, probes a suspended
        server when :meth:`probe_due` says so, and asks again). Events the dispatch queued (the
        ``ChunkAssigned`` of this and other slots) are delivered before it returns."""
        result: Union[Attempt, bool, None]
        with self._cond:
            s = self._queue.slot(slot)
            if self._over_locked() or s.server in self._standing.blocklist:
                self._queue.unassign(s)
                self._dispatch_locked()
                result = None
            else:
                if s.attempt is None:
                    self._dispatch_locked()
                if s.attempt is None and not self._outbox:
                    until_probe = self._standing.until_probe(s.server)
                    wait = timeout if until_probe is None else min(timeout, until_probe)
                    if wait > 0:
                        self._cond.wait(wait)
                if s.attempt is None:
                    result = False
                else:
                    s.busy = True
                    s.started = self._clock()
                    result = s.attempt
        if self._outbox:
            self.flush()
        return result

    def _dispatch_locked(self) -> None:
        """Hand queued chunks to free slots as the chooser decides."""
        if self._end is not None or self.job.cancel_token.is_set():
            return
        assigned = self._queue.dispatch(
            self._chooser,
            eligible=self._standing.eligible(),
            suspended=self._standing.suspended,
            remaining=self._ledger.remaining,
        )
        if assigned is None:
            return
        for a in assigned:
            self._post(
                ChunkAssigned,
                chunk_index=a.chunk.index,
                frames=a.chunk.frames,
                server=a.server,
                reason=a.reason,
            )
        self._cond.notify_all()

    def idle_for(self) -> float:
        """Seconds that work has been waiting with nothing running anywhere (0 if not)."""
        with self._cond:
            return self._queue.idle_for()

    # -- suspended servers ----------------------------------------------------------------------

    def probe_due(self, slot: str) -> bool:
        """Whether ``slot`` should probe its suspended server now; claims the probe (one slot per
        server probes at a time). Report with :meth:`probe_result`."""
        with self._cond:
            server = self._queue.slot(slot).server
            return self._end is None and self._standing.claim_probe(server)

    def probe_result(self, server: str, ok: bool, why: str = "") -> None:
        """The probe of a suspended ``server`` answered (``ok``) or failed: resume it, or back off
        and count a failure; ``blocklist_after`` failures take it out of the job."""
        with self._cond:
            if server not in self._standing.suspended:
                return
            if ok:
                del self._standing.suspended[server]
            else:
                reason = self._standing.probe_failed(server, why)
                if reason is not None:
                    self._blocklist_locked(server, reason)
                    self._check_servers_left_locked(None)
            self._dispatch_locked()
            self._cond.notify_all()
        self.flush()

    # -- per-attempt reporting ----------------------------------------------------------------

    def is_current(self, attempt: Attempt) -> bool:
        """Whether ``attempt`` should keep going (not cancelled, job not over)."""
        with self._cond:
            return (
                self._end is None
                and not self.job.cancel_token.is_set()
                and self._queue.is_current(attempt)
            )

    def delivered(self, frame: int) -> bool:
        with self._cond:
            return self._ledger.is_delivered(frame)

    def undelivered(self, frames: Iterable[int]) -> tuple[int, ...]:
        with self._cond:
            return self._ledger.undelivered(frames)

    def claim_frame(self, attempt: Attempt, frame: int) -> bool:
        """Reserve ``frame`` for writing by ``attempt``. False: written or being written already,
        or the attempt is stale; the caller discards its result."""
        with self._cond:
            stale = self._end is not None or not self._queue.is_current(attempt)
            return self._ledger.claim(attempt, frame, stale=stale)

    def release_frame(self, attempt: Attempt, frame: int) -> None:
        with self._cond:
            self._ledger.release(attempt, frame)

    def frame_written(self, attempt: Attempt, frame: int, path: str) -> None:
        """Record ``frame`` as delivered; emits FrameWritten and ChunkProgress."""
        with self._cond:
            done = self._ledger.record_written(attempt, frame, path)
            self._post(FrameWritten, frame=frame, path=path, server=attempt.server)
            self._post(
                ChunkProgress,
                chunk_index=attempt.chunk.index,
                server=attempt.server,
                frames_done=done,
                frame_fraction=0.0,
            )
            if self._ledger.complete:
                self._cond.notify_all()
                self._supervisor.set()

    def set_fraction(self, attempt: Attempt, fraction: float, *, frames: int = 1) -> None:
        """The running prompt of ``attempt`` (rendering ``frames`` frames) is ``fraction`` done."""
        fraction = min(1.0, max(0.0, fraction))
        with self._cond:
            if self._ledger.set_fraction(attempt, fraction, frames):
                self._post(
                    ChunkProgress,
                    chunk_index=attempt.chunk.index,
                    server=attempt.server,
                    frames_done=self._ledger.frames_done_in(attempt),
                    frame_fraction=fraction,
                )

    def prompt_submitted(self, server: str, prompt_id: str) -> None:
        """Remember a prompt we may have queued (called *before* POST, so cancel can find it)."""
        with self._cond:
            self._live_prompts.setdefault(server, set()).add(prompt_id)

    def prompt_finished(self, server: str, prompt_id: str) -> None:
        with self._cond:
            self._live_prompts.get(server, set()).discard(prompt_id)

    def live_prompts(self) -> dict[str, tuple[str, ...]]:
        """Prompts that may still sit on a server, by server (for the cancel sweep)."""
        with self._cond:
            return {s: tuple(ids) for s, ids in self._live_prompts.items() if ids}

    # -- whose fault (see ServerStanding) -------------------------------------------------------

    def mark_validated(self, server: str) -> None:
        with self._cond:
            self._standing.mark_validated(server)

    def judge_rejection(self, server: str, error: WorkflowRejected) -> Outcome:
        with self._cond:
            return self._standing.judge_rejection(server, error)

    def judge_execution_error(self, server: str, error: ExecutionFailed) -> Outcome:
        with self._cond:
            return self._standing.judge_execution_error(server, error)

    # -- attempt end --------------------------------------------------------------------------

    def finish_attempt(self, attempt: Attempt, outcome: Outcome) -> None:
        """Account for the end of ``attempt``: requeue, blocklist, fail or complete the job."""
        with self._cond:
            self._queue.release(attempt)
            self._ledger.attempt_ended(attempt)
            queued = self._queue.queued(attempt)
            remaining = self._ledger.undelivered(queued.chunk.frames)
            kind = outcome.kind
            if kind is OutcomeKind.JOB:
                self._fail_locked(outcome.why, outcome.node_id, outcome.error)
            elif remaining and self._end is None and kind is not OutcomeKind.ABORTED:
                why = outcome.why or "finished without delivering every frame"
                self._requeue_locked(attempt, queued, remaining, outcome, why)
            elif remaining and self._end is None:
                # Not the server's fault (e.g. a job-level stop raced); put the work back as is.
                self._queue.put_back(queued)
            self._dispatch_locked()
            self._cond.notify_all()
        self.flush()

    def _requeue_locked(
        self,
        attempt: Attempt,
        queued: QueuedChunk,
        remaining: tuple[int, ...],
        outcome: Outcome,
        why: str,
    ) -> None:
        server = attempt.server
        self.retries += 1
        if outcome.kind is OutcomeKind.DEGRADED:
            self._blocklist_locked(server, why)
        else:
            queued.count_failure(server)
            failures = self._standing.count_failure(server)
            if self._standing.too_many(failures):
                self._blocklist_locked(server, f"failed {failures} chunks; last: {why}")
            elif outcome.down and self._standing.suspend(server, why):
                self._queue.unassign_server(server)  # assigned but not started: back in line
        if self.job.mode == "frame":
            # Only the frames not yet on disk go back; batch chunks keep their shape for context.
            queued.narrow_to(remaining)
        self._post(
            ChunkRetried, chunk_index=queued.chunk.index, server=server, why=why, frames=remaining
        )
        give_up = queued.give_up_reason(
            remaining,
            f"{server}: {why}",
            max_servers=self.max_chunk_servers,
            max_attempts=self.max_chunk_attempts,
        )
        if give_up is not None:
            self._fail_locked(give_up, outcome.node_id, outcome.error)
            return
        self._queue.retry_first(queued)
        self._check_servers_left_locked(outcome)

    def _blocklist_locked(self, server: str, why: str) -> None:
        if self._standing.block(server, why):
            self._post(ServerBlocklisted, server=server, why=why)

    def _check_servers_left_locked(self, outcome: Optional[Outcome]) -> None:
        if self._standing.eligible() or self._over_locked():
            return
        reasons = "; ".join(f"{s}: {why}" for s, why in self._standing.blocklist.items())
        self._fail_locked(
            f"no eligible server left ({reasons})",
            outcome.node_id if outcome else None,
            outcome.error if outcome else None,
        )

    # -- summary ------------------------------------------------------------------------------

    def delivered_frames(self) -> dict[int, tuple[str, str]]:
        with self._cond:
            return self._ledger.delivered_frames()
