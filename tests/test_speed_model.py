"""The speed model: a cold first result (warm-up, model load) never stands as a server's speed;
its one-off cost is kept apart from the steady time per frame."""

from __future__ import annotations

import pytest

from comfy_cluster.core.balance import SpeedTracker


def test_a_cold_first_result_is_dropped_and_its_cost_kept_apart() -> None:
    tracker = SpeedTracker()
    tracker.record("a", 21.0, frames=1)  # 20 s warm-up + 1 s of work
    assert tracker.seconds_per_frame("a") == 21.0  # nothing better known yet
    tracker.record("a", 2.0, frames=2)
    assert tracker.seconds_per_frame("a") == pytest.approx(1.0)
    assert tracker.one_off_seconds("a") == pytest.approx(20.0)


def test_a_steady_server_is_averaged_as_before() -> None:
    tracker = SpeedTracker(alpha=0.5)
    tracker.record("a", 1.5)
    tracker.record("a", 1.0)  # not twice as fast: no cold start
    assert tracker.seconds_per_frame("a") == pytest.approx(1.25)
    assert tracker.one_off_seconds("a") is None


def test_only_the_first_result_can_be_cold() -> None:
    tracker = SpeedTracker(alpha=0.5)
    for seconds in (1.0, 1.0, 10.0):  # a slowdown later is a slowdown, not a cold start
        tracker.record("a", seconds)
    assert tracker.seconds_per_frame("a") == pytest.approx(5.5)
    tracker.forget("a")
    assert tracker.one_off_seconds("a") is None and tracker.samples("a") == 0


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_old_estimate_is_forgotten_and_measured_again_from_a_cold_start() -> None:
    clock = Clock()
    tracker = SpeedTracker(alpha=0.5, stale_after=600.0, clock=clock)
    tracker.record("a", 1.0)
    tracker.record("a", 1.0)
    clock.now += 599.0
    assert tracker.seconds_per_frame("a") == pytest.approx(1.0)  # still fresh
    clock.now += 2.0
    assert tracker.seconds_per_frame("a") is None  # too old to plan with: unknown again
    assert "a" not in tracker.snapshot()
    tracker.record("a", 12.0)  # the model was evicted meanwhile: a cold first result again
    tracker.record("a", 1.0)
    assert tracker.seconds_per_frame("a") == pytest.approx(1.0)
    assert tracker.one_off_seconds("a") == pytest.approx(11.0)


def test_each_new_result_keeps_an_estimate_fresh() -> None:
    clock = Clock()
    tracker = SpeedTracker(stale_after=600.0, clock=clock)
    for _ in range(5):
        tracker.record("a", 1.0)
        clock.now += 500.0
    assert tracker.seconds_per_frame("a") == pytest.approx(1.0)


def test_initial_speeds_age_like_measured_ones_and_none_means_never() -> None:
    clock = Clock()
    ageing = SpeedTracker(initial={"a": 2.0}, stale_after=10.0, clock=clock)
    keeping = SpeedTracker(initial={"a": 2.0}, stale_after=None, clock=clock)
    clock.now += 11.0
    assert ageing.seconds_per_frame("a") is None
    assert keeping.seconds_per_frame("a") == 2.0
    with pytest.raises(ValueError, match="stale_after"):
        SpeedTracker(stale_after=0)
