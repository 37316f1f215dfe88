"""The engine's small parts on their own: settings, the retrying call, blame, the frame ledger,
the chunk queue, the stuck rule; and the error tree's own rules. Hand-built inputs, no threads,
no servers."""

from __future__ import annotations

import inspect
import threading
from typing import Any, Optional

import pytest

from comfy_cluster.core import errors
from comfy_cluster.core.engine import events
from comfy_cluster.core.engine.attempt import Aborted, Attempt, Outcome, OutcomeKind
from comfy_cluster.core.engine.blame import blame
from comfy_cluster.core.engine.chunk_queue import ChunkQueue
from comfy_cluster.core.engine.ledger import FrameLedger
from comfy_cluster.core.engine.settings import EngineSettings
from comfy_cluster.core.engine.stuck import StuckRule
from comfy_cluster.core.engine.tools import ServerCall
from comfy_cluster.core.errors import (
    AuthenticationFailed,
    ConfigError,
    ExecutionFailed,
    PromptStuck,
    ServerGone,
    ServerHung,
    ServerUnreachable,
    UnexpectedStatus,
    WorkflowError,
)
from comfy_cluster.core.frames import Chunk
from comfy_cluster.core.retry import retry_transient


def attempt(frames: tuple[int, ...] = (1,), attempt_id: int = 1, server: str = "a") -> Attempt:
    return Attempt(attempt_id, Chunk(0, frames, (), ()), server, f"slot-{server}", "test")


@pytest.mark.parametrize(
    "kwargs",
    [{"stall_timeout": 0}, {"input_poll": 0}, {"blocklist_after": 0}, {"max_chunk_servers": 0}],
)
def test_settings_refuse_nonsense(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        EngineSettings(**kwargs)


def test_settings_never_shrink_the_probe_backoff() -> None:
    assert EngineSettings(probe_interval=4.0, probe_interval_max=1.0).probe_interval_max == 4.0


def test_server_call_retries_5xx_and_stops_on_cancel() -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 2:
            raise UnexpectedStatus("boom", status=503, server="a")
        return "ok"

    call = ServerCall(retry_transient(attempts=3, sleep=lambda s: None))
    assert call(flaky) == "ok" and len(calls) == 2
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Aborted):
        call(flaky, cancel=cancel)


@pytest.mark.parametrize(
    "error, kind",
    [
        (Aborted(), OutcomeKind.ABORTED),
        (ServerGone("gone", server="a"), OutcomeKind.SERVER),
        (WorkflowError("bad"), OutcomeKind.JOB),
        (AuthenticationFailed("401", server="a"), OutcomeKind.DEGRADED),
        (ServerHung("hung", server="a"), OutcomeKind.DEGRADED),
        (ConfigError("no model", server="a"), OutcomeKind.DEGRADED),
        (ConfigError("bad input", field="input"), OutcomeKind.JOB),
        (PromptStuck("stuck", server="a"), OutcomeKind.SERVER),
        (ServerUnreachable("refused", server="a"), OutcomeKind.SERVER),
        (OSError("disk full"), OutcomeKind.JOB),
        (RuntimeError("bug"), OutcomeKind.SERVER),
    ],
)
def test_blame_says_whose_fault(error: Exception, kind: OutcomeKind) -> None:
    outcome = blame(error, attempt(), lambda e: pytest.fail("not judged"))
    assert outcome.kind is kind
    assert outcome.down == isinstance(error, ServerGone)


def test_blame_leaves_rejections_and_execution_errors_to_the_judge() -> None:
    judged = Outcome(OutcomeKind.JOB, "same error twice")
    error = ExecutionFailed("boom", node_id="5")
    assert blame(error, attempt(), lambda e: judged if e is error else None) is judged


def test_ledger_claims_once_and_releases_failed_writes() -> None:
    ledger = FrameLedger([1, 2])
    first, second = attempt((1, 2), 1), attempt((1, 2), 2, "b")
    assert ledger.claim(first, 1, stale=False)
    assert not ledger.claim(second, 1, stale=False)
    ledger.release(first, 1)
    assert ledger.claim(second, 1, stale=False)
    assert not ledger.claim(first, 2, stale=True)
    assert not ledger.claim(first, 3, stale=False)  # not ours to render
    assert ledger.record_written(second, 1, "/o/1") == 1
    assert ledger.discarded == 3 and ledger.remaining == 1 and not ledger.complete
    assert ledger.undelivered([1, 2]) == (2,)


def test_queue_hands_failed_chunks_to_other_servers_first() -> None:
    queue = ChunkQueue([Chunk(0, (1,), (), ())], ["a", "b"], clock=lambda: 0.0)
    queue.add_slot("slot-a", "a")
    queue.add_slot("slot-b", "b")

    def first_free(chunk: Any, free: Any, *rest: Any) -> Optional[tuple[str, str]]:
        return free[0], "first free"

    (first,) = queue.dispatch(first_free, eligible=("a", "b"), suspended=(), remaining=1) or ()
    assert first.server == "a"
    queue.take(queue.slot("slot-a"))
    queued = queue.queued(first)
    queued.count_failure("a")
    queue.release(first)
    queue.retry_first(queued)
    (again,) = queue.dispatch(first_free, eligible=("a", "b"), suspended=(), remaining=1) or ()
    assert again.server == "b" and again.attempt_id != first.attempt_id


def test_stuck_limit_follows_measured_speed() -> None:
    class Speeds:
        def __init__(self, spf: dict) -> None:
            self.spf = spf

        def record(self, server: str, seconds: float, frames: int = 1) -> float:
            return seconds

        def seconds_per_frame(self, server: str) -> Optional[float]:
            return self.spf.get(server)

    settings = EngineSettings(stall_timeout=5.0, stuck_factor=4.0, first_prompt_timeout=60.0)
    rule = StuckRule("a", ["a", "b"], Speeds({}), settings, lambda: False)
    assert rule.run_limit(1) == 60.0  # nothing measured yet
    rule = StuckRule("a", ["a", "b"], Speeds({"b": 10.0}), settings, lambda: False)
    assert rule.run_limit(2) == 80.0  # the slowest measured server stands in
    rule = StuckRule("a", ["a"], Speeds({"a": 0.1}), settings, lambda: False)
    assert rule.run_limit(1) == 5.0  # never below stall_timeout
    with pytest.raises(PromptStuck):
        rule.check_running(running_for=6.0, silent_for=6.0, frames=1)


def _classes(module: Any, base: type) -> set[str]:
    return {
        name
        for name, obj in vars(module).items()
        if inspect.isclass(obj) and issubclass(obj, base) and obj.__module__ == module.__name__
    }


def test_the_error_tree_drawing_names_every_exception() -> None:
    doc = errors.__doc__ or ""
    missing = [name for name in _classes(errors, BaseException) if f" {name}" not in doc]
    assert not missing, f"add to the diagram in core/errors.py: {missing}"


def test_exceptions_and_events_never_share_a_name() -> None:
    assert not _classes(errors, BaseException) & _classes(events, events.JobEvent)
