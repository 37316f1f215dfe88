"""Issue 13: every view reacts to ``ServerRejoined`` and to a failed preflight check.

A server that left the job ("out: ...") and answers again is shown working again: the CLI's live
rows, plain lines and JSON lines, the render node's status and the panel's Job text (through
``JobMonitor.job_text``) all drop the "out" note. Events are fed straight to each view.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from comfy_cluster.commands.progress import REJOINED, JsonView, PlainView
from comfy_cluster.core.engine import events as ev
from comfy_cluster.core.engine.job import JobResult, JobStatus
from comfy_cluster.core.progress import JobProgress
from comfy_cluster.host import knobs as K
from comfy_cluster.host.jobs import JobMonitor

AT = {"job_id": "j", "progress": 0.0, "eta_seconds": None}
WHY = "unreachable (3 failures); last: GET /queue: unreachable (connection refused)"
MODEL = "node 4 (CheckpointLoaderSimple) input ckpt_name: 'sd15.safetensors' is not on this server"


def at(progress: float) -> dict[str, Any]:
    return {**AT, "progress": progress}


def story() -> list[ev.JobEvent]:
    """a and b share four frames; b drops out, rejoins and renders its chunk again; c fails its
    preflight check (a model it lacks) and never works."""
    return [
        ev.ServerChecked(**AT, server="c", ok=False, reasons=(MODEL,), state="unusable"),
        ev.ServerBlocklisted(**AT, server="c", why=f"unusable: {MODEL}"),
        ev.JobStarted(**AT, total_frames=4, servers=("a", "b", "c")),
        ev.ChunkAssigned(**AT, chunk_index=0, frames=(1, 2), server="a", reason="first"),
        ev.ChunkAssigned(**AT, chunk_index=1, frames=(3, 4), server="b", reason="idle"),
        ev.ChunkRetried(**AT, chunk_index=1, server="b", why="connection refused", frames=(3, 4)),
        ev.ServerBlocklisted(**AT, server="b", why=WHY),  # index 6
        ev.ServerRejoined(**AT, server="b", why=WHY),  # index 7
        ev.ChunkAssigned(**AT, chunk_index=1, frames=(3, 4), server="b", reason="back"),
        ev.FrameWritten(**at(0.25), frame=1, path="/o/1.png", server="a"),
        ev.FrameWritten(**at(0.5), frame=3, path="/o/3.png", server="b"),
        ev.FrameWritten(**at(0.75), frame=2, path="/o/2.png", server="a"),
        ev.FrameWritten(**at(1.0), frame=4, path="/o/4.png", server="b"),
        ev.JobDone(**at(1.0), frames_written=4, per_server={"a": 2, "b": 2}, retries=1),
    ]


BLOCKED, REJOINED_AT = 6, 7
RESULT = JobResult(
    "j",
    JobStatus.DONE,
    frames_requested=(1, 2, 3, 4),
    frames_written=(1, 2, 3, 4),
    per_server={"a": 2, "b": 2},
    retries=1,
    blocklisted={"c": f"unusable: {MODEL}"},
    seconds=2.0,
)


def feed(view: Any, events: list[ev.JobEvent]) -> None:
    for event in events:
        view(event)


# -- the one fold -------------------------------------------------------------------------------


def test_the_fold_takes_a_rejoined_server_out_of_the_out_list() -> None:
    progress = JobProgress()
    events = story()
    changes = [progress.apply(e) for e in events[: BLOCKED + 1]]
    assert changes[0].servers == ("c",)  # its failed check is news for its row
    assert progress.idle_reasons() == {"b": f"out: {WHY}", "c": f"out: unusable: {MODEL}"}
    change = progress.apply(events[REJOINED_AT])
    assert change.servers == ("b",)
    assert progress.idle_reasons() == {"c": f"out: unusable: {MODEL}"}
    assert "b" not in progress.blocklisted and "b" not in progress.streaks


def test_a_failed_check_is_forgotten_once_the_server_writes_a_frame() -> None:
    progress = JobProgress()
    progress.apply(ev.ServerChecked(**AT, server="a", ok=False, reasons=("missing: X",)))
    assert progress.idle_reasons() == {"a": "unusable: missing: X"}  # no state: unusable
    progress.apply(
        ev.ServerChecked(
            **AT, server="b", ok=False, reasons=("unreachable: refused",), state="unreachable"
        )
    )
    assert progress.idle_reasons()["b"] == "unreachable: refused"  # not out: it may come in
    progress.apply(ev.FrameWritten(**AT, frame=1, path="/o/1.png", server="b"))
    assert "b" not in progress.idle_reasons()


# -- the command line -----------------------------------------------------------------------------


def test_plain_view_says_the_server_is_back() -> None:
    out = io.StringIO()
    view = PlainView(out)
    feed(view, story())
    lines = out.getvalue().splitlines()
    left = lines.index(f"server b left the job: {WHY}")
    assert lines.index(f"server b: {REJOINED}") > left
    view.summary(RESULT)
    summary = out.getvalue().splitlines()[len(lines) :]
    assert not any(line.strip().startswith("b ") for line in summary[1:] if "frame" not in line)
    assert any("c left the job" in line and "ckpt_name" in line for line in summary)


def test_json_lines_carry_the_rejoin() -> None:
    out = io.StringIO()
    feed(JsonView(out), story())
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    rejoined = [e for e in events if e["type"] == "ServerRejoined"]
    assert rejoined == [{**AT, "type": "ServerRejoined", "server": "b", "why": WHY}]
    checked = next(e for e in events if e["type"] == "ServerChecked")
    assert checked["server"] == "c" and checked["reasons"] == [MODEL] and not checked["ok"]


def rich_notes(view: Any) -> dict[str, tuple[str, str]]:
    return {t.description: (t.fields["note"], t.fields["style"]) for t in view.bars.tasks}


def test_rich_row_drops_out_once_the_server_rejoins() -> None:
    pytest.importorskip("rich")
    from comfy_cluster.commands.progress import RichView

    view = RichView(io.StringIO())
    events = story()
    feed(view, events[: BLOCKED + 1])
    assert rich_notes(view)["b"] == (f"out: {WHY}", "red")
    view(events[REJOINED_AT])
    assert rich_notes(view)["b"] == (REJOINED, "")
    feed(view, events[REJOINED_AT + 1 : REJOINED_AT + 2])
    assert rich_notes(view)["b"][0] == "frames 3-4"
    # Out again and back again: the second rejoin is shown too.
    view(events[BLOCKED])
    view(events[REJOINED_AT])
    assert rich_notes(view)["b"] == (REJOINED, "")
    feed(view, events[REJOINED_AT + 1 :])
    notes = rich_notes(view)
    assert notes["b"] == ("done", "green")
    assert notes["c"][0].startswith("unusable: ") and notes["c"][1] == "red"
    view.summary(RESULT)
    text = view.console.file.getvalue()
    assert "b did no work" not in text and "b left the job" not in text


# -- the render node and the panel's Job text ------------------------------------------------


class Dispatcher:
    """Runs posts at once and keeps the last value of each knob."""

    def __init__(self) -> None:
        self.knobs: dict[str, Any] = {}

    def post(self, fn: Any, *args: Any) -> None:
        pass

    def set_knob_later(self, node: str, knob: str, value: Any) -> None:
        self.knobs[knob] = value


class Board:
    """The Job column's board: the latest text reported per server."""

    def __init__(self) -> None:
        self.jobs: dict[str, str] = {}

    def report_job(self, server: str, text: str, *, job: str = "") -> None:
        if text:
            self.jobs[server] = text
        else:
            self.jobs.pop(server, None)

    def clear_job(self, job: str) -> None:
        self.jobs.clear()


def test_node_status_and_job_text_show_who_is_out_until_it_rejoins() -> None:
    dispatcher, board = Dispatcher(), Board()
    monitor = JobMonitor("Render1", dispatcher, 4, lambda *a: None, job_id="j", cluster=board)
    events = story()
    feed(monitor.on_event, events[: BLOCKED + 1])
    status = dispatcher.knobs[K.STATUS]
    assert "b: out: unreachable (3 failures)" in status, status
    assert "c: out: unusable: node 4 (CheckpointLoaderSimple) input ckpt_name" in status, status
    assert board.jobs["b"] == f"Render1: out: {WHY}"
    assert board.jobs["c"] == f"Render1: out: unusable: {MODEL}"
    monitor.on_event(events[REJOINED_AT])
    assert "b: out" not in dispatcher.knobs[K.STATUS]
    assert "c: out" in dispatcher.knobs[K.STATUS]
    assert "b" not in board.jobs
    monitor.on_event(events[REJOINED_AT + 1])
    assert board.jobs["b"] == "Render1 chunk 2 (3-4)"


class RunningDispatcher(Dispatcher):
    """Runs posted calls at once (the terminal lines)."""

    def post(self, fn: Any, *args: Any) -> None:
        fn(*args)


def test_terminal_mode_prints_why_a_server_is_out_and_that_it_is_back() -> None:
    lines: list[str] = []
    monitor = JobMonitor(
        "Render1", RunningDispatcher(), 4, lambda *a: None, print_line=lines.append, job_id="j"
    )
    feed(monitor.on_event, story()[: REJOINED_AT + 1])
    assert f"Render1: server c failed its check (unusable): {MODEL}" in lines
    assert "Render1: server c left the job" in lines  # the reason was just said: not again
    assert sum(MODEL in line for line in lines) == 1, lines
    assert f"Render1: server b left the job: {WHY}" in lines
    assert lines[-1] == "Render1: server b is back in the job"
