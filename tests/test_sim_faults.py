"""Each fault, seen from a plain requests / websocket-client client."""

from __future__ import annotations

import json
import socket
import struct
import time
from typing import Any

import pytest
import requests
import websocket
from fixtures_sim import INVERT_PROMPT, submit, wait_until, ws_open, ws_recv, ws_until_done
from workflows import slow_workflow

from comfy_cluster.sim.harness import SimServer

SLOW = slow_workflow()


def history(sim: SimServer, prompt_id: str) -> dict:
    return requests.get(f"{sim.url}/history/{prompt_id}", timeout=5).json()


def test_refuse_connections_then_recover(sim_factory: Any) -> None:
    sim = sim_factory(refuse_connections=True)
    t0 = time.monotonic()
    with pytest.raises(requests.ConnectionError):
        requests.get(sim.url + "/prompt", timeout=2)
    assert time.monotonic() - t0 < 1.0  # refused at once, not a timeout
    sim.set_faults(refuse_connections=False)
    assert requests.get(sim.url + "/prompt", timeout=2).status_code == 200
    sim.set_faults(refuse_connections=True)
    with pytest.raises(requests.ConnectionError):
        requests.get(sim.url + "/prompt", timeout=2)


def test_die_after_prompts(sim_factory: Any) -> None:
    sim = sim_factory(die_after_prompts=1)
    ws = ws_open(sim.url)
    first = submit(sim.url, INVERT_PROMPT, ws.client_id).json()["prompt_id"]
    ws_until_done(ws, first)
    r = submit(
        sim.url,
        dict(
            INVERT_PROMPT,
            **{
                "3": {
                    "class_type": "SaveImage",
                    "inputs": {"images": ["2", 0], "filename_prefix": "second"},
                }
            },
        ),
        ws.client_id,
    )
    assert r.status_code == 200  # accepted, then the server dies taking it
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError, OSError)):
        while True:
            ws_recv(ws)  # status for the put may arrive first; then the reset
    wait_until(lambda: sim.died)
    with pytest.raises(requests.ConnectionError):
        requests.get(sim.url + "/prompt", timeout=2)
    sim.set_faults(die_after_prompts=None)
    sim.restart()
    assert history(sim, first) == {}  # history was lost with the process


def test_hang_prompts_accepts_then_silence(sim_factory: Any) -> None:
    sim = sim_factory(hang_prompts=True)
    ws = ws_open(sim.url)
    r = submit(sim.url, INVERT_PROMPT, ws.client_id, prompt_id="h1")
    assert r.status_code == 200
    assert ws_recv(ws)["msg"]["data"]["status"]["exec_info"]["queue_remaining"] == 1  # the put
    ws.settimeout(0.3)
    with pytest.raises(websocket.WebSocketTimeoutException):
        ws_recv(ws)
    assert sim.queue_snapshot() == (["h1"], [])
    assert history(sim, "h1") == {}
    ws.settimeout(10)
    sim.set_faults(hang_prompts=False)  # releases the hung prompt
    ws_until_done(ws, "h1")
    assert history(sim, "h1")["h1"]["status"]["completed"] is True


def test_drop_ws_mid_prompt_and_prompt_still_finishes(sim_factory: Any) -> None:
    sim = sim_factory(drop_ws_after_events=3, node_seconds=0.02)
    ws = ws_open(sim.url)
    pid = submit(sim.url, INVERT_PROMPT, ws.client_id).json()["prompt_id"]
    types = []
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError, OSError)):
        while True:
            types.append(ws_recv(ws)["msg"]["type"])
    assert types[-3:] == ["execution_start", "execution_cached", "progress_state"]
    entry = wait_until(lambda: history(sim, pid))
    assert entry[pid]["status"]["completed"] is True


def test_fail_prompt_posts_gives_plain_500s(sim_factory: Any) -> None:
    sim = sim_factory(fail_prompt_posts=2)
    for _ in range(2):
        r = submit(sim.url, INVERT_PROMPT, "c")
        assert r.status_code == 500
        assert r.headers["Content-Type"].startswith("text/plain")
        assert "Server got itself in trouble" in r.text
    assert submit(sim.url, INVERT_PROMPT, "c").status_code == 200
    assert sim.options.fail_prompt_posts == 0


@pytest.mark.parametrize("target", ["ImageInvert", "2"])
def test_fail_node_by_class_or_id(sim_factory: Any, target: str) -> None:
    sim = sim_factory(fail_node=target)
    ws = ws_open(sim.url)
    pid = submit(sim.url, INVERT_PROMPT, ws.client_id).json()["prompt_id"]
    frames = ws_until_done(ws, pid)
    err = next(f["msg"]["data"] for f in frames if f["msg"]["type"] == "execution_error")
    assert (err["node_id"], err["node_type"], err["executed"]) == ("2", "ImageInvert", ["1"])
    assert "SimFault" in err["exception_message"]
    status = history(sim, pid)[pid]["status"]
    assert (status["status_str"], status["completed"]) == ("error", False)


def test_upload_delay(sim_factory: Any) -> None:
    sim = sim_factory(upload_delay=0.5)
    files = {"image": ("a.png", b"\x89PNG not really")}
    with pytest.raises(requests.ReadTimeout):
        requests.post(sim.url + "/upload/image", files=files, timeout=(1, 0.2))
    t0 = time.monotonic()
    r = requests.post(sim.url + "/upload/image", files=files, timeout=5)
    assert r.status_code == 200 and time.monotonic() - t0 >= 0.5


def test_missing_class(sim_factory: Any) -> None:
    sim = sim_factory(missing_classes=("ImageInvert",))
    r = submit(sim.url, INVERT_PROMPT, "c")
    assert r.status_code == 400
    assert r.json() == {
        "error": {
            "type": "invalid_prompt",
            "message": "Cannot execute because node ImageInvert does not exist.",
            "details": "Node ID '#2'",
            "extra_info": {},
        },
        "node_errors": {},
    }
    assert "ImageInvert" not in requests.get(sim.url + "/object_info").json()
    assert requests.get(sim.url + "/object_info/ImageInvert").json() == {}


def test_token_required(sim_factory: Any) -> None:
    sim = sim_factory(token="s3cret")
    assert requests.get(sim.url + "/prompt").status_code == 401
    assert (
        requests.get(sim.url + "/prompt", headers={"Authorization": "Bearer nope"}).status_code
        == 401
    )
    good = {"Authorization": "Bearer s3cret"}
    assert requests.get(sim.url + "/api/prompt", headers=good).status_code == 200
    with pytest.raises(websocket.WebSocketBadStatusException) as exc:
        websocket.create_connection(sim.url.replace("http", "ws") + "/ws", timeout=2)
    assert exc.value.status_code == 401
    ws = ws_open(sim.url, headers=["Authorization: Bearer s3cret"])
    ws.close()
    assert json.loads(requests.get(sim.url + "/sim/faults").text)["token"] == "***"


def test_slow_sampler_progress_and_global_interrupt(sim_factory: Any) -> None:
    sim = sim_factory(node_seconds=0.4, steps=4)
    ws = ws_open(sim.url)
    pid = submit(sim.url, SLOW, ws.client_id).json()["prompt_id"]
    progress = []
    while len(progress) < 1:
        msg = ws_recv(ws)["msg"]
        if msg["type"] == "progress":
            progress.append((msg["data"]["value"], msg["data"]["max"], msg["data"]["node"]))
    assert progress[0][1:] == (4, "2")
    requests.post(sim.url + "/interrupt")  # global: no body
    frames = ws_until_done(ws, pid)
    kinds = [f["msg"]["type"] for f in frames]
    assert "execution_interrupted" in kinds
    interrupted = next(
        f["msg"]["data"] for f in frames if f["msg"]["type"] == "execution_interrupted"
    )
    assert interrupted["node_id"] == "2"


def test_speed_scales_node_time(sim_factory: Any) -> None:
    sim = sim_factory(node_seconds=1.0, speed=20.0)
    ws = ws_open(sim.url)
    t0 = time.monotonic()
    ws_until_done(ws, submit(sim.url, INVERT_PROMPT, ws.client_id).json()["prompt_id"])
    elapsed = time.monotonic() - t0
    assert 0.15 <= elapsed < 1.0  # three nodes at 0.05 s each


def test_ws_same_client_id_reconnect_pitfall(sim: SimServer) -> None:
    old = ws_open(sim.url, "dup")
    new = ws_open(sim.url, "dup")
    old.close()  # the old socket's cleanup removes the *new* one from the dict
    wait_until(lambda: "dup" not in requests.get(sim.url + "/sim/state").json()["sockets"])
    submit(sim.url, INVERT_PROMPT, "dup")
    new.settimeout(0.3)
    with pytest.raises(websocket.WebSocketTimeoutException):
        new.recv()  # not even the status broadcast
    new.close()


# --- a hostile or broken server (sim/hostile.py) -------------------------------------------------


def _output_file(sim: SimServer) -> tuple[dict, bytes]:
    """A file the sim rendered, as its history names it, and its bytes."""
    ws = ws_open(sim.url)
    pid = submit(sim.url, INVERT_PROMPT, ws.client_id).json()["prompt_id"]
    ws_until_done(ws, pid)
    ws.close()
    (image,) = next(iter(history(sim, pid)[pid]["outputs"].values()))["images"]
    return image, (sim.output_dir / image["subfolder"] / image["filename"]).read_bytes()


@pytest.mark.parametrize("fault", ["html", "empty", "truncated", "jpeg"])
def test_view_faults_answer_200_with_something_else(sim_factory: Any, fault: str) -> None:
    sim = sim_factory()
    image, data = _output_file(sim)
    sim.set_faults(view_fault=fault)
    r = requests.get(sim.url + "/view", params=image, timeout=5)
    assert r.status_code == 200
    expected = {
        "html": lambda b: b.startswith(b"<!DOCTYPE html>"),
        "empty": lambda b: b == b"",
        "truncated": lambda b: b == data[: len(data) // 2],
        "jpeg": lambda b: b.startswith(b"\xff\xd8\xff"),
    }
    assert expected[fault](r.content)


def test_endless_answers_never_end(sim_factory: Any) -> None:
    sim = sim_factory(endless_route="/system_stats")
    image, data = _output_file(sim)
    for path, params, start in (
        ("/api/system_stats", None, b'{"system": {"pad": "'),
        ("/view", image, data[:64]),
    ):
        if path == "/view":
            sim.set_faults(view_fault="endless")
        with requests.get(sim.url + path, params=params, stream=True, timeout=5) as r:
            assert r.status_code == 200 and "Content-Length" not in r.headers
            first = r.raw.read(len(start))
            assert first == start
            assert len(r.raw.read(8 << 20)) == 8 << 20  # and more, and more...


def test_redirect_echo_401_and_error_text(sim_factory: Any) -> None:
    sim = sim_factory(redirect_to="http://127.0.0.1:1/base/")
    r = requests.get(sim.url + "/queue?x=1", allow_redirects=False, timeout=5)
    assert r.status_code == 302 and r.headers["Location"] == "http://127.0.0.1:1/base/queue?x=1"
    assert requests.get(sim.url + "/sim/state", timeout=5).status_code == 200  # never /sim/*
    sim.set_faults(redirect_to=None, error_text="\x1b[2Jboom\r\n")
    r = requests.get(sim.url + "/queue", timeout=5)
    assert (r.status_code, r.text) == (500, "\x1b[2Jboom\r\n")
    sim.set_faults(error_text=None, token="right", echo_401=True)
    r = requests.get(sim.url + "/queue", headers={"Authorization": "Bearer wrong"}, timeout=5)
    assert r.status_code == 401 and "Authorization: Bearer wrong" in r.text


@pytest.mark.parametrize("size", [3000, (64 << 20) + 1])
def test_ws_message_bytes_sends_a_giant_first_frame(sim_factory: Any, size: int) -> None:
    sim = sim_factory(ws_message_bytes=size)
    ws = websocket.create_connection(sim.url.replace("http", "ws") + "/ws?clientId=g", timeout=5)
    try:
        header = ws.sock.recv(10, socket.MSG_PEEK)
        assert header[0] == 0x81  # a final text frame
        announced = struct.unpack("!H", header[2:4])[0] if size < 1 << 16 else None
        if announced is None:
            announced = struct.unpack("!Q", header[2:10])[0]
        assert announced == size
        if size == 3000:
            assert json.loads(ws.recv())["type"] == "sim_padding"
            assert json.loads(ws.recv())["type"] == "status"  # then the greeting
    finally:
        ws.close(timeout=0.1)


def test_hostile_options_are_checked(sim: SimServer) -> None:
    r = requests.post(sim.url + "/sim/faults", json={"view_fault": "nonsense"}, timeout=5)
    assert r.status_code == 400 and "view_fault" in r.json()["error"]
    r = requests.post(sim.url + "/sim/faults", json={"ws_message_bytes": 0}, timeout=5)
    assert r.status_code == 400
