"""The in-process harness: fast parallel start/stop, nothing left behind, restart, kill."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest
import requests
import websocket
from fixtures_sim import INVERT_PROMPT, submit, wait_until, ws_open, ws_until_done

from comfy_cluster.sim.harness import BlackHole, SimServer, start_sims, stop_all
from comfy_cluster.sim.options import SimOptions


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen(1)
        except OSError:
            return False
        return True


def test_eight_sims_start_and_stop_under_two_seconds() -> None:
    baseline = threading.active_count()
    t0 = time.monotonic()
    sims = start_sims(8)
    try:
        for s in sims:  # each answers, and each with its own folders
            assert (
                requests.get(s.url + "/prompt", timeout=5).json()["exec_info"]["queue_remaining"]
                == 0
            )
        assert len({s.port for s in sims}) == 8 and len({s.output_dir for s in sims}) == 8
    finally:
        stop_all(sims)
    elapsed = time.monotonic() - t0
    print(f"8 sims started, probed and stopped in {elapsed:.3f} s")
    assert elapsed < 2.0
    assert threading.active_count() == baseline
    assert all(port_free(s.port) for s in sims)


def test_stop_after_work_leaves_no_thread(sim_factory: Any) -> None:
    baseline = threading.active_count()
    sim = SimServer(SimOptions(node_seconds=0.01)).start()
    ws = ws_open(sim.url)
    r = submit(sim.url, INVERT_PROMPT, ws.client_id)
    ws_until_done(ws, r.json()["prompt_id"])
    sim.stop()  # the open websocket gets a close frame (1001)
    with pytest.raises(websocket.WebSocketConnectionClosedException):
        while True:
            ws.recv()
    assert threading.active_count() == baseline
    assert port_free(sim.port)


def test_restart_same_port_fresh_state(sim: SimServer) -> None:
    r = submit(sim.url, INVERT_PROMPT, "c")
    pid = r.json()["prompt_id"]
    wait_until(lambda: requests.get(f"{sim.url}/history/{pid}").json())
    port = sim.port
    sim.kill()
    with pytest.raises(requests.ConnectionError):
        requests.get(sim.url + "/prompt", timeout=2)
    sim.restart()
    assert sim.port == port
    assert requests.get(f"{sim.url}/history/{pid}").json() == {}
    r = submit(sim.url, INVERT_PROMPT, "c")
    assert r.json()["number"] == 0  # the counter restarted too
    assert sim.prompts_seen[0] == pid and len(sim.prompts_seen) == 2
    assert (sim.output_dir / "t_00001_.png").is_file()  # files survive, like a real restart


def test_kill_resets_open_websocket(sim: SimServer) -> None:
    ws = ws_open(sim.url)
    sim.kill()
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError, OSError)):
        ws.recv()
    ws.close()


def test_black_hole_accepts_and_never_answers(black_hole: BlackHole) -> None:
    t0 = time.monotonic()
    with pytest.raises(requests.ReadTimeout):
        requests.get(black_hole.url + "/prompt", timeout=(1.0, 0.3))
    assert time.monotonic() - t0 < 2.0
    with pytest.raises(websocket.WebSocketTimeoutException):
        websocket.create_connection(black_hole.ws_url, timeout=0.3)


def test_queue_snapshot_and_set_faults_control(sim_factory: Any) -> None:
    sim = sim_factory(node_seconds=0.2)
    ids = [
        submit(sim.url, INVERT_PROMPT, "c", prompt_id=f"p{i}", front=i == 2).json()["prompt_id"]
        for i in range(3)
    ]
    running, pending = wait_until(lambda: sim.queue_snapshot() if sim.queue_snapshot()[0] else None)
    assert running == ["p0"] and pending == ["p2", "p1"]  # front jumps ahead
    assert sim.prompts_seen == ids
    r = requests.post(sim.url + "/sim/faults", json={"node_seconds": 0.0})
    assert r.status_code == 200 and r.json()["node_seconds"] == 0.0
    assert sim.options.node_seconds == 0.0
    assert requests.post(sim.url + "/sim/faults", json={"bogus": 1}).status_code == 400
    wait_until(lambda: sim.queue_snapshot() == ([], []))
