"""Frame ranges, chunks and frame-numbered paths: pure values the scheduler works from.

Nuke's range syntax is parsed here, without Nuke, so scheduling is testable anywhere::

    FrameRange.parse("1001-1100")        # 1001..1100
    FrameRange.parse("1-10x3, 20 25")    # 1 4 7 10 20 25 (commas and spaces both separate)
    FrameRange.parse("-5--1")            # -5..-1 (negative frames)
    FrameRange.parse("10-1")             # reversed ranges are normalised: 1..10

Frames are always sorted and de-duplicated: a range is a *set* of frames to deliver, the order in
which they render is the scheduler's business. Chunkers (``FixedChunker``, ``AutoChunker``) share
one method, ``split(frames) -> list[Chunk]``; the scheduler never branches on which one it holds.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Optional, Protocol, TypeVar, Union

from comfy_cluster.core.errors import ConfigError, FrameRangeError

__all__ = [
    "FRAME_ORDERS",
    "MAX_FRAMES",
    "MAX_FRAME_NUMBER",
    "ORDER_PREVIEW",
    "ORDER_SEQUENTIAL",
    "AutoChunker",
    "Chunk",
    "Chunker",
    "FixedChunker",
    "FrameRange",
    "format_frame_path",
    "frames_text",
    "has_frame_token",
    "order_chunks",
    "preview_order",
]

#: Upper bound on the frames one range may hold; ``1-999999999`` is a typo, not a render.
MAX_FRAMES = 1_000_000
#: Largest frame number (and step) the parser reads, either sign: what a 32-bit frame knob holds.
#: Without it ``1-9999999999999999999999`` overflowed ``len(range)`` before the count was checked.
MAX_FRAME_NUMBER = 2**31 - 1

_SEPARATORS = re.compile(r"[\s,]+")
# first[-last[xstep]]; each number may be negative, so "-5--1" and "-10-10" both parse.
_PART = re.compile(r"(-?\d+)(?:-(-?\d+)(?:[xX](-?\d+))?)?")


@dataclass(frozen=True)
class FrameRange:
    """A non-empty, sorted, de-duplicated set of integer frames. Immutable; any thread.

    ``str()`` gives a compact Nuke-style text that :meth:`parse` reads back to an equal range.
    Constructing one directly normalises ``frames`` (sorted, unique); an empty set raises
    :class:`FrameRangeError`, because "render nothing" is always a mistake upstream.
    """

    frames: tuple[int, ...]

    def __post_init__(self) -> None:
        frames = tuple(sorted({_as_frame(f) for f in self.frames}))
        if not frames:
            raise FrameRangeError("the frame range holds no frames")
        if len(frames) > MAX_FRAMES:
            raise FrameRangeError(f"a frame range may hold at most {MAX_FRAMES} frames")
        object.__setattr__(self, "frames", frames)

    @classmethod
    def parse(cls, text: str) -> FrameRange:
        """Parse Nuke syntax: ``A``, ``A-B``, ``A-BxN``, separated by spaces and/or commas.

        Raises :class:`FrameRangeError` whose ``part`` quotes the piece that failed.
        """
        if not isinstance(text, str):
            raise FrameRangeError(f"a frame range must be text, not {type(text).__name__}")
        parts = [p for p in _SEPARATORS.split(text.strip()) if p]
        if not parts:
            raise FrameRangeError("the frame range is empty", text=text)
        frames: set[int] = set()
        for part in parts:
            frames.update(_parse_part(part, text))
            if len(frames) > MAX_FRAMES:
                raise _error(f"more than {MAX_FRAMES} frames", text, part)
        return cls(tuple(frames))

    @classmethod
    def from_frames(cls, frames: Iterable[Union[int, float]]) -> FrameRange:
        """Build from frame numbers; integral floats (Nuke knob values) are accepted."""
        return cls(tuple(frames))

    @classmethod
    def from_bounds(
        cls, first: Union[int, float], last: Union[int, float], step: int = 1
    ) -> FrameRange:
        """``first..last`` inclusive every ``step`` frames, as read from Nuke's root or a node."""
        return cls.parse(f"{_as_frame(first)}-{_as_frame(last)}x{step}")

    @property
    def first(self) -> int:
        return self.frames[0]

    @property
    def last(self) -> int:
        return self.frames[-1]

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self) -> Iterator[int]:
        return iter(self.frames)

    def __contains__(self, frame: object) -> bool:
        return frame in self.frames

    def __str__(self) -> str:
        return _compact(self.frames)


def _as_frame(value: object) -> int:
    # bool is an int subclass, but True as a frame number is always a bug.
    if isinstance(value, bool):
        raise FrameRangeError(f"not a frame number: {value!r}", part=repr(value))
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise FrameRangeError(f"not a whole frame number: {value!r}", part=repr(value))


def _error(reason: str, text: str, part: str) -> FrameRangeError:
    return FrameRangeError(
        f"bad frame range part '{part}' in '{text}': {reason}", text=text, part=part
    )


def _number(digits: str, text: str, part: str) -> int:
    """One number of a part, refused beyond :data:`MAX_FRAME_NUMBER` before any arithmetic."""
    # Length first: int() of thousands of digits is slow, or refused with a bare ValueError.
    significant = digits.lstrip("-").lstrip("0")
    if len(significant) > len(str(MAX_FRAME_NUMBER)) or abs(int(digits)) > MAX_FRAME_NUMBER:
        raise _error(f"frame numbers and steps go up to {MAX_FRAME_NUMBER}", text, part)
    return int(digits)


def _parse_part(part: str, text: str) -> range:
    match = _PART.fullmatch(part)
    if match is None:
        raise _error("expected FRAME, FIRST-LAST or FIRST-LASTxSTEP", text, part)
    first = _number(match.group(1), text, part)
    last = _number(match.group(2), text, part) if match.group(2) is not None else first
    step = _number(match.group(3), text, part) if match.group(3) is not None else 1
    if step < 1:
        raise _error("the step after 'x' must be 1 or more", text, part)
    # Reversed ranges are normalised rather than refused: Nuke accepts "10-1" (it renders
    # backwards), and we deliver a set of frames anyway. The step stays anchored on the first
    # number written, as in Nuke: "10-1x3" is 10 7 4 1.
    direction = 1 if last >= first else -1
    frames = range(first, last + direction, step * direction)
    if len(frames) > MAX_FRAMES:
        raise _error(f"more than {MAX_FRAMES} frames", text, part)
    return frames


def _compact(frames: tuple[int, ...]) -> str:
    """Greedy runs of equal steps: ``1-10``, ``1-10x3``; a pair with a gap stays two singles."""
    parts: list[str] = []
    i, n = 0, len(frames)
    while i < n:
        if i + 1 < n:
            step = frames[i + 1] - frames[i]
            j = i + 1
            while j + 1 < n and frames[j + 1] - frames[j] == step:
                j += 1
            if step == 1 or j - i >= 2:
                suffix = "" if step == 1 else f"x{step}"
                parts.append(f"{frames[i]}-{frames[j]}{suffix}")
                i = j + 1
                continue
        parts.append(str(frames[i]))
        i += 1
    return " ".join(parts)


# ---------------------------------------------------------------------------------------------
# Chunks


@dataclass(frozen=True)
class Chunk:
    """One unit of work: ``frames`` are delivered, handles are rendered around them and dropped.

    ``handles_before``/``handles_after`` give temporal workflows context at a chunk's ends; they
    are never written out. ``all_frames`` is the render order: handles before, frames, handles
    after.
    """

    index: int
    frames: tuple[int, ...]
    handles_before: tuple[int, ...] = ()
    handles_after: tuple[int, ...] = ()

    @property
    def deliver(self) -> tuple[int, ...]:
        """The frames this chunk writes (same as ``frames``; named for the design contract)."""
        return self.frames

    @property
    def all_frames(self) -> tuple[int, ...]:
        """Every frame rendered, in order, handles included."""
        return self.handles_before + self.frames + self.handles_after

    def __len__(self) -> int:
        return len(self.frames)


FramesLike = Union[FrameRange, Iterable[int]]


class Chunker(Protocol):
    """Splits the requested frames into chunks; implementations are small frozen values."""

    def split(self, frames: FramesLike) -> list[Chunk]: ...


@dataclass(frozen=True)
class FixedChunker:
    """Chunks of ``size`` frames, consecutive in the requested (sorted) frame list.

    "Contiguous" means neighbours in the request, not in frame numbers: ``1-100x10`` in size 2
    gives ``(1, 11)``, ``(21, 31)``... ``handles`` adds up to that many frame numbers before and
    after each chunk (``first-1``, ``first-2``..., ``last+1``...), clamped to the requested range's
    min/max, so the first and last chunks get fewer and no frame outside the request is read.
    Handle frames need not themselves be in the request (``1-100x2`` with handles asks for even
    frames as context). Raises :class:`ConfigError` on a size below 1 or negative handles.
    """

    size: int
    handles: int = 0

    def __post_init__(self) -> None:
        _check_int("chunk size", self.size, minimum=1)
        _check_int("handles", self.handles, minimum=0)

    def split(self, frames: FramesLike) -> list[Chunk]:
        return _split(_frames_of(frames), self.size, self.handles)


@dataclass(frozen=True)
class AutoChunker:
    """Chunk size chosen from timings, toward ``target_seconds`` of render per chunk.

    With ``seconds_per_frame`` known, a chunk renders about ``target_seconds``
    (``size + 2 * handles`` frames, since handles cost render time too), but never so large that a
    worker is left without a chunk (at most ``ceil(total / workers)``). Before any timing exists
    the size is ``total // (workers * 4)``: four chunks per worker let the faster servers take more
    of the work and let the first finished chunks measure speed. Both are clamped to
    ``[min_size, max_size]`` (1..50 by default) so one failure never loses much work.
    Use :meth:`with_seconds_per_frame` to derive a chunker once timings arrive.
    """

    target_seconds: float = 30.0
    seconds_per_frame: Optional[float] = None
    workers: int = 1
    handles: int = 0
    min_size: int = 1
    max_size: int = 50
    #: Chunks per worker aimed at before timings exist.
    chunks_per_worker: int = field(default=4, repr=False)

    def __post_init__(self) -> None:
        if not (isinstance(self.target_seconds, (int, float)) and self.target_seconds > 0):
            raise ConfigError(
                f"must be a positive number of seconds, not {self.target_seconds!r}",
                field="target_seconds",
            )
        spf = self.seconds_per_frame
        if spf is not None and not (isinstance(spf, (int, float)) and spf > 0):
            raise ConfigError(f"must be positive or None, not {spf!r}", field="seconds_per_frame")
        _check_int("workers", self.workers, minimum=1)
        _check_int("handles", self.handles, minimum=0)
        _check_int("min_size", self.min_size, minimum=1)
        _check_int("max_size", self.max_size, minimum=self.min_size)
        _check_int("chunks_per_worker", self.chunks_per_worker, minimum=1)

    def size_for(self, total_frames: int) -> int:
        """The chunk size this chunker uses for a request of ``total_frames`` frames."""
        if self.seconds_per_frame is None:
            size = total_frames // (self.workers * self.chunks_per_worker)
        else:
            size = int(self.target_seconds / self.seconds_per_frame) - 2 * self.handles
            size = min(size, math.ceil(total_frames / self.workers))
        return max(self.min_size, min(self.max_size, size))

    def split(self, frames: FramesLike) -> list[Chunk]:
        ordered = _frames_of(frames)
        return _split(ordered, self.size_for(len(ordered)), self.handles)

    def with_seconds_per_frame(self, seconds_per_frame: Optional[float]) -> AutoChunker:
        """A copy using new timings (the chunker itself is immutable)."""
        return replace(self, seconds_per_frame=seconds_per_frame)


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"must be a whole number >= {minimum}, not {value!r}", field=name)


def _frames_of(frames: FramesLike) -> tuple[int, ...]:
    if isinstance(frames, FrameRange):
        return frames.frames
    if isinstance(frames, (list, tuple)) and all(type(f) is int for f in frames):
        # The planner's own frame lists (a million at most): set and sort in C, same rules.
        ordered = tuple(sorted(set(frames)))
        if ordered and len(ordered) <= MAX_FRAMES:
            return ordered
    return FrameRange.from_frames(frames).frames


def _split(frames: tuple[int, ...], size: int, handles: int) -> list[Chunk]:
    starts = range(0, len(frames), size)
    if not handles:  # the common case, kept cheap for a million one-frame chunks
        return [Chunk(i, frames[s : s + size], (), ()) for i, s in enumerate(starts)]
    lo, hi = frames[0], frames[-1]
    chunks = []
    for index, start in enumerate(starts):
        part = frames[start : start + size]
        before = tuple(range(max(lo, part[0] - handles), part[0]))
        after = tuple(range(part[-1] + 1, min(hi, part[-1] + handles) + 1))
        chunks.append(Chunk(index, part, before, after))
    return chunks


# ---------------------------------------------------------------------------------------------
# Render order

#: Frames in order, first to last: the default.
ORDER_SEQUENTIAL = "sequential"
#: A spread of the shot first (first, last, middle, then the gaps halved), then the rest.
ORDER_PREVIEW = "preview"
#: The values ``--order`` and the render node's ``cc_order`` knob accept, default first.
FRAME_ORDERS = (ORDER_SEQUENTIAL, ORDER_PREVIEW)

_T = TypeVar("_T")


def _spread_positions(count: int) -> list[int]:
    """Positions ``0..count-1``: first, last, middle, then the middle of every gap, level by
    level (all gaps of one level before any of the next), so any prefix is spread evenly."""
    if count <= 0:
        return []
    if count == 1:
        return [0]
    order = [0, count - 1]
    gaps = [(0, count - 1)]
    while gaps:
        next_gaps = []
        for lo, hi in gaps:
            if hi - lo < 2:
                continue
            mid = (lo + hi) // 2
            order.append(mid)
            next_gaps += [(lo, mid), (mid, hi)]
        gaps = next_gaps
    return order


def _spread(items: Sequence[_T]) -> tuple[_T, ...]:
    return tuple(items[i] for i in _spread_positions(len(items)))


def preview_order(frames: Sequence[int]) -> tuple[int, ...]:
    """``frames`` reordered so the first few span the shot: first, last, middle, quarters...

    An artist judging the look sees the whole shot within the first minute instead of its first
    second. Every frame comes exactly once (a permutation of ``frames``, taken in the order
    given, normally sorted); deterministic. ``preview_order(range(1, 10))`` is
    ``(1, 9, 5, 3, 7, 2, 4, 6, 8)``.
    """
    return _spread(tuple(frames))


def order_chunks(chunks: Sequence[Chunk], order: str = ORDER_SEQUENTIAL) -> list[Chunk]:
    """``chunks`` in the order the engine should queue them, for ``order`` (:data:`FRAME_ORDERS`).

    ``preview`` puts the chunks holding the first, last and middle frames first, then the gaps
    halved (the engine hands out chunks in list order, so each server's first chunk lands on a
    different part of the shot). The chunks themselves, and their indices, are unchanged.
    Raises :class:`ConfigError` for an unknown order.
    """
    if order == ORDER_SEQUENTIAL:
        return list(chunks)
    if order == ORDER_PREVIEW:
        return list(_spread(tuple(chunks)))
    raise ConfigError(
        f"must be one of {', '.join(FRAME_ORDERS)}, not {order!r}", field="frame order"
    )


# ---------------------------------------------------------------------------------------------
# Frame-numbered paths

# Supported tokens (a deliberate subset of what Nuke, printf and Houdini accept):
#   ####  -> padded to the number of '#' (Nuke);     #  -> no padding
#   %04d  -> padded to 4 (printf, as Nuke accepts);  %d -> no padding (%4d is not a token)
#   $F4   -> padded to 4 (Houdini-style, $F1..$F9);  $F -> no padding
# Negative frames keep the width with the sign inside it, as printf does: -5 in #### is "-005".
_FRAME_TOKEN = re.compile(r"(#+)|%(?:0(\d+))?d|\$F([1-9]?)(?![A-Za-z0-9_])")


def has_frame_token(pattern: str) -> bool:
    """Whether ``pattern`` contains a frame token ``format_frame_path`` would replace."""
    return _FRAME_TOKEN.search(pattern) is not None


def format_frame_path(pattern: str, frame: int) -> str:
    """Replace every frame token in ``pattern``: ``shot.####.exr`` -> ``shot.1001.exr``.

    Every token is replaced (a per-frame folder and file name may both carry one). Raises
    :class:`ConfigError` (a ``ValueError``) for a pattern without any token, since writing every
    frame to one file is never what was meant.
    """
    if not _FRAME_TOKEN.search(pattern):
        raise ConfigError(
            f"'{pattern}' has no frame token: use ####, %04d, %d, $F4 or $F",
            field="path pattern",
        )
    frame = _as_frame(frame)

    def pad(match: re.Match[str]) -> str:
        hashes, printf, houdini = match.groups()
        if hashes is not None:
            width = len(hashes)
        elif printf is not None:
            width = int(printf) if printf else 0  # pragma: no mutate (width 1 = no padding)
        else:
            width = int(houdini) if houdini else 0  # pragma: no mutate (width 1 = no padding)
        return f"{frame:0{width}d}" if width else str(frame)

    return _FRAME_TOKEN.sub(pad, pattern)


def frames_text(frames: Iterable[int]) -> str:
    """Frames as people read them: ``1-3, 7`` when they form a range, else a plain list."""
    frames = list(frames)
    try:
        return str(FrameRange.from_frames(frames))
    except ValueError:
        return ", ".join(map(str, frames))
