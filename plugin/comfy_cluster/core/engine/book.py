"""The bookkeeping of one running job: :class:`JobBook`.

The book owns the job's one lock and the plain parts it guards: the frame ledger
(``ledger.py``), the chunk queue and its slots (``chunk_queue.py``), where each server stands
(``standing.py``), the failover rules (``failover.py``), the event feed (``feed.py``) and the
job's end (``stop.py``). It does
no I/O and starts no threads, so its rules are testable by calling methods.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any, Callable, Optional, Union

from comfy_cluster.core.engine.affinity import ModelAffinity
from comfy_cluster.core.engine.attempt import Attempt, Outcome, OutcomeKind
from comfy_cluster.core.engine.book_copies import CopyTurns
from comfy_cluster.core.engine.book_models import ModelTurns, workflow_models
from comfy_cluster.core.engine.book_servers import ServerTurns
from comfy_cluster.core.engine.chunk_queue import Chooser, ChunkQueue
from comfy_cluster.core.engine.events import (
    ChunkAssigned,
    ChunkProgress,
    EventSink,
    FrameWritten,
)
from comfy_cluster.core.engine.failover import Failover
from comfy_cluster.core.engine.feed import EtaFn, JobFeed
from comfy_cluster.core.engine.job import RenderJob
from comfy_cluster.core.engine.ledger import FrameLedger
from comfy_cluster.core.engine.live import LivePrompts
from comfy_cluster.core.engine.settings import EngineSettings
from comfy_cluster.core.engine.speculation import FrameTimes
from comfy_cluster.core.engine.standing import ServerStanding
from comfy_cluster.core.engine.stop import JobEnd, JobStop
from comfy_cluster.core.errors import ExecutionFailed, WorkflowRejected
from comfy_cluster.core.frames import Chunk

__all__ = ["JobBook", "JobEnd"]

_DEFAULTS = EngineSettings()


class JobBook(ServerTurns, ModelTurns, CopyTurns):
    """All mutable state of one running job, under one lock. Any thread may call any method.

    Rules: chunks wait client-side until a slot of a server is free; a frame is written at
    most once (:meth:`claim_frame`, :meth:`frame_written`, :meth:`release_frame`); a failed
    attempt costs what ``Failover`` says; the job fails when no eligible server is left or the
    workflow is at fault (``ServerStanding`` judges). Events are queued under the lock and
    delivered by :meth:`flush` outside it, in order; ``settings`` gives the limits."""

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
        settings: EngineSettings = _DEFAULTS,
        models: Optional[frozenset] = None,
    ) -> None:
        self.job = job
        self._cond = threading.Condition(threading.RLock())
        self._chooser = chooser
        #: Server names in configuration order.
        self.servers: tuple[str, ...] = tuple(servers)
        ledger = self._ledger = FrameLedger(frames_to_render, skipped)
        queue = self._queue = ChunkQueue(chunks, self.servers, clock)
        standing = self._standing = ServerStanding(self.servers, clock, settings)
        feed = self._feed = JobFeed(
            job.job_id, sink, self._cond, clock=clock, ledger=ledger, standing=standing, eta=eta
        )
        stop = self._stop = JobStop(self._cond, ledger)
        self._failover = Failover(job.mode, queue, standing, feed, stop, settings)
        #: Each server's pace in this job, for speculative copies (``speculation.py``).
        self._times = FrameTimes(clock)
        self.speculating = settings.speculation and job.mode != "batch"
        #: Which servers hold the job's checkpoint (``affinity.py``; idle without one).
        #: ``models``: the checkpoints its workflow loads, if the caller read them already.
        if models is None:
            models = workflow_models(job.workflow)
        self.models = ModelAffinity(models, self.servers, clock)
        #: Prompts we may have queued, per server (for the cancel sweep): its own lock.
        live = LivePrompts()
        self.prompt_submitted, self.prompt_finished = live.submitted, live.finished
        self.live_prompts = live.by_server
        #: Chunk attempts that failed and were retried.
        self.retries = 0
        #: Servers out of this job, with the reason (read without the lock: single lookups).
        self.blocklist: dict[str, str] = self._standing.blocklist
        self.skipped: tuple[int, ...] = self._ledger.skipped

    @property
    def discarded(self) -> int:
        """Late or stale results thrown away by the frame ledger."""
        return self._ledger.discarded

    # -- events -------------------------------------------------------------------------------

    def post(self, cls: type, **fields: Any) -> None:
        """Queue an event carrying the current progress and ETA; call :meth:`flush` to send."""
        with self._cond:
            self._feed.post(cls, **fields)

    def flush(self) -> None:
        """Deliver queued events in order. Any thread; the callback runs without the lock."""
        self._feed.flush()

    def progress(self) -> tuple[float, Optional[float]]:
        """``(fraction done, seconds left or None)``."""
        with self._cond:
            return self._feed.progress()

    # -- lifecycle ----------------------------------------------------------------------------

    def end(self) -> Optional[JobEnd]:
        """How the job stopped early; ``None`` while it runs or when it completed."""
        with self._cond:
            return self._stop.end

    def over(self) -> bool:
        """The job ended (early, or every frame is written) or was cancelled. No lock."""
        return self._stop.over or self.job.cancel_token.is_set()

    def fail(self, message: str, node_id: Optional[str] = None, error: Any = None) -> None:
        """End the job as failed (the first reason wins). Any thread."""
        with self._cond:
            self._stop.fail(message, node_id, error)

    def fail_verification(self, message: str) -> None:
        """End the job as failed because frames counted as written are not on disk. Any thread."""
        with self._cond:
            self._stop.fail_verification(message)

    def cancel(self) -> None:
        """End the job as cancelled unless it already ended. Any thread."""
        with self._cond:
            self._stop.cancel()

    def wake(self) -> None:
        """Wake every waiting worker and the supervisor (e.g. after cancel_token was set)."""
        with self._cond:
            self._stop.wake()

    def wait_ended(self, timeout: float) -> bool:
        """The supervisor's wait: up to ``timeout`` s for the end or :meth:`wake`; dispatches."""
        with self._cond:
            if self._stop.over:
                return True
            self._dispatch_locked()
        self._stop.wait_supervisor(timeout)
        with self._cond:
            return self._stop.over

    # -- slots and dispatch ---------------------------------------------------------------------

    def add_slot(self, slot: str, server: str) -> None:
        with self._cond:
            self._queue.add_slot(slot, server)

    def close_slot(self, slot: str) -> None:
        """The worker of ``slot`` is gone; an attempt it never started goes back to the queue."""
        with self._cond:
            self._queue.close(slot)
            self._dispatch_locked()
            self._cond.notify_all()  # pragma: no mutate

    def next_attempt(self, slot: str, timeout: float) -> Union[Attempt, bool, None]:
        """The attempt assigned to ``slot``; ``None`` when the job is over or the server is out;
        ``False`` if nothing came within ``timeout`` (the worker checks cancel, probes or checks
        its server, and asks again). Queued events (``ChunkAssigned``...) are delivered first."""
        result: Union[Attempt, bool, None]
        with self._cond:
            s = self._queue.slot(slot)
            if self._stop.over or s.server in self._standing.blocklist:
                self._queue.unassign(s)
                self._dispatch_locked()
                result = None
            else:
                if s.attempt is None:
                    self._dispatch_locked()
                if s.attempt is None and not self._feed:
                    until_probe = self._standing.until_probe(s.server)
                    wait = timeout if until_probe is None else min(timeout, until_probe)
                    if wait > 0:
                        self._cond.wait(wait)
                result = self._queue.take(s) or False
                if result:
                    self._times.started(result)
        if self._feed:
            self.flush()
        return result

    def _dispatch_locked(self) -> None:
        """Hand queued chunks to free slots as the chooser decides."""
        if self._stop.end is not None or self.job.cancel_token.is_set():
            return
        eligible = self._standing.eligible()
        assigned = self._queue.dispatch(
            self._affine(self._chooser, eligible),
            eligible=eligible,
            suspended=self._standing.suspended,
            remaining=self._ledger.remaining,
        )
        if assigned is None:
            return
        for a in assigned:
            index, frames, server, reason = a.chunk.index, a.chunk.frames, a.server, a.reason
            self._feed.post(
                ChunkAssigned, chunk_index=index, frames=frames, server=server, reason=reason
            )
        self._cond.notify_all()

    def idle_for(self) -> float:
        """Seconds that work has been waiting with nothing running anywhere (0 if not)."""
        with self._cond:
            return self._queue.idle_for()

    # -- per-attempt reporting ----------------------------------------------------------------

    def is_current(self, attempt: Attempt) -> bool:
        """Whether ``attempt`` should keep going (not cancelled, job not over)."""
        with self._cond:
            running = self._stop.end is None and not self.job.cancel_token.is_set()
            return running and self._queue.is_current(attempt)

    def delivered(self, frame: int) -> bool:
        with self._cond:
            return self._ledger.is_delivered(frame)

    def undelivered(self, frames: Iterable[int]) -> tuple[int, ...]:
        with self._cond:
            return self._ledger.undelivered(frames)

    def claim_frame(self, attempt: Attempt, frame: int) -> bool:
        """Reserve ``frame`` for ``attempt``; False (written, being written, or a stale attempt):
        the caller discards its result."""
        with self._cond:
            stale = self._stop.end is not None or not self._queue.is_current(attempt)
            return self._ledger.claim(attempt, frame, stale=stale)

    def release_frame(self, attempt: Attempt, frame: int) -> None:
        with self._cond:
            self._ledger.release(attempt, frame)

    def frame_written(self, attempt: Attempt, frame: int, path: str) -> None:
        """Record ``frame`` as delivered; emits FrameWritten and ChunkProgress."""
        with self._cond:
            done = self._ledger.record_written(attempt, frame, path)
            self._times.written(attempt)
            self._feed.post(FrameWritten, frame=frame, path=path, server=attempt.server)
            self._feed.post(
                ChunkProgress,
                chunk_index=attempt.chunk.index,
                server=attempt.server,
                frames_done=done,
                frame_fraction=0.0,
            )
            if self._ledger.complete:
                self._stop.wake()

    def set_fraction(self, attempt: Attempt, fraction: float, *, frames: int = 1) -> None:
        """The running prompt of ``attempt`` (rendering ``frames`` frames) is ``fraction`` done."""
        fraction = min(1.0, max(0.0, fraction))
        with self._cond:
            if self._ledger.set_fraction(attempt, fraction, frames):
                self._feed.post(
                    ChunkProgress,
                    chunk_index=attempt.chunk.index,
                    server=attempt.server,
                    frames_done=self._ledger.frames_done_in(attempt),
                    frame_fraction=fraction,
                )

    # -- whose fault (see ServerStanding) -------------------------------------------------------

    def mark_validated(self, server: str) -> None:
        """``server`` accepted a prompt of this job (so the workflow is valid somewhere)."""
        with self._cond:
            self._standing.mark_validated(server)

    def judge(self, server: str, error: Union[WorkflowRejected, ExecutionFailed]) -> Outcome:
        """Whose fault a rejection (400) or an execution error on ``server`` is."""
        with self._cond:
            return self._standing.judge(server, error)

    # -- attempt end --------------------------------------------------------------------------

    def finish_attempt(self, attempt: Attempt, outcome: Outcome) -> None:
        """Account for the end of ``attempt``: requeue, blocklist, fail or complete the job."""
        with self._cond:
            self._queue.release(attempt)
            self._ledger.attempt_ended(attempt)
            self._times.ended(attempt)
            queued = self._queue.queued(attempt)
            remaining = self._ledger.undelivered(queued.chunk.frames)
            kind = outcome.kind
            if kind is OutcomeKind.JOB:
                self._stop.fail(outcome.why, outcome.node_id, outcome.error)
            elif self._queue.sibling_running(attempt):
                pass  # a speculative copy (or its holder) still renders these frames
            elif remaining and self._stop.end is None and kind is not OutcomeKind.ABORTED:
                self.retries += 1
                why = outcome.why or "finished without delivering every frame"
                self._failover.retry(attempt, queued, remaining, outcome, why)
            elif remaining and self._stop.end is None:
                # Not the server's fault (e.g. a job-level stop raced); put the work back as is.
                self._queue.put_back(queued)
            self._dispatch_locked()
            self._cond.notify_all()
        self.flush()

    # -- summary ------------------------------------------------------------------------------

    def delivered_frames(self) -> dict[int, tuple[str, str]]:
        with self._cond:
            return self._ledger.delivered_frames()
