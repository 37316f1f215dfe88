"""Speculative tail: an idle server copies a slow holder's running chunk when it would clearly
finish sooner; the first result wins each frame, the loser's prompt is interrupted and deleted,
and every frame is written once. ``speculation=False`` turns it off."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests
from workflows import invert_workflow

from comfy_cluster.core.client import ComfyClient
from comfy_cluster.core.engine import events as ev
from comfy_cluster.core.engine.attempt import Attempt
from comfy_cluster.core.engine.job import RenderJob
from comfy_cluster.core.engine.scheduler import Scheduler
from comfy_cluster.core.engine.speculation import FrameTimes, pick_copy
from comfy_cluster.core.frames import Chunk
from comfy_cluster.core.server import ServerConfig
from comfy_cluster.core.transfer import frame_path
from comfy_cluster.sim.harness import make_test_image, start_sims, stop_all
from comfy_cluster.sim.options import SimOptions


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def attempt(n: int, server: str, frames: tuple[int, ...]) -> Attempt:
    return Attempt(n, Chunk(n, frames), server, f"{server}-1", "test")


def paced(clock: Clock, server: str, seconds: float) -> FrameTimes:
    times = FrameTimes(clock)
    done = attempt(99, server, (100,))
    times.started(done)
    clock.now += seconds
    times.written(done)
    return times


def test_a_copy_goes_to_the_idle_server_that_clearly_finishes_sooner() -> None:
    clock = Clock()
    times = paced(clock, "fast", 0.1)
    holder = attempt(1, "slow", (5, 6, 7, 8))
    times.started(holder)
    clock.now += 2.0  # its first frame has run for 2 s: 20 times the fast server's pace
    plan = pick_copy("fast", [holder], lambda frames: tuple(frames), times)
    assert plan is not None and plan.holder is holder
    assert plan.frames == (8, 7, 6, 5)  # last first: the two meet in the middle
    assert "slow" in plan.reason


def test_no_copy_when_the_holder_is_about_as_fast() -> None:
    clock = Clock()
    times = paced(clock, "fast", 0.1)
    holder = attempt(1, "other", (5, 6))
    times.started(holder)
    clock.now += 0.12
    assert pick_copy("fast", [holder], lambda frames: tuple(frames), times) is None
    assert pick_copy("fast", [holder], lambda frames: (), times) is None  # all written


def test_no_copy_from_a_server_whose_pace_is_unknown() -> None:
    clock = Clock()
    holder = attempt(1, "slow", (5, 6, 7, 8))
    times = FrameTimes(clock)
    times.started(holder)
    clock.now += 100.0
    assert pick_copy("fast", [holder], lambda frames: tuple(frames), times) is None


# -- end to end against the sim ----------------------------------------------------------------


def render(tmp_path: Path, speculation: bool, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    sims = start_sims(
        2,
        [
            SimOptions(name="a-fast", node_seconds=0.02),
            SimOptions(name="b-slow", node_seconds=0.02, speed=0.1),
        ],
    )
    pattern = str(tmp_path / "in" / "in.####.png")
    for f in range(1, 9):
        make_test_image(frame_path(pattern, f), (8, 8), (f, 3 * f, 90))
    servers = [
        ServerConfig(name=s.options.name, host="127.0.0.1", port=s.port, max_in_flight=1)
        for s in sims
    ]
    lock = threading.Lock()
    seen: dict[str, Any] = {"written": Counter(), "copies": [], "by": {}}

    def on_event(event: ev.JobEvent) -> None:
        with lock:
            if isinstance(event, ev.FrameWritten):
                seen["written"][event.frame] += 1
                seen["by"][event.frame] = event.server
            elif isinstance(event, ev.ChunkSpeculated):
                seen["copies"].append(event)

    out = str(tmp_path / f"out{int(speculation)}" / "o.####.png")
    cancel = ComfyClient.cancel

    def recorded_cancel(client: ComfyClient, prompt_id: str) -> None:
        with lock:
            seen["cancelled"].append((client.name, prompt_id))
        cancel(client, prompt_id)

    seen["cancelled"] = []
    monkeypatch.setattr(ComfyClient, "cancel", recorded_cancel)
    try:
        with Scheduler(servers, speculation=speculation) as scheduler:
            job = RenderJob(invert_workflow("s"), "1-8", out, input_pattern=pattern, chunk_size=4)
            seen["result"] = scheduler.run(job, on_event)
        seen["slow_queue"] = drained_queue(sims[1].url)
    finally:
        stop_all(sims)
    seen["files"] = sorted(p.name for p in Path(out).parent.iterdir())
    return seen


def drained_queue(url: str) -> dict[str, Any]:
    """``/queue`` once empty, or after 10 s (an interrupt stops a prompt at its next node)."""
    deadline = time.monotonic() + 10.0
    while True:
        body = requests.get(f"{url}/queue", timeout=5).json()
        if not (body["queue_running"] or body["queue_pending"]) or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def test_a_slow_holders_chunk_is_copied_and_each_frame_written_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = render(tmp_path, True, monkeypatch)
    assert seen["result"].ok, seen["result"].message
    assert seen["written"] == Counter({f: 1 for f in range(1, 9)})
    assert seen["files"] == [f"o.{f:04d}.png" for f in range(1, 9)]
    assert len(seen["copies"]) == 1, seen["copies"]
    copy = seen["copies"][0]
    assert (copy.server, copy.holder) == ("a-fast", "b-slow")
    assert seen["by"][8] == "a-fast"  # the copy renders the last frame first
    # The loser's prompt was interrupted (running) or deleted (queued): nothing left there.
    assert [name for name, _ in seen["cancelled"]] == ["b-slow"]
    assert not seen["slow_queue"]["queue_running"] and not seen["slow_queue"]["queue_pending"]


def test_speculation_off_leaves_the_holder_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = render(tmp_path, False, monkeypatch)
    assert seen["result"].ok, seen["result"].message
    assert seen["written"] == Counter({f: 1 for f in range(1, 9)})
    assert seen["copies"] == []
    assert seen["cancelled"] == []
    # Each chunk stays whole on the server that took it; which one the slow server pulled
    # first depends on timing, but it finishes its own chunk, nobody copies it.
    first, second = ({seen["by"][f] for f in frames} for frames in ((1, 2, 3, 4), (5, 6, 7, 8)))
    assert len(first) == len(second) == 1, seen["by"]
    assert first | second == {"a-fast", "b-slow"}, seen["by"]


def test_a_chunk_gets_at_most_one_copy() -> None:
    from comfy_cluster.core.engine.chunk_queue import ChunkQueue

    queue = ChunkQueue([Chunk(0, (1, 2, 3))], ["slow", "fast"], clock=lambda: 0.0)
    queue.add_slot("slow-1", "slow")
    queue.add_slot("fast-1", "fast")
    queue.add_slot("fast-2", "fast")
    [holder] = queue.dispatch(
        lambda chunk, free, *_: ("slow", "test"), eligible=["slow"], suspended=(), remaining=3
    )
    queue.take(queue.slot("slow-1"))
    assert queue.running_elsewhere("fast") == [holder]
    copy = queue.assign_copy("fast-1", holder, (3, 2, 1), "copy")
    assert copy.chunk.frames == (3, 2, 1) and queue.sibling_running(holder)
    assert queue.running_elsewhere("fast") == []  # no second copy of that chunk
    queue.release(copy)
    assert not queue.sibling_running(holder)


def test_the_cli_flag_turns_speculation_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io
    import json

    from comfy_cluster.cli import build_parser
    from comfy_cluster.commands import render as render_cmd

    given: list[dict[str, Any]] = []

    def fake_execute(job: Any, servers: Any, view: Any, **kwargs: Any) -> int:
        given.append(kwargs["scheduler_options"])
        return 0

    monkeypatch.setattr(render_cmd, "execute", fake_execute)
    workflow = tmp_path / "wf.json"
    workflow.write_text(json.dumps(invert_workflow("s")))
    env = {
        "NUKE_COMFYUI_SERVERS": '[{"name": "a", "ip": "127.0.0.1", "port": 9}]',
        "COMFY_CLUSTER_CONFIG": str(tmp_path / "user.json"),
    }
    out = str(tmp_path / "out" / "o.####.png")
    for extra, expected in (([], True), (["--no-speculation"], False)):
        argv = ["render", str(workflow), "--frames", "1-2", "--output", out, *extra]
        err = io.StringIO()
        render_cmd.run(build_parser().parse_args(argv), environ=env, out=io.StringIO(), err=err)
        assert given, err.getvalue()
        assert given[-1]["speculation"] is expected


@pytest.mark.parametrize("kind", ["json", "plain", "live"])
def test_views_show_a_speculated_chunk_without_breaking(kind: str) -> None:
    import io
    import json

    from comfy_cluster.commands.progress import make_view

    out = io.StringIO()
    view = make_view(out, json_lines=kind == "json", tty=kind == "live")
    base = {"job_id": "j", "progress": 0.5, "eta_seconds": 1.0}
    view(ev.JobStarted(**base, total_frames=4, servers=("a", "b")))
    view(ev.ChunkAssigned(**base, chunk_index=0, frames=(1, 2), server="b", reason="r"))
    copy = {"chunk_index": 0, "frames": (2, 1), "server": "a"}
    view(ev.ChunkSpeculated(**base, **copy, holder="b", reason="a: idle"))
    view(ev.ChunkAssigned(**base, **copy, reason="a: idle"))
    view(ev.FrameWritten(**base, frame=2, path="/x/2.png", server="a"))
    view.close()
    assert not view.broken
    if kind == "json":
        lines = [json.loads(line) for line in out.getvalue().splitlines()]
        [spec] = [line for line in lines if line["type"] == "ChunkSpeculated"]
        assert spec["holder"] == "b" and spec["frames"] == [2, 1]


# -- pick_copy's arithmetic, at its edges ---------------------------------------------------------


def with_paces(clock: Clock, **seconds_per_frame: float) -> FrameTimes:
    """A FrameTimes that has seen one frame of each server take the given seconds."""
    times = FrameTimes(clock)
    for n, (server, seconds) in enumerate(seconds_per_frame.items()):
        done = attempt(90 + n, server, (100 + n,))
        times.started(done)
        clock.now += seconds
        times.written(done)
    return times


def everything_left(frames: Any) -> tuple[int, ...]:
    return tuple(frames)


def test_the_holders_time_left_counts_its_current_frame_half_done_at_most() -> None:
    """slow is 10 s a frame and has run 6 s on the first of 2 frames: about 15 s left (its
    pace less half a frame), against 2 s on the idle fast server."""
    clock = Clock()
    times = with_paces(clock, fast=1.0, slow=10.0)
    holder = attempt(1, "slow", (5, 6))
    times.started(holder)
    clock.now += 6.0
    plan = pick_copy("fast", [holder], everything_left, times)
    assert plan is not None
    assert "~2.0 s for 2 frame(s) against ~15.0 s on slow" in plan.reason, plan.reason


def test_a_copy_at_exactly_half_the_holders_time_and_two_frames_saved_is_made() -> None:
    clock = Clock()
    times = with_paces(clock, fast=1.0, slow=2.0)
    holder = attempt(1, "slow", (5, 6))
    times.started(holder)
    assert pick_copy("fast", [holder], everything_left, times) is not None  # 2 s against 4 s


def test_no_copy_that_would_take_more_than_half_the_holders_time() -> None:
    """10 frames at 1 s against 18 s: it saves 8 s, but a copy costs the holder's server its
    queue slot and the cluster twice the work; it must be a clear win."""
    clock = Clock()
    times = with_paces(clock, fast=1.0, slow=1.8)
    holder = attempt(1, "slow", tuple(range(1, 11)))
    times.started(holder)
    assert pick_copy("fast", [holder], everything_left, times) is None


def test_the_largest_saving_wins_among_the_holders_whatever_their_order() -> None:
    """x: 1 frame at 30 s saves 29 s; y: 6 frames at 5.5 s (33 s) saves 27 s. A holder with
    nothing left, or one not worth copying, hides none that follows it."""
    clock = Clock()
    times = with_paces(clock, fast=1.0, x=30.0, y=5.5, quick=1.0)
    x, y = attempt(1, "x", (9,)), attempt(2, "y", tuple(range(10, 16)))
    done, quick = attempt(3, "y", (20,)), attempt(4, "quick", (21, 22))
    for a in (x, y, done, quick):
        times.started(a)

    def left(frames: Any) -> tuple[int, ...]:
        return () if tuple(frames) == (20,) else tuple(frames)

    for order in ([x, y], [y, x], [done, quick, y, x]):
        plan = pick_copy("fast", order, left, times)
        assert plan is not None and plan.holder is x, order


def test_of_two_equal_savings_the_first_holder_is_copied() -> None:
    clock = Clock()
    times = with_paces(clock, fast=1.0, slow=10.0)
    first, second = attempt(1, "slow", (5, 6)), attempt(2, "slow", (7, 8))
    for a in (first, second):
        times.started(a)
    plan = pick_copy("fast", [first, second], everything_left, times)
    assert plan is not None and plan.holder is first


def test_an_ended_attempt_is_forgotten() -> None:
    clock = Clock()
    times = FrameTimes(clock)
    ran = attempt(1, "slow", (5,))
    times.started(ran)
    clock.now += 3.0
    assert times.since_progress(ran) == 3.0
    times.ended(ran)
    assert times.since_progress(ran) == 0.0
