"""How durations and memory sizes read on screen: one format each, for the CLI, node and panel.

Raw numbers (seconds, bytes) stay raw in JSON; these strings are for people only.
"""

from __future__ import annotations

from typing import Optional

__all__ = ["duration_text", "gib_text"]

_GIB = float(1 << 30)


def duration_text(seconds: float) -> str:
    """``4.25`` -> ``"4.2 s"``, ``75`` -> ``"1:15"``, ``3725`` -> ``"1:02:05"``."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def gib_text(free: Optional[int], total: Optional[int] = None) -> str:
    """VRAM as people read it: ``"3.2 / 8.0 GiB"`` (free / total), ``"-"`` when unknown."""
    if free is None and total is None:
        return "-"
    if total:
        return f"{(free or 0) / _GIB:.1f} / {total / _GIB:.1f} GiB"
    return f"{(free or 0) / _GIB:.1f} GiB"
