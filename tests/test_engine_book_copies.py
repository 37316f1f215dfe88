"""The job book's speculative side (``book_copies.py``), driven by hand with a fake clock: an
idle fast server copies the chunk a slow one holds only when nothing else waits, the copy is
announced at once, and its frames teach the book its server's pace."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

from comfy_cluster.core.engine import events as ev
from comfy_cluster.core.engine.attempt import Attempt, Outcome, OutcomeKind
from comfy_cluster.core.engine.book import JobBook
from comfy_cluster.core.engine.job import RenderJob
from comfy_cluster.core.frames import Chunk

WORKFLOW = {"1": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}}}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class SlowHoldsTheTail:
    """Chunk 0 (frame 1) on fast, chunk 1 (frame 2) on slow, then chunk 2 (frames 3-5) on slow
    once both are done; fast is 1 s a frame, slow 10 s. ``held_back``: a fourth chunk that no
    server takes, so work still waits."""

    def __init__(self, held_back: bool = False) -> None:
        chunks = [Chunk(0, (1,)), Chunk(1, (2,)), Chunk(2, (3, 4, 5))]
        if held_back:
            chunks.append(Chunk(3, (6,)))
        frames = "1-6" if held_back else "1-5"
        self.job = RenderJob(WORKFLOW, frames, "o.####.png")
        self.events: list[ev.JobEvent] = []
        self.clock = Clock()
        self.book = JobBook(
            self.job,
            chunks,
            ["fast", "slow"],
            frames_to_render=self.job.frame_range.frames,
            chooser=self.choose,
            sink=ev.EventSink(self.events.append),
            clock=self.clock,
        )
        self.book.add_slot("fast-0", "fast")
        self.book.add_slot("slow-0", "slow")
        first = self.take("fast-0")
        second = self.take("slow-0")
        self.clock.now += 1.0
        self.write(first, 1)
        self.clock.now += 9.0
        self.write(second, 2)
        self.tail = self.take("slow-0")
        assert self.tail.chunk.index == 2

    @staticmethod
    def choose(chunk: Chunk, free: Sequence[str], *_: Any) -> Optional[tuple[str, str]]:
        wanted = {0: "fast", 1: "slow", 2: "slow"}.get(chunk.index)
        return (wanted, "planned") if wanted in free else None

    def take(self, slot: str) -> Attempt:
        got = self.book.next_attempt(slot, 0.0)
        assert isinstance(got, Attempt), f"{slot} got {got!r}"
        return got

    def write(self, attempt: Attempt, frame: int, finish: bool = True) -> None:
        assert self.book.claim_frame(attempt, frame)
        self.book.frame_written(attempt, frame, f"/out/{frame}")
        if finish:
            self.book.finish_attempt(attempt, Outcome(OutcomeKind.OK))


def test_an_idle_fast_server_copies_the_slow_servers_tail_and_says_so_at_once() -> None:
    run = SlowHoldsTheTail()
    assert run.book.copy_worth_asking("fast-0")
    copy = run.book.take_copy("fast-0")
    assert copy is not None and copy.server == "fast" and copy.chunk.frames == (5, 4, 3)
    # Delivered without another call into the book: a view shows the copy now.
    speculated = [e for e in run.events if isinstance(e, ev.ChunkSpeculated)]
    assert [(e.chunk_index, e.server, e.holder) for e in speculated] == [(2, "fast", "slow")]
    assigned = [(e.chunk_index, e.server) for e in run.events if isinstance(e, ev.ChunkAssigned)]
    assert assigned[-1] == (2, "fast")
    run.clock.now += 2.0
    run.write(copy, 5, finish=False)
    assert run.book._times.per_frame("fast") == 2.0  # the copy's own pace, from its start


def test_no_copy_while_other_work_still_waits() -> None:
    run = SlowHoldsTheTail(held_back=True)
    assert not run.book.copy_worth_asking("fast-0")
    assert run.book.take_copy("fast-0") is None


def test_a_running_copy_is_not_queued_again_when_its_slot_closes() -> None:
    """A copy is started the moment it is handed out. When its worker goes away, the chunk
    must not go back to the queue as if never taken: its holder still renders it (a second
    queued copy would render its frames a third time)."""
    run = SlowHoldsTheTail()
    copy = run.book.take_copy("fast-0")
    assert copy is not None
    run.book.close_slot("fast-0")
    assert not run.book._queue.has_pending


def test_an_ended_attempts_progress_clock_is_forgotten() -> None:
    """Each attempt's last-progress time is kept only while it runs: a job of a million
    frames ends a hundred thousand attempts, and none may stay behind in the book."""
    run = SlowHoldsTheTail()
    run.clock.now += 3.0
    assert run.book._times.since_progress(run.tail) == 3.0
    run.write(run.tail, 3)  # written and finished: the attempt ended
    run.clock.now += 4.0
    assert run.book._times.since_progress(run.tail) == 0.0
