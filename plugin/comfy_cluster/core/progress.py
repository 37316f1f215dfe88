"""One render job's progress, folded once from its event stream.

Every view of a running job (the CLI's bars and lines, the render node's status and progress
knobs, the server panel's Job column) needs the same few facts: how many frames are on disk out
of how many, which server wrote how many, which chunks each server still holds, the overall
fraction and the ETA, whether a server keeps failing the same way, and which servers are out of
the job and why (a failed preflight check, a blocklist; a server that rejoins is in again).
:class:`JobProgress` counts them from the engine's events in one place, so the views only
decide how to *show* them and can never disagree about the numbers.

Pure: no Qt, no ``nuke``, no threads. A ``JobProgress`` is not thread-safe; its owner applies
events under its own lock (the scheduler already delivers one event at a time).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from comfy_cluster.core.engine.events import (
    ChunkAssigned,
    ChunkRetried,
    FrameWritten,
    JobCancelled,
    JobDone,
    JobEvent,
    JobFailed,
    JobStarted,
    ServerBlocklisted,
    ServerChecked,
    ServerRejoined,
)
from comfy_cluster.core.preflight import ServerVerdict, VerdictState

__all__ = [
    "FINAL_EVENTS",
    "FinishedChunk",
    "HeldChunk",
    "JobProgress",
    "ProgressChange",
    "RetryStreak",
]

#: The events after which a job does nothing more.
FINAL_EVENTS = (JobDone, JobFailed, JobCancelled)


@dataclass
class HeldChunk:
    """A chunk a server was given and has not fully delivered yet."""

    index: int
    #: The frames it was assigned.
    frames: tuple[int, ...]
    #: Those of ``frames`` not on disk yet.
    left: set[int] = field(default_factory=set)


@dataclass(frozen=True)
class FinishedChunk:
    """A chunk whose last frame was just written."""

    index: int
    server: str
    frames: tuple[int, ...]


@dataclass(frozen=True)
class RetryStreak:
    """A server's chunk attempts that failed one after another with the same ``why``.

    A deterministic error (a node that always fails) fails every attempt identically; counting
    the repeats lets a view say the error once with how often it happened, instead of once per
    attempt.
    """

    server: str
    why: str
    #: Failed attempts in a row with this ``why`` (1 for a first failure).
    count: int
    #: The chunks those attempts ran, in order of first failure, each once.
    chunks: tuple[int, ...]
    #: Frames the latest of those attempts handed back to the queue.
    frames: tuple[int, ...] = ()


@dataclass(frozen=True)
class ProgressChange:
    """What one event changed that a view may want to show at once."""

    #: Servers whose held chunks changed (the Job column re-reports these).
    servers: tuple[str, ...] = ()
    #: The chunk this event completed, if any.
    finished: Optional[FinishedChunk] = None
    #: For a ``ChunkRetried``: that server's streak of identical failures, this one included.
    retry: Optional[RetryStreak] = None


NO_CHANGE = ProgressChange()


class JobProgress:
    """The running totals of one job, updated by :meth:`apply` for each event in order.

    ``total`` starts as the caller's estimate (the node knows its frame range before the job
    starts) and becomes ``JobStarted.total_frames`` when that is known and not zero.
    """

    def __init__(self, total: int = 0) -> None:
        #: Frames this job renders.
        self.total = total
        #: ``FrameWritten`` events seen (frames on disk).
        self.done = 0
        #: The latest event's overall fraction, 0..1.
        self.fraction = 0.0
        #: The latest event's estimate of the seconds left (None: unknown).
        self.eta_seconds: Optional[float] = None
        #: Servers that may take work (from ``JobStarted``).
        self.servers: tuple[str, ...] = ()
        #: Frames skipped because they were already on disk (from ``JobStarted``).
        self.skipped: tuple[int, ...] = ()
        #: Frames written per server.
        self.per_server: dict[str, int] = {}
        #: Failed chunk attempts handed back to the queue.
        self.retries = 0
        #: Servers out of this job now, with why (a server that rejoins leaves this).
        self.blocklisted: dict[str, str] = {}
        #: Servers whose preflight check failed, with the verdict (``unusable: ...``), until
        #: they write a frame or rejoin.
        self.failed_checks: dict[str, str] = {}
        #: The final event, once the job ended.
        self.final: Optional[JobEvent] = None
        #: Per server, its current streak of identical failures (ended by a frame it writes).
        self.streaks: dict[str, RetryStreak] = {}
        self._held: dict[str, dict[int, HeldChunk]] = {}

    # -- folding ---------------------------------------------------------------------------------

    def apply(self, event: JobEvent) -> ProgressChange:
        """Count ``event`` in; returns what it changed for views that react per event."""
        self.fraction = event.progress
        self.eta_seconds = event.eta_seconds
        if isinstance(event, JobStarted):
            self._started(event)
        elif isinstance(event, ChunkAssigned):
            return self._assigned(event)
        elif isinstance(event, FrameWritten):
            return self._written(event)
        elif isinstance(event, ChunkRetried):
            return self._retried(event)
        elif isinstance(event, ServerBlocklisted):
            return self._blocklisted(event)
        elif isinstance(event, ServerChecked):
            return self._checked(event)
        elif isinstance(event, ServerRejoined):
            return self._rejoined(event)
        elif isinstance(event, FINAL_EVENTS):
            self.final = event
            changed = tuple(self._held)
            self._held.clear()  # nothing works for a job that ended
            return ProgressChange(servers=changed)
        return NO_CHANGE

    def _started(self, event: JobStarted) -> None:
        self.total = event.total_frames or self.total
        self.servers = tuple(event.servers)
        self.skipped = tuple(event.skipped_frames)
        for name in self.servers:
            self.per_server.setdefault(name, 0)

    def _assigned(self, event: ChunkAssigned) -> ProgressChange:
        frames = tuple(event.frames)
        held = self._held.setdefault(event.server, {})
        held[event.chunk_index] = HeldChunk(event.chunk_index, frames, set(frames))
        return ProgressChange(servers=(event.server,))

    def _written(self, event: FrameWritten) -> ProgressChange:
        self.done += 1
        self.per_server[event.server] = self.per_server.get(event.server, 0) + 1
        self.streaks.pop(event.server, None)  # it works again: a later failure starts afresh
        self.failed_checks.pop(event.server, None)
        held = self._held.get(event.server, {})
        for chunk in list(held.values()):
            if event.frame in chunk.left:
                chunk.left.discard(event.frame)
                if chunk.left:
                    return NO_CHANGE
                del held[chunk.index]
                self._forget_idle(event.server)
                finished = FinishedChunk(chunk.index, event.server, chunk.frames)
                return ProgressChange(servers=(event.server,), finished=finished)
        return NO_CHANGE

    def _retried(self, event: ChunkRetried) -> ProgressChange:
        self.retries += 1
        streak = self._streak(event)
        held = self._held.get(event.server, {})
        if held.pop(event.chunk_index, None) is None:
            return ProgressChange(retry=streak)
        self._forget_idle(event.server)
        return ProgressChange(servers=(event.server,), retry=streak)

    def _streak(self, event: ChunkRetried) -> RetryStreak:
        last = self.streaks.get(event.server)
        if last is None or last.why != event.why:
            streak = RetryStreak(event.server, event.why, 1, (event.chunk_index,), event.frames)
        else:
            chunks = last.chunks
            if event.chunk_index not in chunks:
                chunks = (*chunks, event.chunk_index)
            streak = RetryStreak(event.server, event.why, last.count + 1, chunks, event.frames)
        self.streaks[event.server] = streak
        return streak

    def _blocklisted(self, event: ServerBlocklisted) -> ProgressChange:
        self.blocklisted[event.server] = event.why
        self._held.pop(event.server, None)
        return ProgressChange(servers=(event.server,))  # it now shows why it is out

    def _checked(self, event: ServerChecked) -> ProgressChange:
        if event.ok:
            self.failed_checks.pop(event.server, None)
        else:
            state = event.state or VerdictState.UNUSABLE
            verdict = ServerVerdict(event.server, False, tuple(event.reasons), state)
            self.failed_checks[event.server] = verdict.text
        return ProgressChange(servers=(event.server,))

    def _rejoined(self, event: ServerRejoined) -> ProgressChange:
        """A server back in the job is no longer out, whatever had taken it out."""
        self.blocklisted.pop(event.server, None)
        self.failed_checks.pop(event.server, None)
        self.streaks.pop(event.server, None)
        return ProgressChange(servers=(event.server,))

    def _forget_idle(self, server: str) -> None:
        if not self._held.get(server):
            self._held.pop(server, None)

    # -- reading ---------------------------------------------------------------------------------

    @property
    def ended(self) -> bool:
        """True once the final event was applied."""
        return self.final is not None

    @property
    def percent(self) -> float:
        """The fraction as a percentage for a progress knob: clamped to 0..100, one decimal."""
        return round(max(0.0, min(1.0, float(self.fraction))) * 100.0, 1)

    def working(self) -> tuple[str, ...]:
        """Servers holding frames they have not delivered yet, in the order they got them."""
        return tuple(self._held)

    def idle_reasons(self) -> dict[str, str]:
        """Servers that do not work in this job now, with why: ``out: <why>`` for one taken out
        of the job, the failed check (``unreachable: ...``) for one that has not written a frame
        since (it may still come in). A server that rejoins or works is not listed."""
        notes = dict(self.failed_checks)
        notes.update((name, f"out: {why}") for name, why in self.blocklisted.items())
        return notes

    def held_chunks(self, server: str) -> tuple[HeldChunk, ...]:
        """The chunks ``server`` still holds, by chunk index."""
        return tuple(sorted(self._held.get(server, {}).values(), key=lambda c: c.index))
