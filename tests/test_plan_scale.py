"""Planning stays cheap for long ranges (issue 14): existing frames are read off the folder's
names instead of formatting every requested frame, with the answer a per-frame lookup gives;
huge frame-mode jobs are held in a bounded number of chunks."""

from __future__ import annotations

import os
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
