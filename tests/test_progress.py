"""core/progress.py: JobProgress folds a job's events once, for every view of the job."""

from __future__ import annotations

import io
from typing import Any

import pytest

from comfy_cluster.commands.progress import PlainView
from comfy_cluster.core.engine import events as ev
from comfy_cluster.core.progress import FinishedChunk, JobProgress


def _at(progress: float, eta: Any = None) -> dict[str, Any]:
    return {"job_id": "J", "progress": progress, "eta_seconds": eta}


def _story() -> list[ev.JobEvent]:
    """Six frames on two servers: b fails its chunk after one frame, is blocklisted, and a
    renders the rest of b's chunk after finishing its own."""
    return [
        ev.JobStarted(**_at(0.0), total_frames=6, servers=("a", "b")),
        ev.ChunkAssigned(**_at(0.0), chunk_index=0, frames=(1, 2, 3), server="a", reason="fast"),
        ev.ChunkAssigned(**_at(0.0), chunk_index=1, frames=(4, 5, 6), server="b", reason="idle"),
        ev.ChunkProgress(**_at(0.05), chunk_index=0, server="a", frames_done=0, frame_fraction=0.3),
        ev.FrameWritten(**_at(1 / 6, 50.0), frame=1, path="/o.0001.png", server="a"),
        ev.FrameWritten(**_at(2 / 6, 40.0), frame=4, path="/o.0004.png", server="b"),
        ev.FrameWritten(**_at(3 / 6, 30.0), frame=2, path="/o.0002.png", server="a"),
        ev.ChunkRetried(**_at(3 / 6, 30.0), chunk_index=1, server="b", why="boom", frames=(5, 6)),
        ev.ServerBlocklisted(**_at(3 / 6, 30.0), server="b", why="failed 1 chunks"),
        ev.ChunkAssigned(**_at(3 / 6, 30.0), chunk_index=1, frames=(5, 6), server="a", reason=""),
        ev.FrameWritten(**_at(4 / 6, 20.0), frame=3, path="/o.0003.png", server="a"),
        ev.FrameWritten(**_at(5 / 6, 10.0), frame=5, path="/o.0005.png", server="a"),
        ev.FrameWritten(**_at(1.0, 0.0), frame=6, path="/o.0006.png", server="a"),
        ev.JobDone(**_at(1.0, 0.0), frames_written=6, per_server={"a": 5, "b": 1}, retries=1),
    ]


def test_folding_a_job_with_a_retry_counts_frames_servers_and_chunks() -> None:
    progress = JobProgress()
    events = _story()
    changes = [progress.apply(event) for event in events[:4]]
    assert progress.total == 6 and progress.servers == ("a", "b")
    assert progress.per_server == {"a": 0, "b": 0}
    assert [c.servers for c in changes] == [(), ("a",), ("b",), ()]
    assert progress.working() == ("a", "b")
    assert [(c.index, c.frames) for c in progress.held_chunks("a")] == [(0, (1, 2, 3))]
    assert progress.fraction == 0.05 and progress.eta_seconds is None

    for event in events[4:7]:
        assert progress.apply(event).finished is None  # no chunk is complete yet
    assert progress.done == 3 and progress.per_server == {"a": 2, "b": 1}
    assert progress.held_chunks("b")[0].left == {5, 6}
    assert progress.eta_seconds == 30.0 and progress.percent == 50.0

    retried = progress.apply(events[7])
    assert retried.servers == ("b",) and progress.retries == 1
    assert progress.working() == ("a",)  # b holds nothing now
    # Blocklisted while holding nothing: still a change, the server's row now says why it is out.
    assert progress.apply(events[8]).servers == ("b",)
    assert progress.blocklisted == {"b": "failed 1 chunks"}
    progress.apply(events[9])
    assert [c.index for c in progress.held_chunks("a")] == [0, 1]

    finished = [progress.apply(event).finished for event in events[10:13]]
    assert finished == [
        FinishedChunk(0, "a", (1, 2, 3)),
        None,
        FinishedChunk(1, "a", (5, 6)),
    ]
    assert progress.done == 6 and progress.per_server == {"a": 5, "b": 1}
    assert progress.working() == () and progress.percent == 100.0
    assert progress.eta_seconds == 0.0 and not progress.ended

    progress.apply(events[13])
    assert progress.ended and isinstance(progress.final, ev.JobDone)


def test_the_final_event_releases_every_chunk() -> None:
    progress = JobProgress(4)
    progress.apply(
        ev.ChunkAssigned(**_at(0.0), chunk_index=0, frames=(1, 2), server="a", reason="")
    )
    progress.apply(
        ev.ChunkAssigned(**_at(0.0), chunk_index=1, frames=(3, 4), server="b", reason="")
    )
    change = progress.apply(ev.JobCancelled(**_at(0.0)))
    assert set(change.servers) == {"a", "b"}
    assert progress.working() == () and progress.held_chunks("a") == ()
    assert progress.ended


@pytest.mark.parametrize(("started_total", "expected"), [(8, 8), (0, 5)])
def test_total_starts_as_the_estimate_and_follows_job_started(
    started_total: int, expected: int
) -> None:
    progress = JobProgress(5)
    progress.apply(ev.JobStarted(**_at(0.0), total_frames=started_total, servers=("a",)))
    assert progress.total == expected


def test_blocklisting_a_busy_server_drops_its_chunks() -> None:
    progress = JobProgress()
    progress.apply(ev.ChunkAssigned(**_at(0.0), chunk_index=2, frames=(7,), server="a", reason=""))
    change = progress.apply(ev.ServerBlocklisted(**_at(0.0), server="a", why="degraded"))
    assert change.servers == ("a",) and progress.working() == ()


def test_percent_is_clamped_and_rounded() -> None:
    progress = JobProgress()
    progress.apply(
        ev.ChunkProgress(**_at(1.2), chunk_index=0, server="a", frames_done=0, frame_fraction=1.0)
    )
    assert progress.percent == 100.0
    progress.apply(
        ev.ChunkProgress(
            **_at(0.12345), chunk_index=0, server="a", frames_done=0, frame_fraction=0.1
        )
    )
    assert progress.percent == 12.3


def test_the_plain_view_reads_its_counts_from_the_fold() -> None:
    out = io.StringIO()
    view = PlainView(out)
    for event in _story():
        view(event)
    lines = out.getvalue().splitlines()
    assert lines[0] == "rendering 6 frame(s) on 2 server(s): a, b"
    assert "retry: chunk 1 on b failed (boom); 2 frame(s) back in the queue" in lines
    assert "server b left the job: failed 1 chunks" in lines
    assert "chunk 0 done on a" in lines and "chunk 1 done on a" in lines
    assert lines[-1] == "6/6 frames (100%)"
    assert (view.written, view.total, view.per_server) == (6, 6, {"a": 5, "b": 1})
