"""The client-side chunk queue of one job and its worker slots: :class:`ChunkQueue`.

Chunks wait here, not on the servers: one is handed to a slot only when that slot is free, so a
server never holds more of our prompts than it has slots (``max_in_flight``) and failover never
strands work in a dead server's queue. Plain bookkeeping: the job's book holds the one lock
around every call, and posts the events.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Container, Iterable, Mapping, Sequence
from typing import Callable, Optional

from comfy_cluster.core.engine.attempt import Attempt
from comfy_cluster.core.frames import Chunk, frames_text

__all__ = ["Chooser", "ChunkQueue", "QueuedChunk", "Slot"]

#: ``chooser(chunk, free, in_flight, remaining_frames, able) -> (server, reason) | None``:
#: ``free`` servers have a free slot and may take the chunk; ``able`` may take it at all.
#: Called with the job's lock held: it must not block.
Chooser = Callable[
    [Chunk, Sequence[str], Mapping[str, int], int, Sequence[str]], Optional[tuple[str, str]]
]


class QueuedChunk:
    """A chunk of the job with its failure history; waits in the queue or is out on a slot."""

    __slots__ = ("chunk", "failed_on", "failures", "moved_from")

    def __init__(self, chunk: Chunk) -> None:
        self.chunk = chunk
        #: server name -> failures of this chunk there.
        self.failed_on: dict[str, int] = {}
        self.failures = 0
        #: Servers this chunk was taken back from while it waited behind other work there
        #: (not failures: avoided like them, never counted against the chunk).
        self.moved_from: set[str] = set()

    def count_failure(self, server: str) -> None:
        self.failures += 1
        self.failed_on[server] = self.failed_on.get(server, 0) + 1  # pragma: no mutate

    def narrow_to(self, frames: tuple[int, ...]) -> None:
        """Keep only ``frames`` (those not on disk yet); the handles stay for context."""
        c = self.chunk
        self.chunk = Chunk(c.index, frames, c.handles_before, c.handles_after)

    def give_up_reason(
        self, remaining: tuple[int, ...], last: str, *, max_servers: int, max_attempts: int
    ) -> Optional[str]:
        """Why the job must fail after this chunk's latest failure (``last``), or ``None``: it
        failed on ``max_servers`` different servers, or ``max_attempts`` times in all."""
        where = f"chunk {self.chunk.index} (frames {frames_text(remaining)}) failed"
        if len(self.failed_on) >= max_servers:
            names = ", ".join(sorted(self.failed_on))
            return f"{where} on {len(self.failed_on)} servers ({names}); last: {last}"
        if self.failures >= max_attempts:
            return f"{where} {self.failures} times; last: {last}"
        return None


class Slot:
    """One worker slot of one server and the attempt handed to it."""

    __slots__ = ("attempt", "busy", "closed", "name", "server", "started")

    def __init__(self, name: str, server: str) -> None:
        self.name = name
        self.server = server
        self.attempt: Optional[Attempt] = None  # assigned, not yet finished
        self.busy = False  # the worker has taken its attempt  # pragma: no mutate
        self.closed = False
        self.started = 0.0


class ChunkQueue:
    """Waiting chunks (failed ones go back to the front) and the slots that pull them.

    ``servers`` are the job's server names in configuration order: free servers are offered to
    the chooser in that order. Caller holds the job's lock.
    """

    def __init__(
        self, chunks: Iterable[Chunk], servers: Sequence[str], clock: Callable[[], float]
    ) -> None:
        self._clock = clock
        self.servers: tuple[str, ...] = tuple(servers)
        self._pending: deque[QueuedChunk] = deque(QueuedChunk(c) for c in chunks)
        self._by_index: dict[int, QueuedChunk] = {q.chunk.index: q for q in self._pending}
        self._slots: dict[str, Slot] = {}
        self._ids = itertools.count(1)  # pragma: no mutate
        #: Clock time since which work waits with nothing running anywhere (None: not idle).
        self._idle_since: Optional[float] = None
        #: Chunks that got their one speculative copy.
        self.copied: set[int] = set()

    # -- slots ------------------------------------------------------------------------------

    def add_slot(self, slot: str, server: str) -> None:
        self._slots[slot] = Slot(slot, server)

    def slot(self, name: str) -> Slot:
        return self._slots[name]

    def is_current(self, attempt: Attempt) -> bool:
        """Whether ``attempt`` is still the one its slot holds (not stale)."""
        s = self._slots.get(attempt.slot)
        return s is not None and s.attempt is attempt

    def queued(self, attempt: Attempt) -> QueuedChunk:
        """The queue entry of ``attempt``'s chunk (with its failure history)."""
        return self._by_index[attempt.chunk.index]

    def unassign(self, slot: Slot) -> None:
        """An attempt handed to ``slot`` but never taken goes back to the front of the queue."""
        if slot.attempt is not None and not slot.busy:
            self.put_back(self._by_index[slot.attempt.chunk.index])
            slot.attempt = None

    def close(self, slot: str) -> None:
        """The worker of ``slot`` is gone: no more work for it."""
        s = self._slots[slot]
        s.closed = True
        self.unassign(s)

    def idle_elsewhere(self, server: str, usable: Sequence[str]) -> bool:
        """Nothing waits and a ``usable`` server other than ``server`` has a free slot."""
        if self._pending:
            return False
        return any(
            s.attempt is None and not s.closed and s.server != server and s.server in usable
            for s in self._slots.values()
        )

    def unassign_server(self, server: str) -> None:
        for slot in self._slots.values():
            if slot.server == server:
                self.unassign(slot)

    def take(self, slot: Slot) -> Optional[Attempt]:
        """The worker of ``slot`` starts the attempt handed to it (``None``: nothing yet)."""
        if slot.attempt is not None:
            slot.busy = True
            slot.started = self._clock()
        return slot.attempt

    def release(self, attempt: Attempt) -> None:
        """``attempt`` ended: its slot is free again (unless it already holds another)."""
        slot = self._slots[attempt.slot]
        if slot.attempt is attempt:
            slot.attempt = None
            slot.busy = False  # pragma: no mutate

    # -- speculative copies -----------------------------------------------------------------

    def server_idle(self, server: str) -> bool:
        """None of ``server``'s slots holds an attempt (and one is open)."""
        slots = [s for s in self._slots.values() if s.server == server]
        return any(not s.closed for s in slots) and all(s.attempt is None for s in slots)

    def running_elsewhere(self, server: str) -> list[Attempt]:
        """Attempts under way on other servers whose chunk has had no copy yet."""
        return [
            s.attempt
            for s in self._slots.values()
            if s.attempt is not None
            and s.busy
            and s.server != server
            and s.attempt.chunk.index not in self.copied
        ]

    def assign_copy(
        self, slot: str, holder: Attempt, frames: tuple[int, ...], reason: str
    ) -> Attempt:
        """A copy of ``holder``'s chunk (``frames``, in the order to render them) to the free
        ``slot``, taken at once; the chunk gets no other copy."""
        s = self._slots[slot]
        c = holder.chunk
        chunk = Chunk(c.index, frames, c.handles_before, c.handles_after)
        attempt = Attempt(next(self._ids), chunk, s.server, s.name, reason)
        s.attempt, s.busy, s.started = attempt, True, self._clock()
        self.copied.add(c.index)
        return attempt

    def sibling_running(self, attempt: Attempt) -> bool:
        """Another attempt of ``attempt``'s chunk is still under way (a copy, or its holder)."""
        index = attempt.chunk.index
        return any(
            s.attempt is not None and s.attempt is not attempt and s.attempt.chunk.index == index
            for s in self._slots.values()
        )

    # -- the queue --------------------------------------------------------------------------

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)

    def put_back(self, queued: QueuedChunk) -> None:
        """Return ``queued`` to the front unless it is waiting already."""
        if queued not in self._pending:
            self._pending.appendleft(queued)

    def retry_first(self, queued: QueuedChunk) -> None:
        """A failed chunk goes to the front: it is the oldest work."""
        self._pending.appendleft(queued)

    def in_flight(self) -> dict[str, int]:
        """Attempts handed out per server (taken or not)."""
        counts = {name: 0 for name in self.servers}
        for s in self._slots.values():
            if s.attempt is not None:
                counts[s.server] += 1
        return counts

    def dispatch(
        self,
        chooser: Chooser,
        *,
        eligible: Sequence[str],
        suspended: Container[str],
        remaining: int,
    ) -> Optional[list[Attempt]]:
        """Hand waiting chunks to free slots as ``chooser`` decides; returns the new attempts,
        or ``None`` when there was nothing to offer (no chunk waiting, or no slot free).

        The chooser may decline (``None``) or prefer a busy server: the chunk then waits for
        it, and so does every chunk behind it.
        """
        free: dict[str, list[Slot]] = {}
        for s in self._slots.values():
            open_to = s.server in eligible and s.server not in suspended
            if s.attempt is None and not s.closed and open_to:
                free.setdefault(s.server, []).append(s)
        in_flight = self.in_flight()
        if not self._pending or not free:
            self._track_idle(in_flight)
            return None
        assigned: list[Attempt] = []
        for queued in list(self._pending):
            servers = [name for name in self.servers if free.get(name)]
            if not servers:
                break  # pragma: no mutate
            allowed = _allowed(queued, servers, eligible)
            if not allowed:
                continue
            able = [name for name in eligible if name not in queued.failed_on] or list(eligible)
            able = [name for name in able if name not in suspended]
            choice = chooser(queued.chunk, allowed, in_flight, remaining, able)
            if choice is None or choice[0] not in allowed:
                break
            name, reason = choice
            assigned.append(self._assign(queued, free[name].pop(0), reason))
            in_flight[name] += 1
        self._track_idle(in_flight)
        return assigned

    def _assign(self, queued: QueuedChunk, slot: Slot, reason: str) -> Attempt:
        attempt = Attempt(next(self._ids), queued.chunk, slot.server, slot.name, reason)
        slot.attempt = attempt
        slot.busy = False
        self._pending.remove(queued)
        return attempt

    # -- idleness ---------------------------------------------------------------------------

    def _track_idle(self, in_flight: Mapping[str, int]) -> None:
        if self._pending and not any(in_flight.values()):
            if self._idle_since is None:
                self._idle_since = self._clock()
        else:
            self._idle_since = None

    def idle_for(self) -> float:
        """Seconds that work has been waiting with nothing running anywhere (0 if not)."""
        return 0.0 if self._idle_since is None else self._clock() - self._idle_since


def _allowed(queued: QueuedChunk, servers: Sequence[str], eligible: Sequence[str]) -> list[str]:
    """The free ``servers`` that may take ``queued``: those that have not failed it (nor had it
    taken back), or, when every eligible server has, all of them (a last resort); empty: skip
    the chunk for now."""
    avoid = queued.moved_from.union(queued.failed_on)
    allowed = [name for name in servers if name not in avoid]
    if not allowed and all(name in avoid for name in eligible):
        return list(servers)
    return allowed
