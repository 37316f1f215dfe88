"""Telling a job's viewers where each of its servers stands: :class:`ServerWatch`.

Without it a server that is offline, degraded (say, missing a node class) or disabled just sits
at "0/40 waiting" all job long. The watch reads the health snapshot the balancer already uses
and posts a :class:`~comfy_cluster.core.engine.events.ServerStateChanged` on each change, and
once at the start for any server that cannot take work.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Callable

from comfy_cluster.core.engine.events import ServerStateChanged
from comfy_cluster.core.health_status import USABLE_STATES, ServerStatus

__all__ = ["ServerWatch"]

#: Posts one event class with its fields (``JobBook.post``).
Post = Callable[..., None]


class ServerWatch:
    """Compares each snapshot with the last one it saw; posts only what changed."""

    def __init__(self, post: Post) -> None:
        self._post = post
        self._seen: dict[str, tuple[str, str]] = {}

    def update(self, statuses: Mapping[str, ServerStatus]) -> None:
        for name, status in statuses.items():
            state = str(getattr(status.state, "value", status.state))
            reason = status.reason or status.last_error or ""
            seen = self._seen.get(name)
            if seen == (state, reason):
                continue
            first = seen is None
            self._seen[name] = (state, reason)
            if first and status.state in USABLE_STATES:
                continue  # a server ready at the start is the normal case: nothing to say
            if seen is not None and _usable(seen[0]) and status.state in USABLE_STATES:
                continue  # usable before and now (ready <-> busy, a new error text): not news
            self._post(ServerStateChanged, server=name, state=state, reason=reason)


def _usable(state: str) -> bool:
    """Whether the state word ``state`` (as posted) is one in which a server takes work."""
    return any(state == str(getattr(u, "value", u)) for u in USABLE_STATES)
