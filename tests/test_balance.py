"""core/balance.py: each strategy chooses as documented, from hand-built snapshots."""

from __future__ import annotations

import threading

import pytest

from comfy_cluster.core.balance import (
    STRATEGIES,
    BalanceContext,
    Choice,
    FastestCompletion,
    LeastLoaded,
    Priority,
    RoundRobin,
    SpeedTracker,
    make_strategy,
    why_none,
)
from comfy_cluster.core.errors import ConfigError
from comfy_cluster.core.health import ServerState, ServerStatus

R, B, OFF, D, X = (
    ServerState.READY,
    ServerState.BUSY,
    ServerState.OFFLINE,
    ServerState.DEGRADED,
    ServerState.DISABLED,
)


def st(name: str, state: ServerState = R, running: int = 0, pending: int = 0) -> ServerStatus:
    return ServerStatus(name, f"http://{name}:8188", state, running, pending)


CTX = BalanceContext()


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_all_offline_gives_none(name: str) -> None:
    servers = [st("a", OFF), st("b", D), st("c", X)]
    assert make_strategy(name).choose(servers, CTX) is None
    assert make_strategy(name).choose([], CTX) is None
    assert "a offline" in why_none(servers, CTX)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_ties_break_by_name_whatever_the_input_order(name: str) -> None:
    servers = [st("render3"), st("render1"), st("render2")]
    choice = make_strategy(name).choose(servers, CTX)
    assert choice is not None and choice.name == "render1"
    assert choice.reason.startswith("render1: ")


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_pin_and_allow_list(name: str) -> None:
    servers = [st("a"), st("b", B, 1), st("c", OFF)]
    strategy = make_strategy(name)
    assert strategy.choose(servers, BalanceContext(pinned="b")).name == "b"  # type: ignore[union-attr]
    assert strategy.choose(servers, BalanceContext(pinned="c")) is None
    assert strategy.choose(servers, BalanceContext(allow=frozenset({"b", "c"}))).name == "b"  # type: ignore[union-attr]
    assert strategy.choose(servers, BalanceContext(allow=frozenset({"c"}))) is None
    assert why_none(servers, BalanceContext(pinned="c")) == "pinned server c is offline"
    assert why_none(servers, BalanceContext(pinned="zz")) == "pinned server zz is not configured"
    assert "c offline" in why_none(servers, BalanceContext(allow=frozenset({"c"})))


def test_round_robin_cycles_through_usable_servers_by_name() -> None:
    rr = RoundRobin()
    servers = [st("c"), st("a", B, 3), st("b"), st("d", OFF)]
    picks = [rr.choose(servers, CTX).name for _ in range(5)]  # type: ignore[union-attr]
    assert picks == ["a", "b", "c", "a", "b"]
    # a server disappearing does not break the cycle
    assert rr.choose([st("a"), st("c")], CTX).name == "c"  # type: ignore[union-attr]
    assert rr.choose([st("a"), st("c")], CTX).name == "a"  # type: ignore[union-attr]


def test_round_robin_is_thread_safe() -> None:
    rr = RoundRobin()
    servers = [st(f"s{i}") for i in range(4)]
    picks: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(100):
            name = rr.choose(servers, CTX).name  # type: ignore[union-attr]
            with lock:
                picks.append(name)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(picks.count(f"s{i}") for i in range(4)) == [100, 100, 100, 100]


def test_least_loaded_counts_server_queue_and_our_in_flight() -> None:
    servers = [st("a", B, 1, 2), st("b", B, 1), st("c")]
    assert LeastLoaded().choose(servers, CTX) == Choice("c", "c: least loaded, idle")
    # our own prompts not yet visible in the snapshot count too (the larger of the two)
    ctx = BalanceContext(in_flight={"c": 2})
    assert LeastLoaded().choose(servers, ctx) == Choice("b", "b: least loaded, queue 1")


def test_priority_lowest_number_first_then_least_loaded() -> None:
    servers = [st("a", B, 1), st("b", B, 1, 1), st("c"), st("d", OFF)]
    ctx = BalanceContext(priorities={"a": 1, "b": 1, "c": 2, "d": 0})
    assert Priority().choose(servers, ctx) == Choice("a", "a: priority 1, queue 1")
    ctx = BalanceContext(priorities={"a": 1, "b": 1, "c": 2}, in_flight={"a": 3})
    assert Priority().choose(servers, ctx).name == "b"  # type: ignore[union-attr]
    # missing priorities default to 1: equals, so least loaded wins
    assert Priority().choose(servers, CTX).name == "c"  # type: ignore[union-attr]


def test_fastest_expected_completion() -> None:
    fast_busy, slow_idle = st("fast", B, 1), st("slow")
    ctx = BalanceContext(seconds_per_frame={"fast": 1.0, "slow": 5.0}, chunk_frames=4)
    choice = FastestCompletion().choose([slow_idle, fast_busy], ctx)
    # fast: (1 + 1) * 4 * 1.0 = 8 s; slow: 1 * 4 * 5.0 = 20 s
    assert choice == Choice("fast", "fast: ~8 s to finish (queue 1, 1.0 s/frame)")
    ctx = BalanceContext(seconds_per_frame={"fast": 1.0, "slow": 5.0}, in_flight={"fast": 5})
    choice = FastestCompletion().choose([slow_idle, fast_busy], ctx)
    assert choice == Choice("slow", "slow: idle, 5.0 s/frame")


def test_fastest_tries_unmeasured_servers_at_the_average_speed() -> None:
    ctx = BalanceContext(seconds_per_frame={"a": 2.0, "b": 4.0})
    servers = [st("a", B, 1), st("b"), st("new")]
    # a: 2 * 2.0 = 4; b: 1 * 4.0 = 4; new: 1 * 3.0 (average) = 3
    assert FastestCompletion().choose(servers, ctx) == Choice("new", "new: idle, speed unknown yet")
    # nothing measured: behaves like least loaded, ties by name
    assert FastestCompletion().choose([st("b"), st("a", B, 1)], CTX).name == "b"  # type: ignore[union-attr]


def test_reason_line_example_from_the_spec() -> None:
    ctx = BalanceContext(seconds_per_frame={"render2": 1.8})
    choice = FastestCompletion().choose([st("render2")], ctx)
    assert choice == Choice("render2", "render2: idle, 1.8 s/frame")


def test_make_strategy_unknown_name() -> None:
    with pytest.raises(ConfigError) as info:
        make_strategy("random")
    assert info.value.field == "strategy" and "fastest" in str(info.value)
    assert isinstance(make_strategy("fastest"), FastestCompletion)


def test_speed_tracker_seeds_from_first_result_then_averages() -> None:
    tracker = SpeedTracker(alpha=0.5, initial={"a": 10.0})
    assert tracker.seconds_per_frame("a") == 10.0 and tracker.samples("a") == 0
    assert tracker.record("a", 8.0, frames=4) == 2.0  # first real result replaces the seed
    assert tracker.record("a", 4.0, frames=1) == 3.0  # then an EWMA
    assert tracker.seconds_per_frame("b") is None
    tracker.record("b", 1.0)
    snap = tracker.snapshot()
    assert dict(snap) == {"a": 3.0, "b": 1.0}
    with pytest.raises(TypeError):
        snap["a"] = 1.0  # type: ignore[index]
    tracker.forget("b")
    assert tracker.seconds_per_frame("b") is None
    with pytest.raises(ValueError):
        tracker.record("a", 1.0, frames=0)
    with pytest.raises(ValueError):
        SpeedTracker(alpha=0)
