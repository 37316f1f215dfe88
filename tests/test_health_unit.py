"""core/health.py with fake clients: states, parallelism, snapshots, backoff, lifecycle."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any, Callable, Optional

import pytest

from comfy_cluster.core.connection_settings import Timeouts
from comfy_cluster.core.errors import ServerTimeout, ServerUnreachable, WebsocketClosed
from comfy_cluster.core.health import HealthMonitor, HealthSnapshot, ServerState
from comfy_cluster.core.protocol import QueueState
from comfy_cluster.core.server import ServerConfig

STATS = {
    "system": {"os": "posix", "comfyui_version": "0.3.64"},
    "devices": [{"name": "cuda:0 RTX", "type": "cuda", "vram_total": 24, "vram_free": 20}],
}


def wait_until(cond: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


class FakeClient:
    """Behaves as ``spec`` says: 'ok', 'down', 'hang', 'wsfail'; queue and classes configurable."""

    def __init__(self, server: ServerConfig, timeouts: Timeouts, world: World) -> None:
        self.server = server
        self.timeouts = timeouts
        self.world = world
        self.closed = False

    def _behave(self) -> None:
        spec = self.world.spec.get(self.server.name, "ok")
        self.world.calls.append((threading.current_thread().name, self.server.name))
        if spec == "down":
            raise ServerUnreachable("refused", server=self.server.name)
        if spec == "hang":
            self.world.release.wait(self.timeouts.read)
            raise ServerTimeout("timed out", server=self.server.name)

    def _request(self, path: str) -> None:
        """One HTTP request (counted in ``world.calls``; never two at once per server)."""
        self.world.paths.append((self.server.name, path))
        with self.world.lock:
            self.world.in_poll[self.server.name] = self.world.in_poll.get(self.server.name, 0) + 1
            self.world.max_in_poll = max(
                self.world.max_in_poll, self.world.in_poll[self.server.name]
            )
        try:
            self._behave()
        finally:
            with self.world.lock:
                self.world.in_poll[self.server.name] -= 1

    def system_stats(self) -> dict:
        self._request("/system_stats")
        return STATS

    def queue(self) -> QueueState:
        self._request("/queue")
        depth = self.world.queue.get(self.server.name, 0)
        return QueueState(running=("x",) * min(depth, 1), pending=("y",) * max(depth - 1, 0))

    def probe_websocket(self, timeout: Optional[float] = None) -> float:
        self.world.ws_probes += 1
        if self.world.spec.get(self.server.name) == "wsfail":
            raise WebsocketClosed("no upgrade", server=self.server.name)
        return 0.001

    def object_info(self) -> dict:
        self.world.object_info_calls += 1
        return {c: {} for c in self.world.classes.get(self.server.name, ("SaveImage",))}

    def close(self) -> None:
        self.closed = True


class World:
    def __init__(self, **spec: str) -> None:
        self.spec = dict(spec)
        self.queue: dict[str, int] = {}
        self.classes: dict[str, tuple[str, ...]] = {}
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.calls: list[tuple[str, str]] = []
        #: (server, path) of every HTTP request.
        self.paths: list[tuple[str, str]] = []
        self.in_poll: dict[str, int] = {}
        self.max_in_poll = 0
        self.ws_probes = 0
        self.object_info_calls = 0
        self.clients: list[FakeClient] = []

    def factory(self, server: ServerConfig, timeouts: Timeouts) -> FakeClient:
        client = FakeClient(server, timeouts, self)
        self.clients.append(client)
        return client


def servers(*names: str, **kw: Any) -> list[ServerConfig]:
    return [
        ServerConfig(name=n, host="127.0.0.1", port=1000 + i, **kw) for i, n in enumerate(names)
    ]


def monitor(world: World, cfgs: list[ServerConfig], **kw: Any) -> HealthMonitor:
    kw.setdefault("timeout", 0.3)
    kw.setdefault("interval_busy", 0.05)
    kw.setdefault("interval_idle", 5.0)
    return HealthMonitor(cfgs, client_factory=world.factory, **kw)


def test_states_after_first_poll() -> None:
    world = World(down="down", ws="wsfail")
    world.queue["busy"] = 2
    off = ServerConfig(name="off", host="127.0.0.1", port=1, enabled=False)
    cfgs = [*servers("ok", "busy", "down", "ws"), off]
    with monitor(world, cfgs) as mon:
        assert mon.wait_for_poll(2.0)
        snap = mon.snapshot()
    assert [s.name for s in snap] == ["ok", "busy", "down", "ws", "off"]
    assert {s.name: s.state for s in snap} == {
        "ok": ServerState.READY,
        "busy": ServerState.BUSY,
        "down": ServerState.OFFLINE,
        "ws": ServerState.DEGRADED,
        "off": ServerState.DISABLED,
    }
    ok = snap["ok"]
    assert (ok.device, ok.vram_total, ok.vram_free, ok.os, ok.comfyui_version) == (
        "cuda:0 RTX",
        24,
        20,
        "posix",
        "0.3.64",
    )
    assert ok.latency_ms is not None and ok.last_error is None and ok.checked_at is not None
    assert (snap["busy"].queue_running, snap["busy"].queue_pending) == (1, 1)
    assert "refused" in (snap["down"].last_error or "") and snap["down"].failures == 1
    assert snap["down"].error_kind == "ServerUnreachable"
    assert (snap["ws"].reason or "").startswith("websocket fails")
    assert snap["off"].checked_at is None
    assert [s.name for s in snap.ready()] == ["ok"]
    assert [s.name for s in snap.usable()] == ["ok", "busy"]


def test_hung_servers_are_polled_in_parallel_and_never_block_readers() -> None:
    names = [f"hang{i}" for i in range(6)] + ["ok"]
    world = World(**{n: "hang" for n in names[:-1]})
    mon = monitor(world, servers(*names), timeout=0.4)
    start = time.monotonic()
    mon.start()
    try:
        # readers get a snapshot at once while six pollers are stuck in their timeout
        t0 = time.perf_counter()
        snap = mon.snapshot()
        assert time.perf_counter() - t0 < 0.01
        assert isinstance(snap, HealthSnapshot)
        wait_until(lambda: mon.snapshot()["ok"].state is ServerState.READY, 0.3)
        assert mon.wait_for_poll(2.0)
        elapsed = time.monotonic() - start
        assert elapsed < 0.4 * 1.5, f"one cluster poll took {elapsed:.2f}s"
        assert all(mon.snapshot()[n].state is ServerState.OFFLINE for n in names[:-1])
        threads = {t.name for t in threading.enumerate()}
        assert {f"comfy-cluster-health-{n}" for n in names} <= threads
        assert all(
            t.daemon for t in threading.enumerate() if t.name.startswith("comfy-cluster-health")
        )
        # each server is only ever polled from its own thread, never twice at once
        assert all(thread == f"comfy-cluster-health-{srv}" for thread, srv in world.calls)
        assert world.max_in_poll == 1
    finally:
        t0 = time.monotonic()
        mon.close(timeout=1.0)
        assert time.monotonic() - t0 < 1.1
    world.release.set()


def test_snapshots_are_immutable_and_swapped_whole() -> None:
    world = World()
    mon = monitor(world, servers("a"))
    first = mon.snapshot()  # before any poll
    with mon:
        assert mon.wait_for_poll(2.0)
        second = mon.snapshot()
    assert first is not second
    assert first["a"].state is ServerState.OFFLINE and first["a"].reason == "not checked yet"
    assert second["a"].state is ServerState.READY
    with pytest.raises(TypeError):
        second.statuses["a"] = first["a"]  # type: ignore[index]
    with pytest.raises(AttributeError):
        second["a"].state = ServerState.BUSY  # type: ignore[misc]


def test_require_classes_degrades_servers_missing_them_at_once() -> None:
    world = World()
    world.classes = {"a": ("SaveImage", "Upscale"), "b": ("SaveImage",)}
    with monitor(world, servers("a", "b"), interval_busy=0.02) as mon:
        mon.set_active(True)
        mon.require_classes({"SaveImage", "Upscale"})
        wait_until(lambda: mon.snapshot()["b"].state is ServerState.DEGRADED)
        snap = mon.snapshot()
        assert snap["a"].state is ServerState.READY
        assert snap["b"].reason == "missing node classes: Upscale"
        calls = world.object_info_calls
        # dropping the requirement re-derives from the cache, without the network
        mon.require_classes(())
        assert mon.snapshot()["b"].state is ServerState.READY
        # object_info is cached (ttl), not fetched every poll
        wait_until(lambda: len(world.calls) > 10)
        assert world.object_info_calls == calls


def test_websocket_check_is_cached_while_healthy() -> None:
    world = World()
    with monitor(world, servers("a"), interval_busy=0.01, ws_check_interval=60.0) as mon:
        mon.set_active(True)
        wait_until(lambda: len(world.calls) >= 5)
    assert world.ws_probes == 1


def test_a_server_that_comes_back_is_ready_again_and_since_tracks_state_changes() -> None:
    now = [1000.0]
    world = World(a="down")
    with monitor(world, servers("a"), interval_busy=0.01, clock=lambda: now[0]) as mon:
        mon.set_active(True)
        assert mon.wait_for_poll(2.0)
        down = mon.snapshot()["a"]
        assert down.state is ServerState.OFFLINE and down.since == 1000.0
        now[0] = 1010.0
        world.spec["a"] = "ok"
        mon.poll_now()
        wait_until(lambda: mon.snapshot()["a"].state is ServerState.READY)
        up = mon.snapshot()["a"]
        assert up.since == 1010.0 and up.last_error is None and up.failures == 0


def test_backoff_for_servers_that_stay_down() -> None:
    mon = HealthMonitor([], interval_busy=1.0, interval_idle=10.0, max_backoff=60.0)
    assert mon.interval_for(0) == 10.0
    assert [mon.interval_for(n) for n in (1, 2, 3, 4, 5)] == [10.0, 20.0, 40.0, 60.0, 60.0]
    mon.set_active(True, who="panel")
    assert mon.interval_for(0) == 1.0
    assert [mon.interval_for(n) for n in (1, 2, 3, 7, 8)] == [1.0, 2.0, 4.0, 60.0, 60.0]
    mon.set_active(True, who="job")
    mon.set_active(False, who="panel")
    assert mon.active  # the job still holds it
    mon.set_active(False, who="job")
    assert not mon.active


def test_refresh_waits_for_a_new_poll_of_every_server() -> None:
    world = World()
    with monitor(world, servers("a", "b"), interval_idle=30.0) as mon:
        assert mon.wait_for_poll(2.0)
        before = len(world.calls)
        snap, complete = mon.refresh(2.0)
        assert complete and len(world.calls) >= before + 2
        assert all(s.state is ServerState.READY for s in snap)


def test_subscribers_get_snapshots_on_the_poller_thread() -> None:
    world = World()
    got: list[tuple[str, HealthSnapshot]] = []
    mon = monitor(world, servers("a"))
    unsubscribe = mon.subscribe(lambda s: got.append((threading.current_thread().name, s)))
    mon.subscribe(lambda s: 1 / 0)  # a broken subscriber is logged, not fatal
    with mon:
        assert mon.wait_for_poll(2.0)
        wait_until(lambda: bool(got))
        unsubscribe()
    assert got[0][0] == "comfy-cluster-health-a"
    assert got[-1][1]["a"].state is ServerState.READY


def test_close_is_prompt_idempotent_and_closes_clients() -> None:
    world = World()
    mon = monitor(world, servers("a", "b"), interval_idle=60.0)
    mon.start()
    assert mon.wait_for_poll(2.0)
    t0 = time.monotonic()
    mon.close()
    mon.close()
    assert time.monotonic() - t0 < 0.5
    wait_until(lambda: all(c.closed for c in world.clients))
    assert not [t for t in threading.enumerate() if t.name.startswith("comfy-cluster-health-a")]
    assert mon.closed and mon.wait_for_poll(0.1) is False


def test_close_also_waits_for_a_removed_server_still_in_its_poll() -> None:
    """A server removed mid-poll is told to stop; ``close`` must wait for its thread too, else
    the thread outlives the monitor (a panel test once saw one on a loaded machine)."""
    world = World(a="hang")
    a, b = servers("a", "b")
    mon = monitor(world, [a, b], timeout=5.0)
    mon.start()
    wait_until(lambda: world.in_poll.get("a") == 1)
    mon.set_servers([b])
    release = threading.Timer(0.3, world.release.set)
    release.start()
    try:
        mon.close(timeout=3.0)
        assert not [t for t in threading.enumerate() if t.name == "comfy-cluster-health-a"]
    finally:
        release.cancel()
        world.release.set()


def test_set_servers_adds_disables_and_removes() -> None:
    world = World()
    with monitor(world, servers("a", "b")) as mon:
        assert mon.wait_for_poll(2.0)
        a, _ = servers("a", "b")
        c = ServerConfig(name="c", host="127.0.0.1", port=2000)
        b_off = ServerConfig(name="b", host="127.0.0.1", port=1001, enabled=False)
        mon.set_servers([a, b_off, c])
        wait_until(lambda: mon.snapshot()["c"].state is ServerState.READY)
        snap = mon.snapshot()
        assert snap.names == ("a", "b", "c")
        assert snap["b"].state is ServerState.DISABLED and snap["a"].state is ServerState.READY
        mon.set_servers([c])
        assert mon.snapshot().names == ("c",)
        wait_until(
            lambda: not [t for t in threading.enumerate() if t.name == "comfy-cluster-health-a"]
        )


def test_argument_checks() -> None:
    with pytest.raises(ValueError):
        HealthMonitor(servers("a", "a"))
    with pytest.raises(ValueError):
        HealthMonitor([], timeout=0)


def test_status_to_dict_is_json_ready() -> None:
    import json

    world = World()
    with monitor(world, servers("a")) as mon:
        assert mon.wait_for_poll(2.0)
        data = mon.snapshot().to_dict()
    text = json.dumps(data)
    assert '"state": "ready"' in text
    assert SimpleNamespace(**data["servers"][0]).name == "a"
