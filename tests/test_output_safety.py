"""A frame on disk is a real frame of this job (issue 11): one job per output pattern (the
output lock), input and output never the same files, the output's extension matching what the
save node writes, an unwritable output folder refused before any server works, and nothing of
ours left beside the frames whatever the end."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fake_comfy import FakeCluster, FakeServer
from test_cli_render import call
from test_cli_render import shot as cli_shot  # noqa: F401  (fixture)
from workflows import invert_workflow

from comfy_cluster.core.engine import events as ev
from comfy_cluster.core.engine.job import JobStatus, RenderJob
from comfy_cluster.core.engine.scheduler import Scheduler
from comfy_cluster.core.errors import ConfigError, OutputLocked
from comfy_cluster.core.output_checks import (
    output_kind_problem,
    probe_output_folder,
    same_files_problem,
)
from comfy_cluster.core.output_lock import LockHolder, OutputLock, lock_path
from comfy_cluster.core.retry import retry_transient
from comfy_cluster.core.server import ServerConfig
from comfy_cluster.core.transfer import HttpTransfer
from comfy_cluster.core.workflow import Workflow

WORKFLOW = invert_workflow()


@pytest.fixture
def shot(tmp_path: Path) -> dict[str, Any]:
    for f in range(1, 9):
        (tmp_path / f"in.{f:04d}.png").write_bytes(b"frame-%d" % f)
    return {
        "input": str(tmp_path / "in.####.png"),
        "output": str(tmp_path / "out" / "shot.####.png"),
        "dir": tmp_path / "out",
    }


def scheduler_for(cluster: FakeCluster) -> Scheduler:
    return Scheduler(
        cluster.configs,
        client_factory=cluster.client_factory,
        stall_timeout=0.2,
        poll_interval=0.01,
        history_interval=0.2,
        retry=retry_transient(attempts=2, max_seconds=2.0, sleep=lambda s: None),
        join_timeout=5.0,
        probe_interval=0.02,
    )


def job(shot: dict[str, Any], **kw: Any) -> RenderJob:
    kw.setdefault("input_pattern", shot["input"])
    return RenderJob(WORKFLOW, kw.pop("frames", "1-4"), shot["output"], **kw)


def ours_left(folder: Path) -> list[str]:
    """Hidden files of ours in the output folder: lock, probe, ``.part``."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_lock(pattern: str, *, host: str, pid: int, job_id: str = "other-job") -> Path:
    path = lock_path(pattern)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(LockHolder(host, pid, job_id, time.time()).to_json())
    return path


# --- 1. two jobs on one output --------------------------------------------------------------


def test_lock_file_is_beside_the_frames_named_after_the_pattern(tmp_path: Path) -> None:
    pattern = str(tmp_path / "out" / "shot.####.png")
    assert lock_path(pattern) == tmp_path / "out" / ".shot.####.png.comfy-lock"
    lock = OutputLock(pattern, "j1")
    assert lock.acquire() is None
    data = json.loads(lock_path(pattern).read_text())
    assert data["host"] == socket.gethostname() and data["pid"] == os.getpid()
    assert data["job_id"] == "j1" and data["started"] > 0
    lock.release()
    assert not lock_path(pattern).exists()


def test_of_two_racing_locks_exactly_one_wins(tmp_path: Path) -> None:
    pattern = str(tmp_path / "o.####.png")
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def take(n: int) -> None:
        barrier.wait()
        try:
            OutputLock(pattern, f"job{n}").acquire()
            outcomes.append("won")
        except OutputLocked:
            outcomes.append("refused")

    threads = [threading.Thread(target=take, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["refused"] * 7 + ["won"]


def test_second_job_on_the_same_output_is_refused_naming_the_holder(
    shot: dict[str, Any],
) -> None:
    with FakeCluster([FakeServer("a", seconds=0.05)]) as cluster, scheduler_for(cluster) as s:
        first = s.start(job(shot, frames="1-8"))
        deadline = time.monotonic() + 5
        while not lock_path(shot["output"]).exists():
            assert time.monotonic() < deadline
            time.sleep(0.005)
        second = s.run(job(shot, frames="1-8", existing="overwrite"))
        assert second.status is JobStatus.FAILED
        assert "in use by job " + first.job.job_id[:12] in second.message
        assert f"pid {os.getpid()}" in second.message
        assert second.error is not None and second.error.kind == "OutputLocked"
        assert second.frames_written == ()
        result = first.wait(20)
        assert result is not None and result.ok, result
    assert cluster.servers["a"].submits == 8  # the second job sent nothing
    assert ours_left(shot["dir"]) == []


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(
    shot: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    write_lock(shot["output"], host=socket.gethostname(), pid=dead_pid())
    with FakeCluster([FakeServer("a")]) as cluster, scheduler_for(cluster) as scheduler:
        result = scheduler.run(job(shot))
    assert result.ok, result.message
    assert any("stale lock" in r.getMessage() for r in caplog.records)
    assert ours_left(shot["dir"]) == []


def test_a_lock_from_another_host_is_broken_only_on_request(shot: dict[str, Any]) -> None:
    path = write_lock(shot["output"], host="render-node-7", pid=1234)
    with FakeCluster([FakeServer("a")]) as cluster, scheduler_for(cluster) as scheduler:
        refused = scheduler.run(job(shot))
        assert refused.status is JobStatus.FAILED
        assert "render-node-7" in refused.message
        assert "--break-lock" in refused.message and str(path) in refused.message
        assert path.exists() and cluster.servers["a"].submits == 0
        result = scheduler.run(job(shot, break_lock=True))
    assert result.ok, result.message
    assert not path.exists()


@pytest.mark.parametrize("end", ["done", "failed", "cancelled"])
def test_the_lock_is_held_while_running_and_gone_after_every_end(
    shot: dict[str, Any], end: str
) -> None:
    plan = ["exec_error"] * 20 if end == "failed" else []
    server = FakeServer("a", plan=plan, seconds=0.05 if end == "cancelled" else 0.002)
    held: list[bool] = []

    def on_event(event: Any) -> None:
        if isinstance(event, ev.JobStarted):
            held.append(lock_path(shot["output"]).is_file())

    with FakeCluster([server]) as cluster, scheduler_for(cluster) as scheduler:
        handle = scheduler.start(job(shot), on_event)
        if end == "cancelled":
            deadline = time.monotonic() + 5
            while not held:
                assert time.monotonic() < deadline
                time.sleep(0.005)
            handle.cancel()
        result = handle.wait(20)
    assert result is not None and result.status.value == end, result
    assert held == [True]
    assert not lock_path(shot["output"]).exists()
    assert ours_left(shot["dir"]) == []


def test_the_lock_is_gone_after_a_crash(shot: dict[str, Any], monkeypatch: Any) -> None:
    from comfy_cluster.core.engine import job_run

    held: list[bool] = []

    def boom(*a: Any, **k: Any) -> Any:
        held.append(lock_path(shot["output"]).is_file())
        raise RuntimeError("bug")

    monkeypatch.setattr(job_run, "plan_job", boom)
    with FakeCluster([FakeServer("a")]) as cluster, scheduler_for(cluster) as scheduler:
        result = scheduler.run(job(shot))
    assert result.status is JobStatus.FAILED and "internal error" in result.message
    assert held == [True]
    assert not lock_path(shot["output"]).exists()


def test_release_never_removes_someone_elses_lock(tmp_path: Path) -> None:
    pattern = str(tmp_path / "o.####.png")
    lock = OutputLock(pattern, "mine")
    lock.acquire()
    write_lock(pattern, host="elsewhere", pid=1, job_id="theirs")  # broken and retaken
    lock.release()
    assert json.loads(lock_path(pattern).read_text())["job_id"] == "theirs"


def test_cli_refuses_a_held_output_with_exit_2(cli_shot: dict[str, Any]) -> None:  # noqa: F811
    path = write_lock(cli_shot["output"], host="render-node-7", pid=1234)
    code, out, err = call(cli_shot)
    assert code == 2, out + err
    assert "render-node-7" in err and "--break-lock" in err and str(path) in err
    assert not list(cli_shot["out_dir"].glob("o.*.png"))
    code, out, err = call(cli_shot, "--break-lock")
    assert code == 0, out + err
    assert not path.exists()


# --- 3. the output's extension ----------------------------------------------------------------


def test_save_image_to_exr_is_refused_before_any_prompt(shot: dict[str, Any]) -> None:
    shot["output"] = shot["output"].replace(".png", ".exr")
    with FakeCluster([FakeServer("a")]) as cluster, scheduler_for(cluster) as scheduler:
        result = scheduler.run(job(shot))
    assert result.status is JobStatus.FAILED
    assert "EXR" in result.message and "PNG" in result.message and "SaveImage" in result.message
    assert result.error is not None and result.error.kind == "ConfigError"
    assert cluster.servers["a"].submits == 0


def test_cli_exits_2_for_an_exr_output_of_save_image(cli_shot: dict[str, Any]) -> None:  # noqa: F811
    cli_shot["output"] = cli_shot["output"].replace(".png", ".exr")
    code, out, err = call(cli_shot)
    assert code == 2, out + err
    assert "EXR" in err and "PNG" in err


def test_known_and_unknown_save_nodes() -> None:
    wf = Workflow.load(
        {
            "1": {"class_type": "EmptyImage", "inputs": {}},
            "2": {
                "class_type": "SaveImage",
                "inputs": {"images": ["1", 0], "filename_prefix": "x"},
            },
            "3": {
                "class_type": "SaveEXRCustom",
                "inputs": {"images": ["1", 0], "filename_prefix": "y"},
            },
        }
    )
    assert output_kind_problem(wf, "2", "o.####.png") is None
    assert output_kind_problem(wf, "2", "o.####.jpg") is not None
    assert output_kind_problem(wf, "3", "o.####.exr") is None  # not knowable up front


def test_a_mismatched_kind_fails_at_transfer_naming_both_before_writing(tmp_path: Path) -> None:
    class Client:
        downloads = 0

        def download(self, ref: Any, dest: Path) -> Path:
            Client.downloads += 1
            dest.write_bytes(b"png bytes")
            return dest

    dest = tmp_path / "o.0001.exr"
    ref = {"filename": "x_00001_.png", "subfolder": "", "type": "output"}
    with pytest.raises(ConfigError) as info:
        HttpTransfer().fetch_output(Client(), ServerConfig(name="a", host="h"), ref, dest)
    assert "PNG" in str(info.value) and "EXR" in str(info.value)
    assert Client.downloads == 0 and not dest.exists()


# --- 4. input and output the same files --------------------------------------------------------


def test_output_over_its_own_input_is_refused_before_any_work(shot: dict[str, Any]) -> None:
    before = (Path(shot["input"].replace("####", "0001"))).read_bytes()
    shot["output"] = shot["input"].replace("####", "%04d")  # same files, other spelling
    with FakeCluster([FakeServer("a")]) as cluster, scheduler_for(cluster) as scheduler:
        result = scheduler.run(job(shot, existing="overwrite"))
    assert result.status is JobStatus.FAILED and "overwrite the input" in result.message
    assert cluster.servers["a"].submits == 0
    assert Path(shot["input"].replace("####", "0001")).read_bytes() == before


def test_cli_exits_2_when_output_is_the_input(cli_shot: dict[str, Any]) -> None:  # noqa: F811
    cli_shot["output"] = cli_shot["input"]
    code, out, err = call(cli_shot, "--overwrite")
    assert code == 2, out + err
    assert "overwrite the input" in err


def test_patterns_that_collide_for_some_frames_only(tmp_path: Path) -> None:
    a, b = str(tmp_path / "p.#.png"), str(tmp_path / "p.####.png")
    assert same_files_problem(a, b, range(1, 999), range(1, 999)) is None
    problem = same_files_problem(a, b, range(990, 1010), range(990, 1010))
    assert problem is not None and "1000-1009" in problem
    link = tmp_path / "alias"
    link.symlink_to(tmp_path)
    assert same_files_problem(str(link / "p.####.png"), b, [1], [1]) is not None
    assert same_files_problem(str(tmp_path / "q.####.png"), b, [1], [1]) is None


# --- 5. an output folder that cannot be written ------------------------------------------------


def test_a_file_where_the_output_folder_should_be_fails_before_any_prompt(
    shot: dict[str, Any],
) -> None:
    shot["dir"].write_text("not a folder")
    with FakeCluster([FakeServer("a")]) as cluster, scheduler_for(cluster) as scheduler:
        result = scheduler.run(job(shot))
    assert result.status is JobStatus.FAILED and str(shot["dir"]) in result.message
    assert cluster.servers["a"].submits == 0


def test_cli_exits_2_for_a_file_where_the_folder_should_be(cli_shot: dict[str, Any]) -> None:  # noqa: F811
    cli_shot["out_dir"].write_text("not a folder")
    code, out, err = call(cli_shot)
    assert code == 2, out + err
    assert str(cli_shot["out_dir"]) in err


def test_a_read_only_folder_is_named(tmp_path: Path, monkeypatch: Any) -> None:
    real_open = os.open

    def refuse(path: Any, flags: int, *a: Any) -> int:
        if ".comfy-probe-" in str(path):
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *a)

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(ConfigError) as info:
        probe_output_folder(str(tmp_path / "ro" / "s.####.png"), 1)
    assert str(tmp_path / "ro") in str(info.value) and "Permission denied" in str(info.value)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes anyway")
def test_a_really_read_only_folder(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(ConfigError):
            probe_output_folder(str(folder / "s.####.png"), 1)
    finally:
        folder.chmod(0o700)


def test_probe_leaves_nothing(tmp_path: Path) -> None:
    probe_output_folder(str(tmp_path / "o" / "s.####.png"), 1)
    assert list((tmp_path / "o").iterdir()) == []
