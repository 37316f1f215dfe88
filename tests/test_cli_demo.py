"""``comfy-cluster demo``: a short, fast run in a temporary folder, including the dying server."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

from comfy_cluster.cli import build_parser
from comfy_cluster.commands import demo


def test_demo_renders_every_frame_and_stops_its_sims(tmp_path: Path, monkeypatch) -> None:
    # The demo must not read any server configuration: point it at a broken one.
    monkeypatch.setenv("NUKE_COMFYUI_SERVERS", "[broken")
    args = build_parser().parse_args(
        ["demo", "--frames", "8", "--out", str(tmp_path), "--node-seconds", "0.02"]
    )
    out, err = io.StringIO(), io.StringIO()
    code = demo.run(args, out=out, err=err)
    assert code == 0, out.getvalue() + err.getvalue()
    for f in range(1, 9):
        assert (tmp_path / "output" / f"demo.{f:04d}.png").is_file()
        assert (tmp_path / "input" / f"demo.{f:04d}.png").is_file()
    text = out.getvalue()
    assert "done: 8 frame(s) written of 8" in text
    assert str(tmp_path / "output") in text
    assert not [t for t in threading.enumerate() if t.name.startswith("comfy-sim-")]


def test_demo_json_lines(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        ["demo", "--frames", "4", "--out", str(tmp_path), "--node-seconds", "0", "--json"]
    )
    out = io.StringIO()
    assert demo.run(args, out=out, err=io.StringIO()) == 0
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert events[0]["type"] == "JobStarted" and events[-1]["type"] == "JobDone"
    assert len(demo.workflow_path().read_text()) > 0
