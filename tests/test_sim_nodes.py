"""Node behaviour on real pixels, validation errors, /view and /upload/image rules."""

from __future__ import annotations

import io
import struct
from typing import Any

import pytest
import requests
from fixtures_sim import submit, ws_open, ws_until_done
from PIL import Image

from comfy_cluster.sim import images as im
from comfy_cluster.sim.harness import SimServer, make_test_image


def run(sim: SimServer, prompt: dict[str, Any]) -> dict:
    ws = ws_open(sim.url)
    try:
        r = submit(sim.url, prompt, ws.client_id)
        assert r.status_code == 200, r.text
        pid = r.json()["prompt_id"]
        ws_until_done(ws, pid)
    finally:
        ws.close()
    return requests.get(f"{sim.url}/history/{pid}").json()[pid]


def fetch(sim: SimServer, ref: dict[str, str]) -> Image.Image:
    r = requests.get(sim.url + "/view", params=ref)
    assert r.status_code == 200
    return Image.open(io.BytesIO(r.content))


def _f32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


def test_invert_truncates_like_comfyui_for_every_value() -> None:
    """float32 v/255, 1.0 - v, * 255, clip, astype(uint8): an inverted 200 is 54."""
    row = Image.frombytes("L", (256, 1), bytes(range(256)))
    got = list(im.channel_to_u8(im.invert((im.channel_from_u8(row),) * 3)[0]).tobytes())
    want = [int(min(255.0, _f32(255.0 * _f32(1.0 - _f32(v / 255.0))))) for v in range(256)]
    assert got == want
    assert got[200] == 54 and got[10] == 245


def test_pipeline_scale_blur_noise_batch_frombatch_save(sim: SimServer, tmp_path: Any) -> None:
    make_test_image(sim.input_dir / "plate.png", size=(20, 10), color=(200, 100, 50))
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "plate.png"}},
        "2": {
            "class_type": "ImageScale",
            "inputs": {
                "image": ["1", 0],
                "upscale_method": "bilinear",
                "width": 10,
                "height": 0,
                "crop": "disabled",
            },
        },
        "3": {
            "class_type": "ImageBlur",
            "inputs": {"image": ["2", 0], "blur_radius": 2, "sigma": 1.0},
        },
        "4": {
            "class_type": "ImageAddNoise",
            "inputs": {"image": ["3", 0], "seed": 1, "strength": 0.0},
        },
        "5": {
            "class_type": "EmptyImage",
            "inputs": {"width": 4, "height": 4, "batch_size": 2, "color": 0xFF0000},
        },
        "6": {"class_type": "ImageBatch", "inputs": {"image1": ["4", 0], "image2": ["5", 0]}},
        "7": {
            "class_type": "ImageFromBatch",
            "inputs": {"image": ["6", 0], "batch_index": 1, "length": 5},
        },
        "8": {
            "class_type": "SaveImage",
            "inputs": {"images": ["7", 0], "filename_prefix": "shot/a/%width%"},
        },
        "9": {"class_type": "GetImageSize", "inputs": {"image": ["6", 0]}},
        "10": {"class_type": "PreviewAny", "inputs": {"source": ["9", 2]}},
        "11": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }
    entry = run(sim, prompt)
    images = entry["outputs"]["8"]["images"]
    assert [i["filename"] for i in images] == ["10_00001_.png", "10_00002_.png"]
    assert {i["subfolder"] for i in images} == {"shot/a"}
    first = fetch(sim, images[0])
    assert first.size == (10, 5)
    assert first.getpixel((0, 0)) == (255, 0, 0)  # the resized red EmptyImage
    assert entry["outputs"]["10"] == {"text": ["3"]}
    preview = entry["outputs"]["11"]["images"][0]
    assert preview["type"] == "temp" and preview["filename"].startswith("ComfyUI_temp_")
    assert fetch(sim, preview).getpixel((3, 3)) == (200, 100, 50)
    # counter continues from the files on disk; a new prefix re-runs only the saver
    prompt["8"]["inputs"]["filename_prefix"] = "shot/a/10"
    again = run(sim, prompt)
    assert [i["filename"] for i in again["outputs"]["8"]["images"]] == [
        "10_00003_.png",
        "10_00004_.png",
    ]
    cached = again["status"]["messages"][1][1]["nodes"]
    assert "1" in cached and "8" not in cached


def test_save_prefix_escape_is_refused(sim: SimServer) -> None:
    entry = run(
        sim,
        {
            "1": {
                "class_type": "EmptyImage",
                "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
            },
            "2": {
                "class_type": "SaveImage",
                "inputs": {"images": ["1", 0], "filename_prefix": "../../escape"},
            },
        },
    )
    err = entry["status"]["messages"][-1]
    assert err[0] == "execution_error"
    assert "Saving image outside the output folder is not allowed" in err[1]["exception_message"]
    assert not list(sim.root.parent.glob("escape*"))


@pytest.mark.parametrize(
    ("inputs", "etype"),
    [
        ({"width": 0, "height": 8, "batch_size": 1, "color": 0}, "value_smaller_than_min"),
        ({"width": "abc", "height": 8, "batch_size": 1, "color": 0}, "invalid_input_type"),
        ({"width": [1, 2, 3], "height": 8, "batch_size": 1, "color": 0}, "bad_linked_input"),
    ],
)
def test_validation_errors(sim: SimServer, inputs: dict[str, Any], etype: str) -> None:
    r = submit(
        sim.url,
        {
            "1": {"class_type": "EmptyImage", "inputs": inputs},
            "2": {
                "class_type": "SaveImage",
                "inputs": {"images": ["1", 0], "filename_prefix": "x"},
            },
        },
    )
    assert r.status_code == 400
    body = r.json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert body["node_errors"]["1"]["errors"][0]["type"] == etype
    assert body["node_errors"]["1"]["dependent_outputs"] == ["2"]


def test_other_400s_and_500s(sim: SimServer) -> None:
    r = requests.post(sim.url + "/prompt", json={})
    assert r.status_code == 400 and r.json()["error"]["type"] == "no_prompt"
    r = submit(sim.url, {"1": {"class_type": "EmptyImage", "inputs": {}}})
    assert r.json()["error"]["type"] == "prompt_no_outputs"
    r = submit(sim.url, {"1": {"class_type": "SaveImage", "inputs": {"images": ["9", 0]}}})
    assert r.json()["node_errors"]["1"]["errors"][0]["type"] == "exception_during_validation"
    r = submit(
        sim.url,
        {
            "1": {"class_type": "LoadImage", "inputs": {"image": "nope.png"}},
            "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
        },
    )
    err = r.json()["node_errors"]["1"]["errors"][0]
    assert (err["type"], err["details"]) == (
        "custom_validation_failed",
        "image - Invalid image file: nope.png",
    )
    r = submit(
        sim.url,
        {
            "1": {
                "class_type": "EmptyImage",
                "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
            },
            "2": {
                "class_type": "ImageScale",
                "inputs": {
                    "image": ["1", 0],
                    "upscale_method": "nope",
                    "width": 1,
                    "height": 1,
                    "crop": "disabled",
                },
            },
            "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
        },
    )
    assert r.json()["node_errors"]["2"]["errors"][0]["type"] == "value_not_in_list"
    for path in ("/prompt", "/free", "/queue", "/history"):
        r = requests.post(sim.url + path, data="not json")
        assert r.status_code == 500 and r.headers["Content-Type"].startswith("text/plain"), path
    assert requests.post(sim.url + "/prompt", json={"prompt": [1]}).status_code == 500


def test_view_and_upload_stay_inside_their_folders(sim: SimServer) -> None:
    (sim.root / "secret.png").write_bytes(b"x")
    get = lambda **p: requests.get(sim.url + "/view", params=p).status_code  # noqa: E731
    assert get() == 404
    assert get(filename="../secret.png") == 400
    assert get(filename="secret.png", subfolder="..") == 403
    assert get(filename="secret.png", type="bogus") == 400
    assert get(filename="missing.png") == 404
    up = lambda name, data, **f: requests.post(  # noqa: E731
        sim.url + "/upload/image", files={"image": (name, data)}, data=f
    )
    assert up("a.png", b"one").json() == {"name": "a.png", "subfolder": "", "type": "input"}
    assert up("a.png", b"one").json()["name"] == "a.png"  # same bytes: reused
    assert up("a.png", b"two").json()["name"] == "a (1).png"
    assert up("a.png", b"three", overwrite="true").json()["name"] == "a.png"
    assert up("b.png", b"x", subfolder="../../out").status_code == 400
    assert up("b.png", b"x", type="bogus").status_code == 500
    assert up("t.png", b"x", type="temp").json()["type"] == "temp"
    assert (sim.temp_dir / "t.png").is_file()
    assert get(filename="a.png", type="input") == 200
    assert get(filename="a.png [input]") == 200
    assert requests.post(sim.url + "/upload/image", data={"x": "1"}).status_code == 400


def test_queue_and_history_edits(sim_factory: Any) -> None:
    sim = sim_factory(hang_prompts=True)
    prompt = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
        },
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }
    for i in range(4):
        submit(sim.url, prompt, "c", prompt_id=f"q{i}")
    assert requests.post(sim.url + "/queue", json={"delete": ["q2", "zzz"]}).text == ""
    assert sim.queue_snapshot() == (["q0"], ["q1", "q3"])
    requests.post(sim.url + "/queue", json={"clear": True})
    assert sim.queue_snapshot() == (["q0"], [])
    r = submit(sim.url, prompt, "c", number=42)
    assert r.json()["number"] == 42.0
    sim.set_faults(hang_prompts=False)
    from fixtures_sim import wait_until

    wait_until(lambda: len(requests.get(sim.url + "/history").json()) == 2)
    assert list(requests.get(sim.url + "/history", params={"max_items": 1}).json()) == [
        r.json()["prompt_id"]
    ]
    requests.post(sim.url + "/history", json={"delete": ["q0"]})
    assert requests.get(sim.url + "/history/q0").json() == {}
    requests.post(sim.url + "/history", json={"clear": True})
    assert requests.get(sim.url + "/history").json() == {}
    assert requests.post(sim.url + "/free", json={"free_memory": True}).status_code == 200
