"""``nuke.execute``: render a Write by byte-copying its upstream Read's frames.

The upstream walk follows input 0 through nodes that pass images unchanged, ``Switch`` (its
``which`` input), ``Merge2`` (input 0, the B side), groups/gizmos (their ``Output`` node, and
``Input`` nodes back out to the group's inputs). A Read holds its first/last frame outside its
range (Nuke's default ``before``/``after`` = hold). Paths are TCL-expanded (``[value ...]``,
``[frame]``), then ``#``-runs and ``%0Nd`` are replaced by the frame number.

A source frame missing on disk follows the Read's ``on_error``: ``error`` raises (the render
fails), ``black`` and ``checkerboard`` write a small flat PNG instead, ``nearest frame`` copies the
closest frame that exists; substitutions are recorded in ``nuke._fake.substituted()``. Each call
is recorded in ``nuke._fake.executions()`` (in the GUI every call is one modal progress dialog, a
block of the user interface). The Write's own ``beforeRender``/``beforeFrameRender``/
``afterFrameRender``/``afterRender`` knobs run around the render, like the callbacks registered
with ``nuke.addBeforeRender`` and friends.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import zlib
from typing import Any

from . import _callbacks, _nodes
from ._state import DETACHED, current, gui, main_only

_HASHES = re.compile(r"#+")
_PRINTF = re.compile(r"%(0?)(\d*)d")


def frame_path(pattern: str, frame: int) -> str:
    """Substitute ``frame`` into a ``####`` or ``%04d`` pattern."""
    path = _HASHES.sub(lambda m: str(frame).zfill(len(m.group(0))), pattern)
    return _PRINTF.sub(lambda m: str(frame).zfill(int(m.group(2) or 0)), path)


def find_read(node: Any) -> Any:
    """The Read feeding ``node`` (see module docstring); RuntimeError if there is none."""
    seen = 0
    while node is not None and seen < 1000:
        seen += 1
        if node._deleted:
            raise ValueError(DETACHED)
        cls = node._cls
        if cls == "Read":
            return node
        if isinstance(node, _nodes.Group) and cls != "Root":
            out = node.output()
            node = out.input(0) if out is not None else None
            continue
        if cls == "Input":
            group = node._parent
            node = group.input(int(node._knobs["number"].value())) if group is not None else None
            continue
        if cls == "Switch":
            node = node.input(int(node._knobs["which"].value()))
            continue
        if node._max_inputs == 0:
            break
        node = node.input(0)
    raise RuntimeError("nothing to render: no Read node upstream")


def _targets(start: Any, end: Any, incr: int) -> list[int]:
    if isinstance(start, _nodes.FrameRanges):
        return start.toFrameList()
    if isinstance(start, _nodes.FrameRange):
        return list(start)
    if end is None:
        end = start
    step = incr or 1
    return list(range(int(start), int(end) + (1 if step > 0 else -1), step))


@main_only
def execute(
    nameOrNode: Any,
    start: Any = None,
    end: Any = None,
    incr: int = 1,
    views: Any = None,
    continueOnError: bool = False,
) -> None:
    node = nameOrNode
    if isinstance(nameOrNode, str):
        node = _nodes.toNode(nameOrNode)
        if node is None:
            raise ValueError(f"{nameOrNode} is not a node")
    if node._deleted:
        raise ValueError(DETACHED)
    if node._cls != "Write":
        raise RuntimeError(f"{node.name()} cannot be executed")
    if start is None:
        start, end = node.firstFrame(), node.lastFrame()
    session = current()
    frames = _targets(start, end, incr)
    session.executions.append((node.fullName(), tuple(frames), gui()))
    saved_frame = session.frame
    session.executing = True
    try:
        _render_callbacks("beforeRender", node)
        for frame in frames:
            session.frame = frame
            _render_callbacks("beforeFrameRender", node)
            try:
                _render_frame(node, frame)
            except Exception:
                if not continueOnError:
                    raise
            _render_callbacks("afterFrameRender", node)
        _render_callbacks("afterRender", node)
    finally:
        session.executing = False
        session.frame = saved_frame


def _render_callbacks(kind: str, write: Any) -> None:
    """The Write's own ``kind`` knob, then the callbacks registered for it."""
    _callbacks.run_node_knob(write, kind)
    _callbacks.run(kind, write)


def _render_frame(write: Any, frame: int) -> None:
    read = find_read(write.input(0))
    first, last = read._frame_range()
    source_frame = min(max(frame, first), last)
    src = frame_path(read["file"].evaluate(), source_frame)
    dest_pattern = write["file"].evaluate()
    if not dest_pattern:
        raise RuntimeError(f"{write.name()}: no file name specified")
    dest = frame_path(dest_pattern, frame)
    folder = os.path.dirname(dest)
    if folder and not os.path.isdir(folder):
        if not write["create_directories"].value():
            raise RuntimeError(f"{write.name()}: Can't write {dest}: No such file or directory")
        os.makedirs(folder, exist_ok=True)
    if os.path.isfile(src):
        shutil.copyfile(src, dest)
    else:
        _missing_frame(read, source_frame, src, dest)
    current().rendered.append((write.fullName(), frame, dest))


def _missing_frame(read: Any, frame: int, src: str, dest: str) -> None:
    """The Read's ``on_error`` decides what a missing source frame becomes."""
    mode = read["on_error"].value()
    if mode == "nearest frame":
        nearest = _nearest_frame(read, frame)
        if nearest is not None:
            shutil.copyfile(nearest, dest)
            current().substituted.append((read.fullName(), frame, "nearest"))
            return
    elif mode in ("black", "checkerboard"):
        with open(dest, "wb") as fh:
            fh.write(flat_png(checker=mode == "checkerboard"))
        current().substituted.append((read.fullName(), frame, mode))
        return
    raise RuntimeError(f"{read.name()}: Read error: No such file or directory: {src}")


def _nearest_frame(read: Any, frame: int) -> str | None:
    first, last = read._frame_range()
    pattern = read["file"].evaluate()
    candidates = sorted(range(first, last + 1), key=lambda f: (abs(f - frame), f))
    for candidate in candidates:
        path = frame_path(pattern, candidate)
        if os.path.isfile(path):
            return path
    return None


def flat_png(checker: bool = False, size: int = 8) -> bytes:
    """A small RGB PNG: black, or a black/grey checkerboard (what a Read shows for a missing
    frame when told to)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b""
    for y in range(size):
        row = bytes(
            v
            for x in range(size)
            for v in ((128,) * 3 if checker and (x // 4 + y // 4) % 2 else (0,) * 3)
        )
        rows += b"\x00" + row
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def executing(f: Any = None) -> bool:
    return current().executing
