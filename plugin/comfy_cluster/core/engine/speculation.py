"""The speculative tail of one job: :class:`FrameTimes` and :func:`pick_copy`.

At the end of a job a server that slowed down (another job landed on it, thermal throttling)
may hold the last chunk while the others sit idle. An idle server then runs a copy of that chunk
when it would clearly finish it sooner; both render, whichever writes a frame first wins it (the
frame ledger refuses the other's result) and the loser's prompt is interrupted and deleted.

The estimate uses this job's own timing per server: the time between two frames written by one
slot (so a slowdown shows at once, unlike a long average), and for the holder also how long its
current frame has been running. The copy renders the frames last first, so the two meet in the
middle and at most one frame is rendered twice. Plain bookkeeping under the job book's lock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Callable, Optional

from comfy_cluster.core.engine.attempt import Attempt

__all__ = ["CopyPlan", "FrameTimes", "pick_copy"]

#: A copy must finish in at most this share of the holder's estimated time...
GAIN = 0.5
#: ... and save at least this many of the copy's own frame times.
MIN_SAVING_FRAMES = 2.0


class FrameTimes:
    """Seconds per frame per server in this job, and when each attempt last made progress."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._per_frame: dict[str, float] = {}
        self._last: dict[int, float] = {}

    def started(self, attempt: Attempt) -> None:
        self._last[attempt.attempt_id] = self._clock()

    def written(self, attempt: Attempt) -> None:
        """``attempt`` wrote a frame: the time since its previous one is its server's pace."""
        now = self._clock()
        before = self._last.get(attempt.attempt_id)
        if before is not None:
            self._per_frame[attempt.server] = now - before
        self._last[attempt.attempt_id] = now

    def ended(self, attempt: Attempt) -> None:
        self._last.pop(attempt.attempt_id, None)

    def per_frame(self, server: str) -> Optional[float]:
        return self._per_frame.get(server)

    def since_progress(self, attempt: Attempt) -> float:
        """Seconds since ``attempt`` started or last wrote a frame."""
        last = self._last.get(attempt.attempt_id)
        return 0.0 if last is None else max(0.0, self._clock() - last)


class CopyPlan:
    """A copy worth running: of ``holder``'s chunk, its ``frames`` last first, and why."""

    __slots__ = ("frames", "holder", "reason")

    def __init__(self, holder: Attempt, frames: tuple[int, ...], reason: str) -> None:
        self.holder = holder
        self.frames = frames
        self.reason = reason


def pick_copy(
    server: str,
    running: Iterable[Attempt],
    undelivered: Callable[[Sequence[int]], tuple[int, ...]],
    times: FrameTimes,
) -> Optional[CopyPlan]:
    """The running chunk idle ``server`` should copy (the largest saving), or ``None``."""
    mine = times.per_frame(server)
    if mine is None:
        return None  # its pace in this job is unknown: no basis for "clearly sooner"
    best: Optional[tuple[float, CopyPlan]] = None
    for holder in running:
        left = undelivered(holder.chunk.frames)
        if not left:
            continue
        since = times.since_progress(holder)
        pace = max(times.per_frame(holder.server) or 0.0, since)
        holder_left = len(left) * pace - min(since, pace / 2)
        copy = len(left) * mine
        saving = holder_left - copy
        if copy > GAIN * holder_left or saving < MIN_SAVING_FRAMES * mine:
            continue
        if best is None or saving > best[0]:
            reason = (
                f"{server}: idle, ~{copy:.1f} s for {len(left)} frame(s) against "
                f"~{holder_left:.1f} s on {holder.server}"
            )
            best = (saving, CopyPlan(holder, tuple(reversed(left)), reason))
    return None if best is None else best[1]
