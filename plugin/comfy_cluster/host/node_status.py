"""What the node shows about its job: the status line, progress, tile colour and internal Read.

:func:`format_status` is pure (any thread: the job monitor builds the running status on the
scheduler's threads and hands the text to the dispatcher). The ``show_*`` functions write knobs,
so they run on the main thread only, with a node that exists.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Optional

from comfy_cluster.core.engine.events import JobDone
from comfy_cluster.core.formatting import duration_text
from comfy_cluster.core.frames import FrameRange
from comfy_cluster.host import knobs as K

__all__ = [
    "done_text",
    "format_status",
    "set_read_range",
    "show_cancelled",
    "show_done",
    "show_error",
    "show_starting",
]

_log = logging.getLogger(__name__)


def format_status(done: int, total: int, servers: Sequence[str], eta: Optional[float]) -> str:
    """The one-line running status: ``"4/10 frames | sim1, sim2 | ETA 12s"``."""
    parts = [f"{done}/{total} frames"]
    if servers:
        parts.append(", ".join(sorted(servers)))
    if eta is not None and eta >= 0:
        parts.append(f"ETA {duration_text(eta)}")
    return " | ".join(parts)


def done_text(event: JobDone) -> str:
    """``"Done: 6 frames in 4.2s (sim1: 4, sim2: 2)"``."""
    seconds = f" in {event.seconds:.1f}s" if event.seconds else ""
    per = ", ".join(f"{k}: {v}" for k, v in sorted(event.per_server.items()))
    return f"Done: {event.frames_written} frames{seconds}" + (f" ({per})" if per else "")


def set_read_range(node: Any, frames: FrameRange) -> None:
    """The internal Read covers the frames the node renders (so downstream sees that range)."""
    node.knob(K.FIRST).setValue(frames.first)
    node.knob(K.LAST).setValue(frames.last)


def show_starting(node: Any, frames: FrameRange) -> None:
    """A render was accepted: nothing done yet, the input frames are being written."""
    set_read_range(node, frames)
    node.knob(K.PROGRESS).setValue(0.0)
    node.knob(K.STATUS).setValue(f"0/{len(frames)} frames | writing input frames")
    node.knob(K.TILE_COLOR).setValue(K.COLOR_RUNNING)


def show_done(node: Any, event: JobDone) -> str:
    """Every frame is on disk: full progress, the summary, and a Read that looks again.
    Returns the summary."""
    text = done_text(event)
    node.knob(K.PROGRESS).setValue(100.0)
    node.knob(K.STATUS).setValue(text)
    node.knob(K.TILE_COLOR).setValue(K.COLOR_DEFAULT)
    _reload_read(node)
    return text


def show_cancelled(node: Any, done: int, total: int) -> None:
    node.knob(K.STATUS).setValue(f"Cancelled at {done}/{total} frames")
    node.knob(K.TILE_COLOR).setValue(K.COLOR_DEFAULT)


def show_error(node: Any, message: str) -> None:
    """The status says why, the tile turns red."""
    node.knob(K.STATUS).setValue(f"Error: {message}")
    node.knob(K.TILE_COLOR).setValue(K.COLOR_ERROR)


def _reload_read(node: Any) -> None:
    """Make the internal Read look at the files again (they appeared after it first looked)."""
    try:
        read = node.node(K.INTERNAL_READ)
        knob = read.knob("reload") if read is not None else None
        if knob is not None:
            knob.execute()
    except Exception:  # cosmetic: never fail a finished render over a reload
        _log.debug("comfy_cluster: reload of the internal Read failed", exc_info=True)
