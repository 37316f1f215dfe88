"""How a worker slot's watch reads its prompt from websocket events (``prompt_watch.py``).

A fake clock moves one second per turn of the wait loop, and each turn delivers the next
scripted event, as the listener thread would. The contract pinned here:

- a prompt whose events all arrive is done from them alone: no ``/history`` or ``/queue``
  read, the images of the output node's ``executed`` event, and its render time counted from
  its *first* start event;
- events of another prompt on the same socket change nothing;
- a dropped websocket is known at once (a refused connection then means the server is gone)
  and the server is asked at once whether it is alive; a reconnect re-reads the prompt's
  result at once instead of waiting for the safety net.
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

PID = "ours"
OUTPUT = "9"
IMAGE = {"filename": "ours.png", "subfolder": "", "type": "output"}
ENTRY = {
    "status": {"status_str": "success", "completed": True, "messages": []},
    "outputs": {OUTPUT: {"images": [IMAGE]}},
}


class Script:
    """The clock, and the events the listener delivers: one list per turn of the loop."""

    def __init__(self, watch_of: Any, turns: list[list[protocol.Event]]) -> None:
        self.now = 0.0
        self.turns = turns
        self.history_reads: list[float] = []
        self.queue_reads: list[float] = []
        self.watch: PromptWatch = watch_of(self)

    def __call__(self) -> float:
        return self.now

    def turn(self) -> None:
        """The wait loop's ``check``: one second passes, the next events arrive."""
        self.now += 1.0
        for event in self.turns.pop(0) if self.turns else ():
            self.watch.on_event(event)

    # the client the wait reads the server through
    def history(self, pid: str) -> Optional[dict[str, Any]]:
        self.history_reads.append(self.now)
        return ENTRY

    def queue(self) -> protocol.QueueState:
        self.queue_reads.append(self.now)
        return protocol.QueueState()


def watching(script: Script, speed: SpeedTracker) -> PromptWatch:
    settings = EngineSettings(stall_timeout=60.0, poll_interval=0.001, history_interval=1e6)
    watch = PromptWatch(
        "a",
        OUTPUT,
        settings=settings,
        clock=script,
        speed=speed,
        stuck=StuckRule("a", ("a",), speed, settings, out_of_job=lambda: False),
        call=lambda fn, what: fn(),
        cancel=threading.Event(),
    )
    watch.expect(PID)
    return watch


def run(turns: list[list[protocol.Event]]) -> tuple[Script, tuple[Any, ...], SpeedTracker]:
    speed = SpeedTracker()
    script = Script(lambda s: watching(s, speed), turns)
    images = script.watch.wait(script, PID, 1, check=script.turn, progress=lambda f, n: None)
    return script, images, speed


def executed(pid: str, name: str) -> protocol.Executed:
    image = {**IMAGE, "filename": name}
    return protocol.Executed(prompt_id=pid, node=OUTPUT, output={"images": [image]})


def test_a_prompt_whose_events_all_arrive_is_done_from_them_alone() -> None:
    script, images, speed = run(
        [
            [protocol.ExecutionStart(prompt_id=PID)],  # t=1: started
            [protocol.Executing(prompt_id=PID, node="4")],  # t=2
            [protocol.Executing(prompt_id=PID, node=OUTPUT)],  # t=3
            [executed(PID, "ours.png")],  # t=4
            [protocol.Executing(prompt_id=PID, node=None)],  # t=5: done
        ]
    )
    assert [image.filename for image in images] == ["ours.png"]
    assert script.history_reads == [] and script.queue_reads == []
    assert speed.seconds_per_frame("a") == pytest.approx(4.0)  # from t=1, not a later node


def test_a_prompt_that_reports_its_first_node_before_its_start_counts_from_that_node() -> None:
    script, _, speed = run(
        [
            [protocol.Executing(prompt_id=PID, node="4")],  # t=1: the start event was lost
            [protocol.ExecutionStart(prompt_id=PID)],  # t=2, late: not a new start
            [executed(PID, "ours.png")],  # t=3
            [protocol.Executing(prompt_id=PID, node=None)],  # t=4
        ]
    )
    assert speed.seconds_per_frame("a") == pytest.approx(3.0)
    assert script.history_reads == []


def test_another_prompts_events_on_the_socket_change_nothing() -> None:
    script, images, speed = run(
        [
            [protocol.ExecutionStart(prompt_id="theirs")],  # t=1: not ours
            [protocol.Executing(prompt_id="theirs", node=OUTPUT), executed("theirs", "x.png")],
            [protocol.Executing(prompt_id="theirs", node=None)],  # t=3: their end, not ours
            [protocol.ExecutionStart(prompt_id=PID)],  # t=4: ours starts
            [executed(PID, "ours.png")],  # t=5
            [protocol.Executing(prompt_id=PID, node=None)],  # t=6
        ]
    )
    assert [image.filename for image in images] == ["ours.png"]
    assert speed.seconds_per_frame("a") == pytest.approx(2.0)  # from our start at t=4
    assert script.history_reads == []


def test_a_dropped_websocket_is_known_at_once_and_forgotten_on_reconnect() -> None:
    """With no listener flag to ask, the watch's own record decides: a refused connection
    while the socket is down means the server is gone (no retries)."""
    script = Script(lambda s: watching(s, SpeedTracker()), [])
    watch = script.watch
    assert not watch.ws_lost()
    watch.on_event(protocol.Disconnected(reason="closed"))
    assert watch.ws_lost()
    watch.on_event(protocol.Connected(client_id="c"))
    assert not watch.ws_lost()


def test_a_reconnect_reads_the_result_at_once() -> None:
    """The prompt finished while the socket was down: its end events are lost. The reconnect
    must re-read ``/history`` right away, not after the safety net's interval or a stall."""
    script, images, _ = run(
        [
            [protocol.ExecutionStart(prompt_id=PID)],  # t=1
            [protocol.Disconnected(reason="closed")],  # t=2: the prompt ends unseen meanwhile
            [],
            [protocol.Connected(client_id="c")],  # t=4
        ]
    )
    assert [image.filename for image in images] == ["ours.png"]
    assert script.queue_reads and script.queue_reads[0] <= 3.0  # is it alive? asked at the drop
    assert script.history_reads and script.history_reads[0] <= 5.0, script.history_reads
