"""The one on-screen format for durations and VRAM (core/formatting.py) and for frame lists."""

from __future__ import annotations

import pytest

from comfy_cluster.core.formatting import duration_text, gib_text
from comfy_cluster.core.frames import frames_text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0.0 s"), (4.25, "4.2 s"), (59.9, "59.9 s"), (75.4, "1:15"), (3 * 3600 + 125, "3:02:05")],
)
def test_duration_text(seconds: float, text: str) -> None:
    assert duration_text(seconds) == text


def test_negative_duration_reads_as_zero() -> None:
    assert duration_text(-3) == "0.0 s"


def test_gib_text() -> None:
    assert gib_text(int(1.5 * 2**30), 24 * 2**30) == "1.5 / 24.0 GiB"
    assert gib_text(2**30) == "1.0 GiB"
    assert gib_text(None, None) == "-"


def test_frames_text_ranges_and_lists() -> None:
    assert frames_text([1, 2, 3]) == "1-3"
    assert frames_text([1, 3, 7]) == "1 3 7"
    assert frames_text([]) == ""
