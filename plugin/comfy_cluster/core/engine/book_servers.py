"""The server side of a job's book: :class:`ServerTurns` (a part of :class:`JobBook`).

Probes of suspended servers and their rejoining, the one second chance of a server taken out
for what it did, a server that refuses us, and taking back a prompt still queued behind other
work while another server is free. Methods of the book: they hold its one lock.
"""

from __future__ import annotations

from typing import Optional

from comfy_cluster.core.engine.attempt import Attempt, Outcome
from comfy_cluster.core.engine.book_parts import BookParts
from comfy_cluster.core.engine.events import ServerRejoined

__all__ = ["ServerTurns"]


class ServerTurns(BookParts):
    """The book's methods about servers coming and going. Any thread."""

    def flush(self) -> None:  # pragma: no cover - JobBook's
        raise NotImplementedError

    def probe_due(self, slot: str) -> bool:
        """Whether ``slot`` probes its suspended server now (claimed: one slot per server)."""
        with self._cond:
            server = self._queue.slot(slot).server
            return self._stop.end is None and self._standing.claim_probe(server)

    def probe_result(self, server: str, ok: bool, why: str = "") -> None:
        """The probe of a suspended ``server`` answered (``ok``) or failed: resume it, or back off
        and count a failure; ``blocklist_after`` failures take it out of the job."""
        with self._cond:
            st = self._standing
            if st.waits_for_second_chance(server) and server not in st.away:
                self._second_chance(server, ok)
            elif server not in st.suspended:
                return
            elif ok:
                gone = st.back(server)
                self._feed.post(ServerRejoined, server=server, why=gone.why if gone else "")
            else:
                self._failover.probe_failed(server, why)
            self._dispatch_locked()
            self._cond.notify_all()
        self.flush()

    def _second_chance(self, server: str, ok: bool) -> None:
        if ok:
            why = self._standing.rejoin(server)
            self._feed.post(ServerRejoined, server=server, why=why or "")
        else:
            self._standing.no_second_chance(server)

    def second_chance_due(self, slot: str, timeout: float) -> Optional[bool]:
        """For a slot whose server is out of the job for what it did: ``True`` when it probes
        now (claimed), ``False`` when not yet (after waiting up to ``timeout``), ``None`` when
        there is no second chance (or the job is over): the slot stops."""
        with self._cond:
            server = self._queue.slot(slot).server
            st = self._standing
            if self._stop.over or not st.waits_for_second_chance(server):
                return None
            if st.claim_probe(server):
                return True
            wait = st.until_probe(server)
            self._cond.wait(timeout if wait is None else min(timeout, wait))
            return False

    def server_refused(self, server: str, outcome: Outcome) -> None:
        """``server`` refuses us (health saw a 401/403): out of the job at once."""
        with self._cond:
            if not self._stop.over and self._failover.refused(server, outcome):
                self._dispatch_locked()
        self.flush()

    def pull_back(self, attempt: Attempt, commit: bool) -> bool:
        """Whether ``attempt``'s prompt, still queued behind other work on its server, should
        move: nothing waits and another usable server has a free slot. ``commit``: it moves
        (the chunk avoids this server; the worker then stops the attempt with Aborted)."""
        with self._cond:
            st = self._standing
            usable = [s for s in st.eligible() if s not in st.suspended]
            if not self._queue.is_current(attempt) or self._stop.end is not None:
                return False
            if not self._queue.idle_elsewhere(attempt.server, usable):
                return False
            if commit:
                self._queue.queued(attempt).moved_from.add(attempt.server)
            return True
