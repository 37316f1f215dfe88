"""The one retry policy: retry :class:`TransientError` only, with bounded exponential backoff.

Built on tenacity, with its strategies composed as it intends (``stop | stop``, ``wait + wait``).
A :class:`~comfy_cluster.core.errors.PermanentError` (or any non-transient exception) propagates at
once, untouched. Giving up raises :class:`~comfy_cluster.core.errors.RetriesExhausted` holding the
attempt count and the last error (also chained as ``__cause__``).

Usage::

    policy = retry_transient(attempts=4, max_seconds=20.0)
    stats = policy.call(client.system_stats)

    @retry_transient(attempts=3, sleep=fake_sleep, clock=fake_clock)
    def fetch(): ...

A policy is immutable and reusable from any thread; each call builds its own tenacity state.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, TypeVar

import tenacity

from comfy_cluster.core.errors import RetriesExhausted, TransientError

T = TypeVar("T")


class stop_after_elapsed(tenacity.stop.stop_base):
    """Stop once ``max_seconds`` of ``clock`` time have passed (or would, by the next try)."""

    def __init__(self, max_seconds: float, clock: Callable[[], float], start: float) -> None:
        self.max_seconds = max_seconds
        self.clock = clock
        self.start = start

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        elapsed = self.clock() - self.start
        # tenacity >= 8.2 computes the upcoming sleep before asking stop; older versions leave it 0.
        upcoming = getattr(retry_state, "upcoming_sleep", 0.0) or 0.0
        return elapsed + upcoming > self.max_seconds


@dataclass(frozen=True)
class RetryPolicy:
    """Retry transient errors: ``attempts`` tries at most, within ``max_seconds`` of ``clock`` time.

    Waits ``initial * 2**(n-1)`` capped at ``maximum`` plus up to ``jitter`` seconds at random.
    ``sleep`` and ``clock`` are injected so tests never sleep. ``on_retry(attempt, error, delay)``
    is called before each sleep (for logging or events), on the calling thread.
    """

    attempts: int = 3
    max_seconds: float = 30.0
    initial: float = 0.5
    maximum: float = 8.0
    jitter: float = 0.5
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    on_retry: Optional[Callable[[int, BaseException, float], None]] = None

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {self.attempts}")
        if self.max_seconds < 0 or self.initial < 0 or self.maximum < 0 or self.jitter < 0:
            raise ValueError("max_seconds, initial, maximum and jitter must be >= 0")

    def retrying(self) -> tenacity.Retrying:
        """A fresh tenacity controller for one call (its clock starts now)."""
        start = self.clock()

        def give_up(state: tenacity.RetryCallState) -> Any:
            error = state.outcome.exception() if state.outcome else None
            assert error is not None  # only failed attempts reach here
            raise RetriesExhausted(
                f"gave up after {state.attempt_number} attempt(s): {error}",
                attempts=state.attempt_number,
                last_error=error,
                server=getattr(error, "server", None),
            ) from error

        def before_sleep(state: tenacity.RetryCallState) -> None:
            if self.on_retry is not None and state.outcome is not None:
                error = state.outcome.exception()
                if error is not None:
                    delay = state.next_action.sleep if state.next_action else 0.0
                    self.on_retry(state.attempt_number, error, delay)

        return tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(TransientError),
            stop=tenacity.stop_after_attempt(self.attempts)
            | stop_after_elapsed(self.max_seconds, self.clock, start),
            wait=tenacity.wait_exponential(multiplier=self.initial, max=self.maximum)
            + tenacity.wait_random(0, self.jitter),
            sleep=self.sleep,
            retry_error_callback=give_up,
            before_sleep=before_sleep,
            reraise=False,
        )

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call ``fn`` until it succeeds, fails permanently, or the policy gives up.

        Raises the permanent error as is, or RetriesExhausted.
        """
        return self.retrying()(fn, *args, **kwargs)

    def __call__(self, fn: Callable[..., T]) -> Callable[..., T]:
        """Decorator form."""

        def wrapper(*args: Any, **kwargs: Any) -> T:
            return self.call(fn, *args, **kwargs)

        wrapper.__name__ = getattr(fn, "__name__", "wrapper")
        wrapper.__doc__ = fn.__doc__
        return wrapper


def retry_transient(
    attempts: int = 3,
    max_seconds: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
    *,
    clock: Callable[[], float] = time.monotonic,
    initial: float = 0.5,
    maximum: float = 8.0,
    jitter: float = 0.5,
    on_retry: Optional[Callable[[int, BaseException, float], None]] = None,
) -> RetryPolicy:
    """The policy every network call in comfy_cluster retries with (see :class:`RetryPolicy`)."""
    return RetryPolicy(
        attempts=attempts,
        max_seconds=max_seconds,
        initial=initial,
        maximum=maximum,
        jitter=jitter,
        sleep=sleep,
        clock=clock,
        on_retry=on_retry,
    )
