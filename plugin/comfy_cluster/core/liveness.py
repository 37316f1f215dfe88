"""When this process last heard from each server: the sign of life a job's own traffic gives.

Process-wide and keyed by server URL. :class:`~comfy_cluster.core.client.ComfyClient` notes every
answer and every websocket message here (except the health monitor's own clients, made with
``liveness=False``); :class:`~comfy_cluster.core.health.HealthMonitor` reads it, so a server a job
is talking to is polled slowly and cheaply without the job telling the monitor anything. One dict
store per note (atomic under the GIL): any thread, no lock, negligible cost.
"""

from __future__ import annotations

import time
from typing import Optional

__all__ = ["forget", "heard", "last_heard"]

_heard: dict[str, float] = {}


def heard(url: str) -> None:
    """Note that the server at ``url`` answered or sent something just now."""
    _heard[url] = time.monotonic()


def last_heard(url: str) -> Optional[float]:
    """``time.monotonic()`` when the server at ``url`` was last heard from, or None."""
    return _heard.get(url)


def forget(url: Optional[str] = None) -> None:
    """Forget ``url`` (or every server): tests start from silence."""
    if url is None:
        _heard.clear()
    else:
        _heard.pop(url, None)
