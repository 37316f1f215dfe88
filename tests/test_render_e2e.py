"""End to end: the real client, websocket and HTTP transfer against simulated ComfyUI servers.

Each input frame is a small solid-colour PNG made with Pillow; the workflow inverts it, so every
output pixel proves which frame it came from.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from PIL import Image
from workflows import invert_workflow

from comfy_cluster.core.client import ComfyClient, Timeouts
from comfy_cluster.core.engine import events as ev
from comfy_cluster.core.engine.job import JobStatus, RenderJob
from comfy_cluster.core.engine.scheduler import Scheduler
from comfy_cluster.core.retry import retry_transient
from comfy_cluster.core.server import ServerConfig

WORKFLOW = invert_workflow()


def colour(frame: int) -> tuple[int, int, int]:
    return (frame * 10 % 256, 200 - frame * 5 % 200, 17)


@pytest.fixture
def shot(tmp_path: Path) -> dict[str, Any]:
    for f in range(1, 13):
        Image.new("RGB", (4, 4), colour(f)).save(tmp_path / f"in.{f:04d}.png")
    return {
        "input": str(tmp_path / "in.####.png"),
        "output": str(tmp_path / "out" / "shot.####.png"),
        "dir": tmp_path / "out",
    }


def config(sim: Any, **kw: Any) -> ServerConfig:
    return ServerConfig(
        name=sim.options.name,
        host="127.0.0.1",
        port=sim.port,
        dir_local=str(sim.root),
        dir_remote=str(sim.root),
        **kw,
    )


def scheduler_for(sims: list, **kw: Any) -> Scheduler:
    options: dict[str, Any] = dict(
        client_factory=lambda s: ComfyClient(s, timeouts=Timeouts(connect=1.0, read=5.0)),
        stall_timeout=0.5,
        poll_interval=0.02,
        history_interval=0.3,
        retry=retry_transient(attempts=3, max_seconds=3.0, initial=0.05, maximum=0.2, jitter=0.0),
        join_timeout=5.0,
    )
    options.update(kw)
    return Scheduler([config(s) for s in sims], **options)


def check_pixels(shot: dict[str, Any], frames: Any) -> None:
    for f in frames:
        with Image.open(shot["output"].replace("####", f"{f:04d}")) as img:
            want = [255 - c for c in colour(f)]
            got = img.convert("RGB").getpixel((1, 1))
            # The sim computes in float like ComfyUI: allow one step of rounding.
            assert all(abs(a - b) <= 1 for a, b in zip(got, want)), (f, got, want)
    assert sorted(p.name for p in shot["dir"].iterdir()) == [f"shot.{f:04d}.png" for f in frames]


def queues_drain(sims: list, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    for sim in sims:
        while True:
            running, pending = sim.queue_snapshot()
            if not running and not pending:
                break
            assert time.monotonic() < deadline, (sim, running, pending)
            time.sleep(0.01)


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_per_frame_upload_render_download(sim_factory: Any, shot: dict[str, Any]) -> None:
    sims = [sim_factory(name="r1", node_seconds=0.01), sim_factory(name="r2", node_seconds=0.01)]
    seen: list[ev.JobEvent] = []
    with scheduler_for(sims) as scheduler:
        result = scheduler.run(
            RenderJob(WORKFLOW, "1-8", shot["output"], input_pattern=shot["input"]), seen.append
        )
    assert result.ok, result.message
    check_pixels(shot, range(1, 9))
    assert isinstance(seen[-1], ev.JobDone)
    assert sum(result.per_server.values()) == 8
    queues_drain(sims)


def test_batch_mode_with_handles(sim_factory: Any, shot: dict[str, Any]) -> None:
    sims = [sim_factory(name="b1"), sim_factory(name="b2")]
    with scheduler_for(sims) as scheduler:
        job = RenderJob(
            WORKFLOW,
            "2-10",
            shot["output"],
            input_pattern=shot["input"],
            mode="batch",
            chunk_size=4,
            handles=1,
        )
        result = scheduler.run(job)
    assert result.ok, result.message
    check_pixels(shot, range(2, 11))
    assert sum(len(s.prompts_seen) for s in sims) == 3


def test_shared_storage_sends_no_files(sim_factory: Any, shot: dict[str, Any]) -> None:
    sims = [sim_factory(name="s1")]
    with scheduler_for(sims) as scheduler:
        job = RenderJob(
            WORKFLOW, "1-4", shot["output"], input_pattern=shot["input"], shared_storage=True
        )
        result = scheduler.run(job)
    assert result.ok, result.message
    check_pixels(shot, range(1, 5))
    staged = sorted((sims[0].input_dir / "comfy_cluster").iterdir())
    assert len(staged) == 4
    assert [p for p in sims[0].input_dir.iterdir() if p.is_file()] == []  # nothing uploaded


def test_server_killed_mid_chunk(sim_factory: Any, shot: dict[str, Any]) -> None:
    victim = sim_factory(name="victim", node_seconds=0.05)
    other = sim_factory(name="other", node_seconds=0.05)
    killed = threading.Event()

    def on_event(event: ev.JobEvent) -> None:
        victim_busy = isinstance(event, ev.ChunkAssigned) and event.server == "victim"
        if victim_busy and event.chunk_index and not killed.is_set():
            killed.set()
            threading.Thread(target=victim.kill, daemon=True).start()

    with scheduler_for([victim, other]) as scheduler:
        result = scheduler.run(
            RenderJob(WORKFLOW, "1-8", shot["output"], input_pattern=shot["input"]), on_event
        )
    assert killed.is_set()
    assert result.ok, result.message
    check_pixels(shot, range(1, 9))


def test_hanging_server_is_detected_and_its_frames_move(
    sim_factory: Any, shot: dict[str, Any]
) -> None:
    hang = sim_factory(name="hang", hang_prompts=True)
    good = sim_factory(name="good", node_seconds=0.01)
    seen: list[ev.JobEvent] = []
    with scheduler_for([hang, good], speculation=False) as scheduler:
        result = scheduler.run(
            RenderJob(WORKFLOW, "1-6", shot["output"], input_pattern=shot["input"]), seen.append
        )
    assert result.ok, result.message
    check_pixels(shot, range(1, 7))
    assert result.per_server == {"good": 6}
    assert any(isinstance(e, ev.ChunkRetried) and e.server == "hang" for e in seen)
    assert "hang" in result.blocklisted  # it ignored our interrupt
    assert hang.queue_snapshot()[1] == []  # nothing of ours waits behind it
    hang.set_faults(hang_prompts=False)  # the late result must not be written
    queues_drain([hang])
    check_pixels(shot, range(1, 7))


@pytest.mark.parametrize(
    "faults",
    [{"drop_ws_after_events": 3}, {"fail_prompt_posts": 2}, {"fail_node": "ImageInvert"}],
    ids=["websocket-drop", "http-500", "execution-error-on-one"],
)
def test_faults_on_one_server(sim_factory: Any, shot: dict[str, Any], faults: dict) -> None:
    bad = sim_factory(name="bad", **faults)
    good = sim_factory(name="good", node_seconds=0.02)
    with scheduler_for([bad, good]) as scheduler:
        result = scheduler.run(
            RenderJob(WORKFLOW, "1-6", shot["output"], input_pattern=shot["input"])
        )
    assert result.ok, result.message
    check_pixels(shot, range(1, 7))
    queues_drain([bad, good])


def test_workflow_rejected_everywhere_fails_fast(sim_factory: Any, shot: dict[str, Any]) -> None:
    sims = [sim_factory(name=f"m{i}", missing_classes=("ImageInvert",)) for i in range(2)]
    t0 = time.monotonic()
    with scheduler_for(sims) as scheduler:
        result = scheduler.run(
            RenderJob(WORKFLOW, "1-10", shot["output"], input_pattern=shot["input"])
        )
    assert time.monotonic() - t0 < 10
    assert result.status is JobStatus.FAILED
    assert "ImageInvert" in result.message
    assert result.node_id == "2"
    assert not shot["dir"].exists() or not list(shot["dir"].iterdir())


def test_cancel_mid_job_leaves_no_prompt_on_any_server(
    sim_factory: Any, shot: dict[str, Any]
) -> None:
    sims = [sim_factory(name=f"c{i}", node_seconds=0.3) for i in range(2)]
    with scheduler_for(sims, stall_timeout=10) as scheduler:
        handle = scheduler.start(
            RenderJob(WORKFLOW, "1-12", shot["output"], input_pattern=shot["input"])
        )
        wait_for(lambda: all(s.prompts_seen for s in sims))
        handle.cancel()
        result = handle.wait(15)
    assert result is not None and result.status is JobStatus.CANCELLED
    queues_drain(sims)
    assert len(result.frames_written) < 12


def test_resume_after_a_crash(sim_factory: Any, shot: dict[str, Any]) -> None:
    sim = sim_factory(name="rs", node_seconds=0.05)
    with scheduler_for([sim]) as scheduler:
        handle = scheduler.start(
            RenderJob(WORKFLOW, "1-8", shot["output"], input_pattern=shot["input"])
        )
        wait_for(lambda: shot["dir"].exists() and len(list(shot["dir"].glob("shot.*"))) >= 3)
        handle.cancel()  # the "crash": the job stops part way
        first = handle.wait(15)
        assert first is not None and not first.ok
        done = set(first.frames_written)
        before = len(sim.prompts_seen)
        again = scheduler.run(
            RenderJob(
                WORKFLOW, "1-8", shot["output"], input_pattern=shot["input"], existing="resume"
            )
        )
    assert again.ok, again.message
    assert set(again.frames_skipped) == done
    assert len(sim.prompts_seen) - before == 8 - len(done)
    check_pixels(shot, range(1, 9))
