"""Events queued under the job's lock and delivered outside it: :class:`EventOutbox`.

Rules decide events while the job's lock is held, but the callback (a progress bar, the Nuke
panel) must run without it, in order and never concurrently. So events wait here and
:meth:`EventOutbox.flush` delivers them later from whichever thread calls it.
"""

from __future__ import annotations

import threading
from typing import Any

from comfy_cluster.core.engine.events import EventSink, JobEvent

__all__ = ["EventOutbox"]


class EventOutbox:
    """Ordered events of one job. :meth:`add` with ``lock`` held; :meth:`flush` from any thread
    without it."""

    def __init__(self, sink: EventSink, lock: Any) -> None:
        self._sink = sink
        #: The job's lock, which guards the list.
        self._lock = lock
        #: Keeps the batches of two flushing threads in order.
        self._emit_lock = threading.Lock()
        self._events: list[JobEvent] = []

    def add(self, event: JobEvent) -> None:
        self._events.append(event)

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
