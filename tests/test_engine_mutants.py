"""Engine behaviours that the mutation run (tools/mutate.py) showed no test pinned.

Each test names the one-line slip it catches; they use the same fakes as the other engine tests.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fake_comfy import FakeCluster, FakeServer
from test_engine_job_runs import (
    WORKFLOW,
    Broken,
    Shot,
    hanging_cluster,
    run,
    scheduler_for,
    until,
)

from comfy_cluster.core.engine import events as ev
from comfy_cluster.core.engine.attempt import Attempt, Outcome, OutcomeKind
from comfy_cluster.core.engine.book import JobBook
from comfy_cluster.core.engine.chunk_queue import ChunkQueue
from comfy_cluster.core.engine.job import JobStatus, RenderJob
from comfy_cluster.core.engine.ledger import FrameLedger
from comfy_cluster.core.engine.link import ServerLink
from comfy_cluster.core.engine.server_watch import ServerWatch
from comfy_cluster.core.engine.settings import EngineSettings
from comfy_cluster.core.engine.standing import ServerStanding
from comfy_cluster.core.engine.stop import JobStop
from comfy_cluster.core.engine.waits import QueueWaits
from comfy_cluster.core.errors import NodeError, WorkflowInvalid, WorkflowRejected
from comfy_cluster.core.frames import Chunk, FixedChunker
from comfy_cluster.core.health_status import ServerState, ServerStatus
from comfy_cluster.core.server import ServerConfig


@pytest.fixture
def shot(tmp_path: Path) -> Shot:
    return Shot(tmp_path)


def test_a_server_is_not_idle_elsewhere_while_chunks_still_wait() -> None:
    """``idle_elsewhere`` says a queued prompt should move to a free server only when nothing
    else waits: with a chunk waiting, the free slot takes that chunk instead."""
    queue = ChunkQueue([Chunk(0, (1,), (), ()), Chunk(1, (2,), (), ())], ["a", "b"], lambda: 0.0)
    queue.add_slot("a-0", "a")
    queue.add_slot("b-0", "b")
    assert not queue.idle_elsewhere("a", usable=("a", "b"))  # both chunks wait
    assert not queue.idle_elsewhere("a", usable=("a",))


def test_an_output_folder_blocked_by_a_file_names_that_file(tmp_path: Path) -> None:
    """The output probe runs before anything else and says which file is in the way (the lock
    alone would only say 'Not a directory')."""
    shot = Shot(tmp_path)
    (tmp_path / "blocker").write_bytes(b"a file where the output folder should be")
    job = RenderJob(
        WORKFLOW, "1-2", str(tmp_path / "blocker" / "shot.####.png"), input_pattern=shot.input
    )
    with FakeCluster([FakeServer("a")]) as cluster:
        result = run(cluster, job)
    assert result.status is JobStatus.FAILED
    assert "a file is in the way" in result.message, result.message


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_job_that_cannot_even_fail_cleanly_reports_its_real_duration(shot: Shot) -> None:
    """The last-resort result of a job whose end itself fails still counts its seconds from
    the job's start (not some sum of clock readings)."""
    with FakeCluster([FakeServer("bug")]) as cluster:
        scheduler = scheduler_for(cluster, speed=Broken())
        handle = scheduler.start(shot.job("1"))
        result = handle.wait(10.0)
        scheduler.close(timeout=0)
    assert result is not None and result.status is JobStatus.FAILED
    assert 0.0 <= result.seconds < 10.0


# -- settings: every limit is checked on its own ------------------------------------------------

POSITIVE = (
    "stall_timeout",
    "poll_interval",
    "history_interval",
    "probe_interval",
    "input_timeout",
    "input_poll",
    "answer_timeout",
    "cleanup_timeout",
    "rejoin_after",
)


@pytest.mark.parametrize("name", POSITIVE)
def test_each_timing_setting_must_be_positive_and_a_small_one_is_fine(name: str) -> None:
    """A zero interval would spin a thread at full speed; each field is checked, not just the
    first of its line."""
    with pytest.raises(ValueError, match=name):
        EngineSettings(**{name: 0})
    with pytest.raises(ValueError, match=name):
        EngineSettings(**{name: -1.0})
    assert getattr(EngineSettings(**{name: 0.001}), name) == 0.001


@pytest.mark.parametrize("name", ["blocklist_after", "max_chunk_servers"])
def test_counting_settings_accept_one_and_refuse_zero(name: str) -> None:
    assert getattr(EngineSettings(**{name: 1}), name) == 1
    with pytest.raises(ValueError, match=name):
        EngineSettings(**{name: 0})


def test_the_probe_backoff_keeps_a_larger_maximum_and_the_wait_step_follows_the_poll() -> None:
    settings = EngineSettings(probe_interval=1.0, probe_interval_max=8.0, poll_interval=0.2)
    assert settings.probe_interval_max == 8.0
    assert settings.wait_step == pytest.approx(1.0)


def test_one_server_back_restarts_the_probe_backoff_of_the_others() -> None:
    """A server answering again hints the others may be back too (a network restored): their
    next probe comes soon and their backoff starts over, not only the answering server's."""
    now = [0.0]
    settings = EngineSettings(probe_interval=0.5, probe_interval_max=10.0, blocklist_after=9)
    standing = ServerStanding(["a", "b", "c"], lambda: now[0], settings)  # c stays usable
    assert standing.suspend("a", "down")
    for at in (0.5, 1.5):  # two failed probes: a's next one is 2 s after the last
        now[0] = at
        assert standing.claim_probe("a")
        assert standing.probe_failed("a", "refused") is None
    assert standing.until_probe("a") == pytest.approx(2.0)
    assert standing.suspend("b", "down")
    now[0] = 1.6
    assert standing.back("b") is not None
    assert standing.until_probe("a") == pytest.approx(0.5)  # pulled in
    now[0] = 2.1
    assert standing.claim_probe("a")
    standing.probe_failed("a", "still refused")
    assert standing.until_probe("a") == pytest.approx(1.0)  # backoff restarted at 2 x 0.5


def test_suspending_a_suspended_or_blocked_server_again_changes_nothing() -> None:
    now = [0.0]
    settings = EngineSettings(probe_interval=0.5, probe_interval_max=10.0, rejoin_after=30.0)
    standing = ServerStanding(["a", "b"], lambda: now[0], settings)
    assert standing.suspend("a", "down")
    now[0] = 0.5
    assert standing.claim_probe("a")
    standing.probe_failed("a", "refused")  # next probe 1 s later
    assert not standing.suspend("a", "down again")
    assert standing.until_probe("a") == pytest.approx(1.0)  # backoff kept
    assert standing.block("b", "sent junk")
    assert not standing.suspend("b", "down")


def test_the_second_chance_probe_counts_down() -> None:
    now = [0.0]
    standing = ServerStanding(["a", "b"], lambda: now[0], EngineSettings(rejoin_after=30.0))
    assert standing.block("a", "sent junk")
    now[0] = 10.0
    assert standing.until_probe("a") == pytest.approx(20.0)
    now[0] = 40.0
    assert standing.until_probe("a") == 0.0


def test_a_server_back_from_away_starts_a_clean_failure_count() -> None:
    """A server that worked in the job, then failed its probes until it was taken out (away,
    still probed), comes back with a clean count: one more failure does not take it out."""
    now = [0.0]
    settings = EngineSettings(probe_interval=0.5, blocklist_after=3)
    standing = ServerStanding(["a", "b"], lambda: now[0], settings)
    standing.mark_validated("a")
    assert standing.suspend("a", "down")
    reasons = []
    for _ in range(3):
        now[0] += 20.0
        assert standing.claim_probe("a")
        reason = standing.probe_failed("a", "refused")
        if reason is not None:
            reasons.append(reason)
            standing.block("a", reason)
    assert len(reasons) == 1 and "a" in standing.away
    now[0] += 20.0
    assert standing.claim_probe("a")
    assert standing.back("a") is not None
    assert "a" in standing.eligible()
    assert standing.count_failure("a") == 1  # not 4: its old failures are forgotten


def test_a_server_rejoining_after_its_second_chance_starts_clean() -> None:
    """Its old failures and its old rejection of the workflow are forgotten: another server's
    rejection is not 'every server rejected' because of what the rejoined one said before."""
    now = [0.0]
    standing = ServerStanding(["a", "b"], lambda: now[0], EngineSettings(rejoin_after=1.0))
    missing = WorkflowRejected(
        "Cannot execute because node X does not exist.", error_type="invalid_prompt"
    )
    assert standing.count_failure("a") == 1
    assert standing.judge("a", missing).kind is OutcomeKind.DEGRADED
    assert standing.block("a", "rejected the workflow")
    now[0] = 1.0
    assert standing.claim_probe("a")
    assert standing.rejoin("a") == "rejected the workflow"
    assert standing.count_failure("a") == 1
    assert standing.judge("b", missing).kind is OutcomeKind.DEGRADED


def _input_error(input_name: str) -> WorkflowRejected:
    node = NodeError("5", "LoadImage", "value_not_valid", "bad value", input_name=input_name)
    return WorkflowRejected(
        "Prompt outputs failed validation",
        error_type="prompt_outputs_failed_validation",
        node_errors=(node,),
    )


def test_rejections_of_different_inputs_are_not_one_invalid_workflow() -> None:
    """Every server rejected, but for different inputs of the node (one lacks a file the other
    has, say): the job fails, yet not as 'the workflow is invalid' (exit status 2)."""
    standing = ServerStanding(["a", "b"], lambda: 0.0, EngineSettings())
    assert standing.judge("a", _input_error("image")).kind is OutcomeKind.DEGRADED
    outcome = standing.judge("b", _input_error("mask"))
    assert outcome.kind is OutcomeKind.JOB
    assert not isinstance(outcome.error, WorkflowInvalid)
    same = ServerStanding(["a", "b"], lambda: 0.0, EngineSettings())
    same.judge("a", _input_error("image"))
    assert isinstance(same.judge("b", _input_error("image")).error, WorkflowInvalid)


# -- the book's second chance and pull-back --------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _book(servers: tuple[str, ...], frames: str = "1-3", **kw: Any) -> tuple[JobBook, list, _Clock]:
    job = RenderJob(WORKFLOW, frames, "o.####.png")
    got: list[Any] = []
    clock = _Clock()

    def first_free(chunk: Any, free: Any, in_flight: Any, remaining: int, able: Any) -> Any:
        return free[0], "first free"

    book = JobBook(
        job,
        FixedChunker(1).split(job.frame_range),
        servers,
        frames_to_render=job.frame_range.frames,
        chooser=first_free,
        sink=ev.EventSink(got.append),
        clock=clock,
        **kw,
    )
    for s in servers:
        book.add_slot(f"slot-{s}", s)
    return book, got, clock


def test_a_refused_server_gets_one_second_chance_through_the_book() -> None:
    """Out for what it did (authentication refused): after ``rejoin_after`` one probe; an
    answer brings it back (told with the reason it was out), a failure leaves it out for good."""
    book, got, clock = _book(("a", "b", "c"), settings=EngineSettings(rejoin_after=5.0))
    book.server_refused("a", Outcome(OutcomeKind.SERVER, "authentication refused"))
    book.server_refused("b", Outcome(OutcomeKind.SERVER, "authentication refused too"))
    assert "a" in book.blocklist and "b" in book.blocklist
    blocked = [e.server for e in got if isinstance(e, ev.ServerBlocklisted)]
    assert blocked == ["a", "b"]  # told at once, not with some later event
    assert book.second_chance_due("slot-a", 0.0) is False  # not yet
    clock.now = 5.0
    assert book.second_chance_due("slot-a", 0.0) is True
    assert book.second_chance_due("slot-b", 0.0) is True
    book.probe_result("a", True)
    book.probe_result("b", False, "refused again")
    assert "a" not in book.blocklist and "b" in book.blocklist
    rejoined = [e for e in got if isinstance(e, ev.ServerRejoined)]
    assert [(e.server, e.why) for e in rejoined] == [("a", "authentication refused")]
    assert book.second_chance_due("slot-b", 0.0) is None  # no more chances: the slot stops


def test_a_stale_attempt_is_never_pulled_back() -> None:
    book, _, _ = _book(("a", "b"), frames="1")
    attempt = book.next_attempt("slot-a", 0.0)
    assert attempt is not None
    assert book.pull_back(attempt, False)  # queued on a while b idles: it may move
    book.finish_attempt(attempt, Outcome(OutcomeKind.SERVER, "boom"))
    assert not book.pull_back(attempt, False)  # that attempt is over: nothing to move


def test_one_ready_server_does_not_hide_the_news_of_the_next() -> None:
    """A server ready at the start is not news; the offline one listed after it still is."""
    posted: list[tuple[str, str]] = []
    watch = ServerWatch(lambda cls, **fields: posted.append((fields["server"], fields["state"])))
    watch.update(
        {
            "a": ServerStatus("a", "http://a", state=ServerState.READY),
            "b": ServerStatus("b", "http://b", state=ServerState.OFFLINE, reason="refused"),
        }
    )
    assert posted == [("b", "offline")]


def test_each_servers_news_is_told_whatever_the_servers_before_it_did() -> None:
    """An unchanged server, or one going from ready to busy (still usable: not news), must not
    hide the next server going offline."""
    posted: list[tuple[str, str]] = []
    watch = ServerWatch(lambda cls, **fields: posted.append((fields["server"], fields["state"])))

    def status(name: str, state: ServerState, reason: str = "") -> ServerStatus:
        return ServerStatus(name, f"http://{name}", state=state, reason=reason or None)

    watch.update({n: status(n, ServerState.READY) for n in "abc"})
    assert posted == []
    watch.update(
        {
            "a": status("a", ServerState.READY),
            "b": status("b", ServerState.BUSY),
            "c": status("c", ServerState.OFFLINE, "refused"),
        }
    )
    assert posted == [("c", "offline")]
    watch.update({"c": status("c", ServerState.READY)})
    assert posted[-1] == ("c", "ready")  # back from offline: news


def test_a_failed_disk_check_wakes_the_supervisor_at_once() -> None:
    """The end-of-job disk check fails the job: the supervisor must not sleep out its poll."""
    cond = threading.Condition()
    stop = JobStop(cond, FrameLedger([1]))
    woke = threading.Event()

    def supervisor() -> None:
        stop.wait_supervisor(30)
        woke.set()

    threading.Thread(target=supervisor, daemon=True).start()
    time.sleep(0.1)
    with cond:
        stop.fail_verification("frame 1 is not on disk")
    assert woke.wait(10)
    assert stop.end is not None and stop.end.status is JobStatus.FAILED


def test_a_prompt_end_reported_late_does_not_move_the_last_end_back() -> None:
    """Two slots of one server report their prompts' ends out of order: the later end counts,
    else time spent behind our own prompt is blamed on other clients."""
    waits = QueueWaits()
    waits.ended("a", 5.0)
    waits.ended("a", 3.0)
    assert waits.foreign_wait("a", submitted=4.0, started=7.0) == 2.0


def test_a_running_job_names_the_server_holding_its_prompt(shot: Shot) -> None:
    """What the Ctrl+C message lists: while a prompt runs on ``h`` the job says so; once the
    job ended and its prompts were cleaned up, no server is named."""
    cluster, server = hanging_cluster()
    with cluster:
        with scheduler_for(cluster, stall_timeout=30) as scheduler:
            handle = scheduler.start(shot.job("1"))
            assert handle.servers_holding_prompts() in ((), ("h",))  # before or after POST
            until(lambda: server.received)
            assert handle.servers_holding_prompts() == ("h",)
            handle.cancel()
            result = handle.wait(10)
        assert result is not None and result.status is JobStatus.CANCELLED
        assert handle.servers_holding_prompts() == ()


def test_a_slot_waiting_for_a_second_chance_sleeps_until_the_probe_is_due() -> None:
    """The slot of a server out for what it did blocks until its probe is due (never longer
    than asked, never a busy loop returning at once)."""
    book, _, clock = _book(("a", "b"), settings=EngineSettings(rejoin_after=5.0))
    book.server_refused("a", Outcome(OutcomeKind.SERVER, "authentication refused"))
    clock.now = 4.8  # the probe is due in 0.2 s
    began = time.monotonic()
    assert book.second_chance_due("slot-a", timeout=3.0) is False
    waited = time.monotonic() - began
    assert 0.15 <= waited < 2.0, waited


def test_nothing_is_pulled_back_once_the_job_ended() -> None:
    book, _, _ = _book(("a", "b"), frames="1")
    attempt = book.next_attempt("slot-a", 0.0)
    assert attempt is not None and book.pull_back(attempt, False)
    book.cancel()
    assert not book.pull_back(attempt, True)


def _two_slots_on_a(frames: str = "1-2", **kw: Any) -> tuple[JobBook, list, Attempt]:
    """Servers a (two slots) and b: a's first slot took chunk 0, its second holds chunk 1
    assigned but not started."""
    book, got, _ = _book(("a", "b"), frames=frames, **kw)
    book.add_slot("a-1", "a")
    first = book.next_attempt("slot-a", 0.0)
    assert isinstance(first, Attempt) and first.chunk.index == 0
    book.flush()
    assigned = [(e.server, e.chunk_index) for e in got if isinstance(e, ev.ChunkAssigned)]
    assert assigned == [("a", 0), ("a", 1)]
    return book, got, first


def test_a_server_gone_for_now_gives_back_the_chunks_it_had_not_started() -> None:
    """A server that worked in the job drops (down): it is suspended, and the chunk assigned
    to its other slot goes back in line, not left to be sent to a dead server."""
    book, _, first = _two_slots_on_a()
    book.mark_validated("a")
    book.finish_attempt(first, Outcome(OutcomeKind.SERVER, "refused", down=True))
    assert "a" not in book.blocklist  # gone for now, not out
    assert not isinstance(book.next_attempt("a-1", 0.0), Attempt)
    taken = book.next_attempt("slot-b", 0.0)
    assert isinstance(taken, Attempt)


def test_a_refused_server_hands_its_unstarted_chunks_to_the_others_at_once() -> None:
    book, got, _ = _two_slots_on_a()
    got.clear()
    book.server_refused("a", Outcome(OutcomeKind.SERVER, "authentication refused"))
    assigned = [(e.server, e.chunk_index) for e in got if isinstance(e, ev.ChunkAssigned)]
    assert assigned == [("b", 1)]


def test_a_chunk_failing_on_servers_that_went_down_still_counts_its_failures() -> None:
    """Down is not the server's fault, but the chunk still failed there: after
    ``max_chunk_servers`` such servers the job fails instead of trying forever."""
    settings = EngineSettings(max_chunk_servers=2)
    book, _, _ = _book(("a", "b", "c"), frames="1", settings=settings)
    for server in ("a", "b"):
        book.mark_validated(server)
        attempt = book.next_attempt(f"slot-{server}", 0.0)
        assert isinstance(attempt, Attempt) and attempt.server == server
        book.finish_attempt(attempt, Outcome(OutcomeKind.SERVER, "refused", down=True))
    end = book.end()
    assert end is not None and end.status is JobStatus.FAILED and "2 servers" in end.message


# -- the slot's link to its server ---------------------------------------------------------------


class _Listener:
    """No ``wait_connected``: nothing to wait for."""

    def __init__(self) -> None:
        self.closed = threading.Event()

    def close(self) -> None:
        self.closed.set()


class _Client:
    def __init__(self) -> None:
        self.closed = threading.Event()
        self.listener = _Listener()

    def listen(self, on_event: Any, stop: threading.Event, **options: Any) -> _Listener:
        return self.listener

    def close(self) -> None:
        self.closed.set()


def test_a_client_whose_cleanup_hung_is_replaced_and_closed_on_the_next_connect() -> None:
    """A cleanup request that did not answer leaves the client with a request in flight: the
    next connect must not reuse it (it would queue behind the hung call) but close it."""
    made: list[_Client] = []

    def factory(server: Any) -> _Client:
        made.append(_Client())
        return made[-1]

    server = ServerConfig(name="a", host="127.0.0.1", port=1)
    link = ServerLink(server, factory, EngineSettings(), lambda event: None, lambda: False)
    link.connect()
    assert link.connect() is link.listener and len(made) == 1  # a healthy client is kept
    release = threading.Event()
    assert link.cleanup(lambda client: release.wait(10), wait=False) is False
    try:
        link.connect()
        assert len(made) == 2 and link.client is made[1]
        assert made[0].closed.wait(5) and made[0].listener.closed.wait(5)
    finally:
        release.set()


def test_cleanup_uses_the_slots_client_unless_it_is_tainted() -> None:
    made: list[_Client] = []

    def factory(server: Any) -> _Client:
        made.append(_Client())
        return made[-1]

    server = ServerConfig(name="a", host="127.0.0.1", port=1)
    link = ServerLink(server, factory, EngineSettings(), lambda event: None, lambda: False)
    link.connect()
    used: list[Any] = []
    assert link.cleanup(used.append)
    assert used == [made[0]] and len(made) == 1  # the slot's own client, no new connection
    release = threading.Event()
    try:
        assert link.cleanup(lambda client: release.wait(10), wait=False) is False  # tainted
        assert link.cleanup(used.append)
        assert len(made) == 2 and used[-1] is made[1]  # a fresh client, not the hung one
        assert made[1].closed.is_set()  # and closed after
    finally:
        release.set()


def test_an_output_over_the_input_names_every_frame_it_would_replace(shot: Shot) -> None:
    """Batch mode with handles reads frames either side of each rendered one; an output that
    is the input itself is refused before sending, naming all the frames it would replace."""
    job = RenderJob(WORKFLOW, "2-4", shot.input, input_pattern=shot.input, mode="batch", handles=1)
    with FakeCluster([FakeServer("a")]) as cluster:
        result = run(cluster, job)
    assert result.status is JobStatus.FAILED
    assert "would overwrite the input" in result.message
    assert "frame(s) 2-4)" in result.message, result.message
