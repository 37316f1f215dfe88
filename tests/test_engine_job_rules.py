"""The engine's job-level rules that need no servers: the plan (servers, chunking, existing and
input frames), the balancer's tail rule and ETA, the end-of-job verdict, the cancel sweep, the
event feed's progress and ETA, and the values a job is made of. Hand-built inputs, fake clocks.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import pytest

from comfy_cluster.core.balance import FastestCompletion, RoundRobin
from comfy_cluster.core.engine import events as ev
from comfy_cluster.core.engine.attempt import Aborted, Attempt, Outcome
from comfy_cluster.core.engine.balancing import JobBalancer
from comfy_cluster.core.engine.book import JobBook
from comfy_cluster.core.engine.ending import early_result, final_result
from comfy_cluster.core.engine.feed import JobFeed
from comfy_cluster.core.engine.job import JobResult, JobStatus, RenderJob
from comfy_cluster.core.engine.ledger import FrameLedger
from comfy_cluster.core.engine.plan import EarlyFailure, plan_job
from comfy_cluster.core.engine.settings import EngineSettings
from comfy_cluster.core.engine.standing import ServerStanding
from comfy_cluster.core.engine.sweep import sweep_prompts
from comfy_cluster.core.engine.tools import ServerCall
from comfy_cluster.core.errors import (
    ComfyClusterError,
    JobCancelledError,
    JobFailedError,
    ServerUnreachable,
    UnexpectedStatus,
    WorkflowError,
)
from comfy_cluster.core.frames import Chunk, FixedChunker, FrameRange
from comfy_cluster.core.health import ServerState, ServerStatus
from comfy_cluster.core.protocol import QueueState
from comfy_cluster.core.retry import retry_transient
from comfy_cluster.core.server import ServerConfig

WORKFLOW = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "x.png"}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "o"}},
}
NO_INPUT = {"1": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}}}

_ports = itertools.count(30000)


def server(name: str, *, slots: int = 1, enabled: bool = True) -> ServerConfig:
    return ServerConfig(
        name=name, host="127.0.0.1", port=next(_ports), max_in_flight=slots, enabled=enabled
    )


class Speeds:
    """A speed record with fixed seconds per frame."""

    def __init__(self, spf: Optional[Mapping[str, float]] = None) -> None:
        self.spf = dict(spf or {})

    def record(self, server: str, seconds: float, frames: int = 1) -> float:
        return seconds / frames

    def seconds_per_frame(self, server: str) -> Optional[float]:
        return self.spf.get(server)


def plan(job: RenderJob, servers: Sequence[ServerConfig], **kw: Any) -> Any:
    return plan_job(job, servers, speed=kw.pop("speed", Speeds()), settings=EngineSettings(), **kw)


def chunk_sizes(p: Any) -> list[int]:
    return [len(c.frames) for c in p.chunks]


# -- the plan: which servers ---------------------------------------------------------------------


def test_the_plan_keeps_only_enabled_servers_the_job_allows() -> None:
    """Disabled servers and servers outside the job's allow-list are not the job's servers."""
    a, off, b = server("a"), server("off", enabled=False), server("b")
    job = RenderJob(NO_INPUT, "1-2", "o.####.png")
    assert [s.name for s in plan(job, [a, off, b]).servers] == ["a", "b"]
    only_b = RenderJob(NO_INPUT, "1-2", "o.####.png", servers=("b", "off"))
    assert [s.name for s in plan(only_b, [a, off, b]).servers] == ["b"]
    with pytest.raises(EarlyFailure, match="no enabled server"):
        plan(RenderJob(NO_INPUT, "1", "o.####.png", servers=("off",)), [a, off])
    with pytest.raises(EarlyFailure, match=r"unknown server.*zz") as failure:
        plan(RenderJob(NO_INPUT, "1", "o.####.png", servers=("a", "zz")), [a, off])
    assert "zz" in str(failure.value)


# -- the plan: chunking (item 7: slots, not servers) ---------------------------------------------


def batch_job(frames: str = "1-32", **kw: Any) -> RenderJob:
    return RenderJob(WORKFLOW, frames, "o.####.png", input_pattern="i.####.png", mode="batch", **kw)


def test_auto_chunking_counts_slots_not_servers() -> None:
    """Before any timing, batch chunks aim at four per worker *slot*: one server with four
    slots needs as many chunks as four servers with one, or three of its slots sit idle."""
    later = {"inputs_arrive_later": True}
    one_by_four = plan(batch_job(), [server("a", slots=4)], **later)
    four_by_one = plan(batch_job(), [server(n) for n in "abcd"], **later)
    one_by_one = plan(batch_job(), [server("a")], **later)
    assert chunk_sizes(one_by_four) == chunk_sizes(four_by_one) == [2] * 16
    assert chunk_sizes(one_by_one) == [8] * 4


def test_auto_chunking_aims_at_the_target_time_from_the_average_measured_speed() -> None:
    """With speeds measured (1 and 3 s/frame: 2 on average; the unmeasured server does not
    count), a chunk holds about ``target_chunk_seconds`` (30 s) of work: 15 frames."""
    servers = [server("a"), server("b"), server("new")]
    p = plan(
        batch_job("1-100"), servers, speed=Speeds({"a": 1.0, "b": 3.0}), inputs_arrive_later=True
    )
    assert chunk_sizes(p)[0] == 15 and sum(chunk_sizes(p)) == 100


def test_frame_mode_sends_one_frame_per_chunk_unless_asked_otherwise() -> None:
    """One prompt per frame anyway: one-frame chunks balance best."""
    job = RenderJob(NO_INPUT, "1-40", "o.####.png")
    assert chunk_sizes(plan(job, [server("a")])) == [1] * 40
    sized = RenderJob(NO_INPUT, "1-10", "o.####.png", chunk_size=4)
    assert chunk_sizes(plan(sized, [server("a")])) == [4, 4, 2]


def test_a_fixed_batch_chunk_size_keeps_its_handles() -> None:
    p = plan(batch_job("1-10", chunk_size=5, handles=2), [server("a")], inputs_arrive_later=True)
    assert chunk_sizes(p) == [5, 5]
    assert p.chunks[1].all_frames == (4, 5, 6, 7, 8, 9, 10)


# -- the plan: frames on disk --------------------------------------------------------------------


def _png(path: Path) -> None:
    """A whole image on disk (resume keeps only frames that pass the image check)."""
    from PIL import Image

    Image.new("RGB", (4, 4), (10, 20, 30)).save(path)


def test_existing_output_frames_error_resume_or_overwrite(tmp_path: Path) -> None:
    """``error`` refuses (listing them), ``resume`` skips them, ``overwrite`` renders all."""
    out = str(tmp_path / "o.####.png")
    for f in (2, 3):
        _png(tmp_path / f"o.{f:04d}.png")

    def job(existing: str) -> RenderJob:
        return RenderJob(NO_INPUT, "1-4", out, existing=existing)

    with pytest.raises(EarlyFailure) as failure:
        plan(job("error"), [server("a")])
    assert failure.value.existing == (2, 3) and "2-3" in failure.value.message
    resumed = plan(job("resume"), [server("a")])
    assert resumed.to_render == (1, 4) and resumed.skipped == (2, 3)
    assert [c.frames for c in resumed.chunks] == [(1,), (4,)]
    over = plan(job("overwrite"), [server("a")])
    assert over.to_render == (1, 2, 3, 4) and over.skipped == ()
    fresh = plan(RenderJob(NO_INPUT, "5-6", out), [server("a")])
    assert fresh.to_render == (5, 6)


def test_a_resumed_job_with_every_frame_on_disk_has_nothing_to_send(tmp_path: Path) -> None:
    _png(tmp_path / "o.0001.png")
    p = plan(
        RenderJob(NO_INPUT, "1", str(tmp_path / "o.####.png"), existing="resume"), [server("a")]
    )
    assert p.to_render == () and p.chunks == () and p.skipped == (1,)


def test_missing_input_frames_fail_the_plan_unless_they_arrive_later(tmp_path: Path) -> None:
    """Input frames (handles included) must exist before anything is sent; with
    ``wait_for_input`` the host is still writing them, so the check is left to the workers."""
    for f in (1, 2, 3):
        (tmp_path / f"i.{f:04d}.png").write_bytes(b"in")
    pattern = str(tmp_path / "i.####.png")
    job = RenderJob(WORKFLOW, "1-3", str(tmp_path / "o.####.png"), input_pattern=pattern)
    assert plan(job, [server("a")]).to_render == (1, 2, 3)
    late = RenderJob(WORKFLOW, "2-5", str(tmp_path / "o.####.png"), input_pattern=pattern)
    with pytest.raises(EarlyFailure, match=r"2 input frame\(s\) missing \(4-5"):
        plan(late, [server("a")])
    assert plan(late, [server("a")], inputs_arrive_later=True).to_render == (2, 3, 4, 5)


def test_workflow_and_strategy_problems_fail_the_plan_naming_them() -> None:
    with pytest.raises(EarlyFailure) as failure:
        plan(
            RenderJob({"1": {"class_type": "LoadImage", "inputs": {}}}, "1", "o.####.png"),
            [server("a")],
        )
    assert isinstance(failure.value.error, WorkflowError) and "output" in str(failure.value)
    with pytest.raises(EarlyFailure, match="strategy"):
        plan(RenderJob(NO_INPUT, "1", "o.####.png", strategy="nope"), [server("a")])


# -- the balancer: the tail rule (item 8) and the ETA --------------------------------------------

#: (seconds per frame, our chunks in flight, undelivered frames, chunk size, able) for server
#: "x" and whether it is held back for the others. Servers missing from in_flight have none.
HOLD_CASES = [
    pytest.param(
        {"x": 10.0, "f": 1.0}, {"x": 0, "f": 1}, 4, 1, "xf", True, id="slow-idle-fast-busy-tail"
    ),
    pytest.param(
        {"x": 10.0, "f": 1.0}, {"x": 0, "f": 1}, 100, 1, "xf", False, id="lots-left-slow-helps"
    ),
    pytest.param(
        {"x": 10.0, "f": 1.0}, {"x": 0, "f": 0}, 4, 1, "xf", False, id="fast-idle-never-hold"
    ),
    pytest.param({"f": 1.0}, {"x": 0, "f": 1}, 4, 1, "xf", False, id="unmeasured-seeds-its-speed"),
    pytest.param({"x": 10.0}, {"x": 0, "f": 1}, 4, 1, "xf", False, id="others-unmeasured"),
    pytest.param(
        {"x": 10.0, "f": 1.0}, {"x": 0, "f": 1}, 4, 1, "x", False, id="no-other-may-take-it"
    ),
    pytest.param(
        {"x": 2.0, "f": 1.0}, {"x": 0, "f": 1}, 2, 1, "xf", False, id="a-tie-hands-it-out"
    ),
    pytest.param(
        {"x": 3.0, "f": 1.0, "g": 2.0},
        {"x": 1, "f": 1, "g": 1},
        12,
        2,
        "xfg",
        True,
        id="x-queued-two-faster-busy",
    ),
    pytest.param(
        {"x": 0.5, "f": 0.5, "g": 2.0},
        {"x": 1, "f": 1, "g": 1},
        6,
        2,
        "xfg",
        True,
        id="x-queued-near-the-end",
    ),
    pytest.param(
        {"x": 1.0, "f": 1.0}, {"x": 1, "f": 1}, 1, 2, "xf", False, id="less-left-than-a-chunk"
    ),
    pytest.param({"x": 0.5, "f": 1.0}, {"x": 2}, 6, 2, "xf", False, id="other-not-in-flight"),
    pytest.param({"x": 0.5, "f": 4.0}, {"x": 0, "f": 1}, 1, 1, "xf", False, id="x-is-the-faster"),
    pytest.param(
        {"x": 0.5, "f": 0.5}, {"x": 1, "f": 1}, 1, 1, "xf", False, id="equal-x-queued-last"
    ),
    pytest.param({"x": 0.5, "f": 0.5}, {"f": 1}, 2, 1, "xf", False, id="equal-speeds"),
]


@pytest.mark.parametrize("speeds, in_flight, remaining, size, able, held", HOLD_CASES)
def test_the_tail_rule_holds_a_chunk_only_when_that_ends_the_job_sooner(
    speeds: dict[str, float],
    in_flight: dict[str, int],
    remaining: int,
    size: int,
    able: str,
    held: bool,
) -> None:
    """``fastest`` leaves a server idle at the end only when the others, already busy, would
    finish everything sooner without it: holding wrongly stretches the job's tail, not holding
    wrongly hands the last chunk to a slow box and makes everyone wait for it."""
    balancer = JobBalancer([server(n) for n in able], FastestCompletion(), Speeds(speeds))
    chunk = Chunk(0, tuple(range(1, size + 1)), (), ())
    assert balancer.hold_for_faster("x", chunk, in_flight, speeds, remaining, list(able)) is held


class Health:
    """A health monitor's snapshot (or a broken one), and what set_active heard."""

    def __init__(self, states: Optional[dict[str, ServerState]] = None, broken: bool = False):
        self.states = states or {}
        self.broken = broken
        self.active: list[tuple[bool, str]] = []

    def snapshot(self) -> dict[str, ServerStatus]:
        if self.broken:
            raise RuntimeError("monitor crashed")
        return {n: ServerStatus(name=n, url="u", state=s) for n, s in self.states.items()}

    def set_active(self, active: bool, who: str = "default") -> None:
        self.active.append((active, who))


def test_the_balancer_reads_health_and_survives_a_broken_monitor() -> None:
    """Servers the monitor does not list count as READY; an OFFLINE one is never chosen; a
    monitor that raises must not stall the job (everyone READY)."""
    servers = [server("a"), server("b")]
    chunk = Chunk(0, (1,), (), ())
    offline = JobBalancer(
        servers, FastestCompletion(), Speeds(), Health({"a": ServerState.OFFLINE})
    )
    assert offline.statuses()["b"].state is ServerState.READY
    assert offline.choose(chunk, ["a", "b"], {"a": 0, "b": 0}, 4, ["a", "b"])[0] == "b"
    assert offline.choose(chunk, ["a"], {"a": 0, "b": 0}, 4, ["a", "b"]) is None
    broken = JobBalancer(servers, FastestCompletion(), Speeds(), Health(broken=True))
    assert {s.state for s in broken.statuses().values()} == {ServerState.READY}
    assert broken.choose(chunk, ["a"], {"a": 0, "b": 0}, 4, ["a", "b"])[0] == "a"


def test_an_offline_faster_server_does_not_hold_a_chunk_back() -> None:
    """The tail rule waits only for servers that can take work: one the monitor sees offline
    (or degraded) will not come back for the chunk."""
    speeds = {"fast": 0.1, "slow": 10.0}
    servers = [server("fast"), server("slow")]
    chunk = Chunk(0, (1,), (), ())
    busy = {"fast": 1, "slow": 0}
    for state, held in (
        (ServerState.BUSY, True),
        (ServerState.OFFLINE, False),
        (ServerState.DEGRADED, False),
    ):
        balancer = JobBalancer(
            servers, FastestCompletion(), Speeds(speeds), Health({"fast": state})
        )
        choice = balancer.choose(chunk, ["slow"], busy, 4, ["fast", "slow"])
        assert (choice is None) is held, state


def test_only_completion_aware_strategies_hold_chunks_back() -> None:
    """Round robin knows nothing of speeds: it never leaves a free server idle."""
    speeds = {"fast": 0.1, "slow": 10.0}
    balancer = JobBalancer([server("fast"), server("slow")], RoundRobin(), Speeds(speeds))
    choice = balancer.choose(
        Chunk(0, (1,), (), ()), ["slow"], {"fast": 1, "slow": 0}, 4, ["fast", "slow"]
    )
    assert choice is not None and choice[0] == "slow"


def test_the_eta_is_the_remaining_frames_at_the_measured_servers_combined_rate() -> None:
    balancer = JobBalancer(
        [server("a"), server("b"), server("c")], FastestCompletion(), Speeds({"a": 2.0, "b": 4.0})
    )
    # 1/2 + 1/4 frames per second; "c" is unmeasured and does not count.
    assert balancer.eta(9.0, ["a", "b", "c"]) == pytest.approx(12.0)
    assert balancer.eta(9.0, ["c"]) is None


# -- the feed: progress and ETA ------------------------------------------------------------------


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def feed(
    frames: int, eta: Any = None, clock: Optional[Clock] = None
) -> tuple[JobFeed, FrameLedger, list]:
    got: list[ev.JobEvent] = []
    ledger = FrameLedger(range(1, frames + 1))
    standing = ServerStanding(("a", "b"), clock or Clock(), EngineSettings())
    f = JobFeed(
        "job",
        ev.EventSink(got.append),
        threading.RLock(),
        clock=clock or Clock(),
        ledger=ledger,
        standing=standing,
        eta=eta,
    )
    return f, ledger, got


def write(ledger: FrameLedger, frame: int, attempt_id: int = 1) -> None:
    a = Attempt(attempt_id, Chunk(0, (frame,), (), ()), "a", "a-0", "t")
    assert ledger.claim(a, frame, stale=False)
    ledger.record_written(a, frame, f"/o/{frame}")


def test_the_eta_falls_back_to_elapsed_time_until_speeds_are_measured() -> None:
    """Without measured speeds the ETA extrapolates the time so far; with nothing done yet
    there is nothing to extrapolate (None, not a division by zero)."""
    clock = Clock(100.0)
    f, ledger, _ = feed(4, clock=clock)
    assert f.progress() == (0.0, None)
    write(ledger, 1)
    clock.now = 110.0
    progress, eta = f.progress()
    assert progress == 0.25 and eta == pytest.approx(30.0)  # 10 s for a quarter: 30 s to go


def test_the_eta_comes_from_measured_speeds_of_the_servers_still_in_the_job() -> None:
    asked: list[tuple[float, tuple]] = []

    def eta(remaining: float, active: Sequence[str]) -> Optional[float]:
        asked.append((remaining, tuple(active)))
        return 7.0

    f, ledger, _ = feed(4, eta=eta)
    write(ledger, 1)
    assert f.progress() == (0.25, 7.0)
    write(ledger, 2, 2)
    write(ledger, 3, 3)
    assert f.progress() == (0.75, 7.0)  # one frame left still has an ETA
    assert asked[-1] == (1.0, ("a", "b"))
    write(ledger, 4, 4)
    assert f.progress() == (1.0, 0.0)


def test_events_wait_in_the_feed_until_flushed_in_order() -> None:
    f, ledger, got = feed(2)
    f.post(ev.JobCancelled)
    write(ledger, 1)
    f.post(ev.JobCancelled)
    assert got == [] and f
    f.flush()
    assert [e.progress for e in got] == [0.0, 0.5] and not f


def test_running_prompts_count_toward_progress() -> None:
    """The progress bar moves while prompts run, not only when frames land: each running
    prompt adds its fraction; a written frame replaces its prompt's fraction, an ended attempt
    drops it; changes under 1 % of a frame are not worth an event."""
    ledger = FrameLedger(range(1, 9))
    a = Attempt(1, Chunk(0, (1, 2), (), ()), "a", "a-0", "t")
    b = Attempt(2, Chunk(1, (5,), (), ()), "b", "b-0", "t")
    assert ledger.set_fraction(a, 0.5, 1)
    assert ledger.progress() == (0.0625, 7.5)
    assert not ledger.set_fraction(a, 0.505, 1)  # under 1 %: no event
    assert ledger.set_fraction(a, 0.52, 1)
    assert ledger.set_fraction(b, 1.0, 1)
    assert ledger.progress()[0] == pytest.approx(1.52 / 8)
    ledger.attempt_ended(b)
    assert ledger.progress() == (pytest.approx(0.52 / 8), pytest.approx(7.48))
    assert ledger.claim(a, 1, stale=False)
    assert ledger.record_written(a, 1, "/o/1") == 1
    assert ledger.progress() == (0.125, 7.0)
    assert ledger.frames_done_in(a) == 1 and ledger.frames_done_in(b) == 0
    assert ledger.claim(a, 2, stale=False)
    assert ledger.record_written(a, 2, "/o/2") == 2
    assert ledger.delivered_frames() == {1: ("/o/1", "a"), 2: ("/o/2", "a")}
    empty = FrameLedger([])
    assert empty.progress() == (1.0, 0.0) and empty.complete and empty.remaining == 0


def test_the_1_percent_event_threshold_scales_with_the_prompts_frames() -> None:
    ledger = FrameLedger(range(1, 200))
    a = Attempt(1, Chunk(0, (1, 2, 3, 4), (), ()), "a", "a-0", "t")
    assert ledger.set_fraction(a, 0.5, 4)
    assert not ledger.set_fraction(a, 0.505, 4)  # 0.02 frames: under 1 % of 4 frames
    assert ledger.set_fraction(a, 0.515, 4)  # 0.06 frames
    long = Attempt(2, Chunk(1, tuple(range(1, 101)), (), ()), "a", "a-1", "t")
    assert ledger.set_fraction(long, 0.5, 100)
    assert ledger.set_fraction(long, 0.51, 100)  # exactly 1 % (one frame): worth an event


def test_a_running_batch_prompt_counts_its_frames_toward_progress() -> None:
    """A 4-frame batch prompt half done is 2 frames' worth, not 1: else the bar (and the ETA
    built on it) crawls through every batch and jumps when its frames land."""
    ledger = FrameLedger(range(1, 9))
    a = Attempt(1, Chunk(0, (1, 2, 3, 4), (), ()), "a", "a-0", "t")
    ledger.set_fraction(a, 0.5, 4)
    assert ledger.progress() == (0.25, 6.0)


def test_a_frame_written_twice_counts_once() -> None:
    """A late duplicate (recorded without a claim) must not count the frame twice, or the job
    would look complete while a frame is still missing."""
    ledger = FrameLedger([1, 2])
    first = Attempt(1, Chunk(0, (1,), (), ()), "a", "a-0", "t")
    second = Attempt(2, Chunk(0, (1,), (), ()), "b", "b-0", "t")
    ledger.record_written(first, 1, "/o/1")
    ledger.record_written(second, 1, "/o/1b")
    assert not ledger.complete and ledger.remaining == 1
    ledger.record_written(second, 9, "/o/9")  # not ours to render: never counts
    assert not ledger.complete and ledger.remaining == 1


def test_a_released_claim_of_another_attempt_is_kept() -> None:
    ledger = FrameLedger([1])
    owner = Attempt(1, Chunk(0, (1,), (), ()), "a", "a-0", "t")
    other = Attempt(2, Chunk(0, (1,), (), ()), "b", "b-0", "t")
    assert ledger.claim(owner, 1, stale=False)
    ledger.release(other, 1)  # not its claim
    assert not ledger.claim(other, 1, stale=False)


# -- the end of a job: verdict from the disk ------------------------------------------------------


def book_for(job: RenderJob, got: list, servers: tuple = ("a", "b")) -> JobBook:
    book = JobBook(
        job,
        FixedChunker(1).split(job.frame_range),
        servers,
        frames_to_render=job.frame_range.frames,
        chooser=lambda chunk, free, *rest: (free[0], "first"),
        sink=ev.EventSink(got.append),
        clock=Clock(),
    )
    for s in servers:
        book.add_slot(f"{s}-0", s)
    return book


def deliver(book: JobBook, slot: str, out: Path) -> Attempt:
    a = book.next_attempt(slot, 0.0)
    assert isinstance(a, Attempt)
    for f in a.chunk.frames:
        assert book.claim_frame(a, f)
        (out / f"o.{f:04d}.png").write_bytes(b"x")
        book.frame_written(a, f, str(out / f"o.{f:04d}.png"))
    return a


def test_the_final_verdict_trusts_the_disk_not_the_ledger(tmp_path: Path) -> None:
    """``final_result`` fails a job whose frames are not on disk even if nothing else ended
    it, and finds the job done when every frame is on disk."""
    got: list = []
    job = RenderJob(NO_INPUT, "1-2", str(tmp_path / "o.####.png"))
    book = book_for(job, got)
    result = final_result(job, book, lambda: 3.0)
    assert result.status is JobStatus.FAILED and result.frames_missing == (1, 2)
    assert "2 frame(s) missing on disk at the end: 1-2" in result.message
    assert isinstance(got[-1], ev.JobFailed) and got[-1].message == result.message

    got2: list = []
    job2 = RenderJob(NO_INPUT, "1-2", str(tmp_path / "p.####.png"))
    for f in (1, 2):
        (tmp_path / f"p.{f:04d}.png").write_bytes(b"rendered elsewhere")
    book2 = book_for(job2, got2)
    result2 = final_result(job2, book2, lambda: 3.0)
    assert result2.ok and result2.frames_missing == () and result2.seconds == 3.0


def test_the_final_result_says_who_wrote_what(tmp_path: Path) -> None:
    got: list = []
    job = RenderJob(NO_INPUT, "1-3", str(tmp_path / "o.####.png"))
    book = book_for(job, got)
    for slot in ("a-0", "b-0"):
        book.finish_attempt(deliver(book, slot, tmp_path), Outcome.ok())
    book.finish_attempt(deliver(book, "a-0", tmp_path), Outcome.ok())
    result = final_result(job, book, lambda: 1.0)
    assert result.ok and result.per_server == {"a": 2, "b": 1}
    assert result.frames_written == (1, 2, 3) and result.paths[2] == str(tmp_path / "o.0002.png")
    assert [type(e) for e in got[-1:]] == [ev.JobDone] and got[-1].per_server == {"a": 2, "b": 1}


def test_a_failed_end_carries_its_error_and_node(tmp_path: Path) -> None:
    got: list = []
    job = RenderJob(NO_INPUT, "1", str(tmp_path / "o.####.png"))
    book = book_for(job, got)
    book.fail("node 5 exploded", "5", ValueError("boom"))
    result = final_result(job, book, lambda: 1.0)
    assert result.status is JobStatus.FAILED and result.node_id == "5"
    assert result.error is not None and result.error.kind == "ValueError"
    assert isinstance(got[-1], ev.JobFailed) and got[-1].node_id == "5"
    book.fail("x")
    plain = book_for(RenderJob(NO_INPUT, "1", str(tmp_path / "q.####.png")), [])
    plain.fail("no error object")
    assert final_result(plain.job, plain, lambda: 0.0).error is None


def test_an_early_failure_sends_one_event_and_lists_every_frame_missing() -> None:
    got: list = []
    job = RenderJob(NO_INPUT, "1-3", "o.####.png")
    result = early_result(
        job,
        ev.EventSink(got.append),
        "bad",
        seconds=1.0,
        node_id="4",
        error=WorkflowError("bad", node_id="4"),
        existing=(2,),
    )
    assert result.status is JobStatus.FAILED and result.frames_missing == (1, 2, 3)
    assert result.error is not None and result.error.kind == "WorkflowError"
    assert [type(e) for e in got] == [ev.JobFailed] and got[0].node_id == "4"
    assert early_result(job, ev.EventSink(None), "x", seconds=0.0).error is None


# -- the cancel sweep ----------------------------------------------------------------------------


class SweptClient:
    """Records what the sweep asked of one server."""

    def __init__(self, running: tuple = (), pending: tuple = (), fail: bool = False) -> None:
        self.state = QueueState(running=running, pending=pending)
        self.fail = fail
        self.calls: list[tuple] = []
        self.closed = False

    def queue(self) -> QueueState:
        self.calls.append(("queue",))
        if self.fail:
            raise ServerUnreachable("refused", server="x")
        return self.state

    def delete_queued(self, ids: Any) -> None:
        ids = list(ids)
        self.calls.append(("delete", tuple(ids)))
        self.state = QueueState(
            running=self.state.running, pending=tuple(p for p in self.state.pending if p not in ids)
        )

    def interrupt(self, pid: str) -> bool:
        self.calls.append(("interrupt", pid))
        return True

    def close(self) -> None:
        self.closed = True


def test_the_sweep_deletes_queued_and_interrupts_running_prompts_of_the_job() -> None:
    """After the end nothing of the job may stay on a server: queued prompts are deleted,
    running ones interrupted, prompts of others left alone; a dead server does not stop it."""
    job = RenderJob(NO_INPUT, "1", "o.####.png")
    book = book_for(job, [], servers=("a", "b", "c"))
    for pid in ("run1", "wait1", "gone1"):
        book.prompt_submitted("a", pid)
    book.prompt_submitted("b", "x")
    book.prompt_submitted("c", "done")
    clients = {
        "a": SweptClient(running=("run1",), pending=("theirs", "wait1")),
        "b": SweptClient(fail=True),
        "c": SweptClient(),
    }
    sweep_prompts(book, [server("a"), server("b"), server("c")], lambda cfg: clients[cfg.name])
    a = clients["a"]
    assert ("delete", ("wait1",)) in a.calls and ("interrupt", "run1") in a.calls
    assert ("interrupt", "wait1") not in a.calls and ("interrupt", "gone1") not in a.calls
    assert [c for c in clients["c"].calls if c[0] != "queue"] == []
    assert all(c.closed for c in clients.values())
    assert book.live_prompts() == {"b": ("x",)}


def one_prompt_on(name: str) -> JobBook:
    """A one-frame job's book whose prompt ``p1`` was sent to server ``name``."""
    book = book_for(RenderJob(NO_INPUT, "1", "o.####.png"), [], servers=(name,))
    book.prompt_submitted(name, "p1")
    return book


def test_the_sweep_waits_for_a_slow_server_within_its_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The end of a job is not reported while a clean-up that will succeed is still under
    way: a server answering in 0.3 s has its queued prompt deleted before the sweep returns."""

    class Slow(SweptClient):
        def queue(self) -> QueueState:
            time.sleep(0.3)
            return super().queue()

    book = one_prompt_on("slow")
    client = Slow(pending=("p1",))
    sweep_prompts(book, [server("slow")], lambda cfg: client, timeout=5.0)
    assert ("delete", ("p1",)) in client.calls
    assert book.live_prompts() == {}
    assert "abandoned" not in caplog.text


def test_a_sweep_abandoned_on_a_silent_server_leaves_only_a_daemon_thread(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A server that does not answer the clean-up must not keep Nuke (or the command) from
    exiting: its sweep thread is abandoned after the timeout, and is a daemon."""
    release = threading.Event()

    class Silent(SweptClient):
        def queue(self) -> QueueState:
            release.wait(10)
            return super().queue()

    book = one_prompt_on("hung")
    try:
        sweep_prompts(book, [server("hung")], lambda cfg: Silent(), timeout=0.2)
        [thread] = [t for t in threading.enumerate() if t.name == "comfy-cluster-hung-sweep"]
        assert thread.daemon
        assert "hung: no answer to the clean-up within 0.2 s; abandoned" in caplog.text
    finally:
        release.set()


# -- tools: the retrying call --------------------------------------------------------------------


@pytest.mark.parametrize("status, tries", [(500, 3), (503, 3), (404, 1)])
def test_server_errors_are_retried_and_client_errors_are_not(status: int, tries: int) -> None:
    calls: list[int] = []

    def fails() -> None:
        calls.append(1)
        raise UnexpectedStatus(f"HTTP {status}", status=status, server="a")

    call = ServerCall(retry_transient(attempts=3, sleep=lambda s: None))
    with pytest.raises(ComfyClusterError):
        call(fails)
    assert len(calls) == tries
    calls.clear()
    with pytest.raises(ComfyClusterError):
        call(fails, cancel=threading.Event())
    assert len(calls) == tries


def test_a_cancel_stops_the_retries() -> None:
    cancel = threading.Event()
    calls: list[int] = []

    def fails() -> None:
        calls.append(1)
        cancel.set()
        raise ServerUnreachable("refused", server="a")

    call = ServerCall(retry_transient(attempts=5, sleep=lambda s: None))
    with pytest.raises(Aborted):
        call(fails, cancel=cancel)
    assert len(calls) == 1


# -- settings and the job's values ---------------------------------------------------------------


@pytest.mark.parametrize(
    "field",
    [
        "stall_timeout",
        "poll_interval",
        "history_interval",
        "probe_interval",
        "input_timeout",
        "input_poll",
    ],
)
def test_settings_refuse_a_zero_time_and_take_a_small_one(field: str) -> None:
    with pytest.raises(ValueError):
        EngineSettings(**{field: 0})
    assert getattr(EngineSettings(**{field: 0.5}), field) == 0.5


def test_settings_take_the_smallest_limits() -> None:
    s = EngineSettings(blocklist_after=1, max_chunk_servers=1, poll_interval=0.2)
    assert (s.blocklist_after, s.max_chunk_servers) == (1, 1)
    assert s.wait_step == pytest.approx(1.0)  # five polls


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(frames="1-3", output_pattern="o.png"),
        dict(frames="1-3", output_pattern="o.####.png", mode="movie"),
        dict(frames="1-3", output_pattern="o.####.png", existing="maybe"),
        dict(frames="1-3", output_pattern="o.####.png", chunk_size=True),
        dict(frames="1-3", output_pattern="o.####.png", chunk_size=2.0),
        dict(frames="1-3", output_pattern="o.####.png", chunk_size=-1),
        dict(
            frames="1-3",
            output_pattern="o.####.png",
            input_pattern="i.####.png",
            mode="batch",
            handles=-1,
        ),
        dict(frames="1-3", output_pattern="o.####.png", handles=1),
        dict(frames="1-3", output_pattern="o.####.png", mode="batch"),
        dict(frames="1-3", output_pattern="o.####.png", input_pattern="in.png"),
    ],
)
def test_a_render_job_refuses_nonsense(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        RenderJob(NO_INPUT, **kwargs)


def test_a_render_job_normalises_what_it_is_given() -> None:
    job = RenderJob(NO_INPUT, "1-3", "o.####.png", servers=["a"], overrides=["1.x=2"])
    assert job.frame_range.frames == (1, 2, 3)
    assert job.servers == ("a",) and job.overrides == ("1.x=2",)
    assert RenderJob(NO_INPUT, [5, 4], "o.####.png").frame_range.frames == (4, 5)
    fr = FrameRange.parse("7-8")
    assert RenderJob(NO_INPUT, fr, "o.####.png").frame_range == fr
    batch = RenderJob(
        NO_INPUT,
        "1-4",
        "o.####.png",
        input_pattern="i.####.png",
        mode="batch",
        chunk_size=1,
        handles=1,
    )
    assert batch.handles == 1 and batch.chunk_size == 1


def test_a_result_raises_for_its_status() -> None:
    done = JobResult(job_id="j", status=JobStatus.DONE)
    assert done.ok and done.raise_for_status() is done
    with pytest.raises(JobCancelledError, match=r"^cancelled$"):
        JobResult(job_id="j", status=JobStatus.CANCELLED).raise_for_status()
    with pytest.raises(JobCancelledError, match="by the user"):
        JobResult(job_id="j", status=JobStatus.CANCELLED, message="by the user").raise_for_status()
    failed = JobResult(job_id="j", status=JobStatus.FAILED, message="boom")
    assert not failed.ok
    with pytest.raises(JobFailedError, match="boom"):
        failed.raise_for_status()
