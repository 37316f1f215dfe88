"""The render node's scheduler, kept across renders. Main thread.

A scheduler measures how fast each server renders; keeping one per server list lets those
measurements steer the next render too. A different list (servers edited, enabled, disabled) or a
different health monitor gets a new scheduler.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

from comfy_cluster.core.server import ServerConfig
from comfy_cluster.host.collaborators import HealthHints, RenderScheduler, SchedulerFactory

__all__ = ["SchedulerCache"]


class SchedulerCache:
    """One scheduler per (server list, health monitor), built by ``factory`` when they change."""

    def __init__(self, factory: SchedulerFactory) -> None:
        self._factory = factory
        self._key: Optional[tuple[tuple[ServerConfig, ...], Optional[HealthHints]]] = None
        self._current: Optional[RenderScheduler] = None

    @property
    def current(self) -> Optional[RenderScheduler]:
        """The scheduler the last render used (None before the first)."""
        return self._current

    def get(
        self, servers: Sequence[ServerConfig], health: Optional[HealthHints]
    ) -> RenderScheduler:
        """The scheduler for ``servers`` and ``health``, reused when neither changed."""
        servers = tuple(servers)
        key = self._key
        if self._current is None or key is None or key[0] != servers or key[1] is not health:
            self._current = self._factory(servers, health)
            self._key = (servers, health)
        return self._current
