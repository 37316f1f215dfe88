"""The immutable record of one ComfyUI server, as every layer sees it.

Loading it from the environment and the user file is the job of ``core/config``; this module only
holds the value and the few things derived from it (URLs, a masked ``repr``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Optional

DEFAULT_PORT = 8188
#: The largest output file accepted from a server (``max_download_bytes``): 2 GiB.
DEFAULT_MAX_DOWNLOAD_BYTES = 2 * 1024**3
MASK = "***"


@dataclass(frozen=True)
class ServerConfig:
    """One ComfyUI server. Immutable; safe to share between threads.

    ``priority`` 1 is the most preferred. ``max_in_flight`` is how many of our prompts may sit in
    that server's ComfyUI queue at once (running + pending). ``source`` names where the record came
    from (an environment variable, a file, the user file, or ``default``). ``ca_bundle`` is the path
    of a PEM file of CA certificates trusted *instead of* the default ones (a studio's internal CA);
    it is used only for https with ``verify_tls`` true, and it is not a secret.
    ``max_download_bytes`` caps one output file from that server (a server is not trusted).
    """

    name: str
    host: str
    port: int = DEFAULT_PORT
    scheme: str = "http"
    dir_local: str = ""
    dir_remote: str = ""
    priority: int = 1
    enabled: bool = True
    headers: Mapping[str, str] = field(default_factory=dict)
    token: Optional[str] = None
    verify_tls: bool = True
    ca_bundle: Optional[str] = None
    max_in_flight: int = 1
    max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES
    tags: tuple[str, ...] = ()
    source: str = "default"

    @property
    def url(self) -> str:
        """Base HTTP URL, no trailing slash: ``http://10.0.0.5:8188``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """Base websocket URL matching :attr:`url` (``ws://`` or ``wss://``)."""
        return ("wss" if self.scheme == "https" else "ws") + self.url[len(self.scheme) :]

    def request_headers(self) -> dict[str, str]:
        """Headers to send on every HTTP and websocket request (token as a bearer)."""
        headers = dict(self.headers)
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def secret_values(self) -> tuple[str, ...]:
        """Every configured value that must never be shown: the token and each header value."""
        values = [self.token or "", *self.headers.values()]
        return tuple(v for v in values if v)

    def masked(self) -> dict[str, object]:
        """A JSON-able view for display: token and header values replaced by ``***``.

        ``ca_bundle`` (a path, not a secret) appears only when set.
        """
        view: dict[str, object] = {
            "name": self.name,
            "host": self.host,
            "port": self.port,
            "scheme": self.scheme,
            "url": self.url,
            "dir_local": self.dir_local,
            "dir_remote": self.dir_remote,
            "priority": self.priority,
            "enabled": self.enabled,
            "headers": {key: MASK for key in self.headers},
            "token": MASK if self.token else None,
            "verify_tls": self.verify_tls,
            "max_in_flight": self.max_in_flight,
            "max_download_bytes": self.max_download_bytes,
            "tags": list(self.tags),
            "source": self.source,
        }
        if self.ca_bundle:
            view["ca_bundle"] = self.ca_bundle
        return view

    def __repr__(self) -> str:
        token = MASK if self.token else None
        return (
            f"ServerConfig(name={self.name!r}, url={self.url!r}, priority={self.priority}, "
            f"enabled={self.enabled}, token={token!r}, headers={sorted(self.headers)!r}, "
            f"source={self.source!r})"
        )
