"""The prompts one job may have left on its servers: :class:`LivePrompts` (for the cancel sweep).

A prompt is listed *before* it is POSTed (so a cancel can find it) and unlisted once it is over
or cancelled. Its own small lock: any thread.
"""

from __future__ import annotations

import threading

__all__ = ["LivePrompts"]


class LivePrompts:
    """Prompt ids per server that may still sit there. Any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: dict[str, set[str]] = {}

    def submitted(self, server: str, prompt_id: str) -> None:
        """Remember a prompt we may have queued (called *before* POST, so cancel can find it)."""
        with self._lock:
            self._ids.setdefault(server, set()).add(prompt_id)

    def finished(self, server: str, prompt_id: str) -> None:
        with self._lock:
            self._ids.get(server, set()).discard(prompt_id)

    def by_server(self) -> dict[str, tuple[str, ...]]:
        """Prompts that may still sit on a server, by server (for the cancel sweep)."""
        with self._lock:
            return {s: tuple(ids) for s, ids in self._ids.items() if ids}
