"""The frame ledger of one job, :class:`FrameLedger`: which frames are on disk, which are being
written, and how far the running prompts are.

It is what makes "every frame written exactly once" hold: a frame is claimed before it is
written, recorded after, released if the write failed, and a claim on a frame that is written or
being written is refused (the late result is discarded). Plain bookkeeping: the job's book
(``core/engine/book.py``) holds the one lock around every call.
"""

from __future__ import annotations

from collections.abc import Iterable

from comfy_cluster.core.engine.attempt import Attempt

__all__ = ["FrameLedger"]


class FrameLedger:
    """Delivered and claimed frames, and the running prompts' fractions. Caller holds the lock."""

    def __init__(self, frames_to_render: Iterable[int], skipped: Iterable[int] = ()) -> None:
        self.to_render: frozenset[int] = frozenset(frames_to_render)
        #: Frames found on disk and not rendered (``existing="resume"``).
        self.skipped: tuple[int, ...] = tuple(sorted(skipped))
        #: Results refused because their frame was written (or claimed) already, or stale.
        self.discarded = 0
        #: frame -> (path, server) once written.
        self._delivered: dict[int, tuple[str, str]] = {}
        #: frame -> attempt id while that attempt writes it.
        self._claimed: dict[int, int] = {}
        #: Delivered frames that are in ``to_render`` (progress without a scan).
        self._done = 0
        #: attempt id -> (fraction of its running prompt done, frames of it not written yet).
        self._fractions: dict[int, tuple[float, int]] = {}
        #: attempt id -> frames it delivered.
        self._frames_done_in: dict[int, int] = {}

    # -- questions --------------------------------------------------------------------------

    def is_delivered(self, frame: int) -> bool:
        return frame in self._delivered

    def undelivered(self, frames: Iterable[int]) -> tuple[int, ...]:
        return tuple(f for f in frames if f not in self._delivered)

    @property
    def complete(self) -> bool:
        """Every frame to render is on disk."""
        return self._done >= len(self.to_render)

    @property
    def remaining(self) -> int:
        """Frames to render that are not on disk yet (in flight or queued)."""
        return len(self.to_render) - self._done

    def progress(self) -> tuple[float, float]:
        """``(fraction done, frames left)``, counting the running prompts' fractions."""
        total = len(self.to_render)
        if total == 0:
            return 1.0, 0.0
        done = self._done
        # Each running prompt counts its unwritten frames, times how far it is: a batch prompt
        # of ten frames half done is five frames, not one.
        running = sum(fraction * frames for fraction, frames in self._fractions.values())
        return min(1.0, (done + running) / total), max(0.0, total - done - running)

    def delivered_frames(self) -> dict[int, tuple[str, str]]:
        """frame -> (path, server) of every frame written (a copy)."""
        return dict(self._delivered)

    def frames_done_in(self, attempt: Attempt) -> int:
        return self._frames_done_in.get(attempt.attempt_id, 0)

    # -- the write protocol -----------------------------------------------------------------

    def claim(self, attempt: Attempt, frame: int, *, stale: bool) -> bool:
        """Reserve ``frame`` for ``attempt``; refuse (and count a discard) when the frame is
        written or being written, is not ours to render, or the attempt is ``stale``."""
        taken = frame in self._delivered or frame in self._claimed
        if taken or frame not in self.to_render or stale:
            self.discarded += 1
            return False
        self._claimed[frame] = attempt.attempt_id
        return True

    def release(self, attempt: Attempt, frame: int) -> None:
        """The write of ``frame`` by ``attempt`` failed: another attempt may claim it."""
        if self._claimed.get(frame) == attempt.attempt_id:
            del self._claimed[frame]

    def record_written(self, attempt: Attempt, frame: int, path: str) -> int:
        """``frame`` is on disk at ``path``; returns the frames ``attempt`` delivered so far."""
        self.release(attempt, frame)  # pragma: no mutate
        if frame not in self._delivered and frame in self.to_render:
            self._done += 1
        self._delivered[frame] = (path, attempt.server)
        done = self._frames_done_in.get(attempt.attempt_id, 0) + 1
        self._frames_done_in[attempt.attempt_id] = done
        self._written_from_prompt(attempt.attempt_id)
        return done

    def _written_from_prompt(self, attempt_id: int) -> None:
        """One frame of the running prompt is on disk: it stops counting as running (the rest
        of a batch keeps its fraction, so progress does not dip while a batch is written)."""
        running = self._fractions.get(attempt_id)
        if running is None:
            return
        fraction, frames = running
        if frames > 1:
            self._fractions[attempt_id] = (fraction, frames - 1)
        else:
            del self._fractions[attempt_id]

    # -- running prompts --------------------------------------------------------------------

    def set_fraction(self, attempt: Attempt, fraction: float, frames: int) -> bool:
        """Note that the prompt of ``attempt`` (``frames`` frames) is ``fraction`` done; False
        when the change is under 1 % (not worth an event)."""
        fraction = min(1.0, max(0.0, fraction))
        frames = max(1, frames)
        previous = self._fractions.get(attempt.attempt_id)
        if previous is not None and abs(previous[0] - fraction) < 0.01:
            return False
        self._fractions[attempt.attempt_id] = (fraction, frames)
        return True

    def attempt_ended(self, attempt: Attempt) -> None:
        """``attempt`` has no running prompt any more."""
        self._fractions.pop(attempt.attempt_id, None)
