"""The render engine against in-process fake servers (tests/fake_comfy.py): no HTTP, fast."""

from __future__ import annotations

import inspect
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fake_comfy import FakeCluster, FakeServer, invert
from test_engine_job_runs import scheduler_for
from workflows import generated_workflow, invert_workflow

from comfy_cluster.core.engine import events as ev
from comfy_cluster.core.engine.job import JobStatus, RenderJob
from comfy_cluster.core.engine.scheduler import Scheduler
from comfy_cluster.core.errors import ClosedError, JobFailedError
from comfy_cluster.core.retry import retry_transient
from comfy_cluster.host.collaborators import RenderScheduler
from comfy_cluster.sim.harness import make_test_image

WORKFLOW = invert_workflow()
NO_INPUT = generated_workflow("x")


def frame_bytes(frame: int) -> bytes:
    return b"frame-%d" % frame


@pytest.fixture
def shot(tmp_path: Path) -> dict[str, Any]:
    for f in range(1, 21):
        (tmp_path / f"in.{f:04d}.png").write_bytes(frame_bytes(f))
    return {
        "input": str(tmp_path / "in.####.png"),
        "output": str(tmp_path / "out" / "shot.####.png"),
        "dir": tmp_path / "out",
    }


class Recorder:
    """on_event callback that also proves it is never called concurrently."""

    def __init__(self) -> None:
        self.events: list[ev.JobEvent] = []
        self._busy = threading.Lock()
        self.overlaps = 0

    def __call__(self, event: ev.JobEvent) -> None:
        if not self._busy.acquire(blocking=False):
            self.overlaps += 1
            return
        try:
            self.events.append(event)
            time.sleep(0)  # let other threads try to call us
        finally:
            self._busy.release()

    def of(self, cls: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, cls)]


def check_frames(shot: dict[str, Any], frames: range) -> None:
    for f in frames:
        path = Path(shot["output"].replace("####", f"{f:04d}"))
        assert path.read_bytes() == invert(frame_bytes(f)), f
    leftovers = [p.name for p in shot["dir"].iterdir() if p.name.startswith(".")]
    assert not leftovers


def nothing_left(cluster: FakeCluster, timeout: float = 3.0) -> None:
    """No prompt pending anywhere; a running one stops soon (interrupts are cooperative)."""
    for server in cluster.servers.values():
        if server.dead:
            continue
        assert not server.pending, server.name
        deadline = time.monotonic() + timeout
        while server.our_prompts_left():
            assert time.monotonic() < deadline, (server.name, server.our_prompts_left())
            time.sleep(0.005)


# --- the happy paths ------------------------------------------------------------------------


def test_per_frame_render_writes_every_frame_once_with_events(shot: dict[str, Any]) -> None:
    with FakeCluster([FakeServer("a"), FakeServer("b", max_in_flight=2)]) as cluster:
        rec = Recorder()
        with scheduler_for(cluster) as scheduler:
            result = scheduler.run(
                RenderJob(WORKFLOW, "1-12", shot["output"], input_pattern=shot["input"]), rec
            )
        assert result.ok, result.message
        assert result.frames_written == tuple(range(1, 13))
        assert result.frames_missing == ()
        assert sum(result.per_server.values()) == 12
        check_frames(shot, range(1, 13))
        assert rec.overlaps == 0
        assert isinstance(rec.events[0], ev.JobStarted)
        assert rec.events[0].total_frames == 12
        assert isinstance(rec.events[-1], ev.JobDone)
        assert rec.events[-1].progress == 1.0 and rec.events[-1].frames_written == 12
        written = [e.frame for e in rec.of(ev.FrameWritten)]
        assert sorted(written) == list(range(1, 13))
        assert all(e.reason for e in rec.of(ev.ChunkAssigned))
        assert any(0 < e.frame_fraction < 1 for e in rec.of(ev.ChunkProgress))
        assert all(e.job_id == result.job_id for e in rec.events)
        # Back-pressure: never more of our prompts on a server than it has slots.
        assert cluster.servers["a"].max_depth <= 1
        assert cluster.servers["b"].max_depth <= 2
        nothing_left(cluster)


def test_no_input_workflow_with_frame_override(tmp_path: Path) -> None:
    out = str(tmp_path / "o.%04d.png")
    with FakeCluster([FakeServer("a")]) as cluster, scheduler_for(cluster) as scheduler:
        job = RenderJob(NO_INPUT, "5-7", out, overrides=("1.color={frame}",))
        result = scheduler.run(job)
    assert result.ok, result.message
    for f in (5, 6, 7):
        assert (tmp_path / f"o.{f:04d}.png").read_bytes() == invert(b"color:%d" % f)


def test_batch_mode_with_handles_maps_outputs_and_drops_handles(shot: dict[str, Any]) -> None:
    with FakeCluster([FakeServer("a"), FakeServer("b")]) as cluster:
        with scheduler_for(cluster) as scheduler:
            job = RenderJob(
                WORKFLOW,
                "2-11",
                shot["output"],
                input_pattern=shot["input"],
                mode="batch",
                chunk_size=3,
                handles=1,
            )
            rec = Recorder()
            result = scheduler.run(job, rec)
        assert result.ok, result.message
        check_frames(shot, range(2, 12))
        assert sorted(p.name for p in shot["dir"].iterdir()) == [
            f"shot.{f:04d}.png" for f in range(2, 12)
        ]
        assert len(rec.of(ev.ChunkAssigned)) == 4  # 3+3+3+1 frames
        prompts = sum(len(s.received) for s in cluster.servers.values())
        assert prompts == 4


def test_fastest_leaves_a_slow_server_idle_at_the_tail(shot: dict[str, Any]) -> None:
    fast, slow = FakeServer("fast", seconds=0.002), FakeServer("slow", seconds=0.3)
    with FakeCluster([fast, slow]) as cluster, scheduler_for(cluster, stall_timeout=5) as s:
        result = s.run(RenderJob(WORKFLOW, "1-10", shot["output"], input_pattern=shot["input"]))
    assert result.ok, result.message
    # The slow one seeds its speed with one frame, then the fast one is always sooner.
    assert result.per_server.get("slow", 0) <= 1
    assert result.per_server["fast"] >= 9


def test_existing_frames_error_lists_them_before_sending(shot: dict[str, Any]) -> None:
    shot["dir"].mkdir()
    for f in (3, 4):
        (shot["dir"] / f"shot.{f:04d}.png").write_bytes(b"old")
    with FakeCluster([FakeServer("a")]) as cluster, scheduler_for(cluster) as scheduler:
        rec = Recorder()
        result = scheduler.run(
            RenderJob(WORKFLOW, "1-5", shot["output"], input_pattern=shot["input"]), rec
        )
        assert cluster.servers["a"].submits == 0
    assert result.status is JobStatus.FAILED
    assert result.existing == (3, 4)
    assert "3-4" in result.message and "resume" in result.message
    assert isinstance(rec.events[-1], ev.JobFailed)
    assert (shot["dir"] / "shot.0003.png").read_bytes() == b"old"
    with pytest.raises(JobFailedError):
        result.raise_for_status()


def test_resume_skips_existing_and_overwrite_replaces(shot: dict[str, Any]) -> None:
    shot["dir"].mkdir()
    # A whole PNG: resume keeps only files that pass the image check.
    old = make_test_image(shot["dir"] / "shot.0002.png").read_bytes()
    with FakeCluster([FakeServer("a")]) as cluster, scheduler_for(cluster) as scheduler:
        job = RenderJob(
            WORKFLOW, "1-4", shot["output"], input_pattern=shot["input"], existing="resume"
        )
        result = scheduler.run(job)
        assert result.ok and result.frames_skipped == (2,)
        assert result.frames_written == (1, 3, 4)
        assert cluster.servers["a"].submits == 3
        assert (shot["dir"] / "shot.0002.png").read_bytes() == old
        job = RenderJob(
            WORKFLOW, "1-4", shot["output"], input_pattern=shot["input"], existing="overwrite"
        )
        result = scheduler.run(job)
        assert result.ok and result.frames_written == (1, 2, 3, 4)
    check_frames(shot, range(1, 5))


def test_missing_input_frames_fail_before_sending(shot: dict[str, Any]) -> None:
    with FakeCluster([FakeServer("a")]) as cluster, scheduler_for(cluster) as scheduler:
        result = scheduler.run(
            RenderJob(WORKFLOW, "19-23", shot["output"], input_pattern=shot["input"])
        )
        assert cluster.servers["a"].submits == 0
    assert not result.ok and "21-23" in result.message


# --- failover ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "plan",
    [
        ["hang"],
        ["vanish"],
        ["die"],
        ["exec_error"],
        ["lost", "lost", "lost"],
        ["http500", "ok", "http500"],
        ["ambiguous", "drop_ws", "bad_download", "slow"],
        ["reject"],
    ],
    ids=lambda p: "+".join(p),
)
def test_faults_on_one_server_still_deliver_every_frame(shot: dict[str, Any], plan: list) -> None:
    with FakeCluster([FakeServer("bad", plan=plan), FakeServer("good")]) as cluster:
        rec = Recorder()
        with scheduler_for(cluster) as scheduler:
            result = scheduler.run(
                RenderJob(WORKFLOW, "1-8", shot["output"], input_pattern=shot["input"]), rec
            )
        assert result.ok, result.message
        check_frames(shot, range(1, 9))
        written = [e.frame for e in rec.of(ev.FrameWritten)]
        assert sorted(written) == list(range(1, 9))
        nothing_left(cluster)


def test_stuck_prompt_is_interrupted_before_its_frames_move(shot: dict[str, Any]) -> None:
    bad = FakeServer("bad", plan=["hang"])
    with FakeCluster([bad, FakeServer("good")]) as cluster:
        rec = Recorder()
        with scheduler_for(cluster, speculation=False) as scheduler:
            result = scheduler.run(
                RenderJob(WORKFLOW, "1-4", shot["output"], input_pattern=shot["input"]), rec
            )
    assert result.ok and result.retries == 1
    retried = rec.of(ev.ChunkRetried)
    assert retried and retried[0].server == "bad" and "stuck" in retried[0].why
    hung = bad.received[0]
    assert bad.history[hung]["status"]["status_str"] == "error"  # interrupted, not left running


def test_server_failing_several_chunks_is_blocklisted(shot: dict[str, Any]) -> None:
    bad = FakeServer("bad", plan=["exec_error"] * 10)
    with FakeCluster([bad, FakeServer("good", seconds=0.05)]) as cluster:
        rec = Recorder()
        with scheduler_for(cluster, blocklist_after=2) as scheduler:
            result = scheduler.run(
                RenderJob(WORKFLOW, "1-8", shot["output"], input_pattern=shot["input"]), rec
            )
    assert result.ok, result.message
    assert "bad" in result.blocklisted
    assert [e.server for e in rec.of(ev.ServerBlocklisted)] == ["bad"]
    assert bad.submits == 2


def test_missing_node_on_one_server_degrades_it_with_the_reason(shot: dict[str, Any]) -> None:
    bad = FakeServer("bad", plan=["reject"] * 10)
    with FakeCluster([bad, FakeServer("good")]) as cluster, scheduler_for(cluster) as s:
        result = s.run(RenderJob(WORKFLOW, "1-6", shot["output"], input_pattern=shot["input"]))
    assert result.ok
    assert "FancyNode" in result.blocklisted["bad"]
    assert bad.submits == 1


def test_rejected_everywhere_fails_fast_naming_the_node(shot: dict[str, Any]) -> None:
    servers = [FakeServer(n, plan=["reject"] * 50) for n in ("a", "b", "c")]
    with FakeCluster(servers) as cluster, scheduler_for(cluster) as scheduler:
        rec = Recorder()
        t0 = time.monotonic()
        result = scheduler.run(
            RenderJob(WORKFLOW, "1-20", shot["output"], input_pattern=shot["input"]), rec
        )
        assert time.monotonic() - t0 < 5
        assert sum(s.submits for s in servers) <= 3  # one try per server, not per frame
        nothing_left(cluster)
    assert result.status is JobStatus.FAILED
    assert result.node_id == "2"
    assert "every server" in result.message
    assert isinstance(rec.events[-1], ev.JobFailed) and rec.events[-1].node_id == "2"


def test_structural_rejection_is_the_jobs_fault_at_once(shot: dict[str, Any]) -> None:
    a = FakeServer("a", plan=["reject"], reject_type="prompt_no_outputs")
    with FakeCluster([a, FakeServer("b", seconds=0.5)]) as cluster, scheduler_for(cluster) as s:
        result = s.run(RenderJob(WORKFLOW, "1", shot["output"], input_pattern=shot["input"]))
        assert cluster.servers["b"].submits == 0
    assert result.status is JobStatus.FAILED and "rejected" in result.message


def test_same_execution_error_on_two_servers_is_the_jobs_fault(shot: dict[str, Any]) -> None:
    servers = [FakeServer(n, plan=["exec_error"] * 9, error_type="ValueError") for n in "abc"]
    with FakeCluster(servers) as cluster, scheduler_for(cluster) as scheduler:
        result = scheduler.run(
            RenderJob(WORKFLOW, "1-9", shot["output"], input_pattern=shot["input"])
        )
        nothing_left(cluster)
    assert result.status is JobStatus.FAILED
    assert result.node_id == "3"
    assert "ValueError" in result.message
    # The job stops at the second server's matching error instead of trying all 9 frames. Servers
    # run in parallel, so under load one may start its next frame before that second report lands:
    # at most two prompts per server.
    assert sum(s.submits for s in servers) <= 6


def test_no_eligible_server_left_fails_with_reasons(shot: dict[str, Any]) -> None:
    a, b = FakeServer("a"), FakeServer("b")
    a.kill()
    b.kill()
    with FakeCluster([a, b]) as cluster, scheduler_for(cluster) as scheduler:
        result = scheduler.run(
            RenderJob(WORKFLOW, "1-6", shot["output"], input_pattern=shot["input"])
        )
    assert result.status is JobStatus.FAILED
    assert "no eligible server left" in result.message or "failed on" in result.message
    assert result.frames_missing == tuple(range(1, 7))


def test_server_killed_mid_job(shot: dict[str, Any]) -> None:
    a, b = FakeServer("a", seconds=0.02), FakeServer("b", seconds=0.02)
    with FakeCluster([a, b]) as cluster, scheduler_for(cluster) as scheduler:
        rec = Recorder()
        killed = threading.Event()

        def on_event(event: ev.JobEvent) -> None:
            rec(event)
            if isinstance(event, ev.FrameWritten) and not killed.is_set():
                killed.set()
                a.kill()

        result = scheduler.run(
            RenderJob(WORKFLOW, "1-10", shot["output"], input_pattern=shot["input"]), on_event
        )
    assert result.ok, result.message
    check_frames(shot, range(1, 11))


# --- cancel and the handle ------------------------------------------------------------------


def test_cancel_leaves_nothing_queued_anywhere(shot: dict[str, Any]) -> None:
    servers = [FakeServer("a", seconds=0.5, max_in_flight=2), FakeServer("b", plan=["hang"])]
    with FakeCluster(servers) as cluster, scheduler_for(cluster, stall_timeout=30) as scheduler:
        rec = Recorder()
        handle = scheduler.start(
            RenderJob(WORKFLOW, "1-10", shot["output"], input_pattern=shot["input"]), rec
        )
        deadline = time.monotonic() + 5
        while len(servers[0].received) < 2 or not servers[1].received:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        handle.cancel()
        result = handle.wait(10)
        assert result is not None and handle.done
        assert result.status is JobStatus.CANCELLED
        assert isinstance(rec.events[-1], ev.JobCancelled)
        nothing_left(cluster)


def test_handle_threads_and_lifecycle(shot: dict[str, Any]) -> None:
    with FakeCluster([FakeServer("a", seconds=0.2)]) as cluster:
        scheduler = scheduler_for(cluster)
        handle = scheduler.start(
            RenderJob(WORKFLOW, "1-3", shot["output"], input_pattern=shot["input"])
        )
        deadline = time.monotonic() + 5
        names: set[str] = set()
        while not any(n.startswith("comfy-cluster-a-") for n in names):
            assert time.monotonic() < deadline
            names = {t.name for t in threading.enumerate() if t.daemon}
            time.sleep(0.005)
        assert "comfy-cluster-a-0" in names
        assert handle.wait(0.001) is None and not handle.done and handle.result is None
        result = handle.wait(10)
        assert result is not None and result.ok and handle.result is result
        scheduler.close()
        with pytest.raises(ClosedError):
            scheduler.start(RenderJob(WORKFLOW, "1", shot["output"], input_pattern=shot["input"]))


def test_a_broken_callback_does_not_break_the_render(shot: dict[str, Any]) -> None:
    def boom(event: ev.JobEvent) -> None:
        raise RuntimeError("progress bar bug")

    with FakeCluster([FakeServer("a")]) as cluster, scheduler_for(cluster) as scheduler:
        result = scheduler.run(
            RenderJob(WORKFLOW, "1-3", shot["output"], input_pattern=shot["input"]), boom
        )
    assert result.ok


def test_allow_list_and_unknown_servers(shot: dict[str, Any]) -> None:
    cluster = FakeCluster([FakeServer("a"), FakeServer("b")])
    with cluster, scheduler_for(cluster) as scheduler:
        job = RenderJob(
            WORKFLOW, "1-4", shot["output"], input_pattern=shot["input"], servers=("b",)
        )
        result = scheduler.run(job)
        assert result.ok and result.per_server == {"b": 4}
        assert cluster.servers["a"].submits == 0
        bad = RenderJob(WORKFLOW, "5", shot["output"], input_pattern=shot["input"], servers=("zz",))
        result = scheduler.run(bad)
        assert not result.ok and "zz" in result.message


def test_workflow_problems_fail_before_sending(shot: dict[str, Any]) -> None:
    no_output = {k: v for k, v in WORKFLOW.items() if k != "3"}
    with FakeCluster([FakeServer("a")]) as cluster, scheduler_for(cluster) as scheduler:
        result = scheduler.run(
            RenderJob(no_output, "1", shot["output"], input_pattern=shot["input"])
        )
        assert not result.ok and "output" in result.message
        result = scheduler.run(
            RenderJob(WORKFLOW, "1", shot["output"], input_pattern=shot["input"], strategy="nope")
        )
        assert not result.ok and "strategy" in result.message
        assert cluster.servers["a"].submits == 0


def test_render_job_validates_its_fields() -> None:
    with pytest.raises(ValueError):
        RenderJob(WORKFLOW, "1-3", "out.png")  # no frame token
    with pytest.raises(ValueError):
        RenderJob(WORKFLOW, "1-3", "o.####.png", mode="movie")
    with pytest.raises(ValueError):
        RenderJob(WORKFLOW, "1-3", "o.####.png", existing="maybe")
    with pytest.raises(ValueError):
        RenderJob(WORKFLOW, "1-3", "o.####.png", mode="batch")  # batch needs inputs
    job = RenderJob(WORKFLOW, [3, 1, 2], "o.####.png")
    assert job.frame_range.frames == (1, 2, 3)


# --- failover: dead servers, prompts that never end --------------------------------------------


def test_dead_server_is_suspended_and_its_chunk_moves_at_once(shot: dict[str, Any]) -> None:
    """Connection refused after the websocket dropped: no retries (no backoff sleeps), the chunk
    goes back at once, and the server gets no further chunk (probes fail: blocklisted)."""
    a, b = FakeServer("a", seconds=0.05), FakeServer("b", seconds=0.02)
    sleeps: list[float] = []
    with FakeCluster([a, b]) as cluster:
        retry = retry_transient(attempts=3, max_seconds=5.0, sleep=sleeps.append)
        with scheduler_for(cluster, retry=retry) as scheduler:
            rec = Recorder()
            started = threading.Event()

            def on_event(event: ev.JobEvent) -> None:
                rec(event)
                if isinstance(event, ev.FrameWritten) and not started.is_set():
                    started.set()
                    a.kill()  # a's prompt in flight (or about to be) dies with it

            result = scheduler.run(
                RenderJob(WORKFLOW, "1-12", shot["output"], input_pattern=shot["input"]),
                on_event,
            )
    assert result.ok, result.message
    check_frames(shot, range(1, 13))
    assert sleeps == []  # nothing waited for retry_transient to give up
    retried = [e for e in rec.of(ev.ChunkRetried) if e.server == "a"]
    assert len(retried) <= 1 and all("server down" in e.why for e in retried)
    assigned_after = [e for e in rec.of(ev.ChunkAssigned) if e.server == "a"]
    assert len(assigned_after) <= 2  # before the kill, plus at most the one in flight


def test_prompt_queued_behind_one_that_never_ends_does_not_hang_the_job(
    shot: dict[str, Any],
) -> None:
    """A prompt that ignores interrupts wedges its server; ours queued behind it must move."""
    wedged = FakeServer("a", plan=["wedge"], max_in_flight=2)
    cluster = FakeCluster([wedged, FakeServer("b", seconds=0.01)])
    with cluster, scheduler_for(cluster, first_prompt_timeout=0.3, speculation=False) as scheduler:
        handle = scheduler.start(
            RenderJob(WORKFLOW, "1-6", shot["output"], input_pattern=shot["input"])
        )
        result = handle.wait(20)
        if result is None:
            handle.cancel()
            pytest.fail("the job hung behind a wedged prompt")
    assert result.ok, result.message
    assert "a" in result.blocklisted and "interrupt" in result.blocklisted["a"]
    check_frames(shot, range(1, 7))


# --- inputs written while the job runs (wait_for_input) -----------------------------------------


class GradualInputs:
    """Stands in for the Nuke host's exporter: frames become ready when the test says so."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ready: set[int] = set()
        self.asked: list[int] = []
        self._cond = threading.Condition()

    def release(self, frames: Any) -> None:
        with self._cond:
            for f in frames:
                (self.folder / f"in.{f:04d}.png").write_bytes(frame_bytes(f))
                self.ready.add(f)
            self._cond.notify_all()

    def wait_for_input(self, frame: int, timeout: float) -> bool:
        with self._cond:
            self.asked.append(frame)
            return self._cond.wait_for(lambda: frame in self.ready, timeout)


def until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def test_the_host_sees_the_wait_for_input_keyword() -> None:
    assert "wait_for_input" in inspect.signature(Scheduler.start).parameters
    assert "wait_for_input" in inspect.signature(Scheduler.run).parameters
    # The host's typed seam asks for the same keyword-only hook the engine offers.
    host = inspect.signature(RenderScheduler.start).parameters["wait_for_input"]
    engine = inspect.signature(Scheduler.start).parameters["wait_for_input"]
    assert host.kind is engine.kind is inspect.Parameter.KEYWORD_ONLY


@pytest.mark.parametrize("mode", ["frame", "batch"])
def test_wait_for_input_renders_first_chunks_while_later_frames_are_exported(
    tmp_path: Path, mode: str
) -> None:
    inputs = GradualInputs(tmp_path)
    out = str(tmp_path / "out" / "shot.####.png")
    batch = dict(mode="batch", chunk_size=2, handles=1) if mode == "batch" else {}
    job = RenderJob(WORKFLOW, "1-8", out, input_pattern=str(tmp_path / "in.####.png"), **batch)
    cluster = FakeCluster([FakeServer("a"), FakeServer("b")])
    with cluster, scheduler_for(cluster, input_poll=0.01) as scheduler:
        rec = Recorder()
        inputs.release([1, 2, 3])  # frames 4-8 do not exist yet: the start check is skipped
        handle = scheduler.start(job, rec, wait_for_input=inputs.wait_for_input)
        until(lambda: {1, 2} <= {e.frame for e in rec.of(ev.FrameWritten)})
        until(lambda: any(f > 3 for f in inputs.asked))  # a worker waits for a later frame...
        assert {e.frame for e in rec.of(ev.FrameWritten)} <= {1, 2, 3}  # ...that is not there
        for frames in ([4, 5], [6, 7, 8]):
            inputs.release(frames)
        result = handle.wait(10)
    assert result is not None and result.ok, result and result.message
    for f in range(1, 9):
        assert (tmp_path / "out" / f"shot.{f:04d}.png").read_bytes() == invert(frame_bytes(f))


def test_an_input_frame_that_never_comes_fails_the_job_naming_it(tmp_path: Path) -> None:
    inputs = GradualInputs(tmp_path)
    inputs.release([1])
    job = RenderJob(
        WORKFLOW, "1-2", str(tmp_path / "o.####.png"), input_pattern=str(tmp_path / "in.####.png")
    )
    cluster = FakeCluster([FakeServer("a")])
    with cluster, scheduler_for(cluster, input_timeout=0.2, input_poll=0.02) as scheduler:
        result = scheduler.run(job, wait_for_input=inputs.wait_for_input)
    assert result.status is JobStatus.FAILED
    assert "input frame 2" in result.message and "not ready" in result.message
    assert (tmp_path / "o.0001.png").exists()


def test_a_failing_input_hook_fails_the_job_and_cancel_stays_responsive(tmp_path: Path) -> None:
    def broken(frame: int, timeout: float) -> bool:
        raise RuntimeError("export crashed")

    def never(frame: int, timeout: float) -> bool:
        return False  # at once, as an exporter that stopped does: must not spin

    pattern = str(tmp_path / "in.####.png")
    with FakeCluster([FakeServer("a")]) as cluster, scheduler_for(cluster) as scheduler:
        result = scheduler.run(
            RenderJob(WORKFLOW, "3", str(tmp_path / "o.####.png"), input_pattern=pattern),
            wait_for_input=broken,
        )
        assert result.status is JobStatus.FAILED
        assert "input frame 3" in result.message and "export crashed" in result.message
        handle = scheduler.start(
            RenderJob(WORKFLOW, "1-4", str(tmp_path / "p.####.png"), input_pattern=pattern),
            wait_for_input=never,
        )
        assert handle.wait(0.2) is None
        handle.cancel()
        result = handle.wait(5)
        assert result is not None and result.status is JobStatus.CANCELLED
        assert cluster.servers["a"].submits == 0
