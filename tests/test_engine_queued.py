"""Queued is not stuck: our prompt waiting behind other clients' prompts is never called stuck
(the stuck and stall rules start when it starts running), and the wait counts in the estimate."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

from workflows import invert_workflow

from comfy_cluster.core.engine import events as ev
from comfy_cluster.core.engine.job import RenderJob
from comfy_cluster.core.engine.scheduler import Scheduler
from comfy_cluster.core.engine.settings import EngineSettings
from comfy_cluster.core.engine.stuck import StuckRule
from comfy_cluster.core.engine.waits import QueueWaits
from comfy_cluster.core.server import ServerConfig
from comfy_cluster.core.transfer import frame_path
from comfy_cluster.sim.harness import make_test_image, start_sims, stop_all
from comfy_cluster.sim.options import SimOptions


class Speeds:
    def __init__(self, spf: float) -> None:
        self.spf = spf

    def record(self, server: str, seconds: float, frames: int = 1) -> float:
        return self.spf

    def seconds_per_frame(self, server: str) -> float:
        return self.spf


def test_a_long_wait_in_the_queue_is_not_stuck() -> None:
    rule = StuckRule("a", ["a"], Speeds(0.1), EngineSettings(stall_timeout=0.2), lambda: False)
    q = SimpleNamespace(running=["foreign"], pending=["other", "ours"])
    rule.check_pending(q, "ours", waited=1000.0, frames=1)  # no PromptStuck


def test_the_wait_behind_other_clients_is_told_from_our_own() -> None:
    waits = QueueWaits()
    assert waits.foreign_wait("a", submitted=0.0, started=2.0) == 2.0  # nothing of ours ran
    waits.ended("a", 5.0)
    assert waits.foreign_wait("a", submitted=4.0, started=5.0) == 0.0  # behind our own prompt
    assert waits.foreign_wait("a", submitted=4.0, started=7.0) == 2.0  # then 2 s of others'
    assert waits.foreign_wait("a", submitted=4.0, started=None) == 0.0


def test_queued_behind_other_clients_without_a_stuck_call(tmp_path: Path) -> None:
    sims = start_sims(
        2,
        [
            SimOptions(name="own", node_seconds=0.02),
            SimOptions(name="shared", node_seconds=0.02, foreign_load=0.6, foreign_seconds=2.0),
        ],
    )
    lock = threading.Lock()
    said: list[str] = []
    written: list[int] = []

    def on_event(event: ev.JobEvent) -> None:
        text = " ".join(str(v) for v in vars(event).values() if isinstance(v, str))
        with lock:
            if "stuck" in text.lower():
                said.append(f"{type(event).__name__}: {text}")
            if isinstance(event, ev.FrameWritten):
                written.append(event.frame)

    pattern = str(tmp_path / "in" / "in.####.png")
    for f in range(1, 41):
        make_test_image(frame_path(pattern, f), (8, 8), (f, 2 * f, 100))
    servers = [
        ServerConfig(name=s.options.name, host="127.0.0.1", port=s.port, max_in_flight=2)
        for s in sims
    ]
    try:
        # A stall limit far below the foreign prompts' 2 s (the old queued rule called it stuck),
        # yet 8x our own prompt's time, so a loaded machine does not make it flaky.
        with Scheduler(servers, stall_timeout=0.5, history_interval=0.5) as scheduler:
            job = RenderJob(
                invert_workflow("q"),
                "1-40",
                str(tmp_path / "out" / "o.####.png"),
                input_pattern=pattern,
            )
            result = scheduler.run(job, on_event)
        assert result.ok, result.message
        assert sorted(written) == list(range(1, 41))
        assert said == []
    finally:
        stop_all(sims)


def test_work_queued_behind_others_moves_to_a_free_server() -> None:
    from test_events import make_state

    from comfy_cluster.core.engine.attempt import Outcome, OutcomeKind

    state, _ = make_state(frames="1-2", servers=("a", "b"))
    first = state.next_attempt("slot-a", 0.0)
    second = state.next_attempt("slot-b", 0.0)
    assert first and second and first.server == "a"
    assert not state.pull_back(first, False)  # b is busy: nowhere better to go
    state.frame_written(second, second.chunk.frames[0], "/out")
    state.finish_attempt(second, Outcome.ok())
    assert state.pull_back(first, True)  # b is free and nothing waits: move
    state.finish_attempt(first, Outcome(OutcomeKind.ABORTED))
    assert state.next_attempt("slot-a", 0.0) is False  # the chunk avoids a now
    moved = state.next_attempt("slot-b", 0.0)
    assert moved and moved.chunk.index == first.chunk.index and moved.server == "b"
    assert state.retries == 0
