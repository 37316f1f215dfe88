"""A server's ``token`` and ``headers``: checked when the configuration is read, never quoted.

Both end up in HTTP and websocket request headers. A value with a line break or another control
character would be refused by ``requests`` at the first request (or split the websocket
handshake), so a bad value used to pass ``comfy-cluster servers`` and then fail every health check
with a traceback. We refuse it at load, naming the server and the field but never the value.
Values must be printable ASCII (space and tab included): ``requests`` sends header values as
Latin-1 and the websocket client as UTF-8, so anything beyond ASCII would reach the server as
different bytes on the two channels. Header names must be HTTP tokens (RFC 9110).
"""

from __future__ import annotations

import string
from typing import Optional

from comfy_cluster.core.config.values import require_type
from comfy_cluster.core.errors import ConfigError

__all__ = ["parse_headers", "parse_token"]

_NAME_CHARS = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~")
_BLANKS = " \t"
#: Said after a wrong type: a secret's value is never quoted.
_NOT_SHOWN = " (the value is not shown)"


def _value_problem(value: str) -> Optional[str]:
    """Why ``value`` cannot be sent as a header value, in words that do not quote it."""
    for position, ch in enumerate(value, 1):
        if ch in "\r\n":
            return f"contains a line break (character {position})"
        if ch != "\t" and (ord(ch) < 0x20 or ord(ch) == 0x7F):
            return f"contains a control character (character {position})"
        if ord(ch) > 0x7E:
            return (
                f"contains a non-ASCII character (character {position}); only printable ASCII "
                "reaches the server the same way over HTTP and the websocket"
            )
    return None


def _check_value(value: str, what: str, source: str, field_name: str, server: str) -> str:
    """``value`` without surrounding blanks (HTTP ignores them), or ConfigError."""
    problem = _value_problem(value)
    if problem is not None:
        raise ConfigError(
            f"{what} {problem}; the value is not shown",
            source=source,
            field=field_name,
            server=server,
        )
    return value.strip(_BLANKS)


def parse_token(value: object, source: str, who: str, server: str) -> Optional[str]:
    """The ``token`` key: a string sent as ``Authorization: Bearer <token>``; blank is none."""
    if value is None:
        return None
    what = f"{who}token"
    text = require_type(
        value, str, what, "a string", source=source, field="token", server=server, after=_NOT_SHOWN
    )
    return _check_value(text, what, source, "token", server) or None


def _check_name(name: str, index: int, source: str, who: str, server: str) -> str:
    if not name or not all(ch in _NAME_CHARS for ch in name):
        raise ConfigError(
            f"{who}header #{index} has an invalid name (HTTP header names are letters, digits "
            "and !#$%&'*+-.^_`|~ only, no spaces or ':'); the name is not shown",
            source=source,
            field="headers",
            server=server,
        )
    return name


def parse_headers(value: object, source: str, who: str, server: str) -> dict[str, str]:
    """The ``headers`` key: an object of HTTP header names to string values."""
    if value is None:
        return {}
    given = require_type(
        value,
        dict,
        f"{who}headers",
        "an object of strings",
        source=source,
        field="headers",
        server=server,
        after=_NOT_SHOWN,
    )
    headers: dict[str, str] = {}
    seen: set[str] = set()
    for index, (raw_name, raw_value) in enumerate(given.items(), 1):
        name = _check_name(str(raw_name), index, source, who, server)
        if name.lower() in seen:
            raise ConfigError(
                f"{who}header {name!r} is given twice (header names ignore case)",
                source=source,
                field="headers",
                server=server,
            )
        seen.add(name.lower())
        what = f"{who}header {name!r}"
        text = require_type(
            raw_value, str, what, "a string", source=source, field="headers", server=server
        )
        headers[name] = _check_value(text, what, source, "headers", server)
    return headers
