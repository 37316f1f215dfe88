"""The worker slot's small rules on their own: when a prompt counts as stuck (StuckRule), how a
slot waits for input frames the host still writes (InputWaiter), whose fault a failure is
(blame), best-effort cleanup (ignore_errors). Hand-built inputs and fake clocks: no threads, no
servers, no real waiting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from comfy_cluster.core.engine.attempt import Aborted, Attempt, Outcome, OutcomeKind
from comfy_cluster.core.engine.blame import blame, why
from comfy_cluster.core.engine.cleanup import ignore_errors
from comfy_cluster.core.engine.inputs import InputWaiter
from comfy_cluster.core.engine.settings import EngineSettings
from comfy_cluster.core.engine.stuck import StuckRule
from comfy_cluster.core.errors import (
    ComfyClusterError,
    ConfigError,
    ExecutionFailed,
    PromptStuck,
    ServerUnreachable,
    WorkflowRejected,
)
from comfy_cluster.core.frames import Chunk
from comfy_cluster.core.protocol import QueueState

# --- StuckRule -----------------------------------------------------------------------------------


class Speeds:
    def __init__(self, spf: dict[str, float]) -> None:
        self.spf = spf

    def record(self, server: str, seconds: float, frames: int = 1) -> float:
        return seconds

    def seconds_per_frame(self, server: str) -> Optional[float]:
        return self.spf.get(server)


def rule(
    spf: dict[str, float],
    *,
    servers: tuple[str, ...] = ("a", "b", "c"),
    out_of_job: Callable[[], bool] = lambda: False,
    first: Optional[float] = 60.0,
) -> StuckRule:
    settings = EngineSettings(stall_timeout=1.0, stuck_factor=4.0, first_prompt_timeout=first)
    return StuckRule("a", servers, Speeds(spf), settings, out_of_job)


def test_a_server_with_its_own_speed_is_judged_by_it() -> None:
    """Its own measure wins over the others' (a fast server is not given a slow one's limit):
    4 x 2 s x 3 frames."""
    assert rule({"a": 2.0, "b": 10.0}).run_limit(3) == 24.0


def test_a_server_without_a_speed_borrows_the_slowest_measured_one() -> None:
    """A new server may be the slowest: borrowing the fastest's limit would call it stuck."""
    assert rule({"b": 2.0, "c": 10.0}).run_limit(1) == 40.0
    assert rule({"b": 2.0}, servers=("a", "b")).run_limit(2) == 16.0


def test_without_any_speed_the_first_prompt_timeout_is_the_limit() -> None:
    assert rule({}).run_limit(5) == 60.0
    assert rule({}, first=None).run_limit(5) is None


def test_a_prompt_of_no_frames_counts_as_one() -> None:
    assert rule({"a": 2.0}).run_limit(0) == rule({"a": 2.0}).run_limit(1) == 8.0


def test_the_limit_is_never_under_the_stall_timeout() -> None:
    """Item 13: a slow frame under the stall timeout is never stuck, however fast the server
    was measured."""
    settings = EngineSettings(stall_timeout=5.0, stuck_factor=4.0)
    fast = StuckRule("a", ("a",), Speeds({"a": 0.01}), settings, lambda: False)
    assert fast.run_limit(2) == 5.0
    fast.check_running(running_for=4.9, silent_for=4.9, frames=1)
    with pytest.raises(PromptStuck):
        fast.check_running(running_for=5.1, silent_for=5.1, frames=1)


def test_a_running_prompt_is_stuck_only_past_its_limit() -> None:
    r = rule({"a": 2.0})  # 8 s a frame
    r.check_running(running_for=8.0, silent_for=8.0, frames=1)
    r.check_running(running_for=15.0, silent_for=3.0, frames=2)
    with pytest.raises(PromptStuck, match=r"no event for 3\.0 s, running 8\.5 s"):
        r.check_running(running_for=8.5, silent_for=3.0, frames=1)


def test_without_a_limit_a_running_prompt_is_never_stuck() -> None:
    rule({}, first=None).check_running(running_for=1e9, silent_for=1e9, frames=1)


def test_a_queued_prompt_on_a_server_out_of_the_job_is_stuck_even_without_a_limit() -> None:
    q = QueueState(running=("r",), pending=("ours",))
    r = rule({}, first=None, out_of_job=lambda: True)
    with pytest.raises(PromptStuck, match="out of the job"):
        r.check_pending(q, "ours", 0.0, 1)
    rule({}, first=None).check_pending(q, "ours", 1e9, 1)  # no limit: waits


# --- InputWaiter ---------------------------------------------------------------------------------


class Host:
    """A fake clock and the host's hook: each call blocks ``blocks(timeout)`` fake seconds and is
    ready from ``ready_at`` on. The cancel token's ``wait`` advances the same clock."""

    def __init__(
        self,
        ready_at: float = float("inf"),
        blocks: Callable[[float], float] = lambda timeout: timeout,
        cancel_at: float = float("inf"),
    ) -> None:
        self.now = 0.0
        self.ready_at = ready_at
        self.blocks = blocks
        self.cancel_at = cancel_at
        self.asked: list[float] = []
        self.cancel_waits: list[float] = []

    def clock(self) -> float:
        return self.now

    def hook(self, frame: int, timeout: float) -> bool:
        assert len(self.asked) < 50, "the waiter spins"
        self.asked.append(round(timeout, 6))
        self.now += self.blocks(timeout)
        return self.now >= self.ready_at

    # the cancel token
    def wait(self, timeout: float) -> bool:
        self.cancel_waits.append(round(timeout, 6))
        self.now += timeout
        return self.now >= self.cancel_at

    def is_set(self) -> bool:
        return self.now >= self.cancel_at


def waiter(host: Host, timeout: float = 10.0, poll: float = 4.0) -> InputWaiter:
    return InputWaiter(host.hook, clock=host.clock, cancel=host, timeout=timeout, poll=poll)


def test_the_hook_is_asked_in_poll_steps_up_to_the_deadline_then_the_frame_is_named() -> None:
    """Short steps keep cancel responsive; the last step ends at the deadline, not past it."""
    host = Host()
    with pytest.raises(ConfigError, match=r"input frame 7 \(.*in\.0007\.png\) was not ready") as e:
        waiter(host).wait(7, Path("in.0007.png"), lambda: None)
    assert e.value.field == "input"
    assert host.asked == [4.0, 4.0, 2.0]
    assert host.cancel_waits == []  # the hook blocked for its steps: no extra waiting


def test_a_frame_that_becomes_ready_ends_the_wait() -> None:
    host = Host(ready_at=6.0)
    waiter(host).wait(1, Path("in.0001.png"), lambda: None)
    assert host.asked == [4.0, 4.0]


def test_a_hook_that_says_no_at_once_is_not_asked_in_a_tight_loop() -> None:
    """An exporter that stopped answers no at once: the waiter sleeps out the rest of each step
    (on the cancel token) instead of spinning, and still gives up at the deadline."""
    host = Host(blocks=lambda timeout: 0.0)
    with pytest.raises(ConfigError, match="not ready after 10 s"):
        waiter(host).wait(2, Path("in.0002.png"), lambda: None)
    assert host.asked == [4.0, 4.0, 2.0, 0.0]
    assert host.cancel_waits == [4.0, 4.0, 2.0]


def test_a_hook_that_blocks_part_of_its_step_waits_only_the_rest() -> None:
    host = Host(blocks=lambda timeout: timeout - 0.5, ready_at=8.0)
    waiter(host).wait(2, Path("in.0002.png"), lambda: None)
    assert host.cancel_waits == [0.5, 0.5]


def test_cancel_while_waiting_for_an_input_aborts() -> None:
    host = Host(blocks=lambda timeout: 0.0, cancel_at=5.0)
    with pytest.raises(Aborted):
        waiter(host).wait(2, Path("in.0002.png"), lambda: None)
    assert host.asked == [4.0, 4.0]


def test_an_attempt_that_must_stop_stops_waiting_for_its_inputs() -> None:
    """``check`` (the attempt is no longer current: cancel, or the job ended) is looked at
    before every step."""
    host = Host()
    checks: list[float] = []

    def check() -> None:
        checks.append(host.now)
        if host.now >= 4.0:
            raise Aborted()

    with pytest.raises(Aborted):
        waiter(host).wait(2, Path("in.0002.png"), check)
    assert host.asked == [4.0]
    assert checks == [0.0, 4.0]


def test_a_failing_hook_fails_naming_the_frame() -> None:
    def broken(frame: int, timeout: float) -> bool:
        raise RuntimeError("export crashed")

    host = Host()
    w = InputWaiter(broken, clock=host.clock, cancel=host, timeout=10.0, poll=1.0)
    with pytest.raises(ConfigError, match=r"input frame 3 \(.*\) failed: .*export crashed") as e:
        w.wait(3, Path("in.0003.png"), lambda: None)
    assert e.value.field == "input"


# --- blame ---------------------------------------------------------------------------------------


def attempt() -> Attempt:
    return Attempt(1, Chunk(0, (1,), (), ()), "a", "slot-a", "test")


def never_judged(error: Any) -> Outcome:
    raise AssertionError("not for the judge")


@pytest.mark.parametrize(
    "error",
    [
        WorkflowRejected("missing node", server="a", error_type="invalid_prompt"),
        ExecutionFailed("boom", server="a", node_id="2"),
    ],
)
def test_rejections_and_execution_errors_go_to_the_judge(error: Exception) -> None:
    verdict = Outcome(OutcomeKind.DEGRADED, "judged")
    assert blame(error, attempt(), lambda e: verdict if e is error else never_judged(e)) is verdict


def test_blame_keeps_the_reason_and_the_error() -> None:
    """The reason reaches ChunkRetried and the blocklist; a message-less error gives its type."""
    exc = ServerUnreachable("connection refused", server="a")
    outcome = blame(exc, attempt(), never_judged)
    assert outcome.kind is OutcomeKind.SERVER and outcome.error is exc
    assert "connection refused" in outcome.why
    bare = blame(ComfyClusterError(""), attempt(), never_judged)
    assert bare.why == "ComfyClusterError" == why(ComfyClusterError(""))
    config = blame(ConfigError("no model here", server="a"), attempt(), never_judged)
    assert config.kind is OutcomeKind.DEGRADED and "no model here" in config.why
    disk = blame(OSError("disk full"), attempt(), never_judged)
    assert disk.kind is OutcomeKind.JOB and "cannot write output" in disk.why
    bug = blame(KeyError("x"), attempt(), never_judged)
    assert bug.kind is OutcomeKind.SERVER and "internal error" in bug.why


# --- ignore_errors -------------------------------------------------------------------------------


def test_cleanup_runs_the_call_and_swallows_only_ordinary_errors() -> None:
    ran: list[int] = []
    ignore_errors(lambda: ran.append(1))
    assert ran == [1]

    def boom() -> None:
        ran.append(2)
        raise OSError("socket already closed")

    ignore_errors(boom)
    assert ran == [1, 2]
    with pytest.raises(KeyboardInterrupt):
        ignore_errors(lambda: (_ for _ in ()).throw(KeyboardInterrupt()))
