"""The event stream of one running job: :class:`JobFeed`.

Rules decide events while the job's lock is held, but the callback (a progress bar, the Nuke
panel) must run without it, in order and never concurrently. So each event is stamped with the
job's progress and ETA when it is posted, waits in the feed, and :meth:`JobFeed.flush` delivers
it later from whichever thread calls it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Callable, Optional

from comfy_cluster.core.engine.events import EventSink, JobEvent
from comfy_cluster.core.engine.ledger import FrameLedger
from comfy_cluster.core.engine.standing import ServerStanding

__all__ = ["EtaFn", "JobFeed"]

#: ``eta(remaining_frames, active_servers) -> seconds | None``.
EtaFn = Callable[[float, Sequence[str]], Optional[float]]


class JobFeed:
    """Ordered, progress-stamped events of one job. :meth:`post` and :meth:`progress` with
    ``lock`` (the job's) held; :meth:`flush` from any thread without it.

    The ETA comes from ``eta`` (measured speeds of the servers still in the job) and, while
    that cannot say, from the elapsed time and the progress so far.
    """

    def __init__(
        self,
        job_id: str,
        sink: EventSink,
        lock: Any,
        *,
        clock: Callable[[], float],
        ledger: FrameLedger,
        standing: ServerStanding,
        eta: Optional[EtaFn] = None,
    ) -> None:
        self.job_id = job_id
        self._sink = sink
        #: The job's lock, which guards the queued events.
        self._lock = lock
        #: Keeps the batches of two flushing threads in order.
        self._emit_lock = threading.Lock()
        self._events: list[JobEvent] = []
        self._clock = clock
        self._ledger = ledger
        self._standing = standing
        self._eta = eta
        self.started = clock()

    def progress(self) -> tuple[float, Optional[float]]:
        """``(fraction done, seconds left or None)``, the running prompts included."""
        progress, remaining = self._ledger.progress()
        if remaining == 0:
            return progress, 0.0
        eta = self._eta(remaining, self._standing.eligible()) if self._eta is not None else None
        if eta is None and progress > 0:
            eta = (self._clock() - self.started) * (1 - progress) / progress
        return progress, eta

    def post(self, cls: type, **fields: Any) -> None:
        """Queue a ``cls`` event carrying the current progress and ETA."""
        progress, eta = self.progress()
        self._events.append(cls(job_id=self.job_id, progress=progress, eta_seconds=eta, **fields))

    def __bool__(self) -> bool:
        """Whether events wait (a racy read is fine: a later flush delivers anything missed)."""
        return bool(self._events)

    def flush(self) -> None:
        """Deliver the waiting events in order; the callback runs without the job's lock."""
        with self._emit_lock:
            with self._lock:
                events, self._events = self._events, []
            for event in events:
                self._sink.emit(event)
