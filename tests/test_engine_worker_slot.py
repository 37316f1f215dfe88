"""One worker slot (``core/engine/worker.py``) against in-process fake servers: what it sends,
what it writes, and whose fault it says a failure is.

The job is planned and booked as its controller would (``fake_comfy.SlotRig``), but the test
makes and runs the slots itself, so it can look at one slot's requests, clients and events.
What matters: every frame is written once and right; a prompt is sent once even when the POST
answer is lost; a server is called down only when it is; nothing is sent before the inputs are
there; nothing is left running on a server.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fake_comfy import FakeClient, FakeCluster, FakeServer, SlotRig, invert
from fixtures_sim import wait_until
from workflows import invert_workflow

from comfy_cluster.core import protocol
from comfy_cluster.core.engine import events as ev
from comfy_cluster.core.engine.job import JobStatus, RenderJob
from comfy_cluster.core.engine.scheduler import Scheduler
from comfy_cluster.core.retry import retry_transient

WORKFLOW = invert_workflow()


def frame_bytes(frame: int) -> bytes:
    return b"frame-%d" % frame


class Shot:
    """Input frames on disk and where the output frames go."""

    def __init__(self, folder: Path, frames: Any = range(1, 13), missing: Any = ()) -> None:
        self.folder = folder
        for f in frames:
            if f not in missing:
                (folder / f"in.{f:04d}.png").write_bytes(frame_bytes(f))
        self.input = str(folder / "in.####.png")
        self.output = str(folder / "out" / "shot.####.png")

    def job(self, frames: str, **kw: Any) -> RenderJob:
        return RenderJob(WORKFLOW, frames, self.output, input_pattern=self.input, **kw)

    def out(self, frame: int) -> Path:
        return self.folder / "out" / f"shot.{frame:04d}.png"

    def check(self, frames: Any) -> None:
        for f in frames:
            assert self.out(f).read_bytes() == invert(frame_bytes(f)), f
        leftovers = [p.name for p in (self.folder / "out").iterdir() if p.name.startswith(".")]
        assert not leftovers


@pytest.fixture
def shot(tmp_path: Path) -> Shot:
    return Shot(tmp_path)


def scheduler(cluster: FakeCluster, **kw: Any) -> Scheduler:
    options: dict[str, Any] = dict(
        client_factory=cluster.client_factory,
        stall_timeout=0.2,
        poll_interval=0.005,
        history_interval=0.2,
        retry=retry_transient(attempts=3, max_seconds=5.0, sleep=lambda s: None),
        probe_interval=0.01,
    )
    options.update(kw)
    return Scheduler(cluster.configs, **options)


# --- inputs before prompts (item 9) -------------------------------------------------------------


def test_a_missing_handle_input_frame_fails_the_job_before_any_prompt(tmp_path: Path) -> None:
    """Item 9: batch mode reads handle frames around each chunk. Every second frame is
    rendered (2-10x2), so odd frames are read as handles only; one of them (9) is missing. The
    job fails naming it before anything is sent, not after the first chunks ran."""
    shot = Shot(tmp_path, range(1, 11), missing=(9,))
    job = shot.job("2-10x2", mode="batch", chunk_size=2, handles=1)
    with FakeCluster([FakeServer("a")]) as cluster, scheduler(cluster) as s:
        result = s.run(job)
        assert cluster.servers["a"].submits == 0
    assert result.status is JobStatus.FAILED
    assert "input frame(s) missing (9 of" in result.message


def test_a_handle_frame_the_host_never_exports_holds_back_its_chunk(tmp_path: Path) -> None:
    """Item 9, frames exported during the job: a chunk's prompt waits for its handle frames
    too; the one that never comes fails the job naming it, and that chunk is never sent."""
    shot = Shot(tmp_path, range(1, 11), missing=(9,))
    asked: list[int] = []

    def ready(frame: int, timeout: float) -> bool:
        asked.append(frame)
        return frame != 9

    job = shot.job("2-10x2", mode="batch", chunk_size=2, handles=1)
    with FakeCluster([FakeServer("a")]) as cluster:
        rig = SlotRig(cluster, job, wait_for_input=ready, input_timeout=0.05)
        rig.run()
        a = cluster.servers["a"]
    end = rig.book.end()
    assert end is not None and end.status is JobStatus.FAILED
    assert "input frame 9" in end.message and "not ready" in end.message
    assert rig.written() == [2, 4]  # the first chunk (2, 4 and handle 5) went through
    assert a.submits == 1
    assert 9 in asked and 5 in asked


# --- sending a prompt exactly once (item 11) ----------------------------------------------------


def test_an_http_500_on_post_prompt_checks_whether_the_prompt_landed(shot: Shot) -> None:
    """Item 11: a proxy answers 500 although ComfyUI queued the prompt. The slot asks the
    server before sending it again: the frame is rendered by that one prompt."""
    a = FakeServer("a", plan=["http500_landed"])
    with FakeCluster([a]) as cluster:
        rig = SlotRig(cluster, shot.job("1"))
        rig.run()
    assert rig.written() == [1]
    assert a.posted == a.received and len(a.received) == 1
    assert not rig.of(ev.ChunkRetried)
    shot.check([1])


def test_an_http_500_for_a_prompt_that_did_not_land_is_sent_again_under_a_fresh_id(
    shot: Shot,
) -> None:
    """The retry uses a new prompt id (a late landing of the first cannot collide with it),
    and the cancel sweep knows both ids."""
    a = FakeServer("a", plan=["http500"])
    with FakeCluster([a]) as cluster:
        rig = SlotRig(cluster, shot.job("1"))
        submitted: list[str] = []
        real = rig.book.prompt_submitted
        rig.book.prompt_submitted = lambda server, pid: (submitted.append(pid), real(server, pid))
        rig.run()
    first, second = a.posted
    assert first != second and a.received == [second]
    assert submitted == [first, second]
    assert rig.written() == [1] and not rig.of(ev.ChunkRetried)
    shot.check([1])


def test_a_timed_out_post_whose_prompt_landed_is_not_sent_twice(shot: Shot) -> None:
    a = FakeServer("a", plan=["ambiguous"])
    with FakeCluster([a]) as cluster:
        rig = SlotRig(cluster, shot.job("1"))
        rig.run()
    assert len(a.posted) == 1 and rig.written() == [1]
    assert not rig.of(ev.ChunkRetried)


def test_a_client_error_on_post_prompt_is_not_retried(shot: Shot) -> None:
    """A 4xx other than a rejection (here 413, too large) will not change on a retry: the
    chunk moves on at once, without asking whether the prompt landed."""
    from comfy_cluster.core.errors import UnexpectedStatus

    a = FakeServer("a")
    with FakeCluster([a, FakeServer("b")]) as cluster:

        def too_large(workflow: dict, *, prompt_id: Any = None) -> str:
            a.posted.append(str(prompt_id))
            raise UnexpectedStatus("POST /prompt: HTTP 413", server="a", status=413)

        def client_factory(config: Any) -> Any:
            client = cluster.client_factory(config)
            if config.name == "a":
                client.submit = too_large
            return client

        rig = SlotRig(cluster, shot.job("1"), client_factory=client_factory)
        rig.run()
    assert len(a.posted) == 1 and not rig.sleeps
    assert ("queue", None) not in a.requests
    (retried,) = rig.of(ev.ChunkRetried)
    assert retried.server == "a" and "413" in retried.why
    assert rig.written() == [1]


# --- refused connections (item 13) --------------------------------------------------------------


def test_a_single_refused_connection_with_the_websocket_up_is_retried(shot: Shot) -> None:
    """Item 13: one refused POST while the websocket is connected is a blip: retried on the
    same server after a backoff, not "server down" (which would move the chunk)."""
    a = FakeServer("a", plan=["lost"])
    with FakeCluster([a, FakeServer("b")]) as cluster:
        rig = SlotRig(cluster, shot.job("1"))
        rig.run()
    assert rig.written() == [1]
    assert not rig.of(ev.ChunkRetried)
    assert len(rig.sleeps) == 1 and len(a.posted) == 2
    assert cluster.servers["b"].submits == 0


def test_a_refused_connection_after_the_websocket_dropped_moves_the_chunk_at_once(
    shot: Shot,
) -> None:
    """The server died mid-prompt (its websocket dropped, then connections are refused): no
    retries and no backoff, the chunk goes back at once marked "server down"."""
    a = FakeServer("a", plan=["hang"])
    with FakeCluster([a, FakeServer("b")]) as cluster:
        rig = SlotRig(cluster, shot.job("1-2"))
        slot_a = rig.slot("a")
        thread = threading.Thread(target=slot_a.main, daemon=True)
        thread.start()
        deadline = time.monotonic() + 5
        while a.running is None:
            assert time.monotonic() < deadline
            time.sleep(0.002)
        a.kill()
        rig.run(rig.slot("b"))
        thread.join(5)
    retried = [e for e in rig.of(ev.ChunkRetried) if e.server == "a"]
    assert len(retried) == 1 and "server down" in retried[0].why
    assert rig.sleeps == []
    assert sorted(rig.written()) == [1, 2]


# --- one slot's life ----------------------------------------------------------------------------


def test_a_slot_keeps_one_client_and_websocket_for_all_its_chunks_and_closes_them(
    shot: Shot,
) -> None:
    """A websocket per slot, not per chunk (a reconnect can miss a fast prompt's events), and
    nothing left open once the slot ends: client, listener and its thread (the stop event)."""
    a = FakeServer("a")
    with FakeCluster([a]) as cluster:
        rig = SlotRig(cluster, shot.job("1-4"))
        rig.run()
    (client,) = cluster.clients
    assert client.closed and all(listener.closed for listener in client._listeners)
    assert all(stop.is_set() for stop in client.listen_stops)
    assert a.listeners == {client.client_id: []}
    assert sorted(rig.written()) == [1, 2, 3, 4]
    shot.check(range(1, 5))


@pytest.mark.parametrize("stall, waited", [(0.2, 0.2), (30.0, 2.0)])
def test_a_slot_waits_for_its_websocket_before_the_first_prompt(
    shot: Shot, stall: float, waited: float
) -> None:
    """Events of a fast prompt can come before its POST returns: the slot listens first, for
    up to 2 s (or the stall timeout when that is shorter)."""
    with FakeCluster([FakeServer("a")]) as cluster:
        rig = SlotRig(cluster, shot.job("1-2"), stall_timeout=stall)
        rig.run()
    (client,) = cluster.clients
    assert [listener.waited for listener in client._listeners] == [[waited]]


def test_a_crashed_slot_hands_back_its_work_and_gets_no_more(shot: Shot) -> None:
    """A bug that kills one slot's loop must not strand the chunk it was given: the slot is
    closed and the other slots finish the job."""
    crashed: list[str] = []

    def chooser(chunk: Any, free: Any, *rest: Any) -> Any:
        name = threading.current_thread().name
        if name == "comfy-cluster-a-0" and not crashed:
            crashed.append(name)
            raise RuntimeError("chooser bug")
        return free[0], "first free"

    with FakeCluster([FakeServer("a"), FakeServer("b")]) as cluster:
        rig = SlotRig(cluster, shot.job("1-4"), chooser=chooser)
        rig.run(timeout=5)
    assert crashed and sorted(rig.written()) == [1, 2, 3, 4]
    assert cluster.servers["a"].submits == 0
    shot.check(range(1, 5))


def test_outputs_are_named_per_job_frame_and_prompt_on_the_server(tmp_path: Path) -> None:
    """Every prompt writes new files under ``comfy_cluster/<job>/`` on the server (a cached
    name could hand back another prompt's image; the job's folder is what an admin cleans)."""
    shot = Shot(tmp_path)
    a = FakeServer("a")
    job = shot.job("2-5", mode="batch", chunk_size=2, handles=1)
    with FakeCluster([a]) as cluster:
        rig = SlotRig(cluster, job)
        rig.run()
    folders = {sub for _, sub, _ in a.files}
    assert folders == {f"comfy_cluster/{job.job_id[:8]}"}
    stems = sorted(name.rsplit("_", 2)[0] for _, _, name in a.files)
    first, second = a.received
    assert stems == sorted([f"f2_{first[:8]}"] * 3 + [f"f4_{second[:8]}"] * 3)  # one handle each
    shot.check(range(2, 6))


def test_a_frame_is_announced_before_the_next_prompt_is_sent(shot: Shot) -> None:
    """Progress reaches the artist as each frame lands, not when the chunk or slot ends."""
    a = FakeServer("a")
    sent_when_written: list[int] = []
    with FakeCluster([a]) as cluster:

        def on_event(event: Any) -> None:
            if isinstance(event, ev.FrameWritten):
                sent_when_written.append(len(a.received))

        rig = SlotRig(cluster, shot.job("1-3", chunk_size=3), on_event=on_event)
        rig.run()
    assert sent_when_written == [1, 2, 3]
    progress = [e for e in rig.of(ev.ChunkProgress) if 0 < e.frame_fraction < 1]
    assert progress, "sampler progress of the running prompt is reported"


def test_finished_prompts_leave_nothing_for_the_cancel_sweep(shot: Shot) -> None:
    a = FakeServer("a", plan=["ok", "hang"])
    with FakeCluster([a, FakeServer("b")]) as cluster:
        rig = SlotRig(cluster, shot.job("1-3"), speed=None)
        rig.speed.record("a", 0.01)
        rig.speed.record("b", 0.01)
        rig.run()
    assert rig.book.live_prompts() == {}
    assert sorted(rig.written()) == [1, 2, 3]


def test_a_slot_that_never_rendered_copies_a_stuck_chunk_then_the_next(shot: Shot) -> None:
    """Speculative tail from a fresh slot: ``b``'s first slot rendered a chunk (so ``b``'s
    pace is known), its second has never spoken to the server. Server ``a`` sits on two
    chunks. The fresh slot connects, copies one chunk, ends that copy and goes back for the
    other: the job ends with every frame written once, nothing left queued on ``a``."""
    a, b = FakeServer("a", max_in_flight=2), FakeServer("b", max_in_flight=2)
    a.hold()
    with FakeCluster([a, b]) as cluster:
        rig = SlotRig(cluster, shot.job("1-6", chunk_size=2), stall_timeout=30.0)
        holders = rig.start(rig.slot("a", 0), rig.slot("a", 1))
        wait_until(lambda: len(a.received) >= 2, 5.0)  # both chunks wait in a's queue
        first = rig.slot("b", 0)  # run by hand: it renders one chunk, then stays idle
        attempt = rig.book.next_attempt(first.slot, 5.0)
        assert attempt and attempt.chunk.frames == (5, 6), attempt
        rig.book.finish_attempt(attempt, first._attempt(attempt))
        try:
            rig.join(holders + rig.start(rig.slot("b", 1)), timeout=10.0)
        finally:
            first.link.close()
        left = a.our_prompts_left()
    copies = rig.of(ev.ChunkSpeculated)
    assert [(c.server, c.holder) for c in copies] == [("b", "a"), ("b", "a")], copies
    assert sorted(rig.written()) == [1, 2, 3, 4, 5, 6]
    assert left == []
    shot.check(range(1, 7))


# --- a stuck prompt -----------------------------------------------------------------------------


def test_a_stuck_prompt_is_interrupted_before_its_frames_move(shot: Shot) -> None:
    """When its chunk goes back to the queue, the stuck prompt no longer runs on the server
    (it would hold the server's queue for nobody); the server stays in the job."""
    a = FakeServer("a", plan=["hang"])
    running_at_retry: list[Any] = []

    def on_event(event: Any) -> None:
        if isinstance(event, ev.ChunkRetried):
            running_at_retry.append(a.running)

    with FakeCluster([a, FakeServer("b")]) as cluster:
        rig = SlotRig(cluster, shot.job("1-2"), on_event=on_event, speculation=False)
        rig.speed.record("a", 0.01)
        rig.run()
    (retried,) = rig.of(ev.ChunkRetried)
    assert retried.server == "a" and "stuck" in retried.why
    assert running_at_retry == [None]
    assert not rig.of(ev.ServerBlocklisted)
    hung = a.received[0]
    assert a.history[hung]["status"]["status_str"] == "error"
    assert sorted(rig.written()) == [1, 2]


# --- writing frames -----------------------------------------------------------------------------


def test_a_frame_a_server_cannot_hand_over_is_rendered_elsewhere(shot: Shot) -> None:
    """The download of a's result fails for good (404): the frame's claim is released, so the
    server that renders it next can write it."""
    a = FakeServer("a", plan=["lost_output"])
    with FakeCluster([a, FakeServer("b")]) as cluster:
        rig = SlotRig(cluster, shot.job("1"))
        rig.run()
    (retried,) = rig.of(ev.ChunkRetried)
    assert retried.server == "a" and "404" in retried.why
    assert rig.written() == [1] and rig.of(ev.FrameWritten)[0].server == "b"
    shot.check([1])


def test_an_output_node_without_an_image_is_the_servers_failure_naming_the_node(
    tmp_path: Path,
) -> None:
    from workflows import generated_workflow

    workflow = generated_workflow()
    workflow["1"]["inputs"]["batch_size"] = 0  # the output node gets no image
    job = RenderJob(workflow, "1", str(tmp_path / "o.####.png"))
    with FakeCluster([FakeServer("a")]) as cluster:
        rig = SlotRig(cluster, job, blocklist_after=1)
        rig.run()
    end = rig.book.end()
    assert end is not None and "output node 3 produced no image" in end.message


def test_an_input_frame_gone_from_disk_fails_the_job_naming_it(shot: Shot) -> None:
    """Our disk, not the server's fault: no other server would do better."""
    with FakeCluster([FakeServer("a"), FakeServer("b")]) as cluster:
        rig = SlotRig(cluster, shot.job("1-3"))
        Path(shot.input.replace("####", "0002")).unlink()
        rig.run()
    end = rig.book.end()
    assert end is not None and end.status is JobStatus.FAILED
    assert "cannot read input frame 2" in end.message
    assert not rig.of(ev.ChunkRetried)


def test_a_job_cancelled_while_its_inputs_upload_sends_no_prompt(shot: Shot) -> None:
    class CancelDuringUpload:
        def __init__(self, job: RenderJob) -> None:
            self.job = job
            self.inner: Any = None

        def prepare_input(self, client: Any, server: Any, path: Path) -> str:
            value = self.inner.prepare_input(client, server, path)
            self.job.cancel_token.set()
            return value

        def fetch_output(self, client: Any, server: Any, ref: Any, dest: Path) -> Path:
            return self.inner.fetch_output(client, server, ref, dest)

    from comfy_cluster.core.transfer import HttpTransfer

    job = shot.job("2-4", mode="batch", chunk_size=3)
    transfer = CancelDuringUpload(job)
    transfer.inner = HttpTransfer()
    a = FakeServer("a")
    with FakeCluster([a]) as cluster:
        rig = SlotRig(cluster, job, transfer=transfer)
        rig.run()
    assert a.submits == 0 and rig.written() == []


def test_cancel_while_a_batch_is_written_stops_at_the_next_frame(tmp_path: Path) -> None:
    shot = Shot(tmp_path)

    class CancelAfterFirstFrame:
        def __init__(self, job: RenderJob) -> None:
            from comfy_cluster.core.transfer import HttpTransfer

            self.job = job
            self.inner = HttpTransfer()

        def prepare_input(self, client: Any, server: Any, path: Path) -> str:
            return self.inner.prepare_input(client, server, path)

        def fetch_output(self, client: Any, server: Any, ref: Any, dest: Path) -> Path:
            written = self.inner.fetch_output(client, server, ref, dest)
            self.job.cancel_token.set()
            return written

    job = shot.job("2-4", mode="batch", chunk_size=3)
    with FakeCluster([FakeServer("a")]) as cluster:
        rig = SlotRig(cluster, job, transfer=CancelAfterFirstFrame(job))
        rig.run()
    assert rig.written() == [2]
    assert not shot.out(3).exists() and not shot.out(4).exists()


# --- a server that went away --------------------------------------------------------------------


def test_a_suspended_server_is_probed_and_gets_work_only_once_it_answers(shot: Shot) -> None:
    """While the dead server refuses connections, its probes fail and it gets no chunk; once
    it answers /queue again it takes work again."""
    a = FakeServer("a", plan=["hang"])
    with FakeCluster([a]) as cluster:
        rig = SlotRig(cluster, shot.job("1-2"), blocklist_after=50, probe_interval_max=0.02)
        slot = rig.slot("a")
        thread = threading.Thread(target=slot.main, daemon=True)
        thread.start()
        deadline = time.monotonic() + 5
        while a.running is None:
            assert time.monotonic() < deadline
            time.sleep(0.002)
        a.kill()
        seen = len(a.requests)
        while sum(1 for r in a.requests[seen:] if r[0] == "queue") < 3:  # failed probes
            assert time.monotonic() < deadline, "no probe of the dead server"
            time.sleep(0.002)
        assigned_while_dead = len(rig.of(ev.ChunkAssigned))
        a.revive()
        thread.join(5)
        assert not thread.is_alive()
    assert assigned_while_dead == 1  # only the chunk it had when it died
    assert sorted(rig.written()) == [1, 2]
    (retried,) = rig.of(ev.ChunkRetried)
    assert "server down" in retried.why


# --- more of a slot's rules -------------------------------------------------------------------


def until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.002)


def test_a_prompt_queued_behind_another_clients_work_waits_within_its_limit(
    shot: Shot,
) -> None:
    """Another client's long prompt holds the server: ours waits in its queue, looked at after
    each silence, and runs when its turn comes (not stuck, not moved: the server is in the
    job)."""
    a = FakeServer("a")
    with FakeCluster([a, FakeServer("b")]) as cluster:
        rig = SlotRig(cluster, shot.job("1"), stall_timeout=0.02, first_prompt_timeout=30)
        a.hold()
        threads = rig.start(rig.slot("a"))
        until(lambda: a.pending and a.requests.count(("queue", None)) >= 2)
        a.release()
        rig.join(threads)
    assert rig.written() == [1] and not rig.of(ev.ChunkRetried)


class BrokenClose(FakeClient):
    def close(self) -> None:
        raise RuntimeError("close bug")


def suspend(rig: SlotRig, server: str) -> None:
    """``server`` looked dead on its first chunk: suspended until a probe answers (its first
    slot is gone)."""
    from comfy_cluster.core.engine.attempt import Outcome, OutcomeKind

    first = rig.slot(server, 9)
    attempt = rig.book.next_attempt(first.slot, 0.0)
    assert attempt
    rig.book.finish_attempt(attempt, Outcome(OutcomeKind.SERVER, "down (test)", down=True))
    rig.book.close_slot(first.slot)


def test_a_slot_that_never_talked_to_its_server_can_probe_it(shot: Shot) -> None:
    """The probe connects first: a slot whose server was suspended before it ran a prompt
    must not count its own missing client as the server's failure."""
    with FakeCluster([FakeServer("a")]) as cluster:
        rig = SlotRig(cluster, shot.job("1"), blocklist_after=3)
        suspend(rig, "a")
        rig.run(rig.slot("a"))
    assert rig.written() == [1] and not rig.of(ev.ServerBlocklisted)


class BuggyQueue(FakeClient):
    def queue(self) -> Any:
        raise ValueError("client bug")


def test_a_probe_that_hits_a_client_bug_counts_as_failed(shot: Shot) -> None:
    """Not a crash and not a success: the failed probe is counted, and the server is out of
    the job once it failed ``blocklist_after`` times."""
    a = FakeServer("a")
    with FakeCluster([a]) as cluster:
        rig = SlotRig(
            cluster, shot.job("1"), blocklist_after=2, client_factory=lambda c: BuggyQueue(a)
        )
        suspend(rig, "a")
        rig.run(rig.slot("a"), timeout=5)
    (out,) = rig.of(ev.ServerBlocklisted)
    assert "ValueError('client bug')" in out.why
    assert a.submits == 0


class FailTheJob:
    """A transfer that ends the job (as another slot's fatal error would) at one moment."""

    def __init__(self, rig_box: list, when: str, after: int = 1) -> None:
        from comfy_cluster.core.transfer import HttpTransfer

        self.inner = HttpTransfer()
        self.rig_box = rig_box
        self.when = when
        self.after = after
        self.calls = 0

    def _maybe_fail(self, what: str) -> None:
        if what == self.when:
            self.calls += 1
            if self.calls == self.after:
                self.rig_box[0].book.fail("another slot failed the job")

    def prepare_input(self, client: Any, server: Any, path: Path) -> str:
        value = self.inner.prepare_input(client, server, path)
        self._maybe_fail("input")
        return value

    def fetch_output(self, client: Any, server: Any, ref: Any, dest: Path) -> Path:
        written = self.inner.fetch_output(client, server, ref, dest)
        self._maybe_fail("output")
        return written


def test_a_job_that_ended_elsewhere_sends_no_further_frame_of_the_chunk(shot: Shot) -> None:
    box: list = []
    a = FakeServer("a")
    with FakeCluster([a]) as cluster:
        rig = SlotRig(cluster, shot.job("1-3", chunk_size=3), transfer=FailTheJob(box, "output"))
        box.append(rig)
        rig.run()
    assert len(a.posted) == 1 and rig.written() == [1]


def test_a_batch_whose_job_ended_while_its_inputs_uploaded_is_not_sent(shot: Shot) -> None:
    box: list = []
    a = FakeServer("a")
    job = shot.job("2-4", mode="batch", chunk_size=3)
    with FakeCluster([a]) as cluster:
        rig = SlotRig(cluster, job, transfer=FailTheJob(box, "input", after=3))
        box.append(rig)
        rig.run()
    assert a.posted == [] and rig.written() == []


def test_a_chunk_that_comes_back_renders_only_its_frames_not_yet_written(shot: Shot) -> None:
    """An attempt stopped (aborted) after writing frame 1 of 3: its chunk goes back whole; the
    next attempt skips frame 1 and renders 2 and 3, without counting a failure."""
    from comfy_cluster.core.engine.attempt import Outcome, OutcomeKind

    a = FakeServer("a")
    with FakeCluster([a]) as cluster:
        rig = SlotRig(cluster, shot.job("1-3", chunk_size=3))
        slot = rig.slot("a")
        attempt = rig.book.next_attempt(slot.slot, 0.0)
        assert attempt and attempt.chunk.frames == (1, 2, 3)
        assert rig.book.claim_frame(attempt, 1)
        shot.out(1).parent.mkdir(parents=True, exist_ok=True)
        shot.out(1).write_bytes(invert(frame_bytes(1)))
        rig.book.frame_written(attempt, 1, str(shot.out(1)))
        rig.book.finish_attempt(attempt, Outcome(OutcomeKind.ABORTED))
        rig.run(slot)
    assert len(a.posted) == 2 and rig.written() == [1, 2, 3]
    assert not rig.of(ev.ChunkRetried)
    shot.check(range(1, 4))


class Speeds:
    """A SpeedTracker that remembers how many frames each recorded prompt rendered."""

    def __init__(self) -> None:
        from comfy_cluster.core.balance import SpeedTracker

        self.inner = SpeedTracker()
        self.frames: list[int] = []

    def record(self, server: str, seconds: float, frames: int = 1) -> float:
        self.frames.append(frames)
        return self.inner.record(server, seconds, frames)

    def seconds_per_frame(self, server: str) -> Any:
        return self.inner.seconds_per_frame(server)


def test_the_speed_of_a_server_is_per_frame_delivered(tmp_path: Path) -> None:
    """One prompt per frame counts one frame; a batch counts its delivered frames. A wrong
    count skews the balancer and the stuck limits."""
    shot = Shot(tmp_path)
    with FakeCluster([FakeServer("a")]) as cluster:
        speeds = Speeds()
        rig = SlotRig(cluster, shot.job("1-2"), speed=speeds)
        rig.run()
        assert speeds.frames == [1, 1]
        batch = Speeds()
        job = RenderJob(
            WORKFLOW,
            "3-6",
            str(tmp_path / "b" / "o.####.png"),
            input_pattern=shot.input,
            mode="batch",
            chunk_size=2,
            handles=1,
        )
        SlotRig(cluster, job, speed=batch).run()
        assert batch.frames == [2, 2]


def test_a_prompt_whose_post_answer_is_lost_and_whose_server_does_not_say_is_sent_again(
    shot: Shot,
) -> None:
    """POST failed and the "did it land?" look fails too: treat it as not landed and send it
    again (under a fresh id). Waiting for a prompt that never arrived would cost a stall."""
    from comfy_cluster.core.errors import ServerTimeout

    a = FakeServer("a", plan=["lost"])
    failed = []

    class QueueFailsOnce(FakeClient):
        def queue(self) -> Any:
            if not failed:
                failed.append(1)
                raise ServerTimeout("read timed out", server="a")
            return super().queue()

    with FakeCluster([a]) as cluster:
        rig = SlotRig(cluster, shot.job("1"), client_factory=lambda c: QueueFailsOnce(a))
        rig.run()
    assert failed and len(a.posted) == 2 and len(a.received) == 1
    assert rig.written() == [1] and not rig.of(ev.ChunkRetried)


def test_a_websocket_blip_between_frames_costs_the_next_frame_nothing(shot: Shot) -> None:
    """The drop and reconnect happened while no prompt ran: the next prompt's events are
    complete, so it needs neither a /queue look nor a /history read."""
    a = FakeServer("a")

    def on_event(event: Any) -> None:
        if isinstance(event, ev.FrameWritten) and event.frame == 1:
            for callbacks in list(a.listeners.values()):
                for callback in list(callbacks):
                    callback(protocol.Disconnected(reason="blip"))
                    callback(protocol.Connected(client_id="c", attempt=2))

    with FakeCluster([a]) as cluster:
        rig = SlotRig(
            cluster,
            shot.job("1-2", chunk_size=2),
            on_event=on_event,
            stall_timeout=30,
            history_interval=30,
        )
        rig.run()
    assert rig.written() == [1, 2]
    assert a.requests == []


def test_a_server_that_accepted_the_workflow_and_then_rejects_it_is_at_fault(
    shot: Shot,
) -> None:
    """The workflow ran on this server before: a later rejection (a node gone after a restart)
    is the server's, not the workflow's, even when no other server is left to try."""
    a = FakeServer("a", plan=["ok", "reject"])
    with FakeCluster([a]) as cluster:
        rig = SlotRig(cluster, shot.job("1-2"))
        rig.run()
    end = rig.book.end()
    assert end is not None and "no eligible server left" in end.message
    assert "rejected by every server" not in end.message
    assert rig.written() == [1]


def test_a_prompt_left_behind_by_a_failing_history_read_is_interrupted(shot: Shot) -> None:
    """Reading /history keeps failing (5xx) while our prompt runs: the chunk moves on, and the
    prompt is interrupted rather than left to run for nobody."""
    from comfy_cluster.core.errors import UnexpectedStatus

    a = FakeServer("a", plan=["hang"])

    class HistoryFails(FakeClient):
        def history(self, prompt_id: str) -> Any:
            raise UnexpectedStatus("GET /history: HTTP 502", server="a", status=502)

    def client_factory(config: Any) -> Any:
        if config.name == "a":
            return HistoryFails(a)
        return cluster.client_factory(config)

    with FakeCluster([a, FakeServer("b")]) as cluster:
        rig = SlotRig(
            cluster,
            shot.job("1"),
            client_factory=client_factory,
            stall_timeout=30,
            history_interval=0.01,
        )
        rig.run()
        (hung,) = a.received
        until(lambda: hung in a.history)
    assert a.history[hung]["status"]["status_str"] == "error"
    (retried,) = rig.of(ev.ChunkRetried)
    assert retried.server == "a"
    assert rig.written() == [1]


def test_sampler_progress_is_reported_while_the_prompt_runs(shot: Shot) -> None:
    a = FakeServer("a", steps=4)
    a.gate = threading.Event()
    finished_when_reported: list[bool] = []

    def on_event(event: Any) -> None:
        if isinstance(event, ev.ChunkProgress) and 0 < event.frame_fraction < 1:
            finished_when_reported.append(bool(a.history))
            a.gate.set()

    with FakeCluster([a]) as cluster:
        rig = SlotRig(cluster, shot.job("1"), on_event=on_event, stall_timeout=30)
        rig.run()
    assert finished_when_reported[0] is False
    assert rig.written() == [1]


def test_a_stuck_prompt_that_was_interrupted_is_no_longer_ours_to_sweep(shot: Shot) -> None:
    a = FakeServer("a", plan=["hang"])
    with FakeCluster([a]) as cluster:
        rig = SlotRig(cluster, shot.job("1"))
        rig.speed.record("a", 0.01)
        rig.run()
    assert len(a.received) == 2 and rig.written() == [1]
    assert rig.book.live_prompts() == {}


def test_a_batch_stopped_by_the_jobs_end_writes_no_more_of_its_frames(shot: Shot) -> None:
    """The job ended (another slot failed it) while a batch's frames were being written: the
    rest are not fetched, and not counted as late results either (that count is how a
    duplicate delivery shows)."""
    box: list = []
    job = shot.job("2-4", mode="batch", chunk_size=3)
    with FakeCluster([FakeServer("a")]) as cluster:
        rig = SlotRig(cluster, job, transfer=FailTheJob(box, "output"))
        box.append(rig)
        rig.run()
    assert rig.written() == [2]
    assert not shot.out(3).exists() and not shot.out(4).exists()
    assert rig.book.discarded == 0
