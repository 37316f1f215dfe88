"""Events and the job book's rules, without threads or servers."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Optional

import pytest

from comfy_cluster.core.engine import events as ev
from comfy_cluster.core.engine.attempt import Outcome, OutcomeKind
from comfy_cluster.core.engine.book import JobBook
from comfy_cluster.core.engine.job import JobStatus, RenderJob
from comfy_cluster.core.engine.settings import EngineSettings
from comfy_cluster.core.errors import ExecutionFailed, WorkflowRejected
from comfy_cluster.core.frames import FixedChunker

WORKFLOW = {"1": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}}}


def test_events_are_frozen_and_carry_progress() -> None:
    event = ev.FrameWritten(
        job_id="j", progress=0.5, eta_seconds=3.0, frame=7, path="p", server="a"
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.frame = 8  # type: ignore[misc]
    assert isinstance(event, ev.JobEvent) and event.progress == 0.5


def test_sink_serialises_and_swallows_callback_errors() -> None:
    calls: list[Any] = []
    inside = threading.Lock()

    def callback(event: ev.JobEvent) -> None:
        assert inside.acquire(blocking=False), "called concurrently"
        try:
            calls.append(event)
            if len(calls) == 3:
                raise RuntimeError("ui bug")
        finally:
            inside.release()

    sink = ev.EventSink(callback)
    threads = [
        threading.Thread(
            target=lambda: [sink.emit(ev.JobCancelled("j", 0.0, None)) for _ in range(50)]
        )
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 200
    ev.EventSink(None).emit(ev.JobCancelled("j", 0.0, None))  # no callback: a no-op


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_state(
    frames: str = "1-6", servers: tuple = ("a", "b", "c"), **kw: Any
) -> tuple[JobBook, list]:
    job = RenderJob(WORKFLOW, frames, "o.####.png")
    got: list[Any] = []

    def chooser(
        chunk: Any, free: Any, in_flight: Any, remaining: int, able: Any
    ) -> Optional[tuple]:
        return free[0], f"{free[0]}: first free"

    state = JobBook(
        job,
        FixedChunker(1).split(job.frame_range),
        servers,
        frames_to_render=job.frame_range.frames,
        chooser=chooser,
        sink=ev.EventSink(got.append),
        clock=Clock(),
        **kw,
    )
    for s in servers:
        state.add_slot(f"slot-{s}", s)
    return state, got


def test_ledger_writes_each_frame_once() -> None:
    state, got = make_state()
    first = state.next_attempt("slot-a", 0.0)
    second = state.next_attempt("slot-b", 0.0)
    assert first and second and first.server == "a" and second.server == "b"
    frame = first.chunk.frames[0]
    assert state.claim_frame(first, frame)
    assert not state.claim_frame(second, frame)  # being written by another attempt
    state.frame_written(first, frame, "/out/1")
    assert not state.claim_frame(second, frame)  # already delivered: discarded
    state.flush()
    assert [e.frame for e in got if isinstance(e, ev.FrameWritten)] == [frame]
    assert state.discarded == 2


def test_failed_chunk_moves_to_another_server_and_blocklists_repeat_offenders() -> None:
    state, got = make_state(settings=EngineSettings(blocklist_after=2))
    attempt = state.next_attempt("slot-a", 0.0)
    assert attempt
    state.finish_attempt(attempt, Outcome(OutcomeKind.SERVER, "boom"))
    # The same chunk is not offered to "a" again while others may take it.
    nxt = state.next_attempt("slot-a", 0.0)
    assert nxt and nxt.chunk.index != attempt.chunk.index
    state.finish_attempt(nxt, Outcome(OutcomeKind.SERVER, "boom again"))
    assert "a" in state.blocklist
    assert state.next_attempt("slot-a", 0.0) is None
    retried = [e for e in got if isinstance(e, ev.ChunkRetried)]
    assert [e.why for e in retried] == ["boom", "boom again"]
    assert [e.server for e in got if isinstance(e, ev.ServerBlocklisted)] == ["a"]


def test_chunk_failing_on_three_servers_fails_the_job() -> None:
    state, _ = make_state(frames="1")
    for slot in ("slot-a", "slot-b", "slot-c"):
        attempt = state.next_attempt(slot, 0.0)
        assert attempt, slot
        state.finish_attempt(attempt, Outcome(OutcomeKind.SERVER, f"{slot} failed"))
    end = state.end()
    assert end is not None and end.status is JobStatus.FAILED and "3 servers" in end.message


def test_rejection_by_every_server_is_the_jobs_fault() -> None:
    state, _ = make_state(servers=("a", "b"))
    missing = WorkflowRejected(
        "Cannot execute because node X does not exist.", error_type="invalid_prompt"
    )
    assert state.judge("a", missing).kind is OutcomeKind.DEGRADED
    assert state.judge("b", missing).kind is OutcomeKind.JOB
    # Once a server accepted the workflow, a rejection is that server's problem even when
    # every other eligible server rejected too: "a" ran a prompt of this job, then rejected
    # one (a node uninstalled mid-job); "b" rejecting now is not proof the workflow is bad.
    state2, _ = make_state(servers=("a", "b"))
    state2.mark_validated("a")
    assert state2.judge("a", missing).kind is OutcomeKind.DEGRADED
    assert state2.judge("b", missing).kind is OutcomeKind.DEGRADED
    structural = WorkflowRejected("Prompt has no outputs", error_type="prompt_no_outputs")
    assert state2.judge("b", structural).kind is OutcomeKind.JOB


def test_same_execution_error_on_two_servers_is_the_jobs_fault() -> None:
    state, _ = make_state()

    def err(kind: str) -> ExecutionFailed:
        return ExecutionFailed("boom", node_id="5", exception_type=kind)

    assert state.judge("a", err("OOM")).kind is OutcomeKind.SERVER
    assert state.judge("b", err("ValueError")).kind is OutcomeKind.SERVER
    outcome = state.judge("c", err("OOM"))
    assert outcome.kind is OutcomeKind.JOB and outcome.node_id == "5"


def test_progress_counts_running_fraction_and_eta() -> None:
    state, _ = make_state(frames="1-4", servers=("a",))
    attempt = state.next_attempt("slot-a", 0.0)
    assert attempt
    state.set_fraction(attempt, 0.5)
    progress, _eta = state.progress()
    assert progress == pytest.approx(0.125)
    state.claim_frame(attempt, 1)
    state.frame_written(attempt, 1, "/o/1")
    assert state.progress()[0] == pytest.approx(0.25)
