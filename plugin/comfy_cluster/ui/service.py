"""What the server panel needs from the rest of the plugin: one small interface.

The panel never reaches for the health monitor, the config file or Nuke directly; it is handed an
object with these methods (nukeserversocket's "host behind a small interface"). The real one is
:class:`comfy_cluster.core.cluster.ClusterService`; tests pass a fake with canned snapshots.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from comfy_cluster.core.health import HealthSnapshot
    from comfy_cluster.core.server import ServerConfig


@runtime_checkable
class ClusterServiceProtocol(Protocol):
    """The cluster as the panel sees it.

    Threads: the panel calls every method on the Qt main thread, so none may block on the
    network: :meth:`snapshot`, :meth:`servers` and :meth:`active_jobs` return cached values,
    :meth:`poll_now` only wakes the poller. The edit methods may write the small user config file.
    Edit methods raise ``ConfigError`` (a ``ValueError``) for bad input, e.g. an unknown name.
    """

    def snapshot(self) -> HealthSnapshot:
        """The latest health snapshot (cached; never touches the network)."""
        ...

    def poll_now(self) -> None:
        """Ask the health poller to check every server soon; returns at once."""
        ...

    def servers(self) -> Sequence[ServerConfig]:
        """The configured servers (environment plus user edits), in display order."""
        ...

    def active_jobs(self) -> Mapping[str, str]:
        """Server name -> short "job / chunk" text for work currently on that server."""
        ...

    def set_active(self, active: bool) -> None:
        """A panel started (True) or stopped (False) watching: poll faster while anyone watches."""
        ...

    def set_enabled(self, name: str, enabled: bool) -> None:
        """Enable or disable a server and save it to the user config file."""
        ...

    def set_priority(self, name: str, priority: int) -> None:
        """Change a server's priority (1 = most preferred) and save it."""
        ...

    def add_server(self, config: ServerConfig) -> None:
        """Add a server to the user config file and start watching it."""
        ...

    def remove_server(self, name: str) -> None:
        """Remove a server (hide it, for servers that come from the environment) and save."""
        ...


@runtime_checkable
class ClosableClusterService(ClusterServiceProtocol, Protocol):
    """A service the panel may own: when it built the service it also closes it."""

    def close(self, timeout: float = ...) -> None:
        """Stop the health pollers, waiting at most ``timeout`` seconds for them."""
        ...


__all__ = ["ClosableClusterService", "ClusterServiceProtocol"]
