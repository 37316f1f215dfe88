"""``comfy-cluster sim`` in a subprocess, driven with plain requests + websocket-client."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import requests
from fixtures_sim import wait_until, ws_open, ws_until_done
from PIL import Image

from comfy_cluster.sim.harness import free_port


def test_cli_runs_loadimage_invert_save_and_stops_on_sigint(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "comfy_cluster.cli",
            "sim",
            "--port",
            str(port),
            "--root",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "listening on" in proc.stdout.readline()
        url = f"http://127.0.0.1:{port}"
        png = io.BytesIO()
        Image.new("RGB", (8, 6), (200, 100, 50)).save(png, format="PNG")
        up = requests.post(
            url + "/upload/image", files={"image": ("in.png", png.getvalue())}
        ).json()
        assert up == {"name": "in.png", "subfolder": "", "type": "input"}
        client = uuid.uuid4().hex
        ws = ws_open(url, client)
        prompt_id = str(uuid.uuid4())
        prompt = {
            "1": {"class_type": "LoadImage", "inputs": {"image": up["name"]}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "3": {
                "class_type": "SaveImage",
                "inputs": {"images": ["2", 0], "filename_prefix": "cli/out"},
            },
        }
        r = requests.post(
            url + "/prompt", json={"prompt": prompt, "client_id": client, "prompt_id": prompt_id}
        )
        assert r.status_code == 200 and r.json()["prompt_id"] == prompt_id
        ws_until_done(ws, prompt_id)
        ws.close()
        entry = requests.get(f"{url}/history/{prompt_id}").json()[prompt_id]
        image = entry["outputs"]["3"]["images"][0]
        assert image == {"filename": "out_00001_.png", "subfolder": "cli", "type": "output"}
        got = requests.get(url + "/view", params=image)
        assert Image.open(io.BytesIO(got.content)).getpixel((0, 0)) == (54, 155, 205)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "sim stopped" in out
    assert "Traceback" not in err
    wait_until(lambda: _port_free(port), timeout=5)


def _port_free(port: int) -> bool:
    """A server (SO_REUSEADDR, as every server sets) can listen on the port again."""
    import socket

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen(1)
        except OSError:
            return False
        return True


def test_cli_real_cluster_flags(tmp_path: Path) -> None:
    port = free_port()
    flags = [
        *("--models", "a.safetensors,b.safetensors", "--load-seconds", "3"),
        *("--models-in-memory", "2", "--warmup-seconds", "4"),
        *(
            "--root",
            str(tmp_path),
            "--foreign-load",
            "0.25",
            "--foreign-seconds",
            "1.5",
            "--loras",
            "l.safetensors",
        ),
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "comfy_cluster.cli", "sim", "--port", str(port), *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "listening on" in proc.stdout.readline()
        url = f"http://127.0.0.1:{port}"
        options = requests.get(url + "/sim/faults", timeout=5).json()
        assert options["models"] == ["a.safetensors", "b.safetensors"]
        assert options["loras"] == ["l.safetensors"]
        assert (options["load_seconds"], options["models_in_memory"]) == (3.0, 2)
        assert (options["warmup_seconds"], options["foreign_load"]) == (4.0, 0.25)
        assert options["foreign_seconds"] == 1.5
        info = requests.get(url + "/object_info/CheckpointLoaderSimple", timeout=5).json()
        assert info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] == [
            "a.safetensors",
            "b.safetensors",
        ]
        stats = requests.get(url + "/sim/stats", timeout=5).json()
        assert stats["models"] == {"loaded": [], "loads": 0, "loads_by_model": {}, "capacity": 2}
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=15)
