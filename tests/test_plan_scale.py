"""Planning stays cheap for long ranges (issue 14): existing frames are read off the folder's
names instead of formatting every requested frame, with the answer a per-frame lookup gives;
huge frame-mode jobs are held in a bounded number of chunks."""

from __future__ import annotations

import os
import threading
import types
from pathlib import Path

import pytest

from comfy_cluster.core import transfer
from comfy_cluster.core.frames import format_frame_path
from comfy_cluster.core.transfer import frames_on_disk


def per_frame_lookup(pattern: str, frames: range) -> tuple[int, ...]:
    """The reference: format each frame's path and look at it."""
    return tuple(f for f in frames if os.path.isfile(format_frame_path(pattern, f)))


@pytest.mark.parametrize("token", ["####", "#", "%04d", "%d", "$F4", "$F"])
def test_names_read_back_give_what_a_per_frame_lookup_gives(tmp_path: Path, token: str) -> None:
    pattern = str(tmp_path / f"s.{token}.png")
    for f in (-3, 0, 7, 12345):
        Path(format_frame_path(pattern, f)).write_bytes(b"x")
    # Near misses: other padding, a sign on zero, other suffixes and prefixes, a folder.
    for name in ("s.01.png", "s.00001.png", "s.-000.png", "s.-0.png", "s.7.png.tmp", "xs.8.png"):
        if not (tmp_path / name).exists():
            (tmp_path / name).write_bytes(b"x")
    (tmp_path / "s..png").write_bytes(b"x")
    Path(format_frame_path(pattern, 9)).mkdir()  # a folder at a frame path does not count
    frames = range(-5, 20000)
    assert frames_on_disk(pattern, frames) == per_frame_lookup(pattern, frames)


def test_a_million_requested_frames_are_not_formatted_one_by_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pattern = str(tmp_path / "s.####.png")
    for f in (2, 999_999):
        Path(format_frame_path(pattern, f)).write_bytes(b"x")
    (tmp_path / ".comfy-cluster.lock").write_bytes(b"x")  # a folder with other files in it
    calls = [0]
    real = transfer.frame_name_formatter

    def counting(name: str):  # type: ignore[no-untyped-def]
        fmt = real(name)

        def counted(frame: int) -> str:
            calls[0] += 1
            return fmt(frame)

        return counted

    monkeypatch.setattr(transfer, "frame_name_formatter", counting)
    assert frames_on_disk(pattern, range(1, 1_000_001)) == (2, 999_999)
    assert calls[0] <= 3  # one per name in the folder, not one per frame


@pytest.mark.parametrize("slow_disk", [False, True])
def test_resume_keeps_only_whole_images_in_order_on_fast_and_slow_disks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slow_disk: bool
) -> None:
    from comfy_cluster.sim.harness import make_test_image

    if slow_disk:  # every disk counts as slow: the rest are checked on threads
        monkeypatch.setattr(transfer, "_SLOW_FILE_SECONDS", -1.0)
    pattern = str(tmp_path / "s.####.png")
    make_test_image(Path(format_frame_path(pattern, 1)))
    whole = Path(format_frame_path(pattern, 1)).read_bytes()
    broken = {7, 150, 299}
    for f in range(1, 301):
        data = whole[: len(whole) // 2] if f in broken else whole
        Path(format_frame_path(pattern, f)).write_bytes(data)
    found = transfer.existing_frames(pattern, range(1, 400), whole_images=True)
    assert found == tuple(f for f in range(1, 301) if f not in broken)


@pytest.mark.parametrize(
    ("started", "seconds_per_file", "threaded"),
    [(100.0, 0.00025, False), (0.0, 0.0005, False), (100.0, 0.001, True)],
)
def test_whole_images_are_checked_on_threads_only_when_the_disk_proves_slow(
    monkeypatch: pytest.MonkeyPatch, started: float, seconds_per_file: float, threaded: bool
) -> None:
    """The first 64 files are checked in turn; at most half a millisecond each (a local disk)
    keeps the rest in turn too, more (a network disk) checks them on threads. A fake clock
    says how long the sample took, the exact limit included."""
    clock = iter([started, started + seconds_per_file * 64])
    monkeypatch.setattr(transfer, "time", types.SimpleNamespace(monotonic=lambda: next(clock)))
    checked_on: set[str] = set()

    def file_ok(path: str) -> bool:
        checked_on.add(threading.current_thread().name)
        return path.endswith("7.png")

    monkeypatch.setattr(transfer, "image_file_ok", file_ok)
    paths = [f"/nowhere/s.{f}.png" for f in range(300)]
    assert transfer._whole_images(paths) == [p.endswith("7.png") for p in paths]
    on_threads = {name for name in checked_on if name.startswith("comfy-cluster-check")}
    assert bool(on_threads) is threaded, checked_on


TINY = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t"}},
}


class NoSpeeds:
    def record(self, server: str, seconds: float, frames: int = 1) -> float:
        return seconds

    def seconds_per_frame(self, server: str) -> None:
        return None


def frame_mode_chunks(tmp_path: Path, frames: str, **job: object) -> list[tuple[int, ...]]:
    from comfy_cluster.core.engine.job import RenderJob
    from comfy_cluster.core.engine.plan import plan_job
    from comfy_cluster.core.engine.settings import EngineSettings
    from comfy_cluster.core.server import ServerConfig

    render = RenderJob(TINY, frames, str(tmp_path / "o.####.png"), **job)  # type: ignore[arg-type]
    servers = [ServerConfig(name="a", host="127.0.0.1", port=30999)]
    planned = plan_job(render, servers, speed=NoSpeeds(), settings=EngineSettings())  # type: ignore[arg-type]
    return [c.frames for c in planned.chunks]


def test_frame_mode_keeps_one_frame_chunks_up_to_the_cap(tmp_path: Path) -> None:
    from comfy_cluster.core.engine.plan import MAX_FRAME_MODE_CHUNKS

    chunks = frame_mode_chunks(tmp_path, f"1-{MAX_FRAME_MODE_CHUNKS}")
    assert len(chunks) == MAX_FRAME_MODE_CHUNKS and {len(c) for c in chunks} == {1}
    # The documented cap: a hundred thousand chunks; one frame more makes two-frame chunks.
    assert len(frame_mode_chunks(tmp_path, "1-100001")) == 50_001


def test_a_million_frame_job_is_held_in_a_bounded_number_of_chunks(tmp_path: Path) -> None:
    from comfy_cluster.core.engine.plan import MAX_FRAME_MODE_CHUNKS

    chunks = frame_mode_chunks(tmp_path, "1-1000000")
    assert len(chunks) <= MAX_FRAME_MODE_CHUNKS
    assert [f for c in chunks for f in c] == list(range(1, 1_000_001))
    assert max(len(c) for c in chunks) == -(-1_000_000 // MAX_FRAME_MODE_CHUNKS)
    # An explicit chunk size is the user's choice and stays.
    assert {len(c) for c in frame_mode_chunks(tmp_path, "1-200000", chunk_size=1)} == {1}
