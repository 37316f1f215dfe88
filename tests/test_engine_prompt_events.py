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
from collections.abc import Sequence
from typing import Any, Optional

import pytest

from comfy_cluster.core import protocol
from comfy_cluster.core.balance import SpeedTracker
from comfy_cluster.core.engine.prompt_watch import PromptWatch
from comfy_cluster.core.engine.settings import EngineSettings
from comfy_cluster.core.engine.stuck import StuckRule
from comfy_cluster.core.engine.waits import QueuedBehind, QueueWaits
from comfy_cluster.core.errors import ExecutionFailed, Interrupted, ServerSilent

PID = "ours"
OUTPUT = "9"
IMAGE = {"filename": "ours.png", "subfolder": "", "type": "output"}
EMPTY_QUEUE = protocol.QueueState()
ENTRY = {
    "status": {"status_str": "success", "completed": True, "messages": []},
    "outputs": {OUTPUT: {"images": [IMAGE]}},
}


class Script:
    """The clock, and the events the listener delivers: one list per turn of the loop.

    As the server, it answers ``/history`` with our result from ``done_at`` on and ``/queue``
    with ``queue_state``. ``turns_left`` bounds the wait: a watch that never ends fails.
    """

    def __init__(
        self,
        watch_of: Any,
        turns: list[list[protocol.Event]],
        *,
        start: float = 0.0,
        done_at: float = 0.0,
        queue_state: protocol.QueueState = EMPTY_QUEUE,
        queue_states: Sequence[protocol.QueueState] = (),
        history_entry: Optional[dict[str, Any]] = None,
        turns_left: int = 60,
    ) -> None:
        self.now = start
        self.turns = turns
        self.done_at = done_at
        self.queue_state = queue_state
        self.queue_states = list(queue_states)  # one per read, then ``queue_state``
        self.history_entry = history_entry or ENTRY
        self.turns_left = turns_left
        self.history_reads: list[float] = []
        self.queue_reads: list[float] = []
        self.watch: PromptWatch = watch_of(self)

    def __call__(self) -> float:
        return self.now

    def turn(self) -> None:
        """The wait loop's ``check``: one second passes, the next events arrive."""
        self.turns_left -= 1
        if self.turns_left < 0:
            raise AssertionError(f"still waiting at t={self.now}")
        self.now += 1.0
        for event in self.turns.pop(0) if self.turns else ():
            self.watch.on_event(event)

    # the client the wait reads the server through
    def history(self, pid: str) -> Optional[dict[str, Any]]:
        self.history_reads.append(self.now)
        return self.history_entry if self.now >= self.done_at else None

    def queue(self) -> protocol.QueueState:
        self.queue_reads.append(self.now)
        return self.queue_states.pop(0) if self.queue_states else self.queue_state


def watching(
    script: Script,
    speed: Any,
    *,
    stall: float = 60.0,
    history_interval: float = 1e6,
    stuck: Any = None,
    waits: Optional[QueueWaits] = None,
) -> PromptWatch:
    settings = EngineSettings(
        stall_timeout=stall, poll_interval=0.001, history_interval=history_interval
    )
    watch = PromptWatch(
        "a",
        OUTPUT,
        settings=settings,
        clock=script,
        speed=speed,
        stuck=stuck or StuckRule("a", ("a",), speed, settings, out_of_job=lambda: False),
        call=lambda fn, what: fn(),
        cancel=threading.Event(),
        waits=waits,
    )
    watch.expect(PID)
    return watch


def run(
    turns: list[list[protocol.Event]], *, done_at: float = 0.0, progress: Any = None
) -> tuple[Script, tuple[Any, ...], SpeedTracker]:
    speed = SpeedTracker()
    script = Script(lambda s: watching(s, speed), turns, done_at=done_at)
    report = progress.append if progress is not None else lambda *a: None
    images = script.watch.wait(
        script, PID, 1, check=script.turn, progress=lambda f, n: report((f, n))
    )
    return script, images, speed


def executed(pid: str, name: str) -> protocol.Executed:
    image = {**IMAGE, "filename": name}
    return protocol.Executed(prompt_id=pid, node=OUTPUT, output={"images": [image]})


def test_a_prompt_whose_events_all_arrive_is_done_from_them_alone() -> None:
    progress: list[tuple[float, int]] = []
    script, images, speed = run(
        [
            [protocol.ExecutionStart(prompt_id=PID)],  # t=1: started
            [
                protocol.Executing(prompt_id=PID, node="4"),  # t=2
                protocol.ProgressEvent(prompt_id=PID, node="4", value=0, max=0),  # no steps
                protocol.ProgressEvent(prompt_id=PID, node="4", value=1, max=2),
                protocol.ProgressEvent(prompt_id=PID, node="4", value=1, max=1),
            ],
            [protocol.Executing(prompt_id=PID, node=OUTPUT)],  # t=3
            [executed(PID, "ours.png")],  # t=4
            [protocol.Executing(prompt_id=PID, node=None)],  # t=5: done
        ],
        progress=progress,
    )
    assert [image.filename for image in images] == ["ours.png"]
    assert script.history_reads == [] and script.queue_reads == []
    assert speed.seconds_per_frame("a") == pytest.approx(4.0)  # from t=1, not a later node
    assert progress == [(0.5, 1), (1.0, 1)]  # a node without steps reports nothing


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


def test_after_a_reconnect_the_result_comes_from_history_not_from_events_before_the_gap() -> None:
    """Images seen before a drop may belong to a run the gap hid the end of: after the
    reconnect, the end event is confirmed with ``/history`` and its images are the result."""
    script, images, _ = run(
        [
            [protocol.ExecutionStart(prompt_id=PID)],  # t=1
            [executed(PID, "before-the-gap.png")],  # t=2
            [protocol.Disconnected(reason="closed")],  # t=3
            [protocol.Connected(client_id="c")],  # t=4: /history has no result yet
            [protocol.Executing(prompt_id=PID, node=None)],  # t=5: the end, confirmed
        ],
        done_at=5.0,
    )
    assert [image.filename for image in images] == ["ours.png"]
    assert script.history_reads == [4.0, 5.0]


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


# -- the safety nets: /history every interval, /queue after a silence -------------------------


def test_with_every_event_lost_history_is_read_each_interval_from_the_submission() -> None:
    script = Script(lambda s: watching(s, SpeedTracker(), history_interval=3.0), [], done_at=7.0)
    images = script.watch.wait(script, PID, 1, check=script.turn, progress=lambda f, n: None)
    assert [image.filename for image in images] == ["ours.png"]
    assert script.history_reads == [3.0, 6.0, 9.0]
    assert script.queue_reads == []  # no silence longer than the stall limit meanwhile


def test_a_silence_past_the_stall_limit_asks_the_queue_once_it_is_exceeded() -> None:
    """Silent for exactly the limit is not yet past it; one second more is. The prompt is in
    neither list by then: it finished unnoticed, and its result is read from /history."""
    script = Script(lambda s: watching(s, SpeedTracker(), stall=5.0), [], start=100.0)
    images = script.watch.wait(script, PID, 1, check=script.turn, progress=lambda f, n: None)
    assert [image.filename for image in images] == ["ours.png"]
    assert script.queue_reads == [106.0]


# -- a prompt queued behind other work moves to a free server ---------------------------------


class Pace:
    """A server's known seconds per frame (``None``: not measured yet)."""

    def __init__(self, spf: Optional[float]) -> None:
        self.spf = spf

    def record(self, server: str, seconds: float, frames: int = 1) -> float:
        return seconds / frames

    def seconds_per_frame(self, server: str) -> Optional[float]:
        return self.spf


BEHIND_TWO = protocol.QueueState(running=("x",), pending=("y", PID))


def queued(
    spf: Optional[float],
    frames: int,
    *,
    state: protocol.QueueState = BEHIND_TWO,
    free: bool = True,
    turns: int = 30,
) -> tuple[Script, list[bool], Optional[BaseException]]:
    """Wait for a prompt of ``frames`` submitted at t=100 that never starts; another server
    is ``free``. Returns the script, the ``move(commit)`` calls and what the wait raised."""
    calls: list[bool] = []

    def move(commit: bool) -> bool:
        calls.append(commit)
        return free

    script = Script(
        lambda s: watching(s, Pace(spf)),
        [],
        start=100.0,
        done_at=float("inf"),
        queue_state=state,
        turns_left=turns,
    )
    try:
        script.watch.wait(
            script, PID, frames, check=script.turn, progress=lambda f, n: None, move=move
        )
    except BaseException as exc:
        return script, calls, exc
    return script, calls, None


@pytest.mark.parametrize(
    ("spf", "frames", "moved_at"),
    [
        (2.0, 1, 104.0),  # expected 2 s: moved at twice that, looked at every second
        (1.0, 2, 104.0),  # two frames at 1 s: the same 2 s
        (3.0, 1, 107.0),  # looked at every 1.5 s: at 101, 103, 105 and 107 (past 6 s)
        (5.0, 1, 110.0),  # every 2.5 s: at 101, 104, 107, then 110 (exactly 10 s)
    ],
)
def test_a_prompt_queued_twice_its_expected_time_moves_when_a_server_is_free(
    spf: float, frames: int, moved_at: float
) -> None:
    script, calls, raised = queued(spf, frames)
    assert isinstance(raised, QueuedBehind), raised
    assert script.now == moved_at
    assert "behind 2 prompt(s)" in str(raised)
    assert calls == [False, True]  # asked, confirmed on the server, then committed
    assert script.queue_reads == [moved_at]


def test_a_prompt_that_started_meanwhile_is_not_moved() -> None:
    running = protocol.QueueState(running=(PID,), pending=("y",))
    _, calls, raised = queued(2.0, 1, state=running, turns=8)
    assert not isinstance(raised, QueuedBehind), raised
    assert calls and not any(calls)  # asked, never committed


def test_no_move_without_a_free_server_or_a_known_pace() -> None:
    for spf, free in ((2.0, False), (None, True)):
        script, calls, raised = queued(spf, 1, free=free, turns=12)
        assert not isinstance(raised, QueuedBehind), (spf, free)
        assert script.queue_reads == []  # the server is not even asked
        assert True not in calls


def test_a_slot_that_cannot_move_its_prompt_just_waits_for_it() -> None:
    """``move`` ``None``: the prompt waits in the queue past twice its time and still ends."""
    script = Script(
        lambda s: watching(s, Pace(1.0)),
        [[], [], [], [], [], [executed(PID, "ours.png")], [protocol.Executing(prompt_id=PID)]],
    )
    images = script.watch.wait(script, PID, 1, check=script.turn, progress=lambda f, n: None)
    assert [image.filename for image in images] == ["ours.png"]


# -- failures, the stuck rules' inputs, the queue-wait record ---------------------------------


@pytest.mark.parametrize(
    ("event", "error"),
    [
        (
            protocol.ExecutionErrorEvent(prompt_id=PID, node_id="4", exception_message="OOM"),
            ExecutionFailed,
        ),
        (protocol.ExecutionInterrupted(prompt_id=PID), Interrupted),
    ],
)
def test_an_error_event_of_our_prompt_ends_the_wait_with_its_error(
    event: protocol.Event, error: type
) -> None:
    with pytest.raises(error):
        run([[protocol.ExecutionStart(prompt_id=PID)], [event]])


def test_a_failed_prompt_found_in_history_raises_its_failure() -> None:
    failed = {"status": {"status_str": "error", "completed": False, "messages": []}, "outputs": {}}
    script = Script(
        lambda s: watching(s, SpeedTracker(), history_interval=2.0), [], history_entry=failed
    )
    with pytest.raises(ExecutionFailed, match="status 'error'"):
        script.watch.wait(script, PID, 1, check=script.turn, progress=lambda f, n: None)


class StuckInputs:
    """Records what the stuck rules are asked (never calls anything stuck)."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, float, float]] = []

    def check_running(self, running_for: float, silent_for: float, frames: int) -> None:
        self.asked.append(("running", running_for, silent_for))

    def check_pending(self, q: Any, pid: str, waited: float, frames: int) -> None:
        self.asked.append(("pending", waited, 0.0))


def test_the_stuck_rules_are_told_how_long_the_prompt_waited_and_ran() -> None:
    """No event at all (from t=100): the queue is asked after each 5 s silence. Waiting at
    t=106 and 112, running at 118 (it started after 112), gone at 124: its result is read."""
    stuck = StuckInputs()
    waiting = protocol.QueueState(running=("x",), pending=(PID,))
    running = protocol.QueueState(running=(PID,))
    script = Script(
        lambda s: watching(s, SpeedTracker(), stall=5.0, stuck=stuck),
        [],
        start=100.0,
        queue_states=[waiting, waiting, running],
    )
    images = script.watch.wait(script, PID, 1, check=script.turn, progress=lambda f, n: None)
    assert [image.filename for image in images] == ["ours.png"]
    assert script.queue_reads == [106.0, 112.0, 118.0, 124.0]
    assert stuck.asked == [("pending", 0.0, 0.0), ("pending", 6.0, 0.0), ("running", 6.0, 18.0)]


def test_a_finished_prompt_is_recorded_as_the_servers_last_end() -> None:
    """The next prompt's wait behind it is our own queue, not other clients' work."""
    waits = QueueWaits()
    script = Script(
        lambda s: watching(s, SpeedTracker(), waits=waits),
        [[executed(PID, "ours.png")], [protocol.Executing(prompt_id=PID)]],
    )
    script.watch.wait(script, PID, 1, check=script.turn, progress=lambda f, n: None)
    assert waits.foreign_wait("a", submitted=1.0, started=2.0) == 0.0  # ended at t=2


class SlowQueue(Script):
    """Each ``/queue`` read takes a second of the clock; the prompt never leaves ``running``."""

    def queue(self) -> protocol.QueueState:
        self.now += 1.0
        return protocol.QueueState(running=(PID,))


def test_an_interrupted_prompt_still_running_a_stall_limit_later_is_timed() -> None:
    script = SlowQueue(lambda s: watching(s, SpeedTracker(), stall=5.0), [], start=100.0)
    assert script.watch.still_running(script, PID) == 5.0  # from the interrupt, not the epoch
    stopped = Script(lambda s: watching(s, SpeedTracker(), stall=5.0), [], start=100.0)
    assert stopped.watch.still_running(stopped, PID) is None


class SilentHistory(Script):
    """``/history`` does not answer in time; ``/queue`` shows our prompt waiting."""

    def history(self, pid: str) -> Optional[dict[str, Any]]:
        self.history_reads.append(self.now)
        raise ServerSilent("GET /history: no answer in 10 s", server="a")


def test_a_history_read_that_times_out_gives_the_server_up_only_past_the_stall_limit() -> None:
    """Silent for exactly the limit (t=105) is not yet past it; at the next read it is."""
    waiting = protocol.QueueState(running=("x",), pending=(PID,))
    script = SilentHistory(
        lambda s: watching(s, SpeedTracker(), stall=5.0, history_interval=5.0, stuck=StuckInputs()),
        [],
        start=100.0,
        queue_state=waiting,
    )
    with pytest.raises(ServerSilent, match="stopped answering"):
        script.watch.wait(script, PID, 1, check=script.turn, progress=lambda f, n: None)
    assert script.history_reads == [105.0, 110.0]
