"""Model nodes, checkpoint memory, cold servers and honest timing (issue 10)."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import requests
from fixtures_sim import submit, wait_until, ws_open, ws_until_done
from PIL import Image

from comfy_cluster.sim.harness import SimServer, make_test_image
from comfy_cluster.sim.models import ModelMemory

FIXTURES = Path(__file__).parent / "fixtures" / "comfyui"


def fixture(name: str) -> Any:
    with open(FIXTURES / name, encoding="utf-8") as fh:
        return json.load(fh)


def img2img(ckpt: str = "sd15.safetensors", image: str = "plate.0001.png") -> dict:
    workflow = copy.deepcopy(fixture("workflow_img2img_api.json"))
    workflow["4"]["inputs"]["ckpt_name"] = ckpt
    workflow["10"]["inputs"]["image"] = image
    return workflow


def run(sim: SimServer, prompt: dict) -> tuple[str, list[dict], float]:
    ws = ws_open(sim.url)
    try:
        t0 = time.monotonic()
        r = submit(sim.url, prompt, ws.client_id)
        assert r.status_code == 200, r.text
        pid = r.json()["prompt_id"]
        frames = ws_until_done(ws, pid)
        return pid, frames, time.monotonic() - t0
    finally:
        ws.close()


def stats(sim: SimServer) -> dict:
    return requests.get(f"{sim.url}/sim/stats", timeout=5).json()


def test_object_info_lists_models_like_comfyui(sim_factory) -> None:
    sim = sim_factory(models=("a.safetensors", "b.safetensors"), loras=("l.safetensors",))
    info = requests.get(f"{sim.url}/object_info", timeout=5).json()
    real = fixture("object_info_models.json")
    for name in ("CheckpointLoaderSimple", "CLIPTextEncode", "VAEEncode", "VAEDecode"):
        assert name in info
    for name in ("EmptyLatentImage", "KSampler", "LoraLoader"):
        assert info[name]["input_order"] == real[name]["input_order"]
        assert info[name]["output"] == real[name]["output"]
    ckpt = info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"]
    assert ckpt == [
        ["a.safetensors", "b.safetensors"],
        real["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][1],
    ]
    assert info["LoraLoader"]["input"]["required"]["lora_name"][0] == ["l.safetensors"]
    one = requests.get(f"{sim.url}/object_info/CheckpointLoaderSimple", timeout=5).json()
    assert one["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0][0] == "a.safetensors"


def test_default_models_include_sd15(sim) -> None:
    info = requests.get(f"{sim.url}/object_info/CheckpointLoaderSimple", timeout=5).json()
    files = info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
    assert files[0] == "sd15.safetensors"
    assert any(f.startswith("sim-") for f in files)


def test_missing_model_gives_the_real_400_body(sim_factory) -> None:
    sim = sim_factory(models=())
    make_test_image(sim.input_dir / "plate.0001.png")
    recorded = fixture("prompt_missing_model_400.json")
    r = submit(sim.url, recorded["request"]["prompt"])
    assert r.status_code == recorded["status"] == 400
    assert r.json() == recorded["body"]


def test_img2img_workflow_runs_unchanged(sim) -> None:
    make_test_image(sim.input_dir / "plate.0001.png", (16, 16), (200, 100, 50))
    pid, frames, _ = run(sim, fixture("workflow_img2img_api.json"))
    progress = [f["msg"] for f in frames if f.get("msg", {}).get("type") == "progress"]
    assert [p["data"]["value"] for p in progress if p["data"]["node"] == "3"] == list(range(1, 21))
    entry = requests.get(f"{sim.url}/history/{pid}", timeout=5).json()[pid]
    assert entry["status"]["status_str"] == "success"
    ref = entry["outputs"]["9"]["images"][0]
    with Image.open(sim.output_dir / ref["subfolder"] / ref["filename"]) as img:
        assert img.size == (16, 16)
        # KSampler inverts (truncating like ComfyUI: 255 - v may come out one lower)
        got = img.convert("RGB").getpixel((0, 0))
    assert all(abs((255 - v) - w) <= 1 for v, w in zip((200, 100, 50), got))


def test_lora_loader_and_empty_latent(sim) -> None:
    prompt = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}},
        "5": {"class_type": "LoraLoader", "inputs": {
            "model": ["4", 0], "clip": ["4", 1], "lora_name": "sim-detail.safetensors",
            "strength_model": 1.0, "strength_clip": 0.5}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "x", "clip": ["5", 1]}},
        "7": {"class_type": "EmptyLatentImage",
              "inputs": {"width": 16, "height": 24, "batch_size": 2}},
        "3": {"class_type": "KSampler", "inputs": {
            "seed": 1, "steps": 2, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal",
            "denoise": 1.0, "model": ["5", 0], "positive": ["6", 0], "negative": ["6", 0],
            "latent_image": ["7", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "t"}},
    }  # fmt: skip
    pid, _, _ = run(sim, prompt)
    entry = requests.get(f"{sim.url}/history/{pid}", timeout=5).json()[pid]
    images = entry["outputs"]["9"]["images"]
    assert len(images) == 2
    with Image.open(sim.output_dir / images[0]["filename"]) as img:
        assert img.size == (16, 24)
        assert img.convert("RGB").getpixel((0, 0)) == (255, 255, 255)
    bad = copy.deepcopy(prompt)
    bad["5"]["inputs"]["lora_name"] = "nope.safetensors"
    r = submit(sim.url, bad)
    assert r.status_code == 400
    assert r.json()["node_errors"]["5"]["errors"][0]["type"] == "value_not_in_list"


def test_model_memory_lru() -> None:
    memory = ModelMemory()
    assert memory.use("a", 2) and memory.use("b", 2)
    assert not memory.use("a", 2)  # a is now the most recent
    assert memory.use("c", 2)  # evicts b
    assert memory.stats()["loaded"] == ["a", "c"]
    assert memory.use("b", 2)
    assert memory.stats()["loads_by_model"] == {"a": 1, "b": 2, "c": 1}


def test_loads_cost_load_seconds_and_evict(sim_factory) -> None:
    sim = sim_factory(node_seconds=0.0, load_seconds=1.0, models_in_memory=1, speed=4.0)
    make_test_image(sim.input_dir / "plate.0001.png")
    make_test_image(sim.input_dir / "plate.0002.png", color=(1, 2, 3))
    _, _, first = run(sim, img2img("sd15.safetensors"))
    _, _, warm = run(sim, img2img("sd15.safetensors", "plate.0002.png"))
    assert first >= 1.0  # not scaled by speed 4
    assert warm < 0.8  # a loaded CI machine may add tenths, never a load
    s = stats(sim)
    assert s["models"]["loaded"] == ["sd15.safetensors"] and s["models"]["loads"] == 1
    _, _, other = run(sim, img2img("sim-a.safetensors"))
    assert other >= 1.0
    assert stats(sim)["models"]["loaded"] == ["sim-a.safetensors"]  # sd15 evicted
    _, _, back = run(sim, img2img("sd15.safetensors"))
    assert back >= 1.0
    assert stats(sim)["models"]["loads_by_model"] == {
        "sd15.safetensors": 2,
        "sim-a.safetensors": 1,
    }


def test_two_models_in_memory_switch_for_free(sim_factory) -> None:
    sim = sim_factory(node_seconds=0.0, load_seconds=1.0, models_in_memory=2)
    make_test_image(sim.input_dir / "plate.0001.png")
    run(sim, img2img("sd15.safetensors"))
    run(sim, img2img("sim-a.safetensors"))
    _, _, again = run(sim, img2img("sd15.safetensors"))
    assert again < 0.8
    assert stats(sim)["models"]["loads"] == 2


def test_warmup_on_first_prompt_only(sim_factory) -> None:
    sim = sim_factory(node_seconds=0.0, warmup_seconds=0.5, speed=5.0)
    make_test_image(sim.input_dir / "plate.0001.png")
    make_test_image(sim.input_dir / "plate.0002.png", color=(9, 9, 9))
    _, _, first = run(sim, img2img())
    _, _, second = run(sim, img2img(image="plate.0002.png"))
    assert first >= 0.5 and second < 0.3
    sim.restart()  # a new process is cold again
    make_test_image(sim.input_dir / "plate.0001.png")
    _, _, again = run(sim, img2img())
    assert again >= 0.5


def test_honest_timing_includes_the_sims_own_work(sim_factory) -> None:
    """A 7-node img2img prompt on a 256x256 plate takes node_seconds * nodes, not more."""
    sim = sim_factory(node_seconds=0.04, speed=2.0)
    make_test_image(sim.input_dir / "plate.0001.png", (256, 256))
    ws = ws_open(sim.url)
    try:
        pid = submit(sim.url, img2img(), ws.client_id).json()["prompt_id"]
        ws_until_done(ws, pid)
    finally:
        ws.close()
    entry = requests.get(f"{sim.url}/history/{pid}", timeout=5).json()[pid]
    stamps = {name: data["timestamp"] for name, data in entry["status"]["messages"]}
    server_ms = stamps["execution_success"] - stamps["execution_start"]
    expected_ms = 8 * 0.04 / 2.0 * 1000  # 8 executed nodes
    assert expected_ms - 5 <= server_ms <= expected_ms * 1.15 + 15, server_ms


def test_speed_fault_changes_speed_mid_run(sim_factory) -> None:
    sim = sim_factory(node_seconds=0.05)
    r = requests.post(f"{sim.url}/sim/faults", json={"speed": 0.5}, timeout=5)
    assert r.status_code == 200 and r.json()["speed"] == 0.5
    assert sim.options.speed == 0.5


def test_kill_and_restart_on_the_same_port_loses_the_queue(sim_factory) -> None:
    sim = sim_factory(node_seconds=0.3)
    make_test_image(sim.input_dir / "plate.0001.png")
    port = sim.port
    for _ in range(3):
        submit(sim.url, img2img())
    wait_until(lambda: sim.queue_snapshot()[1])
    sim.kill()
    sim.start()
    assert sim.port == port
    assert sim.queue_snapshot() == ([], [])
    assert requests.get(f"{sim.url}/queue", timeout=5).json() == {
        "queue_running": [],
        "queue_pending": [],
    }
    assert stats(sim)["models"]["loads"] == 0


def test_foreign_prompts_share_the_server(sim_factory) -> None:
    sim = sim_factory(node_seconds=0.02, foreign_load=0.5, foreign_seconds=0.3)
    make_test_image(sim.input_dir / "plate.0001.png")
    ours = []
    seen_in_queue: list[list] = []
    for i in range(6):
        make_test_image(sim.input_dir / f"p{i}.png", color=(i, i, i))
        ours.append(submit(sim.url, img2img(image=f"p{i}.png"), "me").json()["prompt_id"])

    def all_done() -> bool:
        q = requests.get(f"{sim.url}/queue", timeout=5).json()
        seen_in_queue.extend(q["queue_running"] + q["queue_pending"])
        history = requests.get(f"{sim.url}/history", timeout=5).json()
        return all(pid in history for pid in ours) and not (
            q["queue_running"] or q["queue_pending"]
        )

    wait_until(all_done, timeout=20, interval=0.02)
    history = requests.get(f"{sim.url}/history", timeout=5).json()
    foreign = [e for pid, e in history.items() if pid not in ours]
    assert foreign, "no foreign prompt ran"
    for entry in foreign:
        graph, extra = entry["prompt"][2:4]
        assert extra["client_id"] == "sim-foreign-client" and "extra_pnginfo" in extra
        assert graph["4"]["inputs"]["ckpt_name"] == sim.options.foreign_checkpoint
        assert entry["status"]["status_str"] == "success"
    assert any(item[3].get("client_id") == "sim-foreign-client" for item in seen_in_queue)
    s = stats(sim)
    busy = s["busy_seconds"]
    assert s["foreign_prompts"] == len(foreign)
    # the foreign share is kept near F = 0.5 (one foreign prompt at a time)
    assert 0.3 <= busy["foreign"] / (busy["own"] + busy["foreign"]) <= 0.8, busy
    assert "sim-other.safetensors" in s["models"]["loads_by_model"]


def test_no_foreign_prompts_by_default(sim) -> None:
    make_test_image(sim.input_dir / "plate.0001.png")
    run(sim, img2img())
    assert stats(sim)["foreign_prompts"] == 0
    assert len(requests.get(f"{sim.url}/history", timeout=5).json()) == 1
