"""Replays the recorded ComfyUI 0.3.64 scenarios against the sim: same status codes, same message
types in the same order, same keys and value types (ids and timestamps aside)."""

from __future__ import annotations

import io
import json
import struct
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from fixtures_sim import submit, wait_until, ws_open, ws_recv, ws_until_done
from PIL import Image

FIXTURES = Path(__file__).parent / "fixtures"
TRANSCRIPTS = json.loads((FIXTURES / "ws_transcripts.json").read_text())["scenarios"]
HTTP = json.loads((FIXTURES / "http_examples.json").read_text())
IGNORED = ("prompt_id", "timestamp")


def shape(value: Any) -> Any:
    """Keys and value types, recursively; list elements by their first item's shape."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return ["list", shape(value[0]) if value else None]
    return type(value).__name__


def assert_same_shape(got: Any, want: Any, where: str = "") -> None:
    if isinstance(want, dict):
        assert isinstance(got, dict), f"{where}: {got!r} is not a dict"
        assert set(got) == set(want), f"{where}: keys {sorted(got)} != {sorted(want)}"
        for k in want:
            assert_same_shape(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list), f"{where}: {got!r} is not a list"
        if want and got and not (isinstance(want[0], str) and want[0].startswith("<elided")):
            assert_same_shape(got[0], want[0], f"{where}[0]")
    else:
        assert type(got) is type(want), f"{where}: {got!r} vs recorded {want!r}"


def frame_key(frame: dict) -> Any:
    if frame["kind"] == "binary":
        event = (
            frame["msg"]["binary_event"]
            if "msg" in frame
            else struct.unpack(">I", frame["data"][:4])[0]
        )
        return ("binary", event)
    return ("text", frame["msg"]["type"])


def decode_binary(data: bytes) -> dict:
    event = struct.unpack(">I", data[:4])[0]
    out: dict = {"binary_event": event, "len": len(data)}
    if event == 4:
        n = struct.unpack(">I", data[4:8])[0]
        out["metadata"] = json.loads(data[8 : 8 + n])
    if event == 3:
        n = struct.unpack(">I", data[4:8])[0]
        out["node_id"] = data[8 : 8 + n].decode()
        out["text"] = data[8 + n :].decode()
    return out


def recorded_prompt(scenario: list[dict]) -> tuple:
    history = next(e for e in scenario if e["kind"] == "http GET /history/{id}")["msg"]["body"]
    entry = next(iter(history.values()))
    extra = {k: v for k, v in entry["prompt"][3].items() if k != "client_id"}
    return entry["prompt"][2], extra, entry


def replay(sim: Any, name: str, *, interrupt_at: str = "") -> None:
    scenario = TRANSCRIPTS[name]
    prompt, extra, want_entry = recorded_prompt(scenario)
    client = uuid.uuid4().hex
    ws = ws_open(sim.url, client)
    try:
        want = [e for e in scenario if e["kind"] in ("text", "binary")][1:]  # greeting read already
        if want and want[0]["kind"] == "text" and want[0]["msg"]["type"] == "feature_flags":
            ws.send(
                json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
            )
        post = next(e for e in scenario if e["kind"] == "http POST /prompt")["msg"]
        r = submit(sim.url, prompt, client, extra_data=extra)
        assert r.status_code == post["status"]
        assert_same_shape(r.json(), post["body"], "POST /prompt")
        prompt_id = r.json()["prompt_id"]
        frames: list[dict] = []
        if interrupt_at:
            while True:  # interrupt while the recorded node runs, as the recording did
                frame = ws_recv(ws)
                frames.append(frame)
                msg = frame.get("msg") or {}
                if msg.get("type") == "executing" and msg["data"].get("node") == interrupt_at:
                    r2 = requests.post(sim.url + "/interrupt", json={"prompt_id": prompt_id})
                    assert (r2.status_code, r2.text) == (200, "")
                    break
        frames += ws_until_done(ws, prompt_id)
    finally:
        ws.close()
    got_keys = [frame_key(f) for f in frames]
    want_keys = [frame_key(e) for e in want]
    if want_keys[0] == ("text", "feature_flags"):
        assert got_keys[0] == ("text", "feature_flags")
    assert got_keys == want_keys, name
    for got, rec in zip(frames, want):
        if got["kind"] == "text":
            assert_same_shape(got["msg"], rec["msg"], f"{name}:{rec['msg']['type']}")
            if rec["msg"]["type"] in ("executing", "executed", "execution_cached"):
                data = {k: v for k, v in got["msg"]["data"].items() if k not in IGNORED}
                rec_data = {k: v for k, v in rec["msg"]["data"].items() if k not in IGNORED}
                assert data == rec_data, name
        else:
            decoded = decode_binary(got["data"])
            if "metadata" in rec["msg"]:
                assert_same_shape(decoded["metadata"], rec["msg"]["metadata"])
            if "text" in rec["msg"]:
                assert (decoded["node_id"], decoded["text"]) == (
                    rec["msg"]["node_id"],
                    rec["msg"]["text"],
                )
                assert decoded["len"] == rec["msg"]["len"]
    history = requests.get(f"{sim.url}/history/{prompt_id}").json()
    assert_same_shape(history[prompt_id], want_entry, f"{name}:history")
    got_names = [m[0] for m in history[prompt_id]["status"]["messages"]]
    assert got_names == [m[0] for m in want_entry["status"]["messages"]]
    assert history[prompt_id]["outputs"] == want_entry["outputs"]


def test_replay_ws_transcripts_in_recorded_order(sim_factory: Any) -> None:
    """One server, the recorded order: the resubmit and the feature-flags run rely on the cache."""
    sim = sim_factory()
    replay(sim, "fresh_run_EmptyImage_ImageInvert_SaveImage")
    replay(sim, "identical_resubmit_fully_cached")
    replay(sim, "SaveImageWebsocket_no_feature_flags")
    replay(sim, "SaveImageWebsocket_with_feature_flags")
    replay(sim, "runtime_error_SaveImage_prefix_escape")
    replay(sim, "GetImageSize_text_frame_PreviewAny")
    assert len(list(sim.output_dir.glob("probe_*.png"))) == 1  # the resubmit wrote nothing


def test_replay_interrupt_with_prompt_id(sim_factory: Any) -> None:
    """The recording used 2048² images to be slow; the sim is slowed with node_seconds instead."""
    sim = sim_factory(node_seconds=0.15)
    scenario = TRANSCRIPTS["interrupt_with_prompt_id"]
    _, _, entry = recorded_prompt(scenario)
    entry["prompt"][2]["1"]["inputs"].update(width=16, height=16)
    replay(sim, "interrupt_with_prompt_id", interrupt_at="2")


def test_http_examples(sim_factory: Any, tmp_path: Path) -> None:
    sim = sim_factory()
    # upload: a 32x24 plate whose inverse at (0, 0) is the recorded [245, 54, 225]
    plate = io.BytesIO()
    Image.new("RGB", (32, 24), (10, 200, 30)).save(plate, format="PNG")
    up = HTTP["upload_image"]
    r = requests.post(
        sim.url + "/upload/image",
        files={"image": ("plate.0001.png", plate.getvalue(), "image/png")},
        data={"subfolder": "job42"},
    )
    assert (r.status_code, r.json()) == (up["status"], up["body"])
    assert (sim.input_dir / "job42" / "plate.0001.png").is_file()

    case = HTTP["post_prompt_loadimage"]
    ws = ws_open(sim.url, case["request"]["client_id"])
    try:
        r = requests.post(sim.url + "/prompt", json=case["request"])
        assert (r.status_code, r.json()) == (case["status"], case["body"])
        ws_until_done(ws, case["body"]["prompt_id"])
    finally:
        ws.close()
    history = requests.get(f"{sim.url}/history/{case['body']['prompt_id']}").json()
    want = HTTP["history_by_id"]
    assert_same_shape(history, want)
    pid = case["body"]["prompt_id"]
    assert history[pid]["outputs"] == want[pid]["outputs"]
    assert history[pid]["prompt"][:3] == want[pid]["prompt"][:3]
    assert history[pid]["meta"] == want[pid]["meta"]

    view = HTTP["view"]
    r = requests.get(sim.url + "/view", params=view["params"])
    assert r.status_code == view["status"]
    assert r.headers["Content-Type"] == view["content_type"]
    img = Image.open(io.BytesIO(r.content))
    assert (list(img.size), img.mode, list(img.getpixel((0, 0)))) == (
        view["size"],
        view["mode"],
        view["pixel00"],
    )

    for name in ("post_prompt_400_missing_input", "post_prompt_400_unknown_class"):
        case = HTTP[name]
        r = requests.post(sim.url + "/prompt", json=case["request"])
        assert (r.status_code, r.json()) == (case["status"], case["body"]), name


def test_http_busy_queue_and_interrupted_history(sim_factory: Any) -> None:
    sim = sim_factory(node_seconds=0.2)
    want = HTTP["queue_running_and_pending"]
    ids = []
    for item in want["queue_running"] + want["queue_pending"]:
        graph = json.loads(json.dumps(item[2]))
        graph["1"]["inputs"].update(width=16, height=16)
        r = submit(sim.url, graph, "fixture-client", prompt_id=item[1])
        assert r.status_code == 200
        ids.append(item[1])
    wait_until(lambda: sim.queue_snapshot()[0] == ["slow-0"])
    got = requests.get(sim.url + "/queue").json()
    assert_same_shape(got, want)
    assert [i[1] for i in got["queue_running"]] == ["slow-0"]
    assert [len(i) for i in got["queue_pending"]] == [5] * len(want["queue_pending"])
    r = requests.get(sim.url + "/prompt")
    assert r.json() == {"exec_info": {"queue_remaining": len(ids)}}
    assert_same_shape(r.json(), HTTP["prompt_get_busy"])
    requests.post(sim.url + "/queue", json={"clear": True})
    requests.post(sim.url + "/interrupt", json={"prompt_id": "slow-0"})
    hist = wait_until(lambda: requests.get(sim.url + "/history/slow-0").json())
    assert_same_shape(hist, HTTP["history_interrupted"])
    assert hist["slow-0"]["status"]["messages"][-1][0] == "execution_interrupted"
    assert hist["slow-0"]["status"]["completed"] is False


@pytest.mark.parametrize("prefix", ["", "/api"])
def test_fixed_shapes(sim: Any, prefix: str) -> None:
    for path, fixture in (
        ("/system_stats", "system_stats.json"),
        ("/prompt", "prompt_get.json"),
        ("/queue", "queue_empty.json"),
    ):
        r = requests.get(sim.url + prefix + path)
        assert r.status_code == 200
        assert_same_shape(r.json(), json.loads((FIXTURES / fixture).read_text()))
    info = requests.get(sim.url + prefix + "/object_info").json()
    recorded = json.loads((FIXTURES / "object_info_subset.json").read_text())
    for name in (
        "EmptyImage",
        "ImageInvert",
        "ImageScale",
        "SaveImage",
        "PreviewImage",
        "ImageBlur",
        "ImageAddNoise",
        "ImageBatch",
        "ImageFromBatch",
        "GetImageSize",
        "PreviewAny",
    ):
        assert info[name] == recorded[name]
    assert info["LoadImage"]["input"]["required"]["image"][1] == {"image_upload": True}
    assert info["SimSlowSampler"]["category"] == "sim/testing"
    assert requests.get(sim.url + prefix + "/object_info/Nope").json() == {}
