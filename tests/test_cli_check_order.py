"""``render --check`` (preflight: nothing sent, nothing written) and ``render --order preview``."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import requests
from workflows import invert_workflow

from comfy_cluster.cli import build_parser
from comfy_cluster.commands import render

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "comfyui"


def _env(tmp_path: Path, sims: list[Any]) -> dict[str, str]:
    servers = [{"name": s.options.name, "ip": "127.0.0.1", "port": s.port} for s in sims]
    return {
        "NUKE_COMFYUI_SERVERS": json.dumps(servers),
        "COMFY_CLUSTER_CONFIG": str(tmp_path / "user.json"),
    }


def _run(argv: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = render.run(build_parser().parse_args(argv), environ=env, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def _img2img(tmp_path: Path, checkpoint: str) -> Path:
    workflow = json.loads((FIXTURES / "workflow_img2img_api.json").read_text())
    for node in workflow.values():
        if node["class_type"] == "CheckpointLoaderSimple":
            node["inputs"]["ckpt_name"] = checkpoint
    path = tmp_path / "img2img.json"
    path.write_text(json.dumps(workflow))
    return path


def _check(tmp_path: Path, sims: list[Any], checkpoint: str) -> tuple[int, str, Path]:
    workflow = _img2img(tmp_path, checkpoint)
    out_dir = tmp_path / "never" / "made"
    argv = ["render", str(workflow), "--frames", "1-4", "--output", str(out_dir / "o.####.png")]
    argv += ["--input", str(tmp_path / "in" / "p.####.png"), "--check"]
    code, out, err = _run(argv, _env(tmp_path, sims))
    return code, out + err, out_dir


def test_check_all_good_exits_0_and_writes_nothing(tmp_path: Path, sim_factory: Any) -> None:
    sims = [sim_factory(name="a"), sim_factory(name="b")]
    code, text, out_dir = _check(tmp_path, sims, "sd15.safetensors")
    assert code == 0, text
    assert [line.split()[:2] for line in text.splitlines()] == [["a", "ok"], ["b", "ok"]]
    assert not out_dir.parent.exists()  # no folder, lock or probe file
    for sim in sims:  # no prompt reached any server
        assert requests.get(sim.url + "/queue", timeout=5).json() == {
            "queue_running": [],
            "queue_pending": [],
        }
        assert requests.get(sim.url + "/history", timeout=5).json() == {}


def test_check_names_a_missing_class_and_a_missing_model(tmp_path: Path, sim_factory: Any) -> None:
    good = sim_factory(name="good")
    no_class = sim_factory(name="noclass", missing_classes=("KSampler",))
    no_model = sim_factory(name="nomodel", models=("other.safetensors",))
    code, text, _ = _check(tmp_path, [good, no_class, no_model], "sd15.safetensors")
    assert code == 0, text  # one server can still run the job
    lines = {line.split()[0]: line for line in text.splitlines() if line.strip()}
    assert "ok" in lines["good"]
    assert "KSampler" in lines["noclass"] and "unusable" in lines["noclass"]
    assert "ckpt_name" in lines["nomodel"] and "sd15.safetensors" in lines["nomodel"]


def test_check_with_no_usable_server_exits_1(tmp_path: Path, sim_factory: Any) -> None:
    sims = [sim_factory(name="a", models=("x.safetensors",)), sim_factory(name="b", token="t0k")]
    code, text, _ = _check(tmp_path, sims, "sd15.safetensors")
    assert code == 1, text
    assert "unusable" in text and ("auth" in text or "401" in text)


@pytest.mark.slow
def test_preview_order_spreads_the_first_frames_over_the_shot(
    tmp_path: Path, sim_factory: Any
) -> None:
    from PIL import Image

    sims = [sim_factory(name=f"s{i}", node_seconds=0.01) for i in range(3)]
    for frame in range(1, 41):
        Image.new("RGB", (8, 8), (frame, 90, 10)).save(tmp_path / f"p.{frame:04d}.png")
    workflow = tmp_path / "wf.json"
    workflow.write_text(json.dumps(invert_workflow()))
    argv = ["render", str(workflow), "--frames", "1-40", "--order", "preview", "--json"]
    argv += [
        "--output",
        str(tmp_path / "o" / "o.####.png"),
        "--input",
        str(tmp_path / "p.####.png"),
    ]
    code, out, err = _run(argv, _env(tmp_path, sims))
    assert code == 0, out + err
    written = [e["frame"] for e in map(json.loads, out.splitlines()) if e["type"] == "FrameWritten"]
    assert sorted(written) == list(range(1, 41))
    first = written[:5]
    assert max(first) - min(first) >= 20, written  # at least half of the 40-frame range


def test_an_offline_server_is_named_in_the_event_stream_and_the_summary(
    tmp_path: Path, sim_factory: Any
) -> None:
    from PIL import Image

    good = sim_factory(name="good", node_seconds=0.05)
    dead = sim_factory(name="dead", refuse_connections=True)
    for frame in range(1, 9):
        Image.new("RGB", (8, 8), (frame, 90, 10)).save(tmp_path / f"p.{frame:04d}.png")
    workflow = tmp_path / "wf.json"
    workflow.write_text(json.dumps(invert_workflow()))
    argv = ["render", str(workflow), "--frames", "1-8", "--input", str(tmp_path / "p.####.png")]
    argv += ["--output", str(tmp_path / "o" / "o.####.png")]
    env = _env(tmp_path, [good, dead])
    code, out, err = _run([*argv, "--json"], env)
    assert code == 0, out + err
    events = [json.loads(line) for line in out.splitlines()]
    changes = [e for e in events if e["type"] == "ServerStateChanged"]
    assert any(e["server"] == "dead" and e["state"] == "offline" for e in changes), changes
    assert all(e["server"] != "good" for e in changes)  # a ready server is not news

    code, out, err = _run([*argv, "--overwrite"], env)
    assert code == 0, out + err
    assert "dead" in out and "offline" in out, out
