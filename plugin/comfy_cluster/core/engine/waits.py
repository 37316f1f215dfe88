"""How long our prompts wait behind other clients' work: :class:`QueueWaits`.

A prompt of ours waits in a server's queue behind our own earlier prompts (the balancer counts
those as in flight) and behind other clients' prompts (an artist sharing the server). Only the
second kind is news: it is the gap between the end of our last prompt there (or our submission,
if later) and our prompt's start. The worker adds it to the prompt's time in the speed record, so
the fastest-completion estimate of a shared server includes the wait ahead of us, while the
stuck rules only ever count from our prompt's own start.
"""

from __future__ import annotations

import threading
from typing import Optional

from comfy_cluster.core.engine.attempt import Aborted

__all__ = ["QueueWaits", "QueuedBehind"]


class QueuedBehind(Aborted):
    """Our prompt still waits behind other work on its server while another server sits idle:
    it is taken back and its chunk moves (not a failure, and not stuck)."""


class QueueWaits:
    """Per server, when our last prompt there ended; any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ends: dict[str, float] = {}

    def ended(self, server: str, at: float) -> None:
        """A prompt of ours on ``server`` ended at clock time ``at``."""
        with self._lock:
            self._ends[server] = max(self._ends.get(server, at), at)

    def foreign_wait(self, server: str, submitted: float, started: Optional[float]) -> float:
        """Seconds a prompt submitted at ``submitted`` and started at ``started`` waited behind
        other clients' prompts (0 when not known)."""
        if started is None:
            return 0.0
        with self._lock:
            end = self._ends.get(server)
        since = submitted if end is None else max(submitted, end)
        return max(0.0, started - since)
