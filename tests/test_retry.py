"""core/retry.py: only TransientError is retried; backoff is bounded; giving up is typed."""

from __future__ import annotations

import pytest

from comfy_cluster.core.errors import (
    ComfyClusterError,
    ProtocolError,
    RetriesExhausted,
    ServerTimeout,
    ServerUnreachable,
    TransientError,
    WorkflowRejected,
)
from comfy_cluster.core.retry import RetryPolicy, retry_transient


class FakeTime:
    """An injected clock whose sleep advances it: no test ever really sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Flaky:
    """Fails with the given errors in turn, then returns ``"ok"``."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def policy(t: FakeTime, **kw: object) -> RetryPolicy:
    kw.setdefault("attempts", 4)
    kw.setdefault("max_seconds", 60.0)
    return retry_transient(sleep=t.sleep, clock=t.clock, **kw)  # type: ignore[arg-type]


def test_transient_errors_are_retried_until_success() -> None:
    t = FakeTime()
    fn = Flaky(ServerUnreachable("down", server="r1"), ServerTimeout("slow", server="r1"))
    assert policy(t).call(fn) == "ok"
    assert fn.calls == 3 and len(t.sleeps) == 2


@pytest.mark.parametrize(
    "error",
    [
        WorkflowRejected("bad", server="r1"),
        ProtocolError("garbage"),
        ValueError("a bug"),
        KeyError("x"),
    ],
)
def test_permanent_and_foreign_errors_are_never_retried(error: BaseException) -> None:
    t = FakeTime()
    fn = Flaky(error)
    with pytest.raises(type(error)) as info:
        policy(t).call(fn)
    assert info.value is error  # untouched, not wrapped
    assert fn.calls == 1 and t.sleeps == []


def test_giving_up_raises_retries_exhausted_with_attempts_and_last_cause() -> None:
    t = FakeTime()
    errors = [ServerUnreachable(f"down {i}", server="r2") for i in range(10)]
    fn = Flaky(*errors)
    with pytest.raises(RetriesExhausted) as info:
        policy(t, attempts=3).call(fn)
    exc = info.value
    assert exc.attempts == 3 and fn.calls == 3
    assert exc.last_error is errors[2] and exc.__cause__ is errors[2]
    assert exc.server == "r2" and isinstance(exc, TransientError)
    assert "3 attempt" in str(exc)


def test_backoff_is_exponential_with_bounded_jitter() -> None:
    t = FakeTime()
    fn = Flaky(*[ServerTimeout("t") for _ in range(5)])
    policy(t, attempts=6, initial=1.0, maximum=5.0, jitter=0.5).call(fn)
    assert len(t.sleeps) == 5
    for sleep, base in zip(t.sleeps, [1.0, 2.0, 4.0, 5.0, 5.0]):
        assert base <= sleep <= base + 0.5


def test_total_time_is_bounded() -> None:
    t = FakeTime()
    fn = Flaky(*[ServerUnreachable("x") for _ in range(50)])
    with pytest.raises(RetriesExhausted) as info:
        policy(t, attempts=50, max_seconds=10.0, initial=1.0, maximum=4.0, jitter=0.0).call(fn)
    assert t.now - 100.0 <= 10.0
    assert 2 <= info.value.attempts < 50


def test_decorator_form_and_on_retry_hook() -> None:
    t = FakeTime()
    seen: list[tuple[int, str, float]] = []

    @policy(t, on_retry=lambda n, e, d: seen.append((n, type(e).__name__, d)))
    def fetch() -> str:
        return fn()

    fn = Flaky(ServerUnreachable("x"))
    assert fetch() == "ok"
    assert [(n, k) for n, k, _ in seen] == [(1, "ServerUnreachable")]
    assert seen[0][2] == t.sleeps[0]


def test_policy_is_reusable_and_validates_arguments() -> None:
    t = FakeTime()
    pol = policy(t, attempts=2)
    for _ in range(3):
        with pytest.raises(RetriesExhausted):
            pol.call(Flaky(ServerTimeout("a"), ServerTimeout("b")))
    assert pol.call(Flaky(ServerTimeout("a"))) == "ok"
    with pytest.raises(ValueError):
        retry_transient(attempts=0)
    with pytest.raises(ValueError):
        retry_transient(max_seconds=-1)


def test_retries_exhausted_is_in_the_error_tree() -> None:
    assert issubclass(RetriesExhausted, ComfyClusterError)
