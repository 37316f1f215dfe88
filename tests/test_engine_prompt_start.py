"""When our prompt's start event is lost, its wait in the server's queue is not running time.

The websocket is down for the whole prompt, so the watch only learns the state from ``/queue``
checks after each silence: pending, pending, running, then finished. The prompt started after
it was *last* seen waiting; counting from the first sighting (or from the submission) would call
a slow-to-start prompt stuck and record the queue wait as render time.
"""

from __future__ import annotations

import threading
from typing import Any, Optional

import pytest

from comfy_cluster.core import protocol
from comfy_cluster.core.balance import SpeedTracker
from comfy_cluster.core.engine.prompt_watch import PromptWatch
from comfy_cluster.core.engine.settings import EngineSettings
from comfy_cluster.core.engine.stuck import StuckRule
from comfy_cluster.core.errors import PromptStuck

PID = "p-1"
STALL = 10.0
ENTRY = {
    "status": {"status_str": "success", "completed": True, "messages": []},
    "outputs": {"9": {"images": [{"filename": "f.png", "subfolder": "", "type": "output"}]}},
}


class _Clock:
    """Advanced one second per turn of the wait loop (by its ``check`` callback)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def tick(self) -> None:
        self.now += 1.0


class _Client:
    """Answers ``/queue`` from a script (one state per check), then ``/history``."""

    def __init__(self, clock: _Clock, script: list[str]) -> None:
        self.clock = clock
        self.script = script
        self.checks: list[tuple[float, str]] = []

    def queue(self) -> protocol.QueueState:
        state = self.script.pop(0) if self.script else "done"
        self.checks.append((self.clock(), state))
        if state == "pending":
            return protocol.QueueState(running=("other",), pending=(PID,))
        if state == "running":
            return protocol.QueueState(running=(PID,))
        return protocol.QueueState()

    def history(self, pid: str) -> Optional[dict[str, Any]]:
        return ENTRY if not self.script and self.checks else None


def _watch(clock: _Clock, speed: SpeedTracker, first_prompt_timeout: float) -> PromptWatch:
    settings = EngineSettings(
        stall_timeout=STALL,
        poll_interval=0.001,
        history_interval=1e6,  # only the /queue checks read the server
        first_prompt_timeout=first_prompt_timeout,
    )
    stuck = StuckRule("a", ("a",), speed, settings, out_of_job=lambda: False)
    watch = PromptWatch(
        "a",
        "9",
        settings=settings,
        clock=clock,
        speed=speed,
        stuck=stuck,
        call=lambda fn, what: fn(),
        cancel=threading.Event(),
    )
    watch.expect(PID)
    return watch


def _wait(watch: PromptWatch, client: _Client, clock: _Clock) -> tuple[Any, ...]:
    return watch.wait(client, PID, 1, check=clock.tick, progress=lambda f, n: None)


def test_running_time_counts_from_the_last_time_seen_waiting() -> None:
    clock = _Clock()
    speed = SpeedTracker()
    client = _Client(clock, ["pending", "pending", "running"])
    # Checks at t=11 and 22 (pending), 33 (running), 44 (finished). Started after t=22: at
    # t=33 it has run at most 11 s, under the 15 s limit; from t=11 it would be 22 s: "stuck".
    images = _wait(_watch(clock, speed, first_prompt_timeout=15.0), client, clock)
    assert [state for _, state in client.checks] == ["pending", "pending", "running", "done"]
    assert [image.filename for image in images] == ["f.png"]
    last_pending = client.checks[1][0]
    finished = client.checks[-1][0]
    assert speed.seconds_per_frame("a") == pytest.approx(finished - last_pending)


def test_a_prompt_running_too_long_after_its_queue_wait_is_still_stuck() -> None:
    """The other side of the rule: the limit still holds once the prompt runs."""
    clock = _Clock()
    client = _Client(clock, ["pending", "running", "running"])
    with pytest.raises(PromptStuck, match="stuck"):
        _wait(_watch(clock, SpeedTracker(), first_prompt_timeout=15.0), client, clock)
    # Last seen waiting at t=11; running at t=22 (11 s) is fine, at t=33 (22 s) it is stuck.
    assert [state for _, state in client.checks] == ["pending", "running", "running"]
