"""The speculative side of a job's book: :class:`CopyTurns` (a part of :class:`JobBook`).

An idle slot asks whether its server should copy a running chunk (``speculation.py``); the
worker confirms on the server that no other client's work waits there, then takes the copy.
Methods of the book: they hold its one lock.
"""

from __future__ import annotations

from typing import Optional

from comfy_cluster.core.engine.attempt import Attempt
from comfy_cluster.core.engine.book_parts import BookParts
from comfy_cluster.core.engine.events import ChunkAssigned, ChunkSpeculated
from comfy_cluster.core.engine.speculation import CopyPlan, pick_copy

__all__ = ["CopyTurns"]


class CopyTurns(BookParts):
    """The book's methods about speculative copies. Any thread."""

    def _copy_plan(self, slot: str) -> Optional[CopyPlan]:
        q = self._queue
        server = q.slot(slot).server
        st = self._standing
        if not self.speculating or self._stop.over or self.job.cancel_token.is_set():
            return None
        if q.has_pending or server not in st.eligible() or server in st.suspended:
            return None
        if not q.server_idle(server):
            return None
        if server not in self.models.admit([server], st.eligible(), self._ledger.remaining):
            return None  # a copy there would load another model (or the server is lost to it)
        return pick_copy(server, q.running_elsewhere(server), self._ledger.undelivered, self._times)

    def copy_worth_asking(self, slot: str) -> bool:
        """Whether ``slot``'s idle server would clearly finish a running chunk sooner than its
        holder (the worker then checks the server's queue and calls :meth:`take_copy`)."""
        with self._cond:
            return self._copy_plan(slot) is not None

    def take_copy(self, slot: str) -> Optional[Attempt]:
        """The copy for ``slot``, taken at once (``None``: no longer worth it)."""
        with self._cond:
            plan = self._copy_plan(slot)
            if plan is None:
                return None
            attempt = self._queue.assign_copy(slot, plan.holder, plan.frames, plan.reason)
            self._times.started(attempt)
            fields = {"chunk_index": attempt.chunk.index, "frames": plan.frames}
            self._feed.post(
                ChunkSpeculated,
                server=attempt.server,
                holder=plan.holder.server,
                reason=plan.reason,
                **fields,
            )
            self._feed.post(ChunkAssigned, server=attempt.server, reason=plan.reason, **fields)
        self.flush()
        return attempt
