"""How and when a running job stops early: :class:`JobEnd` and :class:`JobStop`.

The first end wins (a failure after a cancel stays a cancel), and every waiter learns of it at
once: the workers through the job's condition, the supervisor through its own event (so the
workers' per-frame notifications do not wake it).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Optional

from comfy_cluster.core.engine.job import JobStatus
from comfy_cluster.core.engine.ledger import FrameLedger

__all__ = ["JobEnd", "JobStop"]


@dataclass(frozen=True)
class JobEnd:
    """Why a job stopped before every frame was written: ``FAILED`` (with what is at fault) or
    ``CANCELLED``."""

    status: JobStatus
    message: str = ""
    node_id: Optional[str] = None
    error: Any = None


class JobStop:
    """The end of one job, if any. Caller holds ``cond`` (the job's condition) except for
    :meth:`wait_supervisor`."""

    def __init__(self, cond: threading.Condition, ledger: FrameLedger) -> None:
        self._cond = cond
        self._ledger = ledger
        #: ``None`` while the job runs (or once it completed).
        self.end: Optional[JobEnd] = None
        #: Wakes the supervisor: set at the end and by :meth:`wake`.
        self._supervisor = threading.Event()

    @property
    def over(self) -> bool:
        """The job ended early or every frame is written."""
        return self.end is not None or self._ledger.complete

    def fail(self, message: str, node_id: Optional[str] = None, error: Any = None) -> None:
        if not self.over:
            self.end = JobEnd(JobStatus.FAILED, message, node_id, error)
        self.wake()

    def fail_verification(self, message: str) -> None:
        """The disk contradicts the ledger (a frame reported written is not there): the job
        fails even though every frame was counted, unless it already ended otherwise."""
        if self.end is None:
            self.end = JobEnd(JobStatus.FAILED, message, None, None)
        self.wake()

    def cancel(self) -> None:
        if not self.over:
            self.end = JobEnd(JobStatus.CANCELLED)
        self.wake()

    def wake(self) -> None:
        """Wake every waiting worker and the supervisor."""
        self._cond.notify_all()
        self._supervisor.set()

    def wait_supervisor(self, timeout: float) -> None:
        """The supervisor's wait (without the lock): until :meth:`wake` or ``timeout``."""
        self._supervisor.wait(timeout)
        self._supervisor.clear()
