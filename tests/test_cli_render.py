"""``comfy-cluster render`` in-process against two sims: exit codes, output, JSON lines."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

import pytest
from workflows import invert_workflow

from comfy_cluster.commands import render
from comfy_cluster.commands.progress import PlainView, event_to_json
from comfy_cluster.core.engine import events as ev
from comfy_cluster.sim.harness import make_test_image

WORKFLOW = invert_workflow()
COLOR = (200, 100, 50)


@pytest.fixture
def shot(tmp_path: Path, sim_factory: Any) -> dict[str, Any]:
    a, b = sim_factory(name="a", node_seconds=0.01), sim_factory(name="b", node_seconds=0.01)
    for f in range(1, 9):
        make_test_image(tmp_path / "in" / f"in.{f:04d}.png", (8, 8), COLOR)
    workflow = tmp_path / "wf.json"
    workflow.write_text(json.dumps(WORKFLOW))
    servers = [
        {"name": "a", "ip": "127.0.0.1", "port": a.port},
        {"name": "b", "ip": "127.0.0.1", "port": b.port},
    ]
    env = {
        "NUKE_COMFYUI_SERVERS": json.dumps(servers),
        "COMFY_CLUSTER_CONFIG": str(tmp_path / "user.json"),
    }
    return {
        "env": env,
        "workflow": str(workflow),
        "input": str(tmp_path / "in" / "in.####.png"),
        "output": str(tmp_path / "out" / "o.####.png"),
        "out_dir": tmp_path / "out",
    }


def parse(argv: list[str]) -> argparse.Namespace:
    from comfy_cluster.cli import build_parser

    return build_parser().parse_args(argv)


def call(shot: dict[str, Any], *extra: str, frames: str = "1-8") -> tuple[int, str, str]:
    argv = ["render", shot["workflow"], "--frames", frames, "--output", shot["output"]]
    argv += ["--input", shot["input"], *extra]
    out, err = io.StringIO(), io.StringIO()
    code = render.run(parse(argv), environ=shot["env"], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def inverted(path: Path) -> bool:
    from PIL import Image

    with Image.open(path) as img:
        pixel = img.convert("RGB").getpixel((3, 3))
    return all(abs((255 - c) - p) <= 1 for c, p in zip(COLOR, pixel))


def test_render_writes_every_frame_inverted(shot: dict[str, Any]) -> None:
    code, out, err = call(shot)
    assert code == 0, out + err
    for f in range(1, 9):
        assert inverted(shot["out_dir"] / f"o.{f:04d}.png"), f
    assert "done: 8 frame(s) written of 8" in out
    assert "100%" in out
    # Plain text: a line per 10 %, never one per frame for 8 one-frame chunks plus the summary.
    assert len(out.splitlines()) <= 1 + 10 + 1 + 2 + 2


def test_json_lines_parse_and_carry_the_type(shot: dict[str, Any]) -> None:
    code, out, _err = call(shot, "--json", frames="1-4")
    assert code == 0
    events = [json.loads(line) for line in out.splitlines()]
    types = [e["type"] for e in events]
    assert types[0] == "JobStarted" and types[-1] == "JobDone"
    written = sorted(e["frame"] for e in events if e["type"] == "FrameWritten")
    assert written == [1, 2, 3, 4]
    assert events[-1]["frames_written"] == 4 and set(events[-1]["per_server"]) <= {"a", "b"}


def test_bad_frames_exit_2_quoting_the_part(shot: dict[str, Any]) -> None:
    code, out, err = call(shot, frames="1-5,7-x")
    assert code == 2 and not out
    assert "'7-x'" in err and "--frames" in err


def test_unknown_server_exits_2_naming_it(shot: dict[str, Any]) -> None:
    code, _out, err = call(shot, "--server", "a", "--server", "nope")
    assert code == 2
    assert "nope" in err and "unknown" in err


def test_unknown_override_node_exits_2_naming_it(shot: dict[str, Any]) -> None:
    code, _out, err = call(shot, "--set", "Missing.seed=1")
    assert code == 2 and "Missing" in err


def test_bad_config_exits_2(shot: dict[str, Any]) -> None:
    shot["env"]["NUKE_COMFYUI_SERVERS"] = "[not json"
    code, _out, err = call(shot)
    assert code == 2 and "NUKE_COMFYUI_SERVERS" in err


def test_existing_frames_need_resume_or_overwrite(shot: dict[str, Any]) -> None:
    assert call(shot, "--server", "a", frames="1-3")[0] == 0
    code, out, err = call(shot, frames="1-5")
    assert code == 2 and not out
    assert "3 output frame(s) already exist: 1-3" in err and "--resume" in err
    before = {f: (shot["out_dir"] / f"o.{f:04d}.png").stat().st_mtime_ns for f in (1, 2, 3)}
    code, out, err = call(shot, "--resume", "--json", frames="1-5")
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert events[0]["skipped_frames"] == [1, 2, 3] and events[0]["total_frames"] == 2
    assert sorted(e["frame"] for e in events if e["type"] == "FrameWritten") == [4, 5]
    after = {f: (shot["out_dir"] / f"o.{f:04d}.png").stat().st_mtime_ns for f in (1, 2, 3)}
    assert before == after


def test_allow_list_restricts_servers(shot: dict[str, Any]) -> None:
    code, out, _err = call(shot, "--server", "b", "--json", frames="1-3")
    assert code == 0
    servers = {json.loads(line).get("server") for line in out.splitlines()} - {None}
    assert servers == {"b"}


def test_plain_view_prints_tenths_not_frames() -> None:
    out = io.StringIO()
    view = PlainView(out)
    base = dict(job_id="j", progress=0.0, eta_seconds=None)
    view(ev.JobStarted(total_frames=100, servers=("a",), **base))
    for f in range(100):
        view(ev.ChunkAssigned(chunk_index=f, frames=(f,), server="a", reason="", **base))
        view(ev.FrameWritten(frame=f, path=f"/x/{f}", server="a", **base))
    lines = out.getvalue().splitlines()
    assert len(lines) == 11 and lines[-1].startswith("100/100 frames (100%)")
    data = event_to_json(ev.JobDone(frames_written=3, per_server={"a": 3}, **base))
    assert data["type"] == "JobDone" and data["per_server"] == {"a": 3}
