"""The frame ledger's progress: a running prompt counts as the frames it renders, so a batch
prompt (one prompt, several frames) moves the bar as far as its frames do."""

from __future__ import annotations

import pytest

from comfy_cluster.core.engine.attempt import Attempt
from comfy_cluster.core.engine.ledger import FrameLedger
from comfy_cluster.core.frames import Chunk


def batch_attempt(frames: tuple[int, ...], attempt_id: int = 1) -> Attempt:
    return Attempt(attempt_id, Chunk(0, frames, (), ()), "a", "slot-a", "test")


def test_progress_never_dips_while_a_finished_batch_is_written() -> None:
    ledger = FrameLedger(range(1, 11))
    batch = batch_attempt(tuple(range(1, 11)))
    ledger.set_fraction(batch, 1.0, 10)
    seen = [ledger.progress()[0]]
    for frame in range(1, 11):
        assert ledger.claim(batch, frame, stale=False)
        ledger.record_written(batch, frame, f"/o/{frame}")
        seen.append(ledger.progress()[0])
    assert seen == sorted(seen)
    assert seen[-1] == 1.0 and ledger.progress()[1] == 0.0


def test_one_frame_prompts_count_their_fraction_and_clamp_it() -> None:
    ledger = FrameLedger([1, 2, 3, 4])
    first, second = batch_attempt((1,), 1), batch_attempt((2,), 2)
    ledger.set_fraction(first, 0.25, 1)
    ledger.set_fraction(second, 7.0, 1)  # a server reporting past the end counts as done
    assert ledger.progress()[0] == pytest.approx(1.25 / 4)
    assert not ledger.set_fraction(first, 0.255, 1)  # under 1 %: no event
    ledger.attempt_ended(second)
    assert ledger.progress()[0] == pytest.approx(0.25 / 4)
