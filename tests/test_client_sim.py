"""core/client.py against simulated ComfyUI servers on 127.0.0.1 (started by the tests).

Never sleeps to wait: conditions are polled with a deadline (fixtures_sim.wait_until).
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import websocket
from fixtures_sim import INVERT_PROMPT, wait_until

from comfy_cluster.core import protocol as p
from comfy_cluster.core.client import ComfyClient
from comfy_cluster.core.connection_settings import Timeouts
from comfy_cluster.core.errors import (
    AuthenticationFailed,
    ExecutionFailed,
    RetriesExhausted,
    ServerTimeout,
    ServerUnreachable,
    UnexpectedStatus,
    WorkflowRejected,
)
from comfy_cluster.core.event_stream import EventListener
from comfy_cluster.core.retry import retry_transient
from comfy_cluster.core.server import ServerConfig
from comfy_cluster.core.server_files import UploadCache
from comfy_cluster.sim.harness import free_port, make_test_image

FAST = Timeouts(connect=0.5, read=3.0)


def cfg(target: Any, name: str = "s1", **kw: Any) -> ServerConfig:
    port = target if isinstance(target, int) else target.port
    return ServerConfig(name=name, host="127.0.0.1", port=port, **kw)


def prompt(prefix: str = "t", **overrides: Any) -> dict:
    wf = {
        k: {"class_type": v["class_type"], "inputs": dict(v["inputs"])}
        for k, v in INVERT_PROMPT.items()
    }
    wf["3"]["inputs"]["filename_prefix"] = prefix
    for key, value in overrides.items():
        node, name = key.split("__")
        wf[node]["inputs"][name] = value
    return wf


def slow_prompt(prefix: str, steps: int = 20) -> dict:
    wf = prompt(prefix)
    wf["4"] = {
        "class_type": "SimSlowSampler",
        "inputs": {"image": ["2", 0], "seed": 0, "steps": steps, "seconds_per_step": 0.05},
    }
    wf["3"]["inputs"]["images"] = ["4", 0]
    return wf


class Events:
    """Collects listener events; ``wait_for(pred)`` polls with a deadline."""

    def __init__(self) -> None:
        self.items: list[p.Event] = []
        self.q: queue.Queue = queue.Queue()

    def __call__(self, event: p.Event) -> None:
        self.items.append(event)
        self.q.put(event)

    def wait_for(self, pred: Callable[[p.Event], bool], timeout: float = 10.0) -> p.Event:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no matching event; last: {self.items[-5:]}"
            try:
                event = self.q.get(timeout=remaining)
            except queue.Empty:
                continue
            if pred(event):
                return event


def finished(pid: str) -> Callable[[p.Event], bool]:
    return lambda e: isinstance(e, p.Executing) and e.finished and e.prompt_id == pid


def test_queries_submit_events_history_download(sim: Any, tmp_path: Path) -> None:
    events = Events()
    with ComfyClient(cfg(sim), timeouts=FAST) as client:
        info = p.parse_system_stats(client.system_stats())
        assert info.comfyui_version and info.device
        assert client.queue_remaining() == 0 and client.queue().depth == 0
        assert {"SaveImage", "EmptyImage", "LoadImage"} <= set(client.object_info())
        listener = client.listen(events)
        assert listener.wait_connected(5.0) and listener.name == "comfy-cluster-ws-s1"
        assert listener.daemon
        pid = client.submit(prompt("job/a"))
        assert len(pid) == 36  # a uuid4 we chose
        events.wait_for(finished(pid))
        kinds = {type(e) for e in events.items if e.prompt_id == pid}
        assert {p.ExecutionStart, p.Executed, p.ExecutionSuccess} <= kinds
        assert isinstance(events.items[0], p.Connected)
        entry = wait_until(lambda: client.history(pid), 5.0)
        result = p.parse_history_entry(pid, entry)
        assert result.outcome == "success"
        (image,) = result.images
        dest = client.download(image, tmp_path / "out" / "frame.0001.png")
        assert dest.read_bytes()[:4] == b"\x89PNG"
        assert [f.name for f in dest.parent.iterdir()] == ["frame.0001.png"]  # no temp left
        assert client.history("never-submitted") is None
    assert not listener.is_alive()  # close() stopped the listener it started


def test_upload_is_deduplicated_by_content_per_server(sim: Any, tmp_path: Path) -> None:
    image = make_test_image(tmp_path / "plate.0001.png")
    posts: list[str] = []
    cache = UploadCache()
    with ComfyClient(cfg(sim), timeouts=FAST, upload_cache=cache) as client:
        original = client._http.send

        def counting(method: str, path: str, **kw: Any) -> Any:
            if method == "POST":
                posts.append(path)
            return original(method, path, **kw)

        client._http.send = counting  # type: ignore[method-assign]
        value = client.upload_image(image, subfolder="job42")
        assert value == "job42/plate.0001.png"
        assert (sim.input_dir / "job42" / "plate.0001.png").exists()
        assert client.upload_image(image, subfolder="job42") == value
        assert len(posts) == 1
        pid = client.submit(
            {
                "1": {"class_type": "LoadImage", "inputs": {"image": value}},
                "2": {
                    "class_type": "SaveImage",
                    "inputs": {"images": ["1", 0], "filename_prefix": "u"},
                },
            }
        )
        assert wait_until(lambda: client.history(pid), 5.0)
    # another client sharing the cache does not send it again either
    with ComfyClient(cfg(sim), timeouts=FAST, upload_cache=cache) as other:
        assert other.upload_image(image, subfolder="job42") == value


def test_server_down_at_start_is_unreachable_fast() -> None:
    with ComfyClient(cfg(free_port()), timeouts=FAST) as client:
        t0 = time.monotonic()
        with pytest.raises(ServerUnreachable) as info:
            client.system_stats()
        assert time.monotonic() - t0 < 0.5
        assert info.value.server == "s1" and "unreachable" in str(info.value)


def test_refusing_sim_is_unreachable(sim_factory: Any) -> None:
    server = sim_factory(refuse_connections=True)
    with ComfyClient(cfg(server), timeouts=FAST) as client, pytest.raises(ServerUnreachable):
        client.queue()


def test_black_holed_server_costs_one_timeout(black_hole: Any) -> None:
    with ComfyClient(cfg(black_hole), timeouts=Timeouts(0.3, 0.3)) as client:
        t0 = time.monotonic()
        with pytest.raises(ServerTimeout):
            client.system_stats()
        assert time.monotonic() - t0 < 0.3 * 2 + 0.2


def test_killed_server_is_unreachable_then_works_after_restart(sim_factory: Any) -> None:
    server = sim_factory()
    events = Events()
    with ComfyClient(cfg(server), timeouts=FAST) as client:
        listener = client.listen(events, reconnect_initial=0.05, reconnect_max=0.2)
        assert listener.wait_connected(5.0)
        assert client.queue_remaining() == 0  # a pooled keep-alive connection now exists
        server.kill()
        with pytest.raises(ServerUnreachable):
            client.queue_remaining()
        events.wait_for(lambda e: isinstance(e, p.Disconnected))
        server.restart()
        assert client.queue_remaining() == 0
        events.wait_for(lambda e: isinstance(e, p.Connected) and e.attempt == 2)
        pid = client.submit(prompt("after-restart"))
        events.wait_for(finished(pid))


def test_retry_policy_rides_out_a_restart(sim_factory: Any) -> None:
    server = sim_factory()
    server.kill()
    calls: list[int] = []
    restarted = threading.Event()

    def sleep(seconds: float) -> None:  # the injected sleep brings the server back
        calls.append(1)
        if not restarted.is_set():
            server.restart()
            restarted.set()

    with ComfyClient(cfg(server), timeouts=FAST) as client:
        policy = retry_transient(attempts=3, max_seconds=30, sleep=sleep)
        assert policy.call(client.queue_remaining) == 0
    assert len(calls) == 1


def test_400_with_node_errors_is_surfaced_and_not_retried(sim: Any) -> None:
    bad = prompt("x")
    del bad["2"]["inputs"]["image"]
    sleeps: list[float] = []
    with ComfyClient(cfg(sim), timeouts=FAST) as client:
        policy = retry_transient(attempts=5, sleep=sleeps.append)
        with pytest.raises(WorkflowRejected) as info:
            policy.call(client.submit, bad, prompt_id="p-400")
    exc = info.value
    assert sleeps == []
    assert exc.error_type == "prompt_outputs_failed_validation" and exc.prompt_id == "p-400"
    (err,) = exc.node_errors
    assert (err.node_id, err.class_type, err.type, err.input_name) == (
        "2",
        "ImageInvert",
        "required_input_missing",
        "image",
    )
    assert sim.prompts_seen == []


def test_missing_node_class_is_rejected_with_its_name(sim_factory: Any) -> None:
    server = sim_factory(missing_classes=("ImageInvert",))
    with ComfyClient(cfg(server), timeouts=FAST) as client:
        assert "ImageInvert" not in client.object_info()
        with pytest.raises(WorkflowRejected) as info:
            client.submit(prompt())
    assert info.value.missing_classes == ("ImageInvert",)
    assert info.value.node_errors[0].node_id == "2"


def test_server_answering_500_is_a_typed_permanent_error(sim_factory: Any) -> None:
    server = sim_factory(fail_prompt_posts=2)
    sleeps: list[float] = []
    with ComfyClient(cfg(server), timeouts=FAST) as client:
        with pytest.raises(UnexpectedStatus) as info:
            retry_transient(attempts=3, sleep=sleeps.append).call(client.submit, prompt())
        assert info.value.status == 500 and sleeps == []
        with pytest.raises(UnexpectedStatus):
            client.submit(prompt())
        pid = client.submit(prompt("third"))  # the fault counted down
        assert wait_until(lambda: client.history(pid), 5.0)


def test_execution_error_arrives_as_typed_event(sim_factory: Any) -> None:
    server = sim_factory(fail_node="ImageInvert")
    events = Events()
    with ComfyClient(cfg(server), timeouts=FAST) as client:
        client.listen(events).wait_connected(5.0)
        pid = client.submit(prompt("err"))
        err = events.wait_for(lambda e: isinstance(e, p.ExecutionErrorEvent))
        events.wait_for(finished(pid))
        assert err.prompt_id == pid and err.node_id == "2" and err.node_type == "ImageInvert"
        with pytest.raises(ExecutionFailed):
            p.parse_history_entry(
                pid, wait_until(lambda: client.history(pid), 5.0)
            ).raise_for_outcome()


def test_interrupt_and_cancel_touch_only_our_prompts(sim_factory: Any) -> None:
    server = sim_factory(node_seconds=0.0)
    events = Events()
    with (
        ComfyClient(cfg(server), timeouts=FAST) as ours,
        ComfyClient(cfg(server), timeouts=FAST) as other,
    ):
        ours.listen(events).wait_connected(5.0)
        theirs = other.submit(slow_prompt("theirs", steps=200))
        wait_until(lambda: theirs in ours.queue().running, 5.0)
        mine_pending = ours.submit(slow_prompt("mine1"))
        mine_later = ours.submit(slow_prompt("mine2"))
        assert ours.interrupt(mine_pending) is False  # pending: an interrupt would stop theirs
        ours.cancel(mine_pending)
        state = ours.queue()
        assert mine_pending not in state and theirs in state.running and mine_later in state.pending
        other.cancel(theirs)  # (their own cancel) now ours runs
        wait_until(lambda: mine_later in ours.queue().running, 5.0)
        assert ours.interrupt(mine_later) is True
        ev = events.wait_for(lambda e: isinstance(e, p.ExecutionInterrupted))
        assert ev.prompt_id == mine_later
        entry = wait_until(lambda: ours.history(mine_later), 5.0)
        assert p.parse_history_entry(mine_later, entry).outcome == "interrupted"


def test_hung_prompt_history_stays_none(sim_factory: Any) -> None:
    server = sim_factory(hang_prompts=True)
    with ComfyClient(cfg(server), timeouts=FAST) as client:
        pid = client.submit(prompt("hang"))
        wait_until(lambda: pid in client.queue().running, 5.0)
        assert client.history(pid) is None


def test_websocket_drop_reconnects_with_old_socket_closed_first(sim_factory: Any) -> None:
    server = sim_factory(drop_ws_after_events=2)
    events = Events()
    with ComfyClient(cfg(server), timeouts=FAST) as client:
        listener = client.listen(events, reconnect_initial=0.05)
        assert listener.wait_connected(5.0)
        pid = client.submit(prompt("drop"))
        events.wait_for(lambda e: isinstance(e, p.Disconnected))
        events.wait_for(lambda e: isinstance(e, p.Connected) and e.attempt == 2)
        assert wait_until(lambda: client.history(pid), 5.0)  # re-sync from history
        server.set_faults(drop_ws_after_events=None)
        # same clientId, new socket: still routed to us (the reconnect pitfall did not bite)
        pid2 = client.submit(prompt("after-drop"))
        events.wait_for(finished(pid2))
        kinds = [type(e) for e in events.items]
        assert kinds.count(p.Connected) == kinds.count(p.Disconnected) + 1


def test_binary_preview_frames_are_skipped_safely(sim: Any) -> None:
    events = Events()
    wf = prompt("ws")
    wf["3"] = {"class_type": "SaveImageWebsocket", "inputs": {"images": ["2", 0]}}
    with ComfyClient(cfg(sim), timeouts=FAST) as client:
        client.listen(events).wait_connected(5.0)
        pid = client.submit(wf)
        events.wait_for(finished(pid))
    assert any(isinstance(e, p.ProgressEvent) and e.prompt_id == pid for e in events.items)


def test_listener_callback_errors_do_not_kill_it(sim: Any) -> None:
    seen = Events()

    def flaky(event: p.Event) -> None:
        seen(event)
        raise RuntimeError("consumer bug")

    with ComfyClient(cfg(sim), timeouts=FAST) as client:
        listener = client.listen(flaky)
        assert listener.wait_connected(5.0)  # else the prompt may finish before we listen
        pid = client.submit(prompt("cb"))
        seen.wait_for(finished(pid))
        assert listener.is_alive()


def test_listener_stop_event_and_close_are_prompt(sim: Any) -> None:
    stop = threading.Event()
    listener = EventListener(cfg(sim), "cid-1", lambda e: None, stop=stop, timeouts=FAST)
    listener.start()
    assert listener.wait_connected(5.0)
    t0 = time.monotonic()
    stop.set()
    listener.join(2.0)
    assert not listener.is_alive() and time.monotonic() - t0 < 1.0
    listener2 = EventListener(cfg(free_port()), "cid-2", lambda e: None, timeouts=FAST)
    listener2.start()
    wait_until(lambda: listener2.last_error is not None, 5.0)
    assert isinstance(listener2.last_error, ServerUnreachable)
    t0 = time.monotonic()
    listener2.close()
    assert not listener2.is_alive() and time.monotonic() - t0 < 1.0


def test_token_is_sent_on_http_and_websocket(sim_factory: Any) -> None:
    server = sim_factory(token="s3cret")
    with ComfyClient(cfg(server), timeouts=FAST) as anonymous:
        with pytest.raises(AuthenticationFailed) as info:
            anonymous.system_stats()
        assert info.value.status == 401
        with pytest.raises(AuthenticationFailed):
            anonymous.probe_websocket()
    events = Events()
    with ComfyClient(cfg(server, token="s3cret"), timeouts=FAST) as client:
        assert client.queue_remaining() == 0
        assert client.probe_websocket() < 5.0
        client.listen(events).wait_connected(5.0)
        pid = client.submit(prompt("tok"))
        events.wait_for(finished(pid))


def test_retries_exhausted_against_a_dead_server() -> None:
    sleeps: list[float] = []
    client = ComfyClient(cfg(free_port()), timeouts=FAST)
    with client, pytest.raises(RetriesExhausted) as info:
        retry_transient(attempts=3, sleep=sleeps.append).call(client.system_stats)
    assert info.value.attempts == 3 and len(sleeps) == 2
    assert isinstance(info.value.last_error, ServerUnreachable)


def test_server_close_frame_releases_the_old_socket_before_any_reconnect(
    sim_factory: Any,
) -> None:
    """Regression: after the server's close frame, websocket-client's close() was a no-op.

    ``recv_data`` answers a close frame and marks the socket disconnected, so ``close()`` returned
    at once and the old TCP socket stayed open while the listener reconnected with the same
    clientId (ComfyUI unregisters a clientId when its old socket finally goes).
    """
    server = sim_factory()
    sockets: list[Any] = []
    open_at_connect: list[bool] = []

    def connect(*args: Any, **kwargs: Any) -> Any:
        open_at_connect.append(any(ws.sock is not None for ws in sockets))
        ws = websocket.create_connection(*args, **kwargs)
        sockets.append(ws)
        return ws

    events = Events()
    listener = EventListener(
        cfg(server), "cid-close", events, timeouts=FAST, reconnect_initial=0.05, connect=connect
    )
    listener.start()
    try:
        assert listener.wait_connected(5.0)
        server.stop()  # graceful: ComfyUI-like close frame (1001) to every websocket
        events.wait_for(lambda e: isinstance(e, p.Disconnected))
        assert sockets[0].sock is None, "old socket still open after Disconnected"
        server.start()
        events.wait_for(lambda e: isinstance(e, p.Connected) and e.attempt == 2)
    finally:
        listener.close()
    assert open_at_connect and not any(open_at_connect)
