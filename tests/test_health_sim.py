"""core/health.py against simulated servers: down, dead-and-back, black-holed, token, degraded."""

from __future__ import annotations

import time
from typing import Any

from fixtures_sim import INVERT_PROMPT, submit, wait_until

from comfy_cluster.core.health import HealthMonitor, ServerState
from comfy_cluster.core.server import ServerConfig
from comfy_cluster.sim.harness import free_port

TIMEOUT = 0.4


def cfg(name: str, port: int, **kw: Any) -> ServerConfig:
    return ServerConfig(name=name, host="127.0.0.1", port=port, **kw)


def monitor(servers: list[ServerConfig], **kw: Any) -> HealthMonitor:
    kw.setdefault("timeout", TIMEOUT)
    kw.setdefault("interval_busy", 0.05)
    kw.setdefault("interval_idle", 5.0)
    return HealthMonitor(servers, **kw)


def state_of(mon: HealthMonitor, name: str) -> ServerState:
    return mon.snapshot()[name].state


def test_one_poll_of_a_mixed_cluster_takes_about_one_timeout(
    sim_factory: Any, black_hole: Any
) -> None:
    ok = sim_factory()
    tok = sim_factory(token="s3cret")
    servers = [
        cfg("ok", ok.port),
        cfg("down", free_port()),
        cfg("hole", black_hole.port),
        cfg("hole2", black_hole.port),
        cfg("tok", tok.port, token="s3cret"),
        cfg("notok", tok.port),
        cfg("off", ok.port, enabled=False),
    ]
    mon = monitor(servers)
    start = time.monotonic()
    with mon:
        assert mon.wait_for_poll(TIMEOUT * 3)
        elapsed = time.monotonic() - start
        snap = mon.snapshot()
    assert elapsed < TIMEOUT * 1.2 + 0.15, f"{elapsed:.2f}s"
    states = {s.name: s.state for s in snap}
    assert states == {
        "ok": ServerState.READY,
        "down": ServerState.OFFLINE,
        "hole": ServerState.OFFLINE,
        "hole2": ServerState.OFFLINE,
        "tok": ServerState.READY,
        "notok": ServerState.OFFLINE,
        "off": ServerState.DISABLED,
    }
    assert snap["hole"].error_kind == "ServerTimeout"
    assert snap["down"].error_kind == "ServerUnreachable"
    assert snap["notok"].error_kind == "AuthenticationFailed" and "401" in (
        snap["notok"].last_error or ""
    )
    ready = snap["ok"]
    assert ready.comfyui_version and ready.device and ready.vram_total and ready.os
    assert ready.latency_ms is not None and ready.latency_ms < TIMEOUT * 1000


def test_server_that_dies_and_comes_back(sim_factory: Any) -> None:
    server = sim_factory()
    with monitor([cfg("s", server.port)], max_backoff=0.2) as mon:
        mon.set_active(True)
        wait_until(lambda: state_of(mon, "s") is ServerState.READY, 3.0)
        server.kill()
        wait_until(lambda: state_of(mon, "s") is ServerState.OFFLINE, 3.0)
        down = mon.snapshot()["s"]
        assert down.last_error and down.failures >= 1 and down.latency_ms is None
        assert down.device  # what we knew about the machine is kept
        server.restart()
        wait_until(lambda: state_of(mon, "s") is ServerState.READY, 3.0)
        back = mon.snapshot()["s"]
        assert back.last_error is None and back.failures == 0 and back.since >= down.since


def test_server_down_at_start_then_started(sim_factory: Any) -> None:
    server = sim_factory(refuse_connections=True)
    with monitor([cfg("s", server.port)], max_backoff=0.2) as mon:
        mon.set_active(True)
        assert mon.wait_for_poll(2.0)
        assert state_of(mon, "s") is ServerState.OFFLINE
        server.set_faults(refuse_connections=False)
        wait_until(lambda: state_of(mon, "s") is ServerState.READY, 3.0)


def test_busy_while_work_is_queued_and_slow_server_still_ready(sim_factory: Any) -> None:
    server = sim_factory(hang_prompts=True)
    slow = sim_factory(node_seconds=0.2)
    with monitor([cfg("s", server.port), cfg("slow", slow.port)]) as mon:
        mon.set_active(True)
        assert mon.wait_for_poll(2.0)
        assert state_of(mon, "s") is ServerState.READY
        assert submit(server.url, INVERT_PROMPT, client_id="someone").status_code == 200
        assert submit(server.url, INVERT_PROMPT, client_id="someone").status_code == 200
        wait_until(lambda: mon.snapshot()["s"].queue_depth == 2, 3.0)
        status = mon.snapshot()["s"]
        assert status.state is ServerState.BUSY
        assert (status.queue_running, status.queue_pending) == (1, 1)
        submit(slow.url, INVERT_PROMPT, client_id="x")
        wait_until(lambda: state_of(mon, "slow") is ServerState.BUSY, 3.0)
        wait_until(lambda: state_of(mon, "slow") is ServerState.READY, 5.0)


def test_missing_node_classes_make_a_server_degraded(sim_factory: Any) -> None:
    full = sim_factory()
    partial = sim_factory(missing_classes=("ImageInvert",))
    with monitor([cfg("full", full.port), cfg("partial", partial.port)]) as mon:
        mon.set_active(True)
        mon.require_classes({"EmptyImage", "ImageInvert", "SaveImage"})
        wait_until(lambda: state_of(mon, "partial") is ServerState.DEGRADED, 3.0)
        assert mon.snapshot()["partial"].reason == "missing node classes: ImageInvert"
        wait_until(lambda: state_of(mon, "full") is ServerState.READY, 3.0)
        assert [s.name for s in mon.snapshot().usable()] == ["full"]
