"""What the parts of a job's book share: :class:`BookParts`.

:class:`~comfy_cluster.core.engine.book.JobBook` is written in parts (servers, models,
speculative copies), each a mixin of methods under the book's one lock. They read the same
records, which the book sets up; this base declares them once, for readers and type checkers.
"""

from __future__ import annotations

import threading
from typing import Any

from comfy_cluster.core.engine.affinity import ModelAffinity
from comfy_cluster.core.engine.chunk_queue import ChunkQueue
from comfy_cluster.core.engine.failover import Failover
from comfy_cluster.core.engine.feed import JobFeed
from comfy_cluster.core.engine.ledger import FrameLedger
from comfy_cluster.core.engine.speculation import FrameTimes
from comfy_cluster.core.engine.standing import ServerStanding
from comfy_cluster.core.engine.stop import JobStop

__all__ = ["BookParts"]


class BookParts:
    """The book's records (set by ``JobBook.__init__``) and the two methods every part calls."""

    job: Any
    _cond: threading.Condition
    _queue: ChunkQueue
    _ledger: FrameLedger
    _standing: ServerStanding
    _feed: JobFeed
    _stop: JobStop
    _failover: Failover
    _times: FrameTimes
    #: Which servers hold the job's checkpoint (``affinity.py``).
    models: ModelAffinity
    #: Speculation is on for this job (the setting, and frame mode).
    speculating: bool

    def _dispatch_locked(self) -> None:  # pragma: no cover - JobBook's
        raise NotImplementedError

    def flush(self) -> None:  # pragma: no cover - JobBook's
        raise NotImplementedError
