"""What the node shows about its job: the status line, progress, tile colour and internal Read.

:func:`format_status` and :func:`past_status` are pure (any thread: the job monitor builds the
running status on the scheduler's threads). The ``show_*`` and ``apply_*`` functions write knobs,
so they run on the main thread only, with a node that exists.

What a saved script keeps: ``cc_status`` and the tile colour are saved with the script;
``cc_progress`` and ``cc_server`` are not (:func:`mark_unsaved` gives them ``DO_NOT_WRITE`` at
every create and load). A script saved mid-render would
otherwise reopen saying "12/40 frames | ETA ..." forever, so on load (no job running for the node)
:func:`show_loaded` turns the status into a past fact ("last render: ...") and gives the tile its
colour back. End states carry the time they happened, so the past fact says when.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Optional

from comfy_cluster.core.engine.events import JobDone
from comfy_cluster.core.formatting import duration_text
from comfy_cluster.core.frames import FrameRange
from comfy_cluster.host import knobs as K

__all__ = [
    "LAST_RENDER",
    "apply_missing_frames",
    "colour_after",
    "done_text",
    "format_status",
    "mark_unsaved",
    "missing_frames_choice",
    "past_status",
    "reload_read",
    "set_read_range",
    "show_cancelled",
    "show_done",
    "show_error",
    "show_loaded",
    "show_starting",
    "sync_read_range",
]

_log = logging.getLogger(__name__)

#: Prefix of a status that reports a render of an earlier session.
LAST_RENDER = "last render: "
_RUNNING = re.compile(r"^(?:Cancelling\.\.\.\s*)?(\d+)/(\d+) frames")

#: The wall clock text end states are stamped with (tests may replace it).
Clock = Callable[[], str]


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M")


#: The longest reason the status line gives for an idle server (the panel has it all).
IDLE_REASON_MAX = 80


def format_status(
    done: int,
    total: int,
    servers: Sequence[str],
    eta: Optional[float],
    idle: Optional[Mapping[str, str]] = None,
) -> str:
    """The one-line running status: ``"4/10 frames | sim1, sim2 | ETA 12s"``, then each server
    that does nothing, with why (``"| sim3: out: unusable: node 4 ... not on this server"``), so
    an artist sees at the node why a server is idle (``idle``: ``JobProgress.idle_reasons()``)."""
    parts = [f"{done}/{total} frames"]
    if servers:
        parts.append(", ".join(sorted(servers)))
    if eta is not None and eta >= 0:
        parts.append(f"ETA {duration_text(eta)}")
    for name, why in sorted((idle or {}).items()):
        parts.append(f"{name}: {_clip(why, IDLE_REASON_MAX)}")
    return " | ".join(parts)


def _clip(text: str, limit: int) -> str:
    """``text`` on one line, cut to ``limit`` characters with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def done_text(event: JobDone) -> str:
    """``"Done: 6 frames in 4.2s (sim1: 4, sim2: 2)"``."""
    seconds = f" in {event.seconds:.1f}s" if event.seconds else ""
    per = ", ".join(f"{k}: {v}" for k, v in sorted(event.per_server.items()))
    return f"Done: {event.frames_written} frames{seconds}" + (f" ({per})" if per else "")


def past_status(text: str) -> str:
    """The status a script saved with ``text`` shows when it is opened and nothing runs.

    An end state becomes ``"last render: Done: ... | 2026-03-01 14:02"``; a running status (the
    script was saved mid-render) becomes ``"last render: stopped at 12/40 frames (...)"``;
    empty stays empty. Idempotent.
    """
    text = text.strip()
    if not text or text.startswith(LAST_RENDER):
        return text
    running = _RUNNING.match(text)
    if running:
        done, total = running.groups()
        return f"{LAST_RENDER}stopped at {done}/{total} frames (saved while rendering)"
    return LAST_RENDER + text


def colour_after(before: int) -> int:
    """The tile colour after a render: the node's colour from before it, unless that was one the
    host set (running blue, error red), which gives way to the gizmo's own colour."""
    return K.COLOR_GIZMO if before in K.HOST_COLORS else before


def set_read_range(node: Any, frames: FrameRange) -> None:
    """The internal Read covers the frames the node renders (so downstream sees that range)."""
    if (node.knob(K.FIRST).value(), node.knob(K.LAST).value()) != (frames.first, frames.last):
        node.knob(K.FIRST).setValue(frames.first)
        node.knob(K.LAST).setValue(frames.last)


def sync_read_range(node: Any) -> None:
    """At load: the Read covers the node's Frame range (or its input's range when that is
    empty), whatever was saved. A farm renders a script and never saves it again, so a later
    process rendering downstream must not depend on the range a render once set."""
    text = node.knob(K.FRAMES).value().strip()
    try:
        if text:
            frames = FrameRange.parse(text)
        else:
            source = node.input(0)
            if source is None:
                return
            frames = FrameRange.from_bounds(int(source.firstFrame()), int(source.lastFrame()))
    except ValueError:  # a bad range is reported when the user presses Render
        return
    set_read_range(node, frames)


def show_starting(node: Any, frames: FrameRange) -> int:
    """A render was accepted: nothing done yet, the input frames are being written. Returns the
    tile colour the node had (its colour goes back to that at the end)."""
    before = int(node.knob(K.TILE_COLOR).value())
    set_read_range(node, frames)
    node.knob(K.PROGRESS).setValue(0.0)
    node.knob(K.STATUS).setValue(f"0/{len(frames)} frames | writing input frames")
    node.knob(K.TILE_COLOR).setValue(K.COLOR_RUNNING)
    apply_missing_frames(node, running=True)
    return before


def show_done(node: Any, event: JobDone, colour: int, clock: Clock = _now) -> str:
    """Every frame is on disk: full progress, the summary, and a Read that looks again.
    Returns the summary (without the time)."""
    text = done_text(event)
    node.knob(K.PROGRESS).setValue(100.0)
    node.knob(K.STATUS).setValue(f"{text} | {clock()}")
    _ended(node, colour)
    return text


def show_cancelled(node: Any, done: int, total: int, colour: int, clock: Clock = _now) -> None:
    node.knob(K.STATUS).setValue(f"Cancelled at {done}/{total} frames | {clock()}")
    _ended(node, colour)


def show_error(node: Any, message: str, clock: Clock = _now) -> None:
    """The status says why, the tile turns red; the Read shows what did land."""
    node.knob(K.STATUS).setValue(f"Error: {message} | {clock()}")
    node.knob(K.TILE_COLOR).setValue(K.COLOR_ERROR)
    apply_missing_frames(node, running=False)
    reload_read(node)


#: Knobs whose values a saved script must not hold: the progress of a job that is not running,
#: and the server menu, whose saved item would be applied at load to a menu that only holds
#: ``Auto`` until ``onCreate`` rebuilds it (``cc_server_choice`` keeps the choice).
UNSAVED_KNOBS = (K.PROGRESS, K.SERVER)


def mark_unsaved(node: Any, do_not_write: int) -> None:
    """Give :data:`UNSAVED_KNOBS` Nuke's ``DO_NOT_WRITE`` flag (``do_not_write``: its value).
    Set from Python at every create and load rather than written into the .gizmo, so the gizmo
    file only uses flags every Nuke reads."""
    for name in UNSAVED_KNOBS:
        knob = node.knob(name)
        if knob is not None and not knob.getFlag(do_not_write):
            knob.setFlag(do_not_write)


def show_loaded(node: Any) -> None:
    """The node was loaded (script open, paste) and runs no job: a saved status becomes a past
    fact and a colour the host set gives way to the gizmo's own; the Read follows the node's
    Frame range and Missing frames choice."""
    status = node.knob(K.STATUS)
    if status is not None:
        past = past_status(status.value())
        if past != status.value():
            status.setValue(past)
    tile = node.knob(K.TILE_COLOR)
    if tile is not None and int(tile.value()) in K.HOST_COLORS:
        tile.setValue(K.COLOR_GIZMO)
    sync_read_range(node)
    apply_missing_frames(node, running=False)


def _ended(node: Any, colour: int) -> None:
    node.knob(K.TILE_COLOR).setValue(colour)
    apply_missing_frames(node, running=False)
    reload_read(node)


def _read(node: Any) -> Optional[Any]:
    try:
        return node.node(K.INTERNAL_READ)
    except Exception:  # not a group (a stand-in), or detached
        return None


def missing_frames_choice(node: Any) -> str:
    """The node's Missing frames item (scripts older than the knob: error)."""
    knob = node.knob(K.MISSING_FRAMES)
    item = knob.value() if knob is not None else ""
    return item if item in K.MISSING_FRAMES_MODES else K.MISSING_ERROR


def apply_missing_frames(node: Any, *, running: bool) -> None:
    """Set the internal Read's ``on_error`` from the node's Missing frames choice. While the
    node's job runs, ``error`` reads as ``black``: the frames are still landing."""
    read = _read(node)
    knob = read.knob("on_error") if read is not None else None
    if knob is None:
        return
    wanted = missing_frames_choice(node)
    if running and wanted == K.MISSING_ERROR:
        wanted = K.MISSING_BLACK
    try:
        if knob.value() != wanted:
            knob.setValue(wanted)
    except ValueError:  # a Nuke whose Read lacks the item: keep what it has, say so
        _log.warning("comfy_cluster: the internal Read has no missing-frames mode %r", wanted)


def reload_read(node: Any) -> None:
    """Make the internal Read look at the files again (frames appeared after it first looked)."""
    try:
        read = _read(node)
        knob = read.knob("reload") if read is not None else None
        if knob is not None:
            knob.execute()
    except Exception:  # cosmetic: never fail a render over a reload
        _log.debug("comfy_cluster: reload of the internal Read failed", exc_info=True)
