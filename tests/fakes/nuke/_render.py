"""``nuke.execute``: render a Write by byte-copying its upstream Read's frames.

The upstream walk follows input 0 through nodes that pass images unchanged, ``Switch`` (its
``which`` input), ``Merge2`` (input 0, the B side), groups/gizmos (their ``Output`` node, and
``Input`` nodes back out to the group's inputs). A Read holds its first/last frame outside its
range (Nuke's default ``before``/``after`` = hold). Paths are TCL-expanded (``[value ...]``,
``[frame]``), then ``#``-runs and ``%0Nd`` are replaced by the frame number.
"""

from __future__ import annotations

import os
import re
import shutil
from typing import Any

from . import _callbacks, _nodes
from ._state import DETACHED, current, main_only

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
    saved_frame = session.frame
    session.executing = True
    try:
        _callbacks.run("beforeRender", node)
        for frame in _targets(start, end, incr):
            session.frame = frame
            _callbacks.run("beforeFrameRender", node)
            try:
                _render_frame(node, frame)
            except Exception:
                if not continueOnError:
                    raise
            _callbacks.run("afterFrameRender", node)
        _callbacks.run("afterRender", node)
    finally:
        session.executing = False
        session.frame = saved_frame


def _render_frame(write: Any, frame: int) -> None:
    read = find_read(write.input(0))
    first, last = read._frame_range()
    source_frame = min(max(frame, first), last)
    src = frame_path(read["file"].evaluate(), source_frame)
    dest_pattern = write["file"].evaluate()
    if not dest_pattern:
        raise RuntimeError(f"{write.name()}: no file name specified")
    dest = frame_path(dest_pattern, frame)
    if not os.path.isfile(src):
        raise RuntimeError(f"{read.name()}: Read error: No such file or directory: {src}")
    folder = os.path.dirname(dest)
    if folder and not os.path.isdir(folder):
        if not write["create_directories"].value():
            raise RuntimeError(f"{write.name()}: Can't write {dest}: No such file or directory")
        os.makedirs(folder, exist_ok=True)
    shutil.copyfile(src, dest)
    current().rendered.append((write.fullName(), frame, dest))


def executing(f: Any = None) -> bool:
    return current().executing
