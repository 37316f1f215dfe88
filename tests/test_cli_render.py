"""``comfy-cluster render`` in-process against two sims: exit codes, output, JSON lines."""

from __future__ import annotations

import argparse
import io
import json
import shlex
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


# --- what a person reads (issue 13) --------------------------------------------------------------

BASE = dict(job_id="j", progress=0.0, eta_seconds=None)
NODE_2_FAILS = "node 2 (ImageInvert) failed: Exception: SimFault: node 2 (ImageInvert) failed"


def test_plain_progress_shows_true_percentages() -> None:
    out = io.StringIO()
    view = PlainView(out)
    view(ev.JobStarted(total_frames=4, servers=("a",), **BASE))
    for f, eta in zip(range(1, 5), (90.0, None, 0.04, 0.0)):
        at = {**BASE, "eta_seconds": eta}
        view(ev.FrameWritten(frame=f, path=f"/x/{f}", server="a", **at))
    assert out.getvalue().splitlines()[1:] == [
        "1/4 frames (25%), about 1:30 left",
        "2/4 frames (50%)",
        "3/4 frames (75%)",  # not "about 0.0 s left"
        "4/4 frames (100%)",
    ]


def test_identical_retries_are_one_line_with_the_count_and_the_node_is_named_once() -> None:
    """The engine's order for a node that always fails: two retries, the server leaves, the
    third retry, the job fails with a message that already names node 2."""
    out = io.StringIO()
    view = PlainView(out)
    view(ev.JobStarted(total_frames=4, servers=("a",), **BASE))
    retry = dict(chunk_index=0, server="a", why=NODE_2_FAILS, frames=(1,), **BASE)
    view(ev.ChunkRetried(**retry))
    view(ev.ChunkRetried(**retry))
    view(ev.ServerBlocklisted(server="a", why=f"failed 3 chunks; last: {NODE_2_FAILS}", **BASE))
    view(ev.ChunkRetried(**retry))
    message = f"no eligible server left (a: failed 3 chunks; last: {NODE_2_FAILS})"
    view(ev.JobFailed(message=message, node_id="2", **BASE))
    lines = out.getvalue().splitlines()
    assert lines[1:] == [
        f"retry: chunk 0 on a failed 3 times ({NODE_2_FAILS}); 1 frame(s) back in the queue",
        f"server a left the job: failed 3 chunks; last: {NODE_2_FAILS}",
        f"job failed: {message}",
    ]


def test_the_node_suffix_is_added_only_when_the_message_does_not_name_it() -> None:
    from comfy_cluster.commands.progress import summary_lines
    from comfy_cluster.core.engine.job import JobResult, JobStatus

    def reason(message: str, node: str) -> str:
        result = JobResult("j", JobStatus.FAILED, message=message, node_id=node)
        return next(line for line in summary_lines(result) if line.startswith("  reason:"))

    assert reason("node 2 (ImageInvert) failed", "2") == "  reason: node 2 (ImageInvert) failed"
    assert reason("node 12 failed", "2") == "  reason: node 12 failed (node 2)"
    assert reason("bad value", "[/x]") == "  reason: bad value (node [/x])"
    assert reason("node [/x] (Foo) failed", "[/x]") == "  reason: node [/x] (Foo) failed"


def test_a_node_that_always_fails_is_reported_once(shot: dict[str, Any], sim_factory: Any) -> None:
    failing = sim_factory(name="f", fail_node="2")
    shot["env"]["NUKE_COMFYUI_SERVERS"] = json.dumps(
        [{"name": "f", "ip": "127.0.0.1", "port": failing.port}]
    )
    code, out, _err = call(shot, frames="1-4")
    assert code == 1
    retries = [line for line in out.splitlines() if line.startswith("retry:")]
    assert len(retries) == 1 and " failed 3 times (node 2 (ImageInvert) failed" in retries[0]
    assert "(node 2)" not in out
    assert "frames are in" not in out  # nothing was written


def test_render_ends_saying_where_the_frames_are(shot: dict[str, Any]) -> None:
    code, out, _err = call(shot)
    assert code == 0
    assert out.splitlines()[-1] == f"frames are in {shot['out_dir']} (o.####.png, 8 of 8 on disk)"
    code, out, _err = call(shot, "--json", "--overwrite")
    assert code == 0 and "frames are in" not in out  # --json stays JSON only


def test_set_on_the_save_node_warns_and_output_stays_the_destination(
    shot: dict[str, Any],
) -> None:
    code, _out, err = call(shot, "--set", "3.filename_prefix=elsewhere/shot", frames="1-2")
    assert code == 0, err
    warning = next(line for line in err.splitlines() if "warning" in line)
    assert "--set 3.filename_prefix" in warning and "node 3 (SaveImage)" in warning
    assert shot["output"] in warning
    assert (shot["out_dir"] / "o.0001.png").is_file() and (shot["out_dir"] / "o.0002.png").is_file()
    code, _out, err = call(shot, "--set", '3.images=["2", 0]', "--overwrite", frames="1")
    assert code == 0 and "warning" not in err  # other inputs of the save node say nothing


def test_ctrl_c_says_frames_done_and_the_command_that_finishes_the_job(
    shot: dict[str, Any], sim_factory: Any, monkeypatch: Any, capsys: Any
) -> None:
    import _thread
    import threading
    import time

    from comfy_cluster.cli import main

    slow = sim_factory(name="slow", node_seconds=0.1)
    shot["env"]["NUKE_COMFYUI_SERVERS"] = json.dumps(
        [{"name": "slow", "ip": "127.0.0.1", "port": slow.port}]
    )
    for key, value in shot["env"].items():
        monkeypatch.setenv(key, value)
    argv = ["render", shot["workflow"], "--frames", "1-8", "--output", shot["output"]]
    argv += ["--input", shot["input"], "--overwrite"]

    def press_ctrl_c_after_two_frames() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if len(list(shot["out_dir"].glob("o.*.png"))) >= 2:
                _thread.interrupt_main()  # what SIGINT does: KeyboardInterrupt in the main thread
                return
            time.sleep(0.02)

    presser = threading.Thread(target=press_ctrl_c_after_two_frames, daemon=True)
    presser.start()
    code = main(argv)
    presser.join()
    err = capsys.readouterr().err
    assert code == 130
    done = next(line for line in err.splitlines() if line.startswith("interrupted:"))
    assert done.startswith("interrupted: job cancelled; ") and done.endswith(" of 8 frame(s) done")
    rerun = next(line for line in err.splitlines() if line.startswith("to finish the job: "))
    expected = [arg if arg != "--overwrite" else "--resume" for arg in argv]
    assert rerun == "to finish the job: comfy-cluster " + shlex.join(expected)


@pytest.mark.parametrize(
    ("argv", "command", "replaced"),
    [
        (["render", "a.json", "--overwrite"], "comfy-cluster render a.json --resume", True),
        (["render", "a.json", "--over"], "comfy-cluster render a.json --resume", True),
        (["render", "a.json", "--resume"], "comfy-cluster render a.json --resume", False),
        (
            ["render", "my shot.json", "--output", "o.####.png", "--set", "N.text=it's"],
            "comfy-cluster render 'my shot.json' --output 'o.####.png' --set 'N.text=it'\"'\"'s' "
            "--resume",
            False,
        ),
    ],
)
def test_resume_command_replaces_overwrite_and_quotes(
    argv: list[str], command: str, replaced: bool
) -> None:
    from comfy_cluster.commands.next_steps import resume_command

    assert resume_command(argv) == (command, replaced)
    assert shlex.split(command)[-1] == "--resume"


def test_the_fold_counts_a_streak_of_identical_failures_per_server() -> None:
    from comfy_cluster.core.progress import JobProgress, RetryStreak

    progress = JobProgress()
    retry = dict(server="a", why="boom", **BASE)
    assert progress.apply(ev.ChunkRetried(chunk_index=0, frames=(1, 2), **retry)).retry == (
        RetryStreak("a", "boom", 1, (0,), (1, 2))
    )
    assert progress.apply(ev.ChunkRetried(chunk_index=1, frames=(3,), **retry)).retry == (
        RetryStreak("a", "boom", 2, (0, 1), (3,))
    )
    other = progress.apply(ev.ChunkRetried(chunk_index=1, server="a", why="other", **BASE))
    assert other.retry is not None and other.retry.count == 1
    progress.apply(ev.FrameWritten(frame=3, path="/3", server="a", **BASE))
    assert "a" not in progress.streaks  # it works again: the next failure starts afresh
