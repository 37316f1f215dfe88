"""Whole jobs on in-process fake servers (tests/fake_comfy.py), checked at the job level.

Each test pins one behaviour a user relies on and that a one-line slip in the engine would
break silently: the end-of-job disk check, disabled servers, the chosen output node, a server
coming back, ``max_in_flight``, whose fault a local disk error is, and not rendering a frame
twice after a retry. Fakes are subclassed here, never edited.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any, Optional

import pytest
from fake_comfy import FakeCluster, FakeServer, invert
from workflows import invert_workflow

from comfy_cluster.core.balance import SpeedTracker
from comfy_cluster.core.engine import events as ev
from comfy_cluster.core.engine.job import JobResult, JobStatus, RenderJob
from comfy_cluster.core.engine.scheduler import Scheduler
from comfy_cluster.core.retry import retry_transient
from comfy_cluster.core.server import ServerConfig
from comfy_cluster.core.transfer import HttpTransfer

WORKFLOW = invert_workflow()


def frame_bytes(frame: int) -> bytes:
    return b"frame-%d" % frame


class Shot:
    """Input frames 1-20 on disk and an output pattern in a fresh folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for f in range(1, 21):
            (root / f"in.{f:04d}.png").write_bytes(frame_bytes(f))
        self.input = str(root / "in.####.png")
        self.dir = root / "out"
        self.output = str(self.dir / "shot.####.png")

    def path(self, frame: int) -> Path:
        return self.dir / f"shot.{frame:04d}.png"

    def job(self, frames: str, **kw: Any) -> RenderJob:
        return RenderJob(WORKFLOW, frames, self.output, input_pattern=self.input, **kw)

    def rendered(self, frames: range) -> bool:
        """Every frame holds the SaveImage result (the inverted input), and only those."""
        return all(self.path(f).read_bytes() == invert(frame_bytes(f)) for f in frames)


@pytest.fixture
def shot(tmp_path: Path) -> Shot:
    return Shot(tmp_path)


class Events(list):
    """The job's events, as the on_event callback got them."""

    def of(self, cls: type) -> list[Any]:
        return [e for e in self if isinstance(e, cls)]


def scheduler_for(cluster: FakeCluster, **kw: Any) -> Scheduler:
    options: dict[str, Any] = dict(
        client_factory=cluster.client_factory,
        stall_timeout=0.2,
        poll_interval=0.01,
        history_interval=0.2,
        retry=retry_transient(attempts=3, max_seconds=5.0, sleep=lambda s: None),
        join_timeout=5.0,
        probe_interval=0.02,
    )
    options.update(kw)
    return Scheduler(cluster.configs, **options)


def run(cluster: FakeCluster, job: RenderJob, events: Optional[Events] = None, **kw: Any) -> Any:
    with scheduler_for(cluster, **kw) as scheduler:
        handle = scheduler.start(job, events.append if events is not None else None)
        result = handle.wait(30)
        if result is None:
            handle.cancel()
            pytest.fail("the job did not end")
    return result


# -- item 1: the end-of-job disk check ---------------------------------------------------------


class LosingTransfer(HttpTransfer):
    """Reports some frames written, but they are not on disk at the end (a share that dropped
    the file, a cleanup script racing the render)."""

    def __init__(self, lose: set[Path]) -> None:
        super().__init__()
        self.lose = lose

    def fetch_output(self, client: Any, server: ServerConfig, ref: Any, dest: Path) -> Path:
        path = super().fetch_output(client, server, ref, dest)
        if dest in self.lose:
            path.unlink()
        return path


def test_a_frame_reported_written_but_missing_on_disk_fails_the_job(shot: Shot) -> None:
    """The job trusts the disk, not its ledger: DONE would send a render with a hole in it to
    comp. The frame is named, and the result says it is missing."""
    events = Events()
    lose = {shot.path(3).absolute()}
    with FakeCluster([FakeServer("a")]) as cluster:
        result = run(
            cluster,
            shot.job("1-4"),
            events,
            transfer_factory=lambda shared: LosingTransfer(lose),
        )
    assert result.status is JobStatus.FAILED
    assert result.frames_missing == (3,)
    assert "missing on disk" in result.message and "3" in result.message
    assert 3 in result.frames_written  # the ledger believed it...
    assert isinstance(events[-1], ev.JobFailed) and not events.of(ev.JobDone)  # ...the end did not


# -- item 2: disabled servers get no work -------------------------------------------------------


def disabled(server: FakeServer) -> FakeServer:
    server.config = dataclasses.replace(server.config, enabled=False)
    return server


def test_a_disabled_server_gets_no_work(shot: Shot) -> None:
    """A server switched off in the settings (maintenance, someone else's box) must not be
    sent a single prompt, even listed first and idle."""
    off, on = disabled(FakeServer("off")), FakeServer("on")
    events = Events()
    with FakeCluster([off, on]) as cluster:
        result = run(cluster, shot.job("1-6"), events)
    assert result.ok, result.message
    assert off.submits == 0 and result.per_server == {"on": 6}
    assert events.of(ev.JobStarted)[0].servers == ("on",)
    assert {e.server for e in events.of(ev.ChunkAssigned)} == {"on"}


def test_a_job_with_only_disabled_servers_fails_before_sending(shot: Shot) -> None:
    off = disabled(FakeServer("off"))
    with FakeCluster([off, FakeServer("on")]) as cluster:
        result = run(cluster, shot.job("1-2", servers=("off",)))
    assert result.status is JobStatus.FAILED and "no enabled server" in result.message
    assert off.submits == 0


# -- item 3: only the chosen output node's images become frames ---------------------------------


class PreviewingServer(FakeServer):
    """Also runs ``PreviewImage`` nodes as ComfyUI does: their images land in ``temp``."""

    def _evaluate(self, prompt: dict) -> dict[str, dict]:
        previews = [nid for nid, node in prompt.items() if node["class_type"] == "PreviewImage"]
        as_saves = {
            nid: {"class_type": "SaveImage", "inputs": {**node["inputs"], "filename_prefix": "p/t"}}
            if nid in previews
            else node
            for nid, node in prompt.items()
        }
        outputs = super()._evaluate(as_saves)
        for nid in previews:
            refs = []
            for ref in outputs[nid]["images"]:
                with self._cond:
                    data = self.files.pop(("output", ref["subfolder"], ref["filename"]))
                    self.files[("temp", ref["subfolder"], ref["filename"])] = data
                refs.append(dict(ref, type="temp"))
            outputs[nid] = {"images": refs}
        return outputs


def with_preview(first: bool) -> dict[str, Any]:
    """The invert workflow plus a PreviewImage of the raw plate, before or after the save."""
    preview = {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}
    nodes = dict(WORKFLOW)
    return {"9": preview, **nodes} if first else {**nodes, "9": preview}


@pytest.mark.parametrize("preview_first", [True, False], ids=["preview-first", "preview-last"])
@pytest.mark.parametrize("events_lost", [False, True], ids=["websocket", "history"])
def test_only_the_chosen_output_nodes_images_become_frames(
    shot: Shot, preview_first: bool, events_lost: bool
) -> None:
    """A preview beside the SaveImage (the raw plate, here) must never be written as the
    frame, whether the images come from the websocket's ``executed`` events or from
    ``/history`` (events lost), and whichever node comes first."""
    plan = ["drop_ws"] * 10 if events_lost else []
    job = RenderJob(
        with_preview(preview_first),
        "1-3",
        shot.output,
        input_pattern=shot.input,
        output_node="3",
    )
    with FakeCluster([PreviewingServer("a", plan=plan)]) as cluster:
        result = run(cluster, job)
    assert result.ok, result.message
    assert shot.rendered(range(1, 4))


# -- item 4: a server that answers again takes work again ---------------------------------------


def revive(server: FakeServer) -> None:
    """The fake server answers again (a reboot finished, the network is back)."""
    with server._cond:
        server.dead = False
        server._cond.notify_all()


def test_a_server_that_comes_back_takes_chunks_again_within_the_job(shot: Shot) -> None:
    """``a`` dies after its first frame and answers again right after its chunk moved: its
    probe succeeds and it renders more of the same job (not left idle until the end)."""
    a, b = FakeServer("a", seconds=0.01), FakeServer("b", seconds=0.1)
    events = Events()
    state = {"killed": False, "revived_at": None}

    def on_event(event: ev.JobEvent) -> None:
        events.append(event)
        if isinstance(event, ev.FrameWritten) and event.server == "a" and not state["killed"]:
            state["killed"] = True
            a.kill()
        if isinstance(event, ev.ChunkRetried) and event.server == "a" and not state["revived_at"]:
            state["revived_at"] = len(events)
            revive(a)

    with FakeCluster([a, b]) as cluster, scheduler_for(cluster) as scheduler:
        result = scheduler.run(shot.job("1-10"), on_event)
    assert result.ok, result.message
    assert state["revived_at"], "a was never suspended"
    assert "a" not in result.blocklisted
    later = events[state["revived_at"] :]
    assert any(isinstance(e, ev.ChunkAssigned) and e.server == "a" for e in later)
    assert result.per_server.get("a", 0) >= 2
    assert shot.rendered(range(1, 11))


# -- item 7: max_in_flight runs prompts side by side --------------------------------------------


class GatedServer(FakeServer):
    """Starts its first prompt only once ``together`` of ours were sent (or ``patience`` passed),
    so a server with several slots must really have several prompts at once to be quick."""

    def __init__(self, name: str, *, together: int, patience: float = 2.0, **kw: Any) -> None:
        super().__init__(name, **kw)
        self.together = together
        self.patience = patience

    def _execute(self, item: Any) -> None:
        deadline = time.monotonic() + self.patience
        with self._cond:
            while len(self.received) < self.together and time.monotonic() < deadline:
                self._cond.wait(0.01)
        super()._execute(item)


def test_max_in_flight_two_really_runs_two_prompts_at_once(shot: Shot) -> None:
    """Two slots means two of our prompts on the server at the same time (the second queued
    behind the first, so the GPU never idles between them), never more."""
    server = GatedServer("a", together=2, max_in_flight=2)
    with FakeCluster([server]) as cluster:
        result = run(cluster, shot.job("1-6"))
    assert result.ok, result.message
    assert server.max_depth == 2


# -- item 12: a local disk error is the job's fault ---------------------------------------------


def test_an_unwritable_output_fails_the_job_and_blames_no_server(tmp_path: Path) -> None:
    """Every server would hit our own disk: failing over would blocklist the whole healthy farm
    one by one and report it as the cause. The job fails at once, naming the disk."""
    shot = Shot(tmp_path)
    (tmp_path / "blocker").write_bytes(b"a file where the output folder should be")
    events = Events()
    output = str(tmp_path / "blocker" / "shot.####.png")
    job = RenderJob(WORKFLOW, "1-6", output, input_pattern=shot.input)
    servers = [FakeServer("a"), FakeServer("b")]
    with FakeCluster(servers) as cluster:
        result = run(cluster, job, events)
    assert result.status is JobStatus.FAILED
    assert "output" in result.message and "blocker" in result.message  # names our disk
    assert result.blocklisted == {} and not events.of(ev.ServerBlocklisted)
    assert result.retries == 0 and not events.of(ev.ChunkRetried)
    assert sum(s.submits for s in servers) <= 2  # one frame per slot at most, then it stops


# -- item 14: a retry does not render delivered frames again ------------------------------------


def test_a_retry_renders_only_the_frames_not_yet_delivered(shot: Shot) -> None:
    """``a`` renders frames 1 and 2 of a four-frame chunk, then fails on frame 3: only 3 and 4
    move to ``b``. Rendering 1 and 2 again would waste GPU time (and, on a slow farm, hours)."""
    a = FakeServer("a", plan=["ok", "ok", "exec_error"])
    b = FakeServer("b")
    events = Events()
    with FakeCluster([a, b]) as cluster:
        result = run(cluster, shot.job("1-4", chunk_size=4), events)
    assert result.ok, result.message
    assert a.submits == 3 and b.submits == 2
    retried = events.of(ev.ChunkRetried)
    assert [(e.server, e.frames) for e in retried] == [("a", (3, 4))]
    assert [(e.server, e.frames) for e in events.of(ev.ChunkAssigned)] == [
        ("a", (1, 2, 3, 4)),
        ("b", (3, 4)),
    ]
    assert result.per_server == {"a": 2, "b": 2} and result.retries == 1
    assert shot.rendered(range(1, 5))


def test_the_result_counts_every_frame_written_and_by_whom(shot: Shot) -> None:
    events = Events()
    with FakeCluster([FakeServer("a"), FakeServer("b")]) as cluster:
        result: JobResult = run(cluster, shot.job("1-8"), events)
    assert result.ok and result.frames_written == tuple(range(1, 9))
    assert sum(result.per_server.values()) == 8 and result.frames_missing == ()
    done = events.of(ev.JobDone)[0]
    assert done.per_server == result.per_server and done.frames_written == 8
    assert result.paths[5] == str(shot.path(5).absolute())


# -- the scheduler and the job's controller ----------------------------------------------------


def hanging_cluster() -> tuple[FakeCluster, FakeServer]:
    server = FakeServer("h", plan=["hang"] * 10)
    return FakeCluster([server]), server


def until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def test_closing_the_scheduler_cancels_every_running_job_and_waits_for_them(shot: Shot) -> None:
    """``close()`` (or leaving the ``with`` block) must not leave a job rendering behind the
    user's back: each is cancelled and has ended when it returns."""
    cluster, server = hanging_cluster()
    with cluster:
        scheduler = scheduler_for(cluster, stall_timeout=30)
        with scheduler:
            first = scheduler.start(shot.job("1-2"))
            until(lambda: server.received)
            # Another output pattern: two jobs never share one (the output lock).
            second = scheduler.start(
                RenderJob(WORKFLOW, "3-4", shot.output + ".b.####.png", input_pattern=shot.input)
            )
            assert set(scheduler.active_jobs()) == {first, second}
        assert first.done and second.done and scheduler.active_jobs() == ()
        assert first.result is not None and first.result.status is JobStatus.CANCELLED
        assert second.result is not None and second.result.status is JobStatus.CANCELLED
        until(lambda: not server.our_prompts_left())


def test_close_with_a_timeout_of_zero_does_not_wait(shot: Shot) -> None:
    cluster, server = hanging_cluster()
    with cluster:
        scheduler = scheduler_for(cluster, stall_timeout=30, join_timeout=30)
        handle = scheduler.start(shot.job("1"))
        until(lambda: server.received)
        scheduler.close(timeout=0)
        assert handle.wait(10) is not None


def test_cancel_is_prompt_even_when_the_supervisor_polls_rarely(tmp_path: Path) -> None:
    """``cancel()`` wakes the job's controller: with a 10 s poll step the job still ends at
    once, while its only slot waits for an input frame the host never writes."""

    def never(frame: int, timeout: float) -> bool:
        return False

    shot = Shot(tmp_path)
    cluster = FakeCluster([FakeServer("a")])
    with cluster, scheduler_for(cluster, poll_interval=2.0, input_poll=0.05) as scheduler:
        handle = scheduler.start(shot.job("1-2"), wait_for_input=never)
        assert handle.wait(0.2) is None
        handle.cancel()
        result = handle.wait(5)
    assert result is not None and result.status is JobStatus.CANCELLED


def test_the_job_thread_is_a_daemon_and_progress_reaches_one(shot: Shot) -> None:
    """A hung job must never keep the host application from exiting."""
    with FakeCluster([FakeServer("d")]) as cluster, scheduler_for(cluster) as scheduler:
        handle = scheduler.start(shot.job("1-2"))
        job_threads = [t for t in threading.enumerate() if t.name.startswith("comfy-cluster-job-")]
        result = handle.wait(10)
    assert all(t.daemon for t in job_threads)
    assert result is not None and result.ok
    assert handle.progress == 1.0


def test_no_worker_of_a_job_still_runs_when_its_result_is_handed_over(shot: Shot) -> None:
    cluster = FakeCluster([FakeServer("w", max_in_flight=2)])
    with cluster, scheduler_for(cluster) as scheduler:
        result = scheduler.run(shot.job("1-4"))
        alive = [t.name for t in threading.enumerate() if t.name.startswith("comfy-cluster-w-")]
    assert result.ok and alive == []


def test_server_names_must_be_unique() -> None:
    a = ServerConfig(name="a", host="h", port=1)
    with pytest.raises(ValueError, match="unique"):
        Scheduler([a, dataclasses.replace(a, port=2)])


def test_speeds_learnt_by_one_job_serve_the_next(shot: Shot) -> None:
    """The scheduler's speed record is shared: a second job need not re-measure."""
    speed = SpeedTracker()
    cluster = FakeCluster([FakeServer("s")])
    with cluster, scheduler_for(cluster, speed=speed) as scheduler:
        assert scheduler.speed is speed
        assert scheduler.run(shot.job("1-2")).ok
    assert speed.seconds_per_frame("s") is not None


def test_a_flaky_server_is_tried_three_times_before_its_chunk_moves(shot: Shot) -> None:
    """The default retry policy: three tries per request, then the work moves on."""
    flaky = FakeServer("flaky", plan=["lost"] * 10)
    with FakeCluster([flaky, FakeServer("ok")]) as cluster:
        options: dict[str, Any] = dict(client_factory=cluster.client_factory, sleep=lambda s: None)
        with Scheduler(cluster.configs, blocklist_after=1, **options) as scheduler:
            result = scheduler.run(shot.job("1"))
    assert result.ok and flaky.submits == 3 and "flaky" in result.blocklisted


class Frozen:
    """A clock that never moves: every duration the engine reports is 0."""

    def __call__(self) -> float:
        return 5000.0


def test_job_times_come_from_the_injected_clock(shot: Shot) -> None:
    events = Events()
    cluster = FakeCluster([FakeServer("c")])
    with cluster, scheduler_for(cluster, clock=Frozen()) as scheduler:
        done = scheduler.run(shot.job("1-2"), events.append)
        early = scheduler.run(shot.job("1-2", strategy="nope"))
    assert done.ok and done.seconds == 0.0 and events.of(ev.JobDone)[0].seconds == 0.0
    assert early.status is JobStatus.FAILED and early.seconds == 0.0


def test_a_job_that_always_has_work_running_never_times_out(shot: Shot) -> None:
    """``no_server_timeout`` counts time with work waiting and *nothing* running: a busy job
    is never idle, however small the limit."""
    with FakeCluster([FakeServer("busy", seconds=0.05)]) as cluster:
        result = run(cluster, shot.job("1-4"), no_server_timeout=0.0)
    assert result.ok, result.message


def test_a_job_whose_servers_all_stay_down_fails_naming_them(shot: Shot) -> None:
    """Every server suspended and not due for a probe for a long time: the job fails after
    ``no_server_timeout`` instead of waiting for a probe that may never answer."""
    dead = FakeServer("dead")
    dead.kill()
    with FakeCluster([dead]) as cluster:
        result = run(
            cluster,
            shot.job("1-2"),
            probe_interval=60.0,
            blocklist_after=10,
            no_server_timeout=0.3,
        )
    assert result.status is JobStatus.FAILED
    assert "no server took work" in result.message and "dead ready" in result.message


class Health:
    """Health monitor stand-in: every server READY; remembers set_active."""

    def __init__(self) -> None:
        self.active: list[tuple[bool, str]] = []

    def snapshot(self) -> dict:
        return {}

    def set_active(self, active: bool, who: str = "default") -> None:
        self.active.append((active, who))


def test_the_health_monitor_is_told_while_a_job_runs(shot: Shot) -> None:
    """The monitor polls faster while a job runs; it must hear the start and the end."""
    health = Health()
    job = shot.job("1")
    with FakeCluster([FakeServer("m")]) as cluster:
        result = run(cluster, job, health=health)
    assert result.ok
    assert health.active == [(True, f"job-{job.job_id}"), (False, f"job-{job.job_id}")]


class HealthInUse(Health):
    """Also records which servers the job's slots say they use (polled less meanwhile)."""

    def __init__(self) -> None:
        super().__init__()
        self.in_use: list[tuple[str, bool]] = []

    def note_in_use(self, server: str, in_use: bool) -> None:
        self.in_use.append((server, in_use))


def test_each_slot_tells_the_monitor_it_uses_its_server_until_it_ends(shot: Shot) -> None:
    """Our own prompts prove a server alive, so the monitor polls it less while a slot works
    there; every slot that started must also say it stopped, or the server stays slow-polled."""
    health = HealthInUse()
    with FakeCluster([FakeServer("m", max_in_flight=2)]) as cluster:
        result = run(cluster, shot.job("1-4"), health=health)
    assert result.ok
    assert sorted(health.in_use) == [("m", False), ("m", False), ("m", True), ("m", True)]
    assert health.in_use[0] == ("m", True)


class BrokenOnce:
    """A speed record that fails once on the job's own thread (a bug in a collaborator)."""

    def __init__(self) -> None:
        self.broke = False

    def record(self, server: str, seconds: float, frames: int = 1) -> float:
        return seconds

    def seconds_per_frame(self, server: str) -> Optional[float]:
        if not self.broke and threading.current_thread().name.startswith("comfy-cluster-job-"):
            self.broke = True
            raise RuntimeError("speed record bug")
        return None


def test_a_bug_after_the_job_started_still_ends_it_cleanly_naming_the_bug(shot: Shot) -> None:
    events = Events()
    with FakeCluster([FakeServer("bug")]) as cluster:
        result = run(cluster, shot.job("1-2"), events, speed=BrokenOnce())
    assert result.status is JobStatus.FAILED
    assert "internal error" in result.message and "speed record bug" in result.message
    assert isinstance(events[-1], ev.JobFailed)


def test_a_server_with_one_slot_never_gets_two_prompts(shot: Shot) -> None:
    server = GatedServer("one", together=2, patience=0.3)
    with FakeCluster([server]) as cluster:
        result = run(cluster, shot.job("1-2"))
    assert result.ok and server.max_depth == 1


class Broken:
    """A speed record that always fails on the job's own thread."""

    def record(self, server: str, seconds: float, frames: int = 1) -> float:
        return seconds

    def seconds_per_frame(self, server: str) -> Optional[float]:
        if threading.current_thread().name.startswith("comfy-cluster-job-"):
            raise RuntimeError("speed record bug")
        return None


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_collaborator_that_keeps_failing_still_ends_the_job(shot: Shot) -> None:
    """A job must always end: a caller blocked in ``Scheduler.run()`` has no other way out."""
    with FakeCluster([FakeServer("bug2")]) as cluster:
        scheduler = scheduler_for(cluster, speed=Broken())
        handle = scheduler.start(shot.job("1"))
        result = handle.wait(1.0)
        scheduler.close(timeout=0)
    assert result is not None and result.status is JobStatus.FAILED


class StuckTransfer(HttpTransfer):
    """A download that never returns until the test lets it (a hung network share)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def fetch_output(self, client: Any, server: ServerConfig, ref: Any, dest: Path) -> Path:
        self.entered.set()
        self.release.wait(30)
        return super().fetch_output(client, server, ref, dest)


def test_a_stuck_worker_cannot_hold_the_end_of_a_cancelled_job(shot: Shot) -> None:
    """Stopping waits ``join_timeout`` for the slots, then ends the job anyway: a worker stuck
    in a download must not make ``cancel()`` hang."""
    transfer = StuckTransfer()
    with FakeCluster([FakeServer("stuck")]) as cluster:
        scheduler = scheduler_for(
            cluster, join_timeout=0.3, transfer_factory=lambda shared: transfer
        )
        try:
            handle = scheduler.start(shot.job("1"))
            assert transfer.entered.wait(10)
            handle.cancel()
            result = handle.wait(10)
        finally:
            transfer.release.set()
            scheduler.close()
    assert result is not None and result.status is JobStatus.CANCELLED


class StuckSubmitServer(FakeServer):
    """Queues the prompt, then never answers the POST (until released): the slot is stuck in
    ``submit`` while our prompt runs on the server."""

    def __init__(self, name: str, **kw: Any) -> None:
        super().__init__(name, **kw)
        self.post_arrived = threading.Event()  # (FakeServer.posted lists prompt ids)
        self.release = threading.Event()

    def submit(self, prompt: dict, prompt_id: str, client_id: str) -> str:
        pid = super().submit(prompt, prompt_id, client_id)
        self.post_arrived.set()
        self.release.wait(30)
        return pid


def test_cancel_removes_a_prompt_whose_post_never_returned(shot: Shot) -> None:
    """The slot that sent it is stuck, so the job's end sweeps the server itself: nothing of
    a cancelled job may keep a GPU busy."""
    server = StuckSubmitServer("sticky", plan=["hang"])
    with FakeCluster([server]) as cluster:
        scheduler = scheduler_for(cluster, join_timeout=0.2, stall_timeout=30)
        try:
            handle = scheduler.start(shot.job("1"))
            assert server.post_arrived.wait(10)
            handle.cancel()
            result = handle.wait(10)
            assert result is not None and result.status is JobStatus.CANCELLED
            until(lambda: not server.our_prompts_left(), timeout=5)
        finally:
            server.release.set()
            scheduler.close()


class SlowClosingCluster(FakeCluster):
    """Clients that take a moment to close (a websocket saying goodbye)."""

    def client_factory(self, config: ServerConfig) -> Any:
        client = super().client_factory(config)
        close = client.close

        def slow_close() -> None:
            time.sleep(0.2)
            close()

        client.close = slow_close  # type: ignore[method-assign]
        return client


def test_the_result_comes_after_every_slot_of_the_job_has_stopped(shot: Shot) -> None:
    """When ``wait()`` returns, no slot of the job is still talking to a server."""
    cluster = SlowClosingCluster([FakeServer("slowclose", max_in_flight=2)])
    with cluster, scheduler_for(cluster) as scheduler:
        result = scheduler.run(shot.job("1-2"))
        alive = [
            t.name for t in threading.enumerate() if t.name.startswith("comfy-cluster-slowclose-")
        ]
    assert result.ok and alive == []


def test_close_gives_up_waiting_after_its_timeout(shot: Shot) -> None:
    """``close(timeout)`` bounds the wait: a job that cannot stop yet (a slot stuck in a
    download, a long ``join_timeout``) must not hang the host's shutdown."""
    transfer = StuckTransfer()
    with FakeCluster([FakeServer("slowstop")]) as cluster:
        scheduler = scheduler_for(
            cluster, join_timeout=30.0, transfer_factory=lambda shared: transfer
        )
        handle = scheduler.start(shot.job("1"))
        try:
            assert transfer.entered.wait(10)
            closing = threading.Thread(target=lambda: scheduler.close(timeout=0.2), daemon=True)
            closing.start()
            closing.join(5)
            assert not closing.is_alive()
            assert not handle.done
        finally:
            transfer.release.set()
        result = handle.wait(10)
    assert result is not None and result.status is JobStatus.CANCELLED
