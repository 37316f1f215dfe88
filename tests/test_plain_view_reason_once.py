"""The plain view says why a server left the job once.

A server that fails its preflight check (a missing node class or model, a refused token) is out
of the job at once: the engine sends ``ServerChecked`` with the reasons, then
``ServerBlocklisted`` with the same reasons as its ``why``. The plain view printed both in full,
one under the other; a log should say the reason once and then that the server left.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from workflows import invert_workflow

from comfy_cluster.cli import build_parser
from comfy_cluster.commands import render
from comfy_cluster.commands.progress import PlainView
from comfy_cluster.core.engine import events as ev
from comfy_cluster.sim.harness import make_test_image

AT = {"job_id": "j", "progress": 0.0, "eta_seconds": None}
MODEL = "node 4 (CheckpointLoaderSimple) input ckpt_name: 'sd15.safetensors' is not on this server"
AUTH = "authentication refused: check its token/headers"


def plain_lines(events: list[ev.JobEvent]) -> list[str]:
    out = io.StringIO()
    view = PlainView(out)
    for event in events:
        view(event)
    return out.getvalue().splitlines()


def test_a_failed_check_then_leaving_says_the_reason_once() -> None:
    lines = plain_lines(
        [
            ev.ServerChecked(**AT, server="c", ok=False, reasons=(MODEL,), state="unusable"),
            ev.ServerBlocklisted(**AT, server="c", why=f"unusable: {MODEL}"),
            ev.ServerChecked(**AT, server="d", ok=False, reasons=(AUTH,), state="auth"),
            ev.ServerBlocklisted(**AT, server="d", why=AUTH),
        ]
    )
    assert lines == [
        f"server c: unusable: {MODEL}",
        "server c left the job",
        f"server d: {AUTH}",
        "server d left the job",
    ]


def test_leaving_for_another_reason_than_the_last_state_still_says_why() -> None:
    why = "unreachable (3 failures); last: GET /queue: unreachable (connection refused)"
    lines = plain_lines(
        [
            ev.ServerChecked(**AT, server="a", ok=True, state="ok"),
            ev.ServerChecked(
                **AT, server="b", ok=False, reasons=("connection refused",), state="unreachable"
            ),
            ev.ServerBlocklisted(**AT, server="a", why="failed 3 chunks; last: boom"),
            ev.ServerBlocklisted(**AT, server="b", why=why),
        ]
    )
    assert "server a left the job: failed 3 chunks; last: boom" in lines
    assert f"server b left the job: {why}" in lines


def test_a_real_render_names_a_missing_class_once_before_the_summary(
    tmp_path: Path, sim_factory: Any
) -> None:
    good = sim_factory(node_seconds=0.01)
    lacking = sim_factory(node_seconds=0.01, missing_classes=("ImageInvert",))
    for frame in (1, 2):
        make_test_image(tmp_path / "in" / f"in.{frame:04d}.png", (8, 8), (10, 20, 30))
    workflow = tmp_path / "invert.json"
    workflow.write_text(json.dumps(invert_workflow()))
    servers = [
        {"name": "good", "ip": "127.0.0.1", "port": good.port},
        {"name": "lacking", "ip": "127.0.0.1", "port": lacking.port},
    ]
    env = {"NUKE_COMFYUI_SERVERS": json.dumps(servers), "HOME": str(tmp_path)}
    argv = ["render", str(workflow), "--frames", "1-2"]
    argv += ["--input", str(tmp_path / "in" / "in.####.png")]
    argv += ["--output", str(tmp_path / "out" / "o.####.png")]
    out, err = io.StringIO(), io.StringIO()
    code = render.run(build_parser().parse_args(argv), environ=env, out=out, err=err)
    assert code == 0, out.getvalue() + err.getvalue()
    lines = out.getvalue().splitlines()
    progress = lines[: next(i for i, line in enumerate(lines) if line.startswith("done: "))]
    reason = "missing node classes: ImageInvert"
    assert [line for line in progress if reason in line] == [f"server lacking: unusable: {reason}"]
    assert "server lacking left the job" in progress
