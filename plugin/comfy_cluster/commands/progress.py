"""Showing a render job's events in a terminal: rich bars, plain lines, or JSON lines.

Every view is an ``on_event`` callback for :meth:`Scheduler.start` plus ``close()`` and
``summary(result)``. The scheduler calls the callback from its worker threads, one event at a
time (``EventSink`` serialises them), so a view only guards what the main thread also touches.
The counting (frames written, per server, chunks held) is one
:class:`~comfy_cluster.core.progress.JobProgress` per view; the views only decide what to print.

- :class:`RichView` (stdout is a TTY and rich is installed): one overall bar and one bar per
  server, each with what that server is doing (its chunk, or why it left the job). Its columns
  (:mod:`~comfy_cluster.commands.live_columns`) fit the terminal whatever a message says and
  show every text literally, never as rich markup.
- :class:`PlainView` (pipes, CI logs): one line per 10 % of frames written (with the true
  percentage), one per finished multi-frame chunk, one per run of identical retries
  (:mod:`~comfy_cluster.commands.retry_digest`) or blocklisted server (its reason left out
  when the server's failed check just said it); never one per frame.
- :class:`JsonView` (``--json``): one JSON object per event, ``{"type": <class name>, ...fields}``.

Every view also shows each server's state (``ServerChecked``, ``ServerStateChanged``,
``ServerRejoined``): the rich row's note says ``offline: connection refused`` or ``unusable:
missing node classes: ...``, and ``back in the job`` once a server that had left answers again;
the plain view prints one line per change, and the summary names each server that did no work
and why (:class:`ServerNotes`), so a server left out is never silently ``0/40 waiting``.

rich is imported lazily, inside :class:`RichView`, so the CLI works with the runtime dependencies
alone (``make_view`` falls back to plain text when rich is missing).
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional, TextIO

from comfy_cluster.commands.retry_digest import RetryDigest
from comfy_cluster.core.engine import events as ev
from comfy_cluster.core.formatting import duration_text
from comfy_cluster.core.frames import frames_text
from comfy_cluster.core.progress import FINAL_EVENTS, JobProgress, ProgressChange

__all__ = [
    "JsonView",
    "PlainView",
    "RichView",
    "ServerNote",
    "ServerNotes",
    "View",
    "event_to_json",
    "make_view",
    "server_state_text",
    "with_node",
]


def event_to_json(event: ev.JobEvent) -> dict[str, Any]:
    """``{"type": "FrameWritten", "job_id": ..., "frame": 7, ...}``: the class name and fields."""
    data: dict[str, Any] = {"type": type(event).__name__}
    for f in dataclasses.fields(event):
        data[f.name] = _plain(getattr(event, f.name))
    return data


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return round(value, 4)
    return value


#: The note of a server that had left the job and takes work again.
REJOINED = "back in the job"
#: States in which a server works (or may): shown plainly, never listed in the summary.
GOOD_STATES = frozenset({"ok", "ready", "busy", "online"})
#: States whose reason already starts with what the state says ("authentication refused...").
_SELF_EXPLAINING = frozenset({"auth", "error"})


def server_state_text(state: str, reason: str = "") -> str:
    """``offline: connection refused``; the state alone without a reason; the reason alone when
    it already starts with the state (``unreachable: ...``) or says it better (auth, error)."""
    reason = " ".join(reason.split())  # server text on one line: it must not forge a line
    if not reason:
        return state
    if not state or state in _SELF_EXPLAINING or reason.split(":", 1)[0] == state:
        return reason
    return f"{state}: {reason}"


@dataclass(frozen=True)
class ServerNote:
    """One server's latest state as the views show it."""

    text: str
    ok: bool


class ServerNotes:
    """Each server's latest state from ``ServerChecked`` / ``ServerStateChanged`` events.

    Kept by the view, not by ``JobProgress``: the numbers are the same in every view, but what
    to say about a server is the views' business. Not thread-safe (the view's lock guards it).
    """

    def __init__(self) -> None:
        self.notes: dict[str, ServerNote] = {}

    def apply(self, event: ev.JobEvent) -> Optional[ServerNote]:
        """The server's new note if ``event`` changed it, else None."""
        if isinstance(event, ev.ServerChecked):
            state = event.state or ("ok" if event.ok else "unusable")
            note = ServerNote(server_state_text(state, "; ".join(event.reasons)), event.ok)
            server = event.server
        elif isinstance(event, ev.ServerStateChanged):
            note = ServerNote(
                server_state_text(event.state, event.reason), event.state in GOOD_STATES
            )
            server = event.server
        elif isinstance(event, ev.ServerRejoined):
            note = ServerNote(REJOINED, True)
            server = event.server
        else:
            return None
        if self.notes.get(server) == note and not isinstance(event, ev.ServerRejoined):
            return None  # a rejoin is news every time: the row said "out: ..." since
        self.notes[server] = note
        return note

    def idle_problems(self, per_server: Mapping[str, int], left: Mapping[str, str]) -> list[str]:
        """``  gpu-b did no work: unusable: ...`` for each server whose last state is a problem,
        that wrote no frame and did not leave the job (that has its own line)."""
        return [
            f"  {name} did no work: {note.text}"
            for name, note in self.notes.items()
            if not note.ok and not per_server.get(name) and name not in left
        ]


class View:
    """Base view: folds the events into a :class:`JobProgress` and writes the end-of-job summary.

    ``__call__`` runs on scheduler threads; ``close`` and ``summary`` on the main thread.
    """

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._lock = threading.Lock()
        self.progress = JobProgress()
        #: Each server's state as last reported (checks, offline, back...).
        self.server_notes = ServerNotes()
        #: Set once ``out`` is gone (a closed pipe: ``comfy-cluster render ... | head``).
        self.broken = False

    @property
    def total(self) -> int:
        """Frames the job renders (0 until it started)."""
        return self.progress.total

    @property
    def written(self) -> int:
        """Frames on disk so far."""
        return self.progress.done

    @property
    def per_server(self) -> dict[str, int]:
        """Frames written per server."""
        return self.progress.per_server

    @property
    def servers(self) -> tuple[str, ...]:
        """Servers that may take work."""
        return self.progress.servers

    def write_line(self, text: str) -> None:
        """Write one line; a closed pipe silences the view instead of failing the render."""
        if self.broken:
            return
        try:
            self.out.write(text + "\n")
            self.out.flush()
        except (BrokenPipeError, ValueError, OSError):
            self.broken = True

    def __call__(self, event: ev.JobEvent) -> None:
        with self._lock:
            change = self.progress.apply(event)
            note = self.server_notes.apply(event)
            if note is not None:
                self.server_changed(getattr(event, "server", ""), note)
            self.handle(event, change)

    def handle(self, event: ev.JobEvent, change: ProgressChange) -> None:
        """Show one event, already counted into :attr:`progress` (lock held)."""

    def server_changed(self, server: str, note: ServerNote) -> None:
        """Show that ``server``'s state changed (lock held); called before :meth:`handle`."""

    def close(self) -> None:
        """Stop any live display (idempotent)."""

    def summary(self, result: Any) -> None:
        """Print how the job ended: frames per server, retries, time, and why if it failed."""
        for line in self.summary_text(result):
            self.write_line(line)

    def summary_text(self, result: Any) -> list[str]:
        """:func:`summary_lines` plus the servers that did no work, with why."""
        with self._lock:
            idle = self.server_notes.idle_problems(result.per_server, result.blocklisted)
        return summary_lines(result, idle)


def with_node(message: str, node_id: Optional[str]) -> str:
    """``message`` plus `` (node ID)``, unless there is no node or the message names it already
    (the engine's messages often do: "node 2 (ImageInvert) failed ..." needs no "(node 2)")."""
    if not node_id:
        return message
    if re.search(rf"\bnode {re.escape(str(node_id))}(?!\w)", message):
        return message
    return f"{message} (node {node_id})"


#: Below this an estimate says nothing ("about 0.0 s left" on the last frames).
MIN_ETA_SECONDS = 1.0


def _worth_saying(event: ev.JobEvent) -> bool:
    """Whether ``event``'s time-left estimate is known and long enough to be worth printing."""
    return event.eta_seconds is not None and event.eta_seconds >= MIN_ETA_SECONDS


def summary_lines(result: Any, server_lines: Sequence[str] = ()) -> list[str]:
    """The text summary of a ``JobResult`` (shared by the plain and rich views);
    ``server_lines`` (servers that did no work, with why) follow the per-server lines."""
    status = result.status.value
    requested = len(result.frames_requested)
    written = len(result.frames_written)
    skipped = len(result.frames_skipped)
    head = f"{status}: {written} frame(s) written"
    if skipped:
        head += f", {skipped} skipped (already on disk)"
    head += f" of {requested} in {duration_text(result.seconds)}; retries: {result.retries}"
    lines = [head]
    for name, count in sorted(result.per_server.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"  {name}: {count} frame(s)")
    for name, why in result.blocklisted.items():
        lines.append(f"  {name} left the job: {why}")
    lines.extend(server_lines)
    if not result.ok:
        if result.message:
            lines.append(f"  reason: {with_node(result.message, result.node_id)}")
        if result.frames_missing:
            lines.append(
                f"  missing: {len(result.frames_missing)} frame(s): "
                f"{frames_text(result.frames_missing)}"
            )
    return lines


class JsonView(View):
    """One JSON object per line per event; nothing else on stdout (the summary is JobDone)."""

    def handle(self, event: ev.JobEvent, change: ProgressChange) -> None:
        self.write_line(json.dumps(event_to_json(event)))

    def summary(self, result: Any) -> None:
        pass


class PlainView(View):
    """Plain lines for logs: every 10 % of frames, each finished multi-frame chunk, each problem.

    The percentage is the true one (1 of 4 frames says 25%), printed when the count crosses a
    tenth; identical retries of one server are one line with a count (:class:`RetryDigest`).
    """

    def __init__(self, out: TextIO) -> None:
        super().__init__(out)
        self._next_tenth = 1
        self._retries = RetryDigest()

    def write_line(self, text: str) -> None:
        """Held retry lines go first, so the log keeps its order."""
        for line in self._retries.flush():
            super().write_line(line)
        super().write_line(text)

    def _write_all(self, lines: list[str]) -> None:
        for line in lines:
            super().write_line(line)

    def server_changed(self, server: str, note: ServerNote) -> None:
        self.write_line(f"server {server}: {note.text}")

    def handle(self, event: ev.JobEvent, change: ProgressChange) -> None:
        self._write_all(self._retries.due())
        if isinstance(event, ev.JobStarted):
            skipped = f", {len(event.skipped_frames)} skipped" if event.skipped_frames else ""
            self.write_line(
                f"rendering {event.total_frames} frame(s){skipped} on "
                f"{len(event.servers)} server(s): {', '.join(event.servers)}"
            )
        elif isinstance(event, ev.FrameWritten):
            self._frame(event, change)
        elif isinstance(event, ev.ChunkRetried):
            self._write_all(self._retries.retried(event))
        elif isinstance(event, ev.ServerBlocklisted):
            self._write_all(self._retries.left(event.server, self._left_line(event)))
        elif isinstance(event, ev.JobFailed):
            self.write_line(f"job failed: {with_node(event.message, event.node_id)}")
        elif isinstance(event, ev.JobCancelled):
            self.write_line("job cancelled")
        elif isinstance(event, ev.JobDone):
            self._write_all(self._retries.flush())

    def _left_line(self, event: ev.ServerBlocklisted) -> str:
        """``server c left the job: why``, without the why when the server's own line said it
        already: a failed check (``server c: unusable: ...``) is followed at once by leaving
        for the very same reason, which a log should read once."""
        note = self.server_notes.notes.get(event.server)
        if note is not None and not note.ok and note.text == server_state_text("", event.why):
            return f"server {event.server} left the job"
        return f"server {event.server} left the job: {event.why}"

    def _frame(self, event: ev.FrameWritten, change: ProgressChange) -> None:
        chunk = change.finished
        if chunk is not None and len(chunk.frames) > 1:
            self.write_line(f"chunk {chunk.index} done on {chunk.server}")
        if not self.total:
            return
        tenth = self.written * 10 // self.total
        if tenth >= self._next_tenth:
            self._next_tenth = tenth + 1
            percent = self.written * 100 // self.total
            eta = f", about {duration_text(event.eta_seconds)} left" if _worth_saying(event) else ""
            self.write_line(f"{self.written}/{self.total} frames ({percent}%){eta}")


class RichView(View):
    """Live bars: overall (with ETA) and one per server (frames it wrote, what it does now).

    Notes are kept as a text plus a style, never as markup: failure messages carry brackets.
    If drawing fails anyway, the view goes quiet and the summary is still printed: a broken
    display must not end a render.
    """

    def __init__(self, out: TextIO) -> None:
        super().__init__(out)
        from rich.console import Console
        from rich.progress import MofNCompleteColumn, Progress, TimeElapsedColumn

        from comfy_cluster.commands.live_columns import (
            FittedBarColumn,
            NameColumn,
            NoteColumn,
            RowLayout,
            name_width,
        )

        self.console = Console(file=out)
        self._layout = RowLayout(lambda: self.console.width, lambda: self.total)
        self._name_width = name_width
        self.bars = Progress(
            NameColumn(self._layout),
            FittedBarColumn(self._layout),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            NoteColumn(self._layout),
            console=self.console,
            transient=False,
            refresh_per_second=8,
        )
        self._overall: Optional[Any] = None
        self._tasks: dict[str, Any] = {}
        self._started = False

    def _ensure(self) -> None:
        if not self._started and not self.broken:
            self.bars.start()
            self._started = True

    def _task(self, server: str) -> Any:
        task = self._tasks.get(server)
        if task is None:
            task = self.bars.add_task(server, total=self.total or None, note="waiting", style="dim")
            self._tasks[server] = task
        return task

    def _note(self, server: str, note: str, style: str = "") -> None:
        self.bars.update(self._task(server), note=note, style=style)

    def server_changed(self, server: str, note: ServerNote) -> None:
        if self._overall is not None:  # before JobStarted, the rows are made from the notes
            self._note(server, note.text, _note_style(note))

    def _add_rows(self, servers: Sequence[str]) -> None:
        """One row per server that may work, and one per server a state was reported for."""
        notes = self.server_notes.notes
        for name in (*servers, *(n for n in notes if n not in servers)):
            self._task(name)
            if name in notes:
                self._note(name, notes[name].text, _note_style(notes[name]))

    def handle(self, event: ev.JobEvent, change: ProgressChange) -> None:
        if isinstance(event, ev.JobStarted):
            names = (*event.servers, *self.server_notes.notes)
            self._layout.name = self._name_width(tuple(dict.fromkeys(names)))
        self._ensure()
        p = self.bars
        if isinstance(event, ev.JobStarted):
            skipped = f"{len(event.skipped_frames)} skipped" if event.skipped_frames else ""
            self._overall = p.add_task(
                "all frames", total=event.total_frames or 1, note=skipped, style=""
            )
            self._add_rows(tuple(event.servers))
            return
        if self._overall is not None:
            eta = f"~{duration_text(event.eta_seconds)} left" if _worth_saying(event) else ""
            p.update(
                self._overall,
                completed=min(self.total, event.progress * self.total),
                note=eta,
            )
        if isinstance(event, ev.ChunkAssigned):
            self._note(event.server, f"frames {frames_text(event.frames)}")
        elif isinstance(event, ev.FrameWritten):
            p.update(self._task(event.server), completed=self.per_server.get(event.server, 0))
        elif isinstance(event, ev.ChunkRetried):
            if event.server not in self.progress.blocklisted:  # "out: why" says more
                streak = change.retry
                times = f" x{streak.count}" if streak is not None and streak.count > 1 else ""
                self._note(event.server, f"retry{times}: {event.why}", "yellow")
        elif isinstance(event, ev.ServerBlocklisted):
            self._note(event.server, f"out: {event.why}", "red")
        elif isinstance(event, FINAL_EVENTS):
            self._final(event)

    def _final(self, event: ev.JobEvent) -> None:
        done = isinstance(event, ev.JobDone)
        notes = self.server_notes.notes
        for name in self._tasks:
            note = notes.get(name)
            if name in self.progress.blocklisted or (note is not None and not note.ok):
                continue  # keep saying why it is out
            self._note(name, "done" if done else "stopped", "green" if done else "")
        if self._overall is not None and not done:
            failed = isinstance(event, ev.JobFailed)
            self.bars.update(
                self._overall,
                note="failed" if failed else "cancelled",
                style="red" if failed else "yellow",
            )

    def close(self) -> None:
        if self._started:
            self._started = False
            try:
                self.bars.stop()
            except Exception:
                # rich's own ``finally`` restores the terminal; a display bug must not cost the
                # user the summary, nor the render its exit status.
                pass

    def summary(self, result: Any) -> None:
        self.close()
        style = "green" if result.ok else "red"
        lines = self.summary_text(result)
        self.console.print(lines[0], style=style, markup=False, highlight=False)
        for line in lines[1:]:
            self.console.print(line, markup=False, highlight=False)


def _note_style(note: ServerNote) -> str:
    """Red for a server that cannot run the job, yellow for one that is away, plain when fine."""
    if note.ok:
        return ""
    word = note.text.split(":", 1)[0]
    return "yellow" if word in ("offline", "unreachable", "disabled", "degraded") else "red"


def make_view(out: TextIO, *, json_lines: bool = False, tty: Optional[bool] = None) -> View:
    """The view for ``out``: JSON lines when asked, rich bars on a terminal, else plain lines."""
    if json_lines:
        return JsonView(out)
    if tty is None:
        isatty = getattr(out, "isatty", None)
        tty = bool(isatty and isatty())
    if tty:
        try:
            return RichView(out)
        except ImportError:
            pass
    return PlainView(out)
