"""The job book's rules at the job level, driven by hand: no servers, a fake clock.

Each test plays the calls the worker slots make (``next_attempt``, ``claim_frame``,
``frame_written``, ``finish_attempt``, ``probe_due``/``probe_result``, ``close_slot``) and
checks what the *job* sees: which slot gets which chunk, how often a chunk runs, who is blamed,
and how the job ends. These are the rules that keep "every frame written exactly once" and
"a healthy server keeps working" true when something goes wrong mid-job.

Most tests run on the test's thread alone. Where the rule is about *waking* (a slot idling in
the book must learn of new work or of the end at once), a real thread waits in the book and a
watched condition tells the test when it waits: no sleeps decide anything.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from comfy_cluster.core.balance import FastestCompletion, SpeedTracker
from comfy_cluster.core.engine import events as ev
from comfy_cluster.core.engine.attempt import Attempt, Outcome, OutcomeKind
from comfy_cluster.core.engine.balancing import JobBalancer
from comfy_cluster.core.engine.book import JobBook
from comfy_cluster.core.engine.chunk_queue import ChunkQueue
from comfy_cluster.core.engine.ending import final_result
from comfy_cluster.core.engine.job import JobStatus, RenderJob
from comfy_cluster.core.engine.settings import EngineSettings
from comfy_cluster.core.errors import ExecutionFailed, NodeError, WorkflowRejected
from comfy_cluster.core.frames import Chunk, FixedChunker
from comfy_cluster.core.server import ServerConfig

WORKFLOW = {"1": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}}}

Chooser = Callable[[Chunk, Sequence[str], Mapping[str, int], int, Sequence[str]], Any]


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def first_free(
    chunk: Chunk, free: Sequence[str], in_flight: Mapping[str, int], remaining: int, able: Any
) -> Optional[tuple[str, str]]:
    """The simplest chooser: the first free server in configuration order."""
    return free[0], f"{free[0]}: first free"


class Job:
    """One job's book with its slots, events and clock; ``slots`` maps server -> slot count."""

    def __init__(
        self,
        frames: str = "1-4",
        servers: Sequence[str] = ("a", "b"),
        *,
        slots: Optional[Mapping[str, int]] = None,
        chunk_size: int = 1,
        mode: str = "frame",
        chooser: Chooser = first_free,
        output: str = "o.####.png",
        **settings: Any,
    ) -> None:
        batch = {"input_pattern": "i.####.png"} if mode == "batch" else {}
        self.job = RenderJob(WORKFLOW, frames, output, mode=mode, **batch)
        self.events: list[ev.JobEvent] = []
        self.clock = Clock()
        self.settings = EngineSettings(**settings)
        self.book = JobBook(
            self.job,
            FixedChunker(chunk_size).split(self.job.frame_range),
            servers,
            frames_to_render=self.job.frame_range.frames,
            chooser=chooser,
            sink=ev.EventSink(self.events.append),
            clock=self.clock,
            settings=self.settings,
        )
        counts = slots or {s: 1 for s in servers}
        for server in servers:
            for n in range(counts.get(server, 0)):
                self.book.add_slot(f"{server}-{n}", server)

    def take(self, slot: str) -> Attempt:
        """The attempt ``slot`` starts now (it must have one)."""
        got = self.book.next_attempt(slot, 0.0)
        assert isinstance(got, Attempt), f"{slot} got {got!r}"
        return got

    def deliver(self, attempt: Attempt, frames: Optional[Sequence[int]] = None) -> None:
        """Write ``frames`` (default: the whole chunk) as a worker does."""
        for frame in attempt.chunk.frames if frames is None else frames:
            assert self.book.claim_frame(attempt, frame), frame
            self.book.frame_written(attempt, frame, f"/out/{frame}")

    def finish(self, attempt: Attempt, kind: OutcomeKind = OutcomeKind.OK, **kw: Any) -> None:
        self.book.finish_attempt(attempt, Outcome(kind, **kw))

    def of(self, cls: type) -> list[Any]:
        self.book.flush()
        return [e for e in self.events if isinstance(e, cls)]

    def assigned(self) -> list[tuple[int, str]]:
        """(chunk index, server) of every ChunkAssigned so far, in order."""
        return [(e.chunk_index, e.server) for e in self.of(ev.ChunkAssigned)]


# -- item 4: suspension, probes, coming back --------------------------------------------------


def test_a_suspended_server_that_answers_its_probe_gets_chunks_again() -> None:
    """A server that looked dead is suspended, not dropped: once its probe answers it must take
    work again in the same job (else one network blip halves the farm for the whole job)."""
    j = Job("1-6", probe_interval=1.0, probe_interval_max=8.0, blocklist_after=5)
    a_first = j.take("a-0")
    j.finish(a_first, OutcomeKind.SERVER, why="refused", down=True)
    assert j.book.next_attempt("a-0", 0.0) is False  # suspended: no work, not out of the job
    assert "a" not in j.book.blocklist
    assert not j.book.probe_due("a-0")  # the probe waits probe_interval
    j.clock.advance(0.99)
    assert not j.book.probe_due("a-0")
    j.clock.advance(0.01)
    assert j.book.probe_due("a-0")
    assert not j.book.probe_due("a-0")  # claimed: one probe at a time
    before = len(j.assigned())
    j.book.probe_result("a", True)
    back = j.take("a-0")
    # Not the chunk it failed (the other server may take that), the next one in line.
    assert back.server == "a" and back.chunk.index == 2
    assert j.assigned()[before:] == [(2, "a")]


def probe_times(j: Job, slot: str, server: str, failures: int, step: float = 0.25) -> list[float]:
    """Clock times (from now) at which each probe of ``server`` fell due; each one fails."""
    start = j.clock.now
    times = []
    for _ in range(failures):
        for _ in range(1000):
            if j.book.probe_due(slot):
                break
            j.clock.advance(step)
        else:
            pytest.fail("no probe came due")
        times.append(j.clock.now - start)
        j.book.probe_result(server, False, "still refused")
    return times


def test_probe_backoff_grows_from_short_to_long_and_caps() -> None:
    """A dead server is asked again soon, then less and less often (doubling), never more
    often: probing a dead host every half second for an hour is noise, and a shrinking backoff
    would hammer it."""
    j = Job("1-6", probe_interval=1.0, probe_interval_max=8.0, blocklist_after=20)
    j.finish(j.take("a-0"), OutcomeKind.SERVER, why="refused", down=True)
    times = probe_times(j, "a-0", "a", 6)
    gaps = [round(t2 - t1, 2) for t1, t2 in zip([0.0, *times], times)]
    assert gaps == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert "a" not in j.book.blocklist


def test_probes_that_keep_failing_take_the_server_out_and_end_a_job_with_none_left() -> None:
    """``blocklist_after`` failures (the first suspension counts) take a server out of the job;
    when it was the last one, the job fails naming why instead of waiting forever."""
    j = Job("1-3", servers=("a",), probe_interval=1.0, blocklist_after=3)
    j.finish(j.take("a-0"), OutcomeKind.SERVER, why="refused", down=True)
    probe_times(j, "a-0", "a", 2)
    assert "unreachable (3 failures)" in j.book.blocklist["a"]
    assert [e.server for e in j.of(ev.ServerBlocklisted)] == ["a"]
    assert j.book.next_attempt("a-0", 0.0) is None
    end = j.book.end()
    assert end is not None and end.status is JobStatus.FAILED
    assert "no eligible server left" in end.message and "a: unreachable" in end.message
    assert not j.book.probe_due("a-0")


def test_a_late_probe_answer_for_a_server_not_suspended_changes_nothing() -> None:
    j = Job("1-2", probe_interval=1.0, blocklist_after=1)
    j.book.probe_result("a", False, "late")
    assert j.book.blocklist == {} and j.book.end() is None


def test_a_suspended_server_is_not_probed_once_the_job_ended() -> None:
    j = Job("1-4", probe_interval=1.0)
    j.finish(j.take("a-0"), OutcomeKind.SERVER, why="refused", down=True)
    j.clock.advance(5)
    j.book.fail("stop")
    assert not j.book.probe_due("a-0")


# -- item 5: the first reason wins; cancel stays cancel ----------------------------------------


def test_the_first_failure_reason_is_kept() -> None:
    """Later failures (workers tripping over the stop) must not hide the root cause."""
    j = Job()
    error = RuntimeError("root")
    j.book.fail("the root cause", "7", error)
    j.book.fail("a consequence", "9", RuntimeError("later"))
    assert j.book.next_attempt("a-0", 0.0) is None
    end = j.book.end()
    assert end is not None and end.status is JobStatus.FAILED
    assert (end.message, end.node_id, end.error) == ("the root cause", "7", error)
    j.book.cancel()
    assert j.book.end() == end  # a cancel after a failure does not rewrite it either


def test_a_cancelled_job_never_turns_into_a_failed_one(tmp_path: Path) -> None:
    """After cancel, attempts end with errors and frames are missing on disk: the job is
    still CANCELLED (the user asked for it), not FAILED (which would page someone)."""
    j = Job("1-4", output=str(tmp_path / "o.####.png"))
    running = j.take("a-0")
    j.job.cancel_token.set()
    j.book.cancel()
    j.finish(running, OutcomeKind.JOB, why="workflow rejected: boom")
    j.book.fail("no server took work")
    end = j.book.end()
    assert end is not None and end.status is JobStatus.CANCELLED
    result = final_result(j.job, j.book, lambda: 1.5)
    assert result.status is JobStatus.CANCELLED and result.message == "cancelled"
    assert result.frames_missing == (1, 2, 3, 4)
    assert isinstance(j.events[-1], ev.JobCancelled)
    assert not j.of(ev.JobFailed)


def test_a_complete_job_is_not_over_written_by_a_late_failure_or_cancel(tmp_path: Path) -> None:
    """Every frame on disk: a failure or cancel arriving after that is too late to matter."""
    j = Job("1", servers=("a",), output=str(tmp_path / "o.####.png"))
    a = j.take("a-0")
    (tmp_path / "o.0001.png").write_bytes(b"x")
    j.deliver(a)
    j.book.fail("late")
    j.book.cancel()
    assert j.book.end() is None
    assert j.book.wait_ended(0.0)
    result = final_result(j.job, j.book, lambda: 2.0)
    assert result.ok and result.frames_written == (1,) and result.per_server == {"a": 1}
    done = j.of(ev.JobDone)
    assert len(done) == 1 and done[0].frames_written == 1 and done[0].seconds == 2.0


# -- item 6: closing or suspending a slot never re-queues a running chunk ----------------------


def test_closing_a_slot_never_requeues_the_chunk_still_running_there() -> None:
    """A chunk running on a slot that closes must not also be handed to another slot: two
    servers would render it, and whichever loses the race wastes a whole chunk of work."""
    j = Job("1", servers=("a", "b"))
    running = j.take("a-0")
    j.book.close_slot("a-0")
    assert j.book.next_attempt("b-0", 0.0) is False
    j.deliver(running)
    j.finish(running)
    assert j.book.wait_ended(0.0) and j.book.end() is None
    assert j.assigned() == [(running.chunk.index, "a")]


def test_closing_a_slot_returns_the_chunk_it_never_started() -> None:
    """The other half of the rule: work handed to a slot that goes away is not lost."""
    j = Job("1-2", servers=("a", "b"), slots={"a": 2, "b": 1})
    j.take("a-0")  # a-1 is handed chunk 2 at the same time; b-0 gets nothing
    assert j.assigned() == [(0, "a"), (1, "a")]
    j.book.close_slot("a-1")
    moved = j.take("b-0")
    assert moved.chunk.index == 1
    assert j.book.next_attempt("a-1", 0.0) is False or j.book.end() is not None


def test_suspending_a_server_never_requeues_a_chunk_still_running_on_it() -> None:
    """Server ``a`` has two slots; one fails as "down". The chunk still running on the other
    slot stays there (it may well finish); only the failed one and any chunk handed out but
    not started go back. Each chunk runs at most once at a time."""
    j = Job("1-4", servers=("a", "b"), slots={"a": 2, "b": 1}, probe_interval=5.0)
    dying = j.take("a-0")
    still = j.take("a-1")
    assert {dying.chunk.index, still.chunk.index} == {0, 1}
    j.finish(dying, OutcomeKind.SERVER, why="server down", down=True)
    handed: list[int] = []
    for _ in range(6):
        got = j.book.next_attempt("b-0", 0.0)
        if not isinstance(got, Attempt):
            break
        handed.append(got.chunk.index)
        j.deliver(got)
        j.finish(got)
    assert sorted(handed) == [dying.chunk.index, 2, 3]
    assert still.chunk.index not in handed
    j.deliver(still)
    j.finish(still)
    assert j.book.wait_ended(0.0) and j.book.end() is None


def test_suspending_a_server_takes_back_the_chunk_handed_to_its_idle_slot() -> None:
    """A chunk assigned to a slot of the dead server but not started must move on, or it
    waits for that server's probe (or the job's idle timeout)."""
    j = Job("1-3", servers=("a", "b"), slots={"a": 2, "b": 1}, probe_interval=5.0)
    dying = j.take("a-0")  # a-1 is handed chunk 1, b-0 chunk 2
    assert j.assigned() == [(0, "a"), (1, "a"), (2, "b")]
    j.finish(dying, OutcomeKind.SERVER, why="server down", down=True)
    assert j.book.next_attempt("a-1", 0.0) is False
    done = []
    for _ in range(4):
        got = j.book.next_attempt("b-0", 0.0)
        if not isinstance(got, Attempt):
            break
        done.append(got.chunk.index)
        j.deliver(got)
        j.finish(got)
    assert sorted(done) == [0, 1, 2]
    assert j.book.wait_ended(0.0) and j.book.end() is None


def test_an_aborted_attempt_goes_back_once_and_blames_nobody() -> None:
    """An attempt stopped by something that is not the server's fault (the job's own stop
    racing it) returns its chunk once, unnarrowed and uncounted: no retry, no blocklist."""
    j = Job("1-4", servers=("a", "b"), chunk_size=2, blocklist_after=1)
    aborted = j.take("a-0")
    other = j.take("b-0")
    j.deliver(aborted, aborted.chunk.frames[:1])
    j.finish(aborted, OutcomeKind.ABORTED)
    assert j.book.retries == 0 and j.book.blocklist == {}
    assert not j.of(ev.ChunkRetried)
    again = j.take("a-0")  # a may take it again: it did nothing wrong
    assert again.chunk == aborted.chunk
    j.deliver(other)
    j.finish(other)
    assert j.book.next_attempt("b-0", 0.0) is False  # handed out once only
    j.deliver(again, again.chunk.frames[1:])
    j.finish(again)
    assert j.book.wait_ended(0.0) and j.book.end() is None


def test_a_waiting_chunk_is_never_queued_twice() -> None:
    """``put_back`` of a chunk already waiting must not duplicate it: two slots would get the
    same chunk and render it twice."""
    queue = ChunkQueue([Chunk(0, (1,), (), ())], ["a", "b"], clock=lambda: 0.0)
    queue.add_slot("a-0", "a")
    queue.add_slot("b-0", "b")
    (first,) = queue.dispatch(first_free, eligible=("a", "b"), suspended=(), remaining=1) or ()
    queue.unassign(queue.slot("a-0"))  # handed out, never started: back in line
    queue.put_back(queue.queued(first))  # e.g. an abort reported for the same chunk
    again = queue.dispatch(first_free, eligible=("a", "b"), suspended=(), remaining=1) or []
    assert [a.chunk.index for a in again] == [0]


# -- item 8: never hold a chunk while every other server is idle -------------------------------


def balanced_job(speeds: dict[str, float], frames: str = "1-4") -> tuple[Job, JobBalancer]:
    servers = [ServerConfig(name=n, host="127.0.0.1", port=9000 + i) for i, n in enumerate(speeds)]
    balancer = JobBalancer(servers, FastestCompletion(), SpeedTracker(initial=speeds))
    j = Job(frames, servers=tuple(speeds), chooser=balancer.choose)
    return j, balancer


def test_the_tail_rule_holds_for_a_faster_server_only_while_it_is_busy() -> None:
    """With ``fast`` busy, the slow server is left idle (``fast`` comes back sooner). Once
    ``fast`` has nothing in flight and cannot come back (its only slot is gone), holding
    would strand the chunk until the idle timeout fails the job: ``slow`` must take it."""
    j, _ = balanced_job({"fast": 0.1, "slow": 10.0})
    running = j.take("fast-0")
    assert j.book.next_attempt("slow-0", 0.0) is False  # held for fast: fine while it works
    j.book.close_slot("fast-0")  # its worker is gone...
    j.deliver(running)
    j.finish(running)  # ...and it has nothing in flight any more
    taken = j.take("slow-0")
    assert taken.server == "slow" and taken.chunk.index == 1


def test_the_tail_rule_never_holds_while_every_other_server_is_idle() -> None:
    """The rule itself: a chunk offered to a slow server is held only when some other able
    server is busy (it will come back for the work); with all of them idle, hand it out."""
    speeds = {"fast": 0.1, "slow": 10.0}
    balancer = JobBalancer(
        [ServerConfig(name=n, host="h", port=1 + i) for i, n in enumerate(speeds)],
        FastestCompletion(),
        SpeedTracker(initial=speeds),
    )
    chunk = Chunk(3, (4,), (), ())
    able = ("fast", "slow")
    idle = balancer.choose(chunk, ["slow"], {"fast": 0, "slow": 0}, 4, able)
    assert idle is not None and idle[0] == "slow"
    assert balancer.choose(chunk, ["slow"], {"fast": 1, "slow": 0}, 4, able) is None


# -- whose fault a rejection is (the events test that could not fail) -------------------------


def rejection() -> WorkflowRejected:
    return WorkflowRejected(
        "Cannot execute because node X does not exist.",
        error_type="invalid_prompt",
        node_errors=(),
    )


def test_a_rejection_everywhere_after_one_server_accepted_is_not_the_workflows_fault() -> None:
    """Every other eligible server rejected, but one accepted a prompt of this job earlier: the
    workflow is valid (that server ran it), so the rejecting server is degraded, not the job
    failed."""
    j = Job(servers=("a", "b"))
    j.book.mark_validated("a")  # a ran a prompt of this job
    assert j.book.judge("a", rejection()).kind is OutcomeKind.DEGRADED  # then lost a node
    assert j.book.judge("b", rejection()).kind is OutcomeKind.DEGRADED
    fresh = Job(servers=("a", "b"))
    assert fresh.book.judge("a", rejection()).kind is OutcomeKind.DEGRADED
    outcome = fresh.book.judge("b", rejection())
    assert outcome.kind is OutcomeKind.JOB and "every server (a, b)" in outcome.why


def test_a_structural_rejection_is_the_workflows_fault_and_a_missing_model_the_servers() -> None:
    """An ``invalid_prompt`` that names no missing node class is the workflow itself (fail
    at once, naming its node); a failed validation of an input value (a model file missing on
    that server) is that server's problem while others may still run it."""
    j = Job(servers=("a", "b"))
    bad_links = WorkflowRejected(
        "Prompt has bad links",
        error_type="invalid_prompt",
        node_errors=(NodeError("7", "KSampler", "invalid_prompt", "bad link"),),
    )
    outcome = j.book.judge("a", bad_links)
    assert outcome.kind is OutcomeKind.JOB and outcome.node_id == "7"
    no_model = WorkflowRejected(
        "Value not in list: ckpt_name",
        error_type="prompt_outputs_failed_validation",
        node_errors=(NodeError("4", "CheckpointLoader", "value_not_in_list", "no model"),),
    )
    outcome = j.book.judge("a", no_model)
    assert outcome.kind is OutcomeKind.DEGRADED and outcome.node_id == "4"


def test_the_same_execution_error_on_two_servers_names_both() -> None:
    j = Job(servers=("a", "b", "c"))
    oom = ExecutionFailed("out of memory", node_id="5", exception_type="OOM")
    assert j.book.judge("a", oom).kind is OutcomeKind.SERVER
    assert j.book.judge("a", oom).kind is OutcomeKind.SERVER  # the same server twice: still its
    outcome = j.book.judge("b", oom)
    assert outcome.kind is OutcomeKind.JOB and "(on a and b)" in outcome.why


def test_a_supervisor_wait_ends_at_once_when_the_job_ends_on_another_thread() -> None:
    """``wait_ended`` is how the controller learns the job ended; it must not sleep through it."""
    j = Job("1-2")
    woke = threading.Event()

    def supervisor() -> None:
        j.book.wait_ended(60.0)
        woke.set()

    t = threading.Thread(target=supervisor, daemon=True)
    t.start()
    j.book.fail("stop")
    assert woke.wait(10.0)


# -- the book's promptness: who is woken, what is delivered at once -----------------------------


class WatchedCondition(threading.Condition):
    """A Condition that tells when a thread starts waiting on it (then it released the lock)."""

    waiting = threading.Semaphore(0)

    def wait(self, timeout: Optional[float] = None) -> bool:
        WatchedCondition.waiting.release()
        return super().wait(timeout)


class Switch:
    """A chooser that declines while ``hold`` is set (first free server otherwise)."""

    def __init__(self) -> None:
        self.hold = True

    def __call__(self, chunk: Chunk, free: Sequence[str], *rest: Any) -> Optional[tuple[str, str]]:
        return None if self.hold else first_free(chunk, free, *rest)


@pytest.fixture
def watched(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Job]:
    """Builds a Job whose book's condition reports waiters, so a test knows a slot really
    waits before it acts (no sleeps)."""

    def build(*args: Any, **kw: Any) -> Job:
        WatchedCondition.waiting = threading.Semaphore(0)
        with monkeypatch.context() as m:
            m.setattr(threading, "Condition", WatchedCondition)
            return Job(*args, **kw)

    return build


class Asker:
    """A worker slot asking for work on its own thread (``next_attempt`` with a long timeout)."""

    def __init__(self, j: Job, slot: str, timeout: float = 60.0) -> None:
        self.result: Any = "not returned"
        self.thread = threading.Thread(
            target=lambda: setattr(self, "result", j.book.next_attempt(slot, timeout)),
            daemon=True,
        )
        self.thread.start()

    def waits(self) -> None:
        """Returns once the slot waits on the book's condition."""
        assert WatchedCondition.waiting.acquire(timeout=10), "the slot never waited"

    def returned(self, within: float = 10.0) -> Any:
        self.thread.join(within)
        assert not self.thread.is_alive(), "the slot was not woken"
        return self.result


def test_a_slot_waiting_for_work_is_woken_when_the_supervisor_hands_it_a_chunk(
    watched: Callable[..., Job],
) -> None:
    """The supervisor's wait re-dispatches (a chooser may decline now and accept later): a
    slot given work must start at once, not after its own poll times out."""
    switch = Switch()
    j = watched("1-2", servers=("a",), chooser=switch)
    asker = Asker(j, "a-0")
    asker.waits()
    switch.hold = False
    assert not j.book.wait_ended(0.0)
    got = asker.returned()
    assert isinstance(got, Attempt) and got.chunk.index == 0


def test_a_slot_of_a_server_taken_out_while_it_waits_stops_at_once(
    watched: Callable[..., Job],
) -> None:
    """A failed probe that takes the server out must wake its waiting slots so they end."""
    j = watched(
        "1-4", servers=("a", "b"), slots={"a": 2, "b": 1}, probe_interval=1000.0, blocklist_after=2
    )
    j.finish(j.take("a-0"), OutcomeKind.SERVER, why="refused", down=True)
    asker = Asker(j, "a-1")
    asker.waits()
    j.clock.advance(1000.0)
    assert j.book.probe_due("a-0")
    j.book.probe_result("a", False, "refused")
    assert "a" in j.book.blocklist
    assert asker.returned() is False  # woken; its next ask ends it
    assert j.book.next_attempt("a-1", 60.0) is None


def test_a_slot_whose_probe_is_due_is_not_made_to_wait(watched: Callable[..., Job]) -> None:
    j = watched("1-4", probe_interval=5.0)
    j.finish(j.take("a-0"), OutcomeKind.SERVER, why="refused", down=True)
    j.clock.advance(5.0)
    asker = Asker(j, "a-0")
    assert asker.returned() is False  # at once: time to probe
    assert not WatchedCondition.waiting.acquire(blocking=False)  # it never blocked
    assert j.book.probe_due("a-0")


def test_a_slot_with_nothing_to_do_waits_until_woken(watched: Callable[..., Job]) -> None:
    """No busy loop: an idle slot blocks in the book until something happens (here a wake),
    whatever its poll step (the default step is half a second)."""
    j = watched("1", servers=("a", "b"))
    running = j.take("a-0")
    j.book.flush()
    asker = Asker(j, "b-0", timeout=1.0)
    asker.waits()
    asker.thread.join(0.05)
    assert asker.thread.is_alive()
    j.book.wake()
    assert asker.returned() is False
    assert running.chunk.index == 0


def test_a_slot_with_work_already_handed_to_it_does_not_wait(watched: Callable[..., Job]) -> None:
    j = watched("1-2", servers=("a", "b"))
    j.take("a-0")  # b-0 is handed chunk 1 at the same time
    j.book.flush()
    got = Asker(j, "b-0").returned()
    assert isinstance(got, Attempt) and got.chunk.index == 1


def test_a_slot_delivers_waiting_events_instead_of_sleeping_on_them(
    watched: Callable[..., Job],
) -> None:
    """Events another thread queued reach the callback promptly: an idle slot with events
    waiting flushes them and returns instead of waiting out its poll."""
    j = watched("1-2", servers=("a",), probe_interval=1000.0)
    first = j.take("a-0")
    j.book.set_fraction(first, 0.5)  # queued, not yet delivered
    j.finish(first, OutcomeKind.SERVER, why="refused", down=True)
    j.events.clear()
    j.book.set_fraction(first, 0.9)  # a stale progress event, queued
    assert Asker(j, "a-0").returned() is False
    assert any(isinstance(e, ev.ChunkProgress) for e in j.events)


def test_the_supervisor_wait_blocks_until_woken(watched: Callable[..., Job]) -> None:
    j = watched("1-2")
    returned: list[bool] = []
    t = threading.Thread(target=lambda: returned.append(j.book.wait_ended(60.0)), daemon=True)
    t.start()
    t.join(0.05)
    assert t.is_alive()
    j.book.wake()
    t.join(10)
    assert returned == [False]


def test_the_last_frame_wakes_the_supervisor_at_once() -> None:
    j = Job("1", servers=("a",))
    a = j.take("a-0")
    returned: list[bool] = []
    t = threading.Thread(target=lambda: returned.append(j.book.wait_ended(60.0)), daemon=True)
    t.start()
    j.deliver(a)
    t.join(10)
    assert returned == [True]


# -- events are delivered by the call that caused them ------------------------------------------


def test_events_reach_the_callback_from_the_call_that_caused_them() -> None:
    """A worker never calls flush itself after these: the book delivers on the way out."""
    j = Job("1-3", servers=("a", "b"), probe_interval=1.0)
    a = j.book.next_attempt("a-0", 0.0)
    assert isinstance(a, Attempt)
    assert [type(e) for e in j.events] == [ev.ChunkAssigned, ev.ChunkAssigned]
    j.finish(a, OutcomeKind.SERVER, why="refused", down=True)
    assert isinstance(j.events[-1], ev.ChunkRetried) and j.events[-1].why == "refused"
    j.clock.advance(1.0)
    assert j.book.probe_due("a-0")
    j.book.probe_result("a", True)
    assert (2, "a") in [
        (e.chunk_index, e.server) for e in j.events if isinstance(e, ev.ChunkAssigned)
    ]


def test_a_freed_slot_is_handed_the_next_chunk_by_the_finish_itself() -> None:
    j = Job("1-3", servers=("a",))
    a = j.take("a-0")
    j.deliver(a)
    j.finish(a)
    assert j.assigned() == [(0, "a"), (1, "a")]


def test_a_chunk_given_back_by_a_closing_slot_is_handed_on_at_once() -> None:
    j = Job("1-2", servers=("a", "b"), slots={"a": 2, "b": 1})
    j.take("a-0")  # a-1 is handed chunk 1
    j.book.close_slot("a-1")
    assert j.assigned()[-1] == (1, "b")


def test_a_slot_of_a_blocklisted_server_gives_back_the_chunk_handed_to_it() -> None:
    """Work assigned to a slot of a server that is then taken out must not be stranded: it
    goes to a free slot elsewhere at once."""
    j = Job("1-3", servers=("a", "b"), slots={"a": 2, "b": 3}, blocklist_after=1)
    failing = j.take("a-0")  # a-1 is handed chunk 1, b-0 chunk 2
    assert j.assigned() == [(0, "a"), (1, "a"), (2, "b")]
    j.finish(failing, OutcomeKind.SERVER, why="boom")  # chunk 0 goes to b-1
    assert "a" in j.book.blocklist
    assert j.book.next_attempt("a-1", 0.0) is None
    assert j.assigned()[-2:] == [(0, "b"), (1, "b")]
    for slot in ("b-0", "b-1", "b-2"):
        got = j.take(slot)
        j.deliver(got)
        j.finish(got)
    assert j.book.wait_ended(0.0) and j.book.end() is None


# -- the write protocol at the book ---------------------------------------------------------------


def test_nothing_is_claimed_or_dispatched_after_the_job_ended() -> None:
    j = Job("1-4", servers=("a", "b"))
    a = j.take("a-0")
    b = j.take("b-0")
    j.book.fail("stop")
    assert not j.book.is_current(a)
    assert not j.book.claim_frame(a, a.chunk.frames[0])
    before = j.assigned()
    j.finish(b, OutcomeKind.ABORTED)
    assert j.assigned() == before


def test_a_cancel_stops_attempts_and_dispatch_before_the_supervisor_sees_it() -> None:
    j = Job("1-4", servers=("a", "b"))
    a = j.take("a-0")
    b = j.take("b-0")
    assert j.book.is_current(a)
    j.job.cancel_token.set()
    assert not j.book.is_current(a)
    before = j.assigned()
    j.finish(b, OutcomeKind.ABORTED)
    assert j.assigned() == before


def test_a_finished_attempt_is_stale_and_its_claims_refused() -> None:
    j = Job("1-2", servers=("a",), chunk_size=2)
    a = j.take("a-0")
    j.deliver(a, [1])
    j.finish(a, OutcomeKind.SERVER, why="boom")
    assert not j.book.is_current(a)
    assert not j.book.claim_frame(a, 2)


def test_a_released_frame_may_be_claimed_by_the_next_attempt() -> None:
    """A failed write must not block the frame forever."""
    j = Job("1", servers=("a", "b"))
    a = j.take("a-0")
    assert j.book.claim_frame(a, 1)
    j.book.release_frame(a, 1)
    j.finish(a, OutcomeKind.SERVER, why="write failed")
    b = j.take("b-0")
    assert j.book.claim_frame(b, 1)
    assert not j.book.delivered(1)
    j.book.frame_written(b, 1, "/o/1")
    assert j.book.delivered(1) and j.book.undelivered([1, 2]) == (2,)


def test_frame_events_say_which_frame_and_how_far_the_chunk_is() -> None:
    j = Job("1-2", servers=("a",), chunk_size=2)
    a = j.take("a-0")
    j.book.set_fraction(a, 1.7)
    j.book.set_fraction(a, -3.0)
    j.deliver(a, [1])
    progress = j.of(ev.ChunkProgress)
    assert [p.frame_fraction for p in progress] == [1.0, 0.0, 0.0]
    assert [p.frames_done for p in progress] == [0, 0, 1]
    written = j.of(ev.FrameWritten)
    assert [(w.frame, w.path, w.server) for w in written] == [(1, "/out/1", "a")]


def test_a_failed_attempts_running_fraction_leaves_the_progress() -> None:
    j = Job("1-2", servers=("a",))
    a = j.take("a-0")
    j.book.set_fraction(a, 0.5)
    assert j.book.progress()[0] == 0.25
    j.finish(a, OutcomeKind.SERVER, why="boom")
    assert j.book.progress()[0] == 0.0


def test_an_attempt_that_ends_ok_without_every_frame_is_retried_saying_so() -> None:
    j = Job("1-2", servers=("a", "b"), chunk_size=2)
    a = j.take("a-0")
    j.deliver(a, [1])
    j.finish(a)
    retried = j.of(ev.ChunkRetried)
    assert [(r.why, r.frames) for r in retried] == [
        ("finished without delivering every frame", (2,))
    ]
    assert j.book.retries == 1


def test_an_aborted_attempt_that_delivered_its_whole_chunk_is_not_queued_again() -> None:
    j = Job("1-2", servers=("a",))
    a = j.take("a-0")
    j.deliver(a)
    j.finish(a, OutcomeKind.ABORTED)
    assert j.assigned() == [(0, "a"), (1, "a")]


def test_live_prompts_lists_what_may_still_sit_on_a_server() -> None:
    j = Job()
    j.book.prompt_submitted("a", "p1")
    j.book.prompt_submitted("a", "p2")
    j.book.prompt_submitted("b", "q1")
    j.book.prompt_finished("a", "p1")
    j.book.prompt_finished("b", "q1")
    j.book.prompt_finished("c", "never")
    assert j.book.live_prompts() == {"a": ("p2",)}


def test_work_waiting_with_nothing_running_counts_as_idle() -> None:
    """The controller fails a job whose work waits too long with nothing running anywhere
    (every server suspended); a running attempt is not idleness."""
    j = Job("1-2", servers=("a",), probe_interval=100.0)
    a = j.take("a-0")
    assert j.book.idle_for() == 0.0
    j.clock.advance(50)
    assert j.book.idle_for() == 0.0
    j.finish(a, OutcomeKind.SERVER, why="refused", down=True)
    assert j.book.idle_for() == 0.0
    j.clock.advance(30)
    assert j.book.idle_for() == 30.0
    j.clock.advance(70)
    assert j.book.probe_due("a-0")
    j.book.probe_result("a", True)
    assert j.book.idle_for() == 0.0


def test_the_end_wakes_every_waiting_slot(watched: Callable[..., Job]) -> None:
    """A failure or cancel must reach slots idling in the book at once, so they stop."""
    for end in ("fail", "cancel"):
        j = watched("1", servers=("a", "b"))
        j.take("a-0")
        j.book.flush()
        asker = Asker(j, "b-0")
        asker.waits()
        if end == "cancel":
            j.book.cancel()
        else:
            j.book.fail("stop")
        asker.returned()
        assert j.book.next_attempt("b-0", 60.0) is None


def test_a_cancel_wakes_the_supervisor() -> None:
    j = Job("1-2")
    returned: list[bool] = []
    t = threading.Thread(target=lambda: returned.append(j.book.wait_ended(60.0)), daemon=True)
    t.start()
    j.book.cancel()
    t.join(10)
    assert returned == [True]


def test_the_supervisor_sleeps_again_after_a_wake() -> None:
    """One wake is one wake: the next wait blocks again (no busy loop after the first)."""
    j = Job("1-2")
    j.book.wake()
    assert not j.book.wait_ended(60.0)  # returns at once: it was woken
    t = threading.Thread(target=lambda: j.book.wait_ended(60.0), daemon=True)
    t.start()
    t.join(0.05)
    assert t.is_alive()
    j.book.fail("stop")
    t.join(10)


def test_a_server_out_of_the_job_is_announced_once_with_its_first_reason() -> None:
    """Two slots of one server failing in turn: one ServerBlocklisted, the first reason."""
    j = Job("1-4", servers=("a", "b"), slots={"a": 2, "b": 1}, blocklist_after=1)
    first, second = j.take("a-0"), j.take("a-1")
    j.finish(first, OutcomeKind.SERVER, why="first")
    j.finish(second, OutcomeKind.DEGRADED, why="second")
    assert [e.server for e in j.of(ev.ServerBlocklisted)] == ["a"]
    assert "first" in j.book.blocklist["a"]


def test_a_second_failure_while_suspended_does_not_restart_the_backoff() -> None:
    """Another slot of a suspended server reporting it down must not push the probe back."""
    j = Job(
        "1-4", servers=("a", "b"), slots={"a": 2, "b": 1}, probe_interval=1.0, blocklist_after=9
    )
    first, second = j.take("a-0"), j.take("a-1")
    j.finish(first, OutcomeKind.SERVER, why="refused", down=True)
    j.clock.advance(0.5)
    j.finish(second, OutcomeKind.SERVER, why="refused", down=True)
    j.clock.advance(0.5)
    assert j.book.probe_due("a-0")


def test_a_suspended_slot_waits_only_until_its_probe_is_due(watched: Callable[..., Job]) -> None:
    j = watched("1-4", servers=("a",), slots={"a": 2}, probe_interval=1000.0)
    j.finish(j.take("a-0"), OutcomeKind.SERVER, why="refused", down=True)
    far = Asker(j, "a-1")
    far.waits()
    far.thread.join(0.05)
    assert far.thread.is_alive()  # the probe is 1000 s away: it sleeps (up to its timeout)
    j.book.wake()
    assert far.returned() is False
    j.clock.advance(1000.0 - 0.05)
    assert Asker(j, "a-1").returned() is False  # due in 0.05 s: back after that, not 60 s


def test_a_failure_that_takes_a_server_out_wakes_its_idle_slots(
    watched: Callable[..., Job],
) -> None:
    """``a``'s second slot idles in the book; ``a`` is taken out by its first slot's failure
    and nothing is left to hand out: the idle slot must still learn it at once and stop."""
    j = watched("1", servers=("a", "b"), slots={"a": 2, "b": 0}, blocklist_after=1)
    failing = j.take("a-0")
    j.book.flush()
    asker = Asker(j, "a-1")
    asker.waits()
    j.finish(failing, OutcomeKind.SERVER, why="boom")
    assert asker.returned() is False
    assert j.book.next_attempt("a-1", 60.0) is None


# -- the queue's order and the failover limits ---------------------------------------------------


def test_a_chunk_is_given_up_after_six_failures_anywhere_not_before() -> None:
    """``max_chunk_attempts``: a chunk failing again and again (even on the job's only
    server) fails the job on its sixth failure, naming the count and the last error."""
    j = Job("1", servers=("a",), blocklist_after=99, max_chunk_servers=9)
    for n in range(1, 7):
        assert j.book.end() is None, n
        j.finish(j.take("a-0"), OutcomeKind.SERVER, why=f"boom {n}")
    end = j.book.end()
    assert end is not None and "failed 6 times; last: a: boom 6" in end.message
    assert j.book.retries == 6


def test_a_server_failing_too_often_is_out_and_a_job_with_none_left_fails() -> None:
    j = Job("1-2", servers=("a",), blocklist_after=1)
    j.finish(j.take("a-0"), OutcomeKind.SERVER, why="boom")
    assert j.book.blocklist == {"a": "failed 1 chunks; last: boom"}
    end = j.book.end()
    assert (
        end is not None
        and end.message == "no eligible server left (a: failed 1 chunks; last: boom)"
    )


def test_a_degraded_server_is_out_at_once_without_counting_a_failure() -> None:
    """A server that cannot run this workflow (a missing node) leaves the job on the spot; its
    chunk goes to the others as it was."""
    j = Job("1-2", servers=("a", "b"), blocklist_after=5)
    a = j.take("a-0")
    j.finish(a, OutcomeKind.DEGRADED, why="rejected the workflow: no FancyNode")
    assert j.book.blocklist == {"a": "rejected the workflow: no FancyNode"}
    assert [(e.server, e.why) for e in j.of(ev.ServerBlocklisted)] == [
        ("a", "rejected the workflow: no FancyNode")
    ]
    assert j.book.end() is None and j.take("b-0").server == "b"


def test_a_plain_server_failure_neither_suspends_nor_blocks_the_server() -> None:
    j = Job("1-3", servers=("a", "b"), blocklist_after=3)
    j.finish(j.take("a-0"), OutcomeKind.SERVER, why="boom")
    again = j.take("a-0")
    assert again.server == "a" and again.chunk.index != 0


def test_a_declined_chunk_holds_every_chunk_behind_it() -> None:
    """Chunks go out in order: when the chooser holds one (waiting for a better server), the
    ones behind it wait too rather than jumping the queue."""

    def hold_first(chunk: Chunk, free: Sequence[str], *rest: Any) -> Optional[tuple[str, str]]:
        return None if chunk.index == 0 else (free[0], "ok")

    j = Job("1-3", servers=("a",), chooser=hold_first)
    assert j.book.next_attempt("a-0", 0.0) is False
    assert j.assigned() == []


def tail_job(slots: Mapping[str, int]) -> Job:
    """fast (0.1 s/frame) and slow (10 s/frame) under ``fastest``, one-frame chunks."""
    speeds = {"fast": 0.1, "slow": 10.0}
    servers = [ServerConfig(name=n, host="h", port=7000 + i) for i, n in enumerate(speeds)]
    balancer = JobBalancer(servers, FastestCompletion(), SpeedTracker(initial=speeds))
    return Job(
        "1-3",
        servers=tuple(speeds),
        slots=slots,
        chooser=balancer.choose,
        probe_interval=100.0,
        blocklist_after=9,
    )


def test_the_tail_rule_does_not_wait_for_a_server_that_failed_the_chunk() -> None:
    """A busy faster server that already failed this chunk will not take it back: holding the
    chunk for it would only delay the job."""
    j = tail_job({"fast": 2, "slow": 1})
    first, second = j.take("fast-0"), j.take("fast-1")
    assert j.book.next_attempt("slow-0", 0.0) is False  # held while fast is busy
    j.finish(first, OutcomeKind.SERVER, why="boom")  # fast failed chunk 0; fast-1 still busy
    moved = j.take("slow-0")
    assert moved.chunk.index == first.chunk.index
    assert second.server == "fast"


def test_the_tail_rule_does_not_wait_for_a_suspended_server() -> None:
    """``fast`` looked dead on one slot (its other slot still runs): a chunk it never failed
    must not be held for it, since it takes no work until a probe answers."""
    j = tail_job({"fast": 2, "slow": 2})
    first, _second = j.take("fast-0"), j.take("fast-1")
    assert j.book.next_attempt("slow-0", 0.0) is False  # chunk 2 held while fast works
    j.finish(first, OutcomeKind.SERVER, why="refused", down=True)
    taken = {j.take("slow-0").chunk.index, j.take("slow-1").chunk.index}
    assert taken == {first.chunk.index, 2}


def test_an_idle_slot_is_not_woken_when_there_is_nothing_for_anyone(
    watched: Callable[..., Job],
) -> None:
    """Slots asking for work when none waits must not wake each other (a busy loop)."""
    j = watched("1", servers=("a", "b", "c"))
    j.take("a-0")
    j.book.flush()
    asker = Asker(j, "b-0")
    asker.waits()
    assert j.book.next_attempt("c-0", 0.0) is False
    asker.thread.join(0.05)
    assert asker.thread.is_alive()
    j.book.wake()
    asker.returned()


def test_the_workflows_fault_fails_the_job_at_once_naming_the_node() -> None:
    """A JOB outcome (the same error on two servers, a structural rejection, our own disk) is
    not retried anywhere: the job fails with that reason."""
    j = Job("1-4", servers=("a", "b"))
    error = ValueError("bad input")
    j.finish(j.take("a-0"), OutcomeKind.JOB, why="node 3 failed twice", node_id="3", error=error)
    end = j.book.end()
    assert end is not None and end.status is JobStatus.FAILED
    assert (end.message, end.node_id, end.error) == ("node 3 failed twice", "3", error)
    assert not j.of(ev.ChunkRetried) and j.book.retries == 0


def test_a_batch_chunk_is_retried_whole_for_context_but_only_missing_frames_count() -> None:
    """Batch chunks keep their shape on a retry (the model sees the same neighbours), while
    the retry event names only the frames still missing; delivered ones are not rewritten."""
    j = Job("1-4", servers=("a", "b"), chunk_size=4, mode="batch")
    a = j.take("a-0")
    j.deliver(a, [1, 2])
    j.finish(a, OutcomeKind.SERVER, why="download failed")
    assert [e.frames for e in j.of(ev.ChunkRetried)] == [(3, 4)]
    again = j.take("b-0")
    assert again.chunk.frames == (1, 2, 3, 4)
    assert not j.book.claim_frame(again, 1) and j.book.claim_frame(again, 3)


def test_a_frame_chunk_is_retried_with_only_its_missing_frames() -> None:
    j = Job("1-3", servers=("a", "b"), chunk_size=3)
    a = j.take("a-0")
    j.deliver(a, [1])
    j.finish(a, OutcomeKind.SERVER, why="boom")
    assert j.take("b-0").chunk.frames == (2, 3)


class Gate:
    """Lets the first choice through, then holds every chunk until opened."""

    def __init__(self, choose: Chooser) -> None:
        self.choose = choose
        self.calls = 0
        self.open = False

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        return self.choose(*args) if self.open or self.calls == 1 else None


@pytest.mark.parametrize("rounds", [1, 2], ids=["one-dispatch", "two-dispatches"])
def test_fastest_counts_each_chunk_in_flight_once(rounds: int) -> None:
    """``a`` (1 s/frame, two slots) already runs one chunk; ``b`` (2.5 s/frame) is idle. The
    next chunk finishes sooner queued on ``a`` (2 s) than on ``b`` (2.5 s): counting a's
    running chunk twice would send it to the slower server."""
    speeds = {"a": 1.0, "b": 2.5}
    servers = [ServerConfig(name=n, host="h", port=7100 + i) for i, n in enumerate(speeds)]
    balancer = JobBalancer(servers, FastestCompletion(), SpeedTracker(initial=speeds))
    gate = Gate(balancer.choose)
    gate.open = rounds == 1
    j = Job("1-3", servers=("a", "b"), slots={"a": 2, "b": 1}, chooser=gate)
    j.take("a-0")
    gate.open = True
    second = j.take("a-1")
    assert second.server == "a" and second.chunk.index == 1
    assert j.assigned()[:2] == [(0, "a"), (1, "a")]
