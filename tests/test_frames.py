"""core/frames.py: Nuke frame-range parsing, chunking with handles, frame-numbered paths."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from comfy_cluster.core.errors import ConfigError, FrameRangeError
from comfy_cluster.core.frames import (
    MAX_FRAMES,
    AutoChunker,
    Chunk,
    FixedChunker,
    FrameRange,
    format_frame_path,
    has_frame_token,
)

# ---------------------------------------------------------------------------------------------
# Parsing


@pytest.mark.parametrize(
    ("text", "frames"),
    [
        ("1", (1,)),
        ("1001", (1001,)),
        ("0", (0,)),
        ("-3", (-3,)),
        ("1-5", (1, 2, 3, 4, 5)),
        ("1001-1004", (1001, 1002, 1003, 1004)),
        ("1-10x3", (1, 4, 7, 10)),
        ("1-10X3", (1, 4, 7, 10)),
        ("1-10x2", (1, 3, 5, 7, 9)),
        ("1-3x1", (1, 2, 3)),
        ("1-3x100", (1,)),
        ("1 5 10-12", (1, 5, 10, 11, 12)),
        ("1,5,10-12", (1, 5, 10, 11, 12)),
        ("1, 5 ,10-12", (1, 5, 10, 11, 12)),
        ("  1\t5\n7  ", (1, 5, 7)),
        (",1,,2,", (1, 2)),
        ("-5--1", (-5, -4, -3, -2, -1)),
        ("-2-2", (-2, -1, 0, 1, 2)),
        ("-3-4", (-3, -2, -1, 0, 1, 2, 3, 4)),
        ("-10--4x3", (-10, -7, -4)),
        ("5-5", (5,)),
        # reversed ranges are normalised; the step stays anchored on the first number written
        ("10-1", tuple(range(1, 11))),
        ("10-1x3", (1, 4, 7, 10)),
        ("10-2x3", (4, 7, 10)),
        ("-1--5", (-5, -4, -3, -2, -1)),
        # sorted and de-duplicated
        ("5 1 3 1 5", (1, 3, 5)),
        ("1-10 5-15", tuple(range(1, 16))),
        ("20-25 1-3", (1, 2, 3, 20, 21, 22, 23, 24, 25)),
    ],
)
def test_parse(text: str, frames: tuple[int, ...]) -> None:
    assert FrameRange.parse(text).frames == frames


@pytest.mark.parametrize(
    ("text", "part"),
    [
        ("abc", "abc"),
        ("1-", "1-"),
        ("-", "-"),
        ("1 - 10", "-"),
        ("1--", "1--"),
        ("1.5", "1.5"),
        ("1-10.5", "1-10.5"),
        ("1-10x", "1-10x"),
        ("1-10x0", "1-10x0"),
        ("1-10x-2", "1-10x-2"),
        ("x2", "x2"),
        ("1x2", "1x2"),
        ("1-2-3", "1-2-3"),
        ("1001-1100 10b 3", "10b"),
        ("1;2", "1;2"),
        ("1-10y2", "1-10y2"),
        ("+5", "+5"),
        ("1-1000001", "1-1000001"),  # MAX_FRAMES + 1, spelled out: ids must not follow it
    ],
)
def test_parse_errors_quote_the_bad_part(text: str, part: str) -> None:
    with pytest.raises(FrameRangeError) as info:
        FrameRange.parse(text)
    assert info.value.part == part
    assert info.value.text == text
    assert f"'{part}'" in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("text", ["", "   ", ",", " , ,"])
def test_parse_empty_is_an_error(text: str) -> None:
    with pytest.raises(FrameRangeError, match="empty"):
        FrameRange.parse(text)


def test_parse_total_over_limit_quotes_the_part_that_crossed_it() -> None:
    half = MAX_FRAMES // 2 + 1
    text = f"1-{half} {half + 1}-{2 * half}"
    with pytest.raises(FrameRangeError) as info:
        FrameRange.parse(text)
    assert info.value.part == f"{half + 1}-{2 * half}"


def test_parse_refuses_non_text() -> None:
    with pytest.raises(FrameRangeError):
        FrameRange.parse(1001)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("frames", "text"),
    [
        ((1001,), "1001"),
        (range(1001, 1101), "1001-1100"),
        ((1, 4, 7, 10), "1-10x3"),
        ((1, 2), "1-2"),
        ((1, 5), "1 5"),
        ((1, 5, 10, 11, 12), "1 5 10-12"),
        ((1, 2, 4, 6, 8), "1-2 4-8x2"),
        ((-5, -4, -3), "-5--3"),
        ((-2, -1, 0, 1), "-2-1"),
        ((-10, -7, -4), "-10--4x3"),
    ],
)
def test_str_is_compact_nuke_syntax(frames: tuple[int, ...], text: str) -> None:
    assert str(FrameRange.from_frames(frames)) == text


def test_value_behaviour() -> None:
    fr = FrameRange.parse("1-5")
    assert len(fr) == 5
    assert list(fr) == [1, 2, 3, 4, 5]
    assert 3 in fr and 6 not in fr
    assert (fr.first, fr.last) == (1, 5)
    assert fr == FrameRange.from_frames([5, 4, 3, 2, 1, 1])
    assert fr == FrameRange((3, 1, 2, 5, 4))
    assert hash(fr) == hash(FrameRange.parse("1 2 3 4 5"))
    with pytest.raises(AttributeError):
        fr.frames = (1,)  # type: ignore[misc]


def test_from_frames_accepts_integral_floats_from_nuke_knobs() -> None:
    assert FrameRange.from_frames([1001.0, 1002.0]).frames == (1001, 1002)


@pytest.mark.parametrize("bad", [[1.5], [True], ["1"], [None]])
def test_from_frames_refuses_non_frames(bad: list) -> None:
    with pytest.raises(FrameRangeError):
        FrameRange.from_frames(bad)


def test_from_frames_empty_is_an_error() -> None:
    with pytest.raises(FrameRangeError, match="no frames"):
        FrameRange.from_frames([])


def test_from_bounds() -> None:
    assert FrameRange.from_bounds(1001.0, 1005.0).frames == tuple(range(1001, 1006))
    assert FrameRange.from_bounds(1, 10, 3).frames == (1, 4, 7, 10)
    with pytest.raises(FrameRangeError):
        FrameRange.from_bounds(1, 10, 0)


# ---------------------------------------------------------------------------------------------
# Chunking


def test_fixed_chunker_without_handles() -> None:
    chunks = FixedChunker(4).split(FrameRange.parse("1-10"))
    assert [c.frames for c in chunks] == [(1, 2, 3, 4), (5, 6, 7, 8), (9, 10)]
    assert [c.index for c in chunks] == [0, 1, 2]
    assert all(c.handles_before == () and c.handles_after == () for c in chunks)
    assert chunks[0].all_frames == chunks[0].frames == chunks[0].deliver


def test_fixed_chunker_is_contiguous_in_the_request_not_in_frame_numbers() -> None:
    chunks = FixedChunker(2).split(FrameRange.parse("1-100x10"))
    assert [c.frames for c in chunks] == [(1, 11), (21, 31), (41, 51), (61, 71), (81, 91)]


def test_fixed_chunker_accepts_plain_iterables() -> None:
    assert [c.frames for c in FixedChunker(2).split([5, 1, 3, 3])] == [(1, 3), (5,)]


def test_fixed_chunker_handles_are_clamped_to_the_request() -> None:
    chunks = FixedChunker(3, handles=2).split(FrameRange.parse("1-10"))
    assert chunks == [
        Chunk(0, (1, 2, 3), (), (4, 5)),
        Chunk(1, (4, 5, 6), (2, 3), (7, 8)),
        Chunk(2, (7, 8, 9), (5, 6), (10,)),
        Chunk(3, (10,), (8, 9), ()),
    ]
    assert chunks[1].all_frames == (2, 3, 4, 5, 6, 7, 8)


def test_handles_use_neighbouring_frame_numbers_with_stepped_ranges() -> None:
    chunks = FixedChunker(2, handles=1).split(FrameRange.parse("1-9x2"))
    assert chunks[1] == Chunk(1, (5, 7), (4,), (8,))
    assert chunks[-1] == Chunk(2, (9,), (8,), ())


def test_handles_larger_than_the_range() -> None:
    (chunk,) = FixedChunker(10, handles=5).split(FrameRange.parse("1001-1003"))
    assert chunk.all_frames == (1001, 1002, 1003)
    (single,) = FixedChunker(1, handles=3).split([7])
    assert single.all_frames == (7,)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"size": 0}, "chunk size"),
        ({"size": -1}, "chunk size"),
        ({"size": 1.5}, "chunk size"),
        ({"size": True}, "chunk size"),
        ({"size": 2, "handles": -1}, "handles"),
    ],
)
def test_fixed_chunker_refuses_bad_arguments(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        FixedChunker(**kwargs)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("kwargs", "total", "size"),
    [
        # no timings: total / (workers * 4), clamped to 1..50
        ({"workers": 2}, 100, 12),
        ({"workers": 1}, 100, 25),
        ({"workers": 1}, 1000, 50),
        ({"workers": 8}, 10, 1),
        ({"workers": 3}, 1, 1),
        # timings: target / seconds_per_frame, minus the handles' render cost
        ({"target_seconds": 30, "seconds_per_frame": 2.0, "workers": 1}, 1000, 15),
        ({"target_seconds": 30, "seconds_per_frame": 2.0, "workers": 1, "handles": 2}, 1000, 11),
        ({"target_seconds": 30, "seconds_per_frame": 0.01, "workers": 1}, 1000, 50),
        ({"target_seconds": 30, "seconds_per_frame": 100.0, "workers": 1}, 1000, 1),
        # ... but every worker gets a chunk
        ({"target_seconds": 60, "seconds_per_frame": 1.0, "workers": 4}, 20, 5),
        (
            {"target_seconds": 60, "seconds_per_frame": 0.5, "workers": 2, "max_size": 500},
            1000,
            120,
        ),
        ({"workers": 1, "min_size": 10}, 8, 10),
    ],
)
def test_auto_chunker_size(kwargs: dict, total: int, size: int) -> None:
    assert AutoChunker(**kwargs).size_for(total) == size


def test_auto_chunker_split_and_derived_copy() -> None:
    chunker = AutoChunker(target_seconds=10, workers=1, handles=1)
    assert [len(c) for c in chunker.split(FrameRange.parse("1-40"))] == [10] * 4
    timed = chunker.with_seconds_per_frame(1.0)
    assert chunker.seconds_per_frame is None
    assert timed.size_for(40) == 8
    assert timed.split(FrameRange.parse("1-16"))[1] == Chunk(1, tuple(range(9, 17)), (8,), ())


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"target_seconds": 0}, "target_seconds"),
        ({"seconds_per_frame": 0.0}, "seconds_per_frame"),
        ({"seconds_per_frame": -1.0}, "seconds_per_frame"),
        ({"workers": 0}, "workers"),
        ({"handles": -2}, "handles"),
        ({"min_size": 10, "max_size": 5}, "max_size"),
    ],
)
def test_auto_chunker_refuses_bad_arguments(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        AutoChunker(**kwargs)
    assert info.value.field == field


# ---------------------------------------------------------------------------------------------
# Properties

frame_sets = st.sets(st.integers(min_value=-2000, max_value=5000), min_size=1, max_size=200)


@settings(max_examples=200, deadline=None)
@given(frame_sets)
def test_str_round_trips(frames: set[int]) -> None:
    fr = FrameRange.from_frames(frames)
    assert FrameRange.parse(str(fr)) == fr
    assert fr.frames == tuple(sorted(frames))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(-100, 100), st.integers(-100, 100), st.integers(1, 10)),
        min_size=1,
        max_size=6,
    ),
    st.sampled_from([" ", ",", ", "]),
)
def test_parse_matches_a_reference_model(parts: list[tuple[int, int, int]], sep: str) -> None:
    text = sep.join(f"{a}-{b}x{s}" for a, b, s in parts)
    expected: set[int] = set()
    for a, b, s in parts:
        expected.update(range(a, b + 1, s) if a <= b else range(a, b - 1, -s))
    assert FrameRange.parse(text).frames == tuple(sorted(expected))


@settings(max_examples=200, deadline=None)
@given(frame_sets, st.integers(1, 30), st.integers(0, 5))
def test_chunks_partition_the_frames_and_never_deliver_handles(
    frames: set[int], size: int, handles: int
) -> None:
    fr = FrameRange.from_frames(frames)
    chunks = FixedChunker(size, handles).split(fr)
    delivered = [f for c in chunks for f in c.frames]
    assert tuple(delivered) == fr.frames  # exact partition, in order
    assert [c.index for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert 1 <= len(c.frames) <= size
        assert not set(c.handles_before + c.handles_after) & set(c.frames)
        assert len(c.handles_before) <= handles and len(c.handles_after) <= handles
        assert all(fr.first <= f <= fr.last for f in c.all_frames)
        assert list(c.all_frames) == sorted(c.all_frames)
        assert len(set(c.all_frames)) == len(c.all_frames)


@settings(max_examples=100, deadline=None)
@given(
    frame_sets,
    st.one_of(st.none(), st.floats(0.01, 1000)),
    st.integers(1, 16),
    st.integers(0, 3),
)
def test_auto_chunks_partition_the_frames(
    frames: set[int], spf: float | None, workers: int, handles: int
) -> None:
    fr = FrameRange.from_frames(frames)
    chunks = AutoChunker(30.0, spf, workers, handles).split(fr)
    assert tuple(f for c in chunks for f in c.frames) == fr.frames
    assert all(1 <= len(c) <= 50 for c in chunks)


# ---------------------------------------------------------------------------------------------
# Frame-numbered paths


@pytest.mark.parametrize(
    ("pattern", "frame", "path"),
    [
        ("/out/shot.####.exr", 1001, "/out/shot.1001.exr"),
        ("/out/shot.####.exr", 7, "/out/shot.0007.exr"),
        ("/out/shot.####.exr", 123456, "/out/shot.123456.exr"),
        ("/out/shot.#.exr", 7, "/out/shot.7.exr"),
        ("/out/shot.######.exr", 7, "/out/shot.000007.exr"),
        ("/out/shot.%04d.png", 7, "/out/shot.0007.png"),
        ("/out/shot.%06d.png", 7, "/out/shot.000007.png"),
        ("/out/shot.%d.png", 7, "/out/shot.7.png"),
        ("/out/shot.$F4.exr", 7, "/out/shot.0007.exr"),
        ("/out/shot.$F.exr", 7, "/out/shot.7.exr"),
        ("/out/shot_$F2.v1.exr", 7, "/out/shot_07.v1.exr"),
        ("/out/####/shot.####.exr", 12, "/out/0012/shot.0012.exr"),
        ("/out/shot.####.exr", -5, "/out/shot.-005.exr"),
        ("/out/shot.%d.exr", -5, "/out/shot.-5.exr"),
        ("/out/$FOO/shot.%04d.exr", 3, "/out/$FOO/shot.0003.exr"),
        ("C:\\out\\shot.####.exr", 3, "C:\\out\\shot.0003.exr"),
    ],
)
def test_format_frame_path(pattern: str, frame: int, path: str) -> None:
    assert has_frame_token(pattern)
    assert format_frame_path(pattern, frame) == path


@pytest.mark.parametrize(
    "pattern",
    [
        "/out/shot.exr",
        "/out/shot.%4d.exr",
        "/out/$FOO.exr",
        "/out/$F0.exr",
        "/out/$F2_v1.exr",
        "/out/shot.%s",
    ],
)
def test_format_frame_path_without_token_is_a_clear_error(pattern: str) -> None:
    assert not has_frame_token(pattern)
    with pytest.raises(ConfigError, match="no frame token") as info:
        format_frame_path(pattern, 1)
    assert pattern in str(info.value)
    assert isinstance(info.value, ValueError)


# ---------------------------------------------------------------------------------------------
# The MAX_FRAMES limit is inclusive, across parts and through the constructor

_HALF = MAX_FRAMES // 2


def test_parse_allows_exactly_max_frames_across_several_parts() -> None:
    """``1-500000 500001-1000000`` is exactly the limit (a million frames): a legitimate, huge
    request, not a typo."""
    fr = FrameRange.parse("1-500000 500001-1000000")
    assert len(fr) == MAX_FRAMES
    assert (fr.first, fr.last) == (1, 1_000_000)


def test_parse_refuses_one_frame_over_max_across_parts_quoting_the_part() -> None:
    text = "1-500000 500001-1000001"
    assert text == f"1-{_HALF} {_HALF + 1}-{MAX_FRAMES + 1}"
    with pytest.raises(FrameRangeError) as info:
        FrameRange.parse(text)
    assert info.value.part == f"{_HALF + 1}-{MAX_FRAMES + 1}"
    assert info.value.text == text


def test_parse_allows_exactly_max_frames_in_one_part() -> None:
    assert len(FrameRange.parse(f"1-{MAX_FRAMES}")) == MAX_FRAMES


def test_constructor_allows_exactly_max_frames_and_refuses_one_more() -> None:
    """The limit holds for ranges built from frame lists (Nuke knobs), not only parsed text."""
    assert len(FrameRange(tuple(range(MAX_FRAMES)))) == MAX_FRAMES
    with pytest.raises(FrameRangeError, match=f"at most {MAX_FRAMES} frames"):
        FrameRange(tuple(range(MAX_FRAMES + 1)))


def test_auto_chunker_accepts_sub_second_targets() -> None:
    """Any positive target is valid: fast workflows may aim at half a second per chunk."""
    assert AutoChunker(target_seconds=0.5, seconds_per_frame=0.1, workers=1).size_for(100) == 5


def test_auto_chunker_chunks_per_worker_sets_the_untimed_size() -> None:
    """One chunk per worker is allowed and gives the largest untimed chunks."""
    assert AutoChunker(workers=2, chunks_per_worker=1).size_for(80) == 40
    assert AutoChunker(workers=2, chunks_per_worker=2).size_for(80) == 20


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"min_size": 0}, "min_size"),
        ({"min_size": 0, "max_size": 0}, "min_size"),
        ({"chunks_per_worker": 0}, "chunks_per_worker"),
        ({"workers": True}, "workers"),
        ({"target_seconds": "30"}, "target_seconds"),
        ({"seconds_per_frame": "2"}, "seconds_per_frame"),
    ],
)
def test_auto_chunker_refuses_more_bad_arguments(kwargs: dict, field: str) -> None:
    """A chunk size of 0 or no chunks per worker would hang or divide by zero mid-render."""
    with pytest.raises(ConfigError) as info:
        AutoChunker(**kwargs)
    assert info.value.field == field
