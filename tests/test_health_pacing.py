"""Health polls cost little: one request per poll, slower while a job uses a server, none while
the job's own traffic shows it alive; a hung server never delays another's polls."""

from __future__ import annotations

import time

from test_health_unit import World, monitor, servers, wait_until

from comfy_cluster.core.health import HealthMonitor, ServerState


def requests_of(world: World, name: str) -> list[str]:
    return [path for server, path in world.paths if server == name]


def test_first_poll_asks_both_then_each_poll_is_one_queue_request() -> None:
    now = [100.0]
    world = World()
    with monitor(world, servers("a"), clock=lambda: now[0], stats_interval=30.0) as mon:
        assert mon.wait_for_poll(2.0)
        assert requests_of(world, "a") == ["/system_stats", "/queue"]
        for _ in range(3):
            before = len(world.paths)
            assert mon.refresh(2.0)[1]
            assert requests_of(world, "a")[before:] == ["/queue"]
        assert mon.snapshot()["a"].device == "cuda:0 RTX"  # kept from the first poll
        world.queue["a"] = 1
        assert mon.refresh(2.0)[1]
        assert mon.snapshot()["a"].state is ServerState.BUSY
        # system stats are due again: that poll is just /system_stats, the queue stays as seen
        now[0] += 30.0
        before = len(world.paths)
        assert mon.refresh(2.0)[1]
        assert requests_of(world, "a")[before:] == ["/system_stats"]
        snap = mon.snapshot()["a"]
        assert snap.state is ServerState.BUSY and snap.queue_running == 1
        assert snap.latency_ms is not None


def test_after_a_failure_the_state_is_unknown_so_the_next_poll_asks_both() -> None:
    world = World(a="down")
    with monitor(world, servers("a")) as mon:
        assert mon.wait_for_poll(2.0)
        assert mon.snapshot()["a"].state is ServerState.OFFLINE
        world.spec["a"] = "ok"
        before = len(world.paths)
        assert mon.refresh(2.0)[1]
        assert requests_of(world, "a")[before:] == ["/system_stats", "/queue"]
        assert mon.snapshot()["a"].state is ServerState.READY


def test_servers_in_use_are_polled_slower() -> None:
    mon = HealthMonitor(
        servers("a", "b"), interval_busy=1.0, interval_idle=10.0, interval_in_use=5.0
    )
    mon.set_active(True, who="job")
    assert mon.interval_for(0, "a") == 1.0
    mon.note_in_use("a", True)
    mon.note_in_use("a", True)  # two slots
    assert mon.interval_for(0, "a") == 5.0 and mon.in_use("a")
    assert mon.interval_for(0, "b") == 1.0
    assert mon.interval_for(2, "a") == 2.0  # failing: the usual backoff
    mon.note_in_use("a", False)
    assert mon.interval_for(0, "a") == 5.0  # one slot still uses it
    mon.note_in_use("a", False)
    assert mon.interval_for(0, "a") == 1.0
    mon.set_active(False, who="job")
    mon.note_in_use("a", True)
    assert mon.interval_for(0, "a") == 10.0  # never faster than idle


def test_a_server_a_job_talks_to_counts_as_in_use_for_a_while() -> None:
    cfgs = servers("a", "b")
    mon = HealthMonitor(cfgs, interval_busy=1.0, interval_in_use=0.2)
    mon.set_active(True)
    assert not mon.in_use("a")
    mon.note_alive("a")  # told by the job
    assert mon.in_use("a") and mon.interval_for(0, "a") == 1.0  # busy pace is slower already
    mon.note_alive("b")  # the job's own websocket events (alive_feed)
    assert mon.in_use("b")
    time.sleep(0.25)
    assert not mon.in_use("a") and not mon.in_use("b")


def test_in_use_servers_are_polled_with_one_queue_request_at_the_slower_pace() -> None:
    world = World()
    with monitor(
        world, servers("a", "b"), interval_busy=0.02, interval_in_use=0.2, stats_interval=60.0
    ) as mon:
        mon.set_active(True)
        assert mon.wait_for_poll(2.0)
        before_a = len(requests_of(world, "a"))
        before_b = len(requests_of(world, "b"))
        mon.note_in_use("a", True)
        mon.poll_now()  # restart both pollers' waits now
        time.sleep(0.5)
        polled_a = requests_of(world, "a")[before_a:]
        assert 1 <= len(polled_a) <= 4 and set(polled_a) == {"/queue"}
        assert len(requests_of(world, "b")) - before_b >= 8  # b polled as usual
        # an explicit poll request is always served at once
        before = len(requests_of(world, "a"))
        assert mon.refresh(2.0)[1]
        assert len(requests_of(world, "a")) > before
        mon.note_in_use("a", False)
        assert not mon.in_use("a")


def test_a_hung_server_never_delays_another_servers_polls() -> None:
    world = World(hang="hang")
    with monitor(world, servers("hang", "ok"), timeout=1.0, interval_busy=0.02) as mon:
        mon.set_active(True)
        wait_until(lambda: "hang" in world.in_poll and world.in_poll["hang"] == 1)
        start = len(requests_of(world, "ok"))
        time.sleep(0.5)  # "hang" is stuck in its request all along
        assert world.in_poll["hang"] == 1
        assert len(requests_of(world, "ok")) - start >= 5
        assert mon.snapshot()["ok"].state is ServerState.READY
        world.release.set()


def test_engine_helpers_feed_liveness_and_use() -> None:
    from comfy_cluster.core.health import alive_feed, mark_in_use

    got: list[object] = []
    assert alive_feed(None, "a", got.append) == got.append  # no monitor: unchanged
    mark_in_use(None, "a", True)  # no monitor: nothing
    mon = HealthMonitor(servers("a", "b"))
    mark_in_use(mon, "a", True)
    assert mon.in_use("a")
    mark_in_use(mon, "a", False)
    assert not mon.in_use("a")
    feed = alive_feed(mon, "b", got.append)
    feed("event")
    assert got == ["event"] and mon.in_use("b")
