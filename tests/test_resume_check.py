"""Resume keeps only whole images, lists each folder once, and a failed job leaves nothing of
ours but the frames it completed (issue 11, item 2)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from fake_comfy import FakeCluster, FakeServer
from test_output_safety import job, ours_left, scheduler_for
from test_output_safety import shot as shot

from comfy_cluster.core import transfer
from comfy_cluster.core.engine.job import JobStatus
from comfy_cluster.core.transfer import existing_frames, frames_on_disk
from comfy_cluster.sim.harness import make_test_image


def test_resume_renders_again_a_zero_byte_or_html_frame(shot: dict[str, Any]) -> None:
    out: Path = shot["dir"]
    out.mkdir()
    (out / "shot.0001.png").write_bytes(b"")
    (out / "shot.0002.png").write_bytes(b"<!DOCTYPE html><html>502 Bad Gateway</html>")
    make_test_image(out / "shot.0003.png")
    with FakeCluster([FakeServer("a")]) as cluster, scheduler_for(cluster) as scheduler:
        result = scheduler.run(job(shot, existing="resume"))
    assert result.ok, result.message
    assert result.frames_skipped == (3,)
    assert result.frames_written == (1, 2, 4)


def test_existing_frames_looks_up_one_listing_not_a_stat_per_frame(
    tmp_path: Path, monkeypatch: Any
) -> None:
    for f in (2, 5):
        make_test_image(tmp_path / f"s.{f:04d}.png")
    (tmp_path / "s.0003.png").mkdir()  # a folder is not a frame
    calls: list[str] = []
    real = os.scandir

    def counting(path: Any) -> Any:
        calls.append(str(path))
        return real(path)

    monkeypatch.setattr(transfer.os, "scandir", counting)
    monkeypatch.setattr(Path, "is_file", lambda self: pytest.fail("stat per frame"))
    pattern = str(tmp_path / "s.####.png")
    assert frames_on_disk(pattern, range(1, 10_000)) == (2, 5)
    assert existing_frames(pattern, range(1, 10_000), whole_images=True) == (2, 5)
    assert len(calls) == 2  # one listing per call


def test_an_empty_or_missing_folder_costs_nothing_per_frame(
    tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setattr(transfer, "format_frame_path", lambda *a: pytest.fail("per frame"))
    assert frames_on_disk(str(tmp_path / "none" / "s.####.png"), range(1_000_000)) == ()
    assert frames_on_disk(str(tmp_path / "s.####.png"), range(1_000_000)) == ()


def test_per_frame_folders_are_each_listed_once(tmp_path: Path) -> None:
    for f in (1, 3):
        make_test_image(tmp_path / f"{f:04d}" / "s.png")
    (tmp_path / "0004").mkdir()
    (tmp_path / "0004" / "s.png").write_bytes(b"half an image")
    pattern = str(tmp_path / "####" / "s.png")
    assert frames_on_disk(pattern, range(1, 5)) == (1, 3, 4)
    assert existing_frames(pattern, range(1, 5), whole_images=True) == (1, 3)


@pytest.mark.parametrize("token", ["####", "##", "#", "%04d", "%02d", "%d", "$F4", "$F"])
def test_every_token_spelling_is_found(tmp_path: Path, token: str) -> None:
    from comfy_cluster.core.frames import format_frame_path

    pattern = str(tmp_path / f"s.{token}.png")
    for f in (-3, 7, 12345):
        Path(format_frame_path(pattern, f)).write_bytes(b"x")
    assert frames_on_disk(pattern, range(-5, 20000)) == (-3, 7, 12345)


def test_a_failed_job_leaves_only_its_completed_frames(shot: dict[str, Any]) -> None:
    # Frame 3 fails on every attempt: the job fails with 1, 2 and 4 written.
    server = FakeServer("a", plan=["ok", "ok"] + ["exec_error"] * 20)
    with FakeCluster([server]) as cluster, scheduler_for(cluster) as scheduler:
        result = scheduler.run(job(shot, frames="1-4"))
    assert result.status is JobStatus.FAILED
    names = sorted(p.name for p in shot["dir"].iterdir())
    assert names == [f"shot.{f:04d}.png" for f in result.frames_written]
    assert ours_left(shot["dir"]) == []
