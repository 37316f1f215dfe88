"""Stand-ins for health tests that need a real HealthMonitor but no network."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from comfy_cluster.core.errors import ServerUnreachable
from comfy_cluster.core.health import HealthMonitor
from comfy_cluster.core.server import ServerConfig


class DownClient:
    """A ComfyClient stand-in for a server that refuses connections (no network is used)."""

    def __init__(self, server: ServerConfig, timeouts: object) -> None:
        self.server = server

    def system_stats(self) -> dict:
        raise ServerUnreachable("connection refused", server=self.server.name)

    def close(self) -> None:
        pass


def quick_monitor(servers: Sequence[ServerConfig]) -> HealthMonitor:
    """A real monitor over DownClients that polls fast, so tests see threads come and go."""
    return HealthMonitor(servers, client_factory=DownClient, interval_busy=0.05, timeout=0.5)


def health_threads() -> list[threading.Thread]:
    """The health pollers alive now."""
    return [t for t in threading.enumerate() if t.name.startswith("comfy-cluster-health-")]
