"""Parsers and checks for single configuration values (JSON text, ports, addresses, variable
values), shared by the server objects, the environment sources and the user file. Each raises
:class:`ConfigError` naming the source (variable or file) and the field, and speaks of JSON's type
names so users recognise them; nothing here reads ``os.environ`` or a file.
"""

from __future__ import annotations

import ipaddress
import string
from collections.abc import Mapping
from typing import Any, Optional, Union

from comfy_cluster.core.errors import ConfigError
from comfy_cluster.core.input_json import JsonTextError, decode_json

__all__ = [
    "agreed_port",
    "check_host",
    "check_port",
    "default_name",
    "env_value",
    "load_json",
    "parse_address",
    "reject_credentials",
    "require_type",
    "shown",
    "split_host_port",
    "type_name",
]

_HOST_PUNCTUATION = frozenset("-._")
#: Characters of a plain address; text with anything else is never quoted in a message.
_QUOTABLE = frozenset(string.ascii_letters + string.digits + "-._:[]%")
_MAX_QUOTED = 80


def env_value(environ: Mapping[str, str], name: str) -> Optional[str]:
    """The stripped value of ``name``; empty or blank counts as unset (a cleared variable)."""
    value = environ.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def load_json(text: str, source: str) -> Any:
    """Parse JSON into a ConfigError with line and column (never quoting the text: tokens)."""
    try:
        return decode_json(text)
    except JsonTextError as exc:
        raise ConfigError(str(exc), source=source) from None


def type_name(value: object) -> str:
    """JSON's name for a Python value's type, for messages users recognise."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def require_type(
    value: object,
    kind: Union[type, tuple[type, ...]],
    what: str,
    label: str,
    *,
    source: str,
    field: str,
    server: Optional[str] = None,
    after: str = "",
) -> Any:
    """``value`` when it has the type ``kind``, else ConfigError ``<what> must be <label>, got
    <JSON type><after>`` naming ``source``, ``field`` and ``server``.

    Why one check: every key says a wrong type the same way, in JSON's words. JSON ``true`` is
    not an integer here (``bool`` is an ``int`` in Python). ``after`` is what the caller may
    add (the value quoted, or that it is not shown); the value itself is never quoted here.
    """
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool)):
        return value
    raise ConfigError(
        f"{what} must be {label}, got {type_name(value)}{after}",
        source=source,
        field=field,
        server=server,
    )


def shown(text: str) -> str:
    """``'text' `` when it is plainly an address (safe to quote), else nothing.

    Anything else (a path, a query string, a pasted header) might carry a secret, so messages
    about addresses quote it only through this.
    """
    if text and len(text) <= _MAX_QUOTED and all(ch in _QUOTABLE for ch in text):
        return f"{text!r} "
    return ""


def check_port(port: object, source: str, field_name: str = "port", who: str = "") -> int:
    if isinstance(port, bool) or not isinstance(port, int):
        raise ConfigError(
            f"{who}port must be an integer, got {type_name(port)} {port!r}",
            source=source,
            field=field_name,
        )
    if not 1 <= port <= 65535:
        raise ConfigError(
            f"{who}port {port} is out of range (1-65535)", source=source, field=field_name
        )
    return port


def agreed_port(
    given: int, in_address: Optional[int], address_name: str, source: str, who: str = ""
) -> int:
    """``given`` when the address (``address_name``) names no port or the same one: two places
    that disagree about a port are a typo the user must settle, not one we guess."""
    if in_address is not None and given != in_address:
        raise ConfigError(
            f"{who}port {given} disagrees with the port in {address_name} ({in_address})",
            source=source,
            field="port",
        )
    return given


def reject_credentials(text: str, source: str, field_name: str, who: str = "") -> None:
    """``user:password@host`` is refused without quoting it: secrets go in token or headers."""
    if "@" in text:
        raise ConfigError(
            f"{who}credentials in the URL (user:password@) are not supported; "
            "use 'token' or 'headers' (the value is not shown)",
            source=source,
            field=field_name,
        )


def split_host_port(
    text: str, source: str, field_name: str, who: str = ""
) -> tuple[str, Optional[str]]:
    """``host``, ``host:port``, ``[IPv6]``, ``[IPv6]:port`` or a bare IPv6 address ->
    (host without brackets, port text or None). The host itself is checked by :func:`check_host`.
    """
    if text.startswith("["):
        inner, close, tail = text[1:].partition("]")
        if not close or (tail and not tail.startswith(":")):
            raise ConfigError(
                f"{who}the address {shown(text)}has unbalanced brackets; "
                "write [IPv6] or [IPv6]:port",
                source=source,
                field=field_name,
            )
        if ":" not in inner:
            raise ConfigError(
                f"{who}the address {shown(text)}puts brackets around a name or IPv4 address; "
                "brackets are only for IPv6 addresses",
                source=source,
                field=field_name,
            )
        return inner, (tail[1:] if tail else None)
    if text.count(":") == 1:
        host, _, port_text = text.partition(":")
        return host, port_text
    return text, None


def check_host(host: str, source: str, field_name: str, who: str = "") -> str:
    """A host name, IPv4 address or IPv6 address (no brackets, no port), else ConfigError."""
    if not host:
        raise ConfigError(f"{who}missing host", source=source, field=field_name)
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(
                f"{who}the host {shown(host)}has more than one ':' but is not an IPv6 "
                "address; write host:port, or [IPv6]:port",
                source=source,
                field=field_name,
            ) from None
        return host
    if not all(ch.isalnum() or ch in _HOST_PUNCTUATION for ch in host):
        raise ConfigError(
            f"{who}the host {shown(host)}is not a valid host name or IP address "
            "(letters, digits, '-', '.' and '_' only)",
            source=source,
            field=field_name,
        )
    return host


def _port_from_text(text: str, source: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 5:
        raise ConfigError(
            f"the port {shown(text)}after ':' is not a number from 1 to 65535",
            source=source,
            field="port",
        )
    return check_port(int(text), source)


def parse_address(text: str, source: str, field_name: str) -> tuple[str, str, Optional[int]]:
    """``[scheme://]host[:port][/]`` -> (scheme, host, port or None). IPv6 may be bare or [...].

    The host is lower-cased. Credentials, paths, queries and fragments are refused without
    quoting the text (they may hold secrets).
    """
    raw = text.strip()
    reject_credentials(raw, source, field_name)
    scheme, sep, rest = raw.partition("://")
    if not sep:
        scheme, rest = "http", raw
    if scheme.lower() not in ("http", "https"):
        raise ConfigError(
            f"the scheme {shown(scheme)}must be http or https (write [http(s)://]host[:port])",
            source=source,
            field=field_name,
        )
    if rest.endswith("/"):
        rest = rest[:-1]
    if any(ch in rest for ch in "/?#\\") or any(ch.isspace() for ch in rest):
        raise ConfigError(
            "an address is [http(s)://]host[:port], without a path, query or fragment "
            "(the value is not shown)",
            source=source,
            field=field_name,
        )
    host, port_text = split_host_port(rest, source, field_name)
    host = check_host(host.lower(), source, field_name)
    port = None if port_text is None else _port_from_text(port_text, source)
    return scheme.lower(), host, port


def default_name(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
