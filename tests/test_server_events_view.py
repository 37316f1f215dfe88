"""Server state in the views: ``ServerChecked`` / ``ServerStateChanged`` fed straight to the
plain, rich and JSON views (the engine emits them once wired), and the summary's idle servers."""

from __future__ import annotations

import dataclasses
import io
import json
from typing import Any

import pytest

from comfy_cluster.commands.progress import (
    JsonView,
    PlainView,
    ServerNote,
    ServerNotes,
    event_to_json,
    server_state_text,
)
from comfy_cluster.core.engine import events as ev
from comfy_cluster.core.engine.job import JobResult, JobStatus

AT = {"job_id": "j", "progress": 0.0, "eta_seconds": None}
MISSING = "missing node classes: ImageInvert"


def checked(server: str, ok: bool, *reasons: str, state: str = "") -> ev.ServerChecked:
    return ev.ServerChecked(**AT, server=server, ok=ok, reasons=reasons, state=state)


def changed(server: str, state: str, reason: str = "") -> ev.ServerStateChanged:
    return ev.ServerStateChanged(**AT, server=server, state=state, reason=reason)


def story() -> list[ev.JobEvent]:
    """gpu-a passes and works, gpu-b lacks a class, gpu-c goes offline before doing anything."""
    return [
        checked("gpu-a", True, state="ok"),
        checked("gpu-b", False, MISSING, state="unusable"),
        ev.JobStarted(**AT, total_frames=2, servers=("gpu-a", "gpu-c")),
        changed("gpu-c", "offline", "connection refused"),
        changed("gpu-c", "offline", "connection refused"),  # no change: said once
        ev.ChunkAssigned(**AT, chunk_index=0, frames=(1, 2), server="gpu-a", reason="first"),
        ev.FrameWritten(**{**AT, "progress": 0.5}, frame=1, path="/o/1.png", server="gpu-a"),
        ev.FrameWritten(**{**AT, "progress": 1.0}, frame=2, path="/o/2.png", server="gpu-a"),
        ev.JobDone(**{**AT, "progress": 1.0}, frames_written=2, per_server={"gpu-a": 2}),
    ]


RESULT = JobResult(
    "j",
    JobStatus.DONE,
    frames_requested=(1, 2),
    frames_written=(1, 2),
    per_server={"gpu-a": 2},
    seconds=3.0,
)


def feed(view: Any, events: list[ev.JobEvent]) -> None:
    for event in events:
        view(event)


# -- the events --------------------------------------------------------------------------------


def test_new_events_are_frozen_job_events_with_defaults() -> None:
    event = ev.ServerChecked(**AT, server="a", ok=True)
    assert isinstance(event, ev.JobEvent) and event.reasons == () and event.state == ""
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.ok = False  # type: ignore[misc]
    assert ev.ServerStateChanged(**AT, server="a", state="ready").reason == ""
    assert {"ServerChecked", "ServerStateChanged"} <= set(ev.__all__)


def test_existing_events_are_unchanged() -> None:
    """The stream is a public contract: the old events keep exactly their fields."""
    names = {f.name for f in dataclasses.fields(ev.ServerBlocklisted)}
    assert names == {"job_id", "progress", "eta_seconds", "server", "why"}
    names = {f.name for f in dataclasses.fields(ev.JobStarted)}
    assert names == {
        "job_id",
        "progress",
        "eta_seconds",
        "total_frames",
        "servers",
        "skipped_frames",
    }


def test_json_lines_carry_the_new_events() -> None:
    out = io.StringIO()
    feed(JsonView(out), story())
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[1] == {
        "type": "ServerChecked",
        **AT,
        "server": "gpu-b",
        "ok": False,
        "reasons": [MISSING],
        "state": "unusable",
    }
    assert lines[3] == {
        "type": "ServerStateChanged",
        **AT,
        "server": "gpu-c",
        "state": "offline",
        "reason": "connection refused",
    }
    assert len(lines) == len(story())  # JSON is every event, repeats included
    assert event_to_json(changed("x", "ready")) == {
        "type": "ServerStateChanged",
        **AT,
        "server": "x",
        "state": "ready",
        "reason": "",
    }


# -- what a state says ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "reason", "text"),
    [
        ("offline", "connection refused", "offline: connection refused"),
        ("unusable", MISSING, f"unusable: {MISSING}"),
        ("unreachable", "unreachable: connection refused", "unreachable: connection refused"),
        (
            "auth",
            "authentication refused: check its token/headers",
            "authentication refused: check its token/headers",
        ),
        ("ready", "", "ready"),
        ("", "something", "something"),
        ("offline", "line one\nline two", "offline: line one line two"),
    ],
)
def test_server_state_text(state: str, reason: str, text: str) -> None:
    assert server_state_text(state, reason) == text


def test_notes_follow_the_latest_state_and_skip_repeats() -> None:
    notes = ServerNotes()
    assert notes.apply(checked("b", False, MISSING)) == ServerNote(f"unusable: {MISSING}", False)
    assert notes.apply(checked("b", False, MISSING)) is None
    assert notes.apply(changed("b", "ready")) == ServerNote("ready", True)
    assert notes.apply(ev.JobCancelled(**AT)) is None
    two = checked("c", False, "a", "b", state="unusable")
    assert notes.apply(two) == ServerNote("unusable: a; b", False)


# -- plain lines and the summary ------------------------------------------------------------------


def test_plain_view_prints_one_line_per_change_and_the_idle_servers_in_the_summary() -> None:
    out = io.StringIO()
    view = PlainView(out)
    feed(view, story())
    view.summary(RESULT)
    lines = out.getvalue().splitlines()
    assert lines[:4] == [
        "server gpu-a: ok",
        f"server gpu-b: unusable: {MISSING}",
        "rendering 2 frame(s) on 2 server(s): gpu-a, gpu-c",
        "server gpu-c: offline: connection refused",
    ]
    assert sum("gpu-c" in line for line in lines[:-3]) == 2  # the repeat was not printed
    assert lines[-3:] == [
        "  gpu-a: 2 frame(s)",
        f"  gpu-b did no work: unusable: {MISSING}",
        "  gpu-c did no work: offline: connection refused",
    ]


def test_a_server_that_came_back_or_worked_or_left_is_not_listed_as_idle() -> None:
    out = io.StringIO()
    view = PlainView(out)
    feed(
        view,
        [
            changed("back", "offline", "timed out"),
            changed("back", "ready"),
            changed("worked", "offline", "reset"),
            changed("left", "degraded", "stuck prompt"),
            ev.ServerBlocklisted(**AT, server="left", why="too many failures"),
        ],
    )
    result = dataclasses.replace(
        RESULT, per_server={"worked": 2}, blocklisted={"left": "too many failures"}
    )
    view.summary(result)
    summary = out.getvalue().splitlines()[-3:]
    assert summary[1:] == ["  worked: 2 frame(s)", "  left left the job: too many failures"]
    assert not any("did no work" in line for line in out.getvalue().splitlines())


def test_without_server_events_the_summary_is_as_before() -> None:
    from comfy_cluster.commands.progress import summary_lines

    out = io.StringIO()
    view = PlainView(out)
    view.summary(RESULT)
    assert out.getvalue().splitlines() == summary_lines(RESULT)


# -- the live (rich) view -------------------------------------------------------------------------


def rich_view() -> Any:
    pytest.importorskip("rich")
    from comfy_cluster.commands.progress import RichView

    return RichView(io.StringIO())


def notes_of(view: Any) -> dict[str, str]:
    return {task.description: task.fields["note"] for task in view.bars.tasks}


def test_rich_rows_show_each_servers_state_and_keep_it_at_the_end() -> None:
    view = rich_view()
    events = story()
    feed(view, events[:4])
    notes = notes_of(view)
    assert notes["gpu-b"] == f"unusable: {MISSING}"  # checked before the rows existed
    assert notes["gpu-c"] == "offline: connection refused"
    assert notes["gpu-a"] == "ok"
    feed(view, events[4:])
    notes = notes_of(view)
    assert notes["gpu-a"] == "done"
    assert notes["gpu-b"] == f"unusable: {MISSING}"
    assert notes["gpu-c"] == "offline: connection refused"
    styles = {t.description: t.fields["style"] for t in view.bars.tasks}
    assert styles["gpu-b"] == "red" and styles["gpu-c"] == "yellow"
    view.summary(RESULT)
    text = view.console.file.getvalue()
    assert f"gpu-b did no work: unusable: {MISSING}" in text


def test_rich_note_follows_a_state_change_mid_job() -> None:
    view = rich_view()
    feed(view, [ev.JobStarted(**AT, total_frames=4, servers=("a", "b"))])
    view(changed("b", "offline", "connection refused"))
    assert notes_of(view)["b"] == "offline: connection refused"
    view(changed("b", "ready"))
    assert notes_of(view)["b"] == "ready"
    view.close()
