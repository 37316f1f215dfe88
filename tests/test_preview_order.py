"""core/frames.py's preview order: a spread of the shot first, every frame exactly once."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from comfy_cluster.core.errors import ConfigError
from comfy_cluster.core.frames import (
    FRAME_ORDERS,
    ORDER_PREVIEW,
    ORDER_SEQUENTIAL,
    Chunk,
    FixedChunker,
    FrameRange,
    order_chunks,
    preview_order,
)


@pytest.mark.parametrize(
    ("frames", "expected"),
    [
        ((), ()),
        ((7,), (7,)),
        ((1, 2), (1, 2)),
        ((1, 2, 3), (1, 3, 2)),
        (tuple(range(1, 6)), (1, 5, 3, 2, 4)),
        (tuple(range(1, 10)), (1, 9, 5, 3, 7, 2, 4, 6, 8)),
        (
            tuple(range(1001, 1018)),
            (1001, 1017, 1009, 1005, 1013, 1003, 1007, 1011, 1015, *range(1002, 1017, 2)),
        ),
        ((-5, -3, -1, 1), (-5, 1, -3, -1)),
    ],
)
def test_small_exact_cases(frames: tuple[int, ...], expected: tuple[int, ...]) -> None:
    assert preview_order(frames) == expected


def test_a_frame_range_with_a_step_keeps_its_frames() -> None:
    frames = FrameRange.parse("1-100x10").frames
    assert preview_order(frames)[:3] == (1, 91, 41)


def test_orders_are_named_for_the_cli_and_the_knob() -> None:
    assert FRAME_ORDERS == (ORDER_SEQUENTIAL, ORDER_PREVIEW) == ("sequential", "preview")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-(10**6), 10**6), unique=True, max_size=300).map(sorted))
def test_is_a_permutation(frames: list[int]) -> None:
    order = preview_order(frames)
    assert sorted(order) == frames and len(order) == len(frames)
    assert preview_order(frames) == order  # deterministic


@settings(max_examples=200, deadline=None)
@given(st.integers(5, 10000), st.integers(-5000, 5000), st.integers(1, 3))
def test_first_five_span_at_least_half_the_range(size: int, first: int, step: int) -> None:
    frames = list(range(first, first + size * step, step))
    head = preview_order(frames)[:5]
    assert max(head) - min(head) >= (frames[-1] - frames[0]) / 2


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 2000))
def test_every_prefix_after_the_ends_halves_the_gaps(size: int) -> None:
    """After first, last and the 2**k - 1 midpoints of level k, no gap is over twice the rest."""
    order = preview_order(range(size))
    for level in range(1, 12):
        count = 2 + 2**level - 1
        if count >= size:
            break
        taken = sorted(order[:count])
        gaps = [b - a for a, b in zip(taken, taken[1:])]
        assert max(gaps) <= 2 * min(gaps) + 1


# -- chunks ------------------------------------------------------------------------------------


def chunks_of(frames: range, size: int) -> list[Chunk]:
    return FixedChunker(size).split(frames)


def test_sequential_keeps_the_chunks_as_they_are() -> None:
    chunks = chunks_of(range(1, 101), 10)
    assert order_chunks(chunks) == chunks == order_chunks(chunks, ORDER_SEQUENTIAL)


def test_preview_puts_first_last_and_middle_chunks_first_with_indices_unchanged() -> None:
    chunks = chunks_of(range(1, 101), 10)
    ordered = order_chunks(chunks, ORDER_PREVIEW)
    assert [c.index for c in ordered[:3]] == [0, 9, 4]
    assert sorted(ordered, key=lambda c: c.index) == chunks
    assert ordered[1].frames == tuple(range(91, 101))


def test_an_unknown_order_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="sequential, preview"):
        order_chunks([], "random")


def first_written(chunks: list[Chunk], servers: int, count: int) -> list[int]:
    """The first ``count`` frames written when ``servers`` equal servers take chunks in list
    order and render one frame per tick (ties broken by server)."""
    queue = list(chunks)
    busy: list[list[int]] = [[] for _ in range(servers)]
    written: list[int] = []
    while len(written) < count and (queue or any(busy)):
        for held in busy:
            if not held and queue:
                held.extend(queue.pop(0).frames)
        for held in busy:
            if held and len(written) < count:
                written.append(held.pop(0))
    return written


@settings(max_examples=200, deadline=None)
@given(st.integers(5, 10000), st.integers(1, 50))
def test_with_three_servers_the_first_five_frames_written_span_half(size: int, chunk: int) -> None:
    """Holds whenever there are two chunks or more (one chunk has nothing to reorder; the
    automatic chunker cuts about four per server)."""
    assume(chunk < size)
    frames = range(1001, 1001 + size)
    ordered = order_chunks(chunks_of(frames, chunk), ORDER_PREVIEW)
    head = first_written(ordered, servers=3, count=5)
    assert max(head) - min(head) >= (frames[-1] - frames[0]) / 2, (head, chunk)


def test_in_order_chunks_do_not_have_that_spread() -> None:
    """The property above is the preview order's doing, not the simulation's."""
    frames = range(1, 1001)
    head = first_written(chunks_of(frames, 10), servers=3, count=5)
    assert max(head) - min(head) < 500
