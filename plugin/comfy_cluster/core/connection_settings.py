"""How we reach one server: timeouts, TLS trust, headers and websocket socket options.

Each setting is derived from a :class:`~comfy_cluster.core.server.ServerConfig` and checked
*before* use, so a configuration mistake (a deleted CA file, a token with a line break) is a
permanent ConfigError naming the field, never a transient "unreachable" retried forever, and
never a library message quoting a secret. Pure functions and a frozen value: any thread.
"""

from __future__ import annotations

import os
import re
import ssl
from dataclasses import dataclass
from typing import Any, Union

from comfy_cluster.core.errors import ConfigError
from comfy_cluster.core.server import ServerConfig

__all__ = [
    "DEFAULT_TIMEOUTS",
    "Timeouts",
    "check_ca_bundle",
    "check_headers",
    "tls_verify",
    "websocket_options",
]


@dataclass(frozen=True)
class Timeouts:
    """Seconds to wait for a TCP/TLS connect and for each read (not the whole response).

    ``Timeouts(connect=0.5, read=2.0)``; ``DEFAULT_TIMEOUTS`` is ``Timeouts(3.0, 30.0)``: a LAN
    connect is milliseconds, while ``/object_info`` or a big upload can take seconds.
    """

    connect: float = 3.0
    read: float = 30.0

    def __post_init__(self) -> None:
        if self.connect <= 0 or self.read <= 0:
            raise ValueError(f"timeouts must be > 0, got connect={self.connect} read={self.read}")

    def as_requests(self) -> tuple[float, float]:
        return (self.connect, self.read)


DEFAULT_TIMEOUTS = Timeouts()


def tls_verify(server: ServerConfig) -> Union[bool, str]:
    """requests' ``verify=`` for ``server``: its ``ca_bundle`` path, or ``verify_tls`` as a bool."""
    if server.verify_tls and server.ca_bundle:
        return server.ca_bundle
    return bool(server.verify_tls)


_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_VALUE = re.compile(r"(?:[^\s][^\r\n\x00]*)?")


def check_headers(server: ServerConfig) -> None:
    """Raise ConfigError (naming the header, never its value) for a header that cannot be sent.

    A value with leading whitespace or a line break would otherwise fail inside requests or
    http.client with the value (perhaps the token) quoted in the message, or be injected
    as-is into the websocket handshake.
    """
    for key, value in server.request_headers().items():
        if not _HEADER_NAME.fullmatch(key) or not _HEADER_VALUE.fullmatch(value):
            shown = "the token" if key == "Authorization" and server.token else f"header {key!r}"
            raise ConfigError(
                f"server {server.name!r}: {shown} has leading whitespace, a line break or "
                "another character that cannot be sent (value not shown)",
                source=server.source,
                server=server.name,
                field="token" if shown == "the token" else "headers",
            )


def check_ca_bundle(server: ServerConfig) -> None:
    """Raise ConfigError (permanent, never retried) if ``server`` uses a CA file that is missing.

    Loading the configuration checks this too; a record built in code, or a file deleted since,
    would otherwise surface as a transient "unreachable" and be retried forever.
    """
    if (
        server.scheme == "https"
        and server.verify_tls
        and server.ca_bundle
        and not os.path.isfile(server.ca_bundle)
    ):
        raise ConfigError(
            f"server {server.name!r}: {server.ca_bundle!r}: no such file",
            source=server.source,
            server=server.name,
            field="ca_bundle",
        )


def websocket_options(server: ServerConfig) -> dict[str, Any]:
    """Keyword arguments for ``websocket.create_connection``: headers, TLS trust, threading.

    Raises ConfigError like :func:`check_headers` / :func:`check_ca_bundle`.
    """
    check_headers(server)
    headers = [f"{k}: {v}" for k, v in server.request_headers().items()]
    # UTF-8 is checked by json.loads in protocol.parse_message (a bad frame is skipped there);
    # websocket-client's own check is a pure-Python loop over every byte of every message.
    # redirect_limit 0: websocket-client would otherwise follow a redirect with our headers
    # (token included) to wherever it points; now it raises, and wire_errors says why.
    options: dict[str, Any] = {
        "header": headers,
        "enable_multithread": True,
        "skip_utf8_validation": True,
        "redirect_limit": 0,
    }
    if server.scheme == "https" and not server.verify_tls:
        options["sslopt"] = {"cert_reqs": ssl.CERT_NONE, "check_hostname": False}
    elif server.scheme == "https" and server.ca_bundle:
        check_ca_bundle(server)
        options["sslopt"] = {"ca_certs": server.ca_bundle}
    return options
