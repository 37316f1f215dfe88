"""Parsers and checks for single configuration values (JSON text, ports, addresses, variable
values), shared by the server objects, the environment sources and the user file. Each raises
:class:`ConfigError` naming the source (variable or file) and the field, and speaks of JSON's type
names so users recognise them; nothing here reads ``os.environ`` or a file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Optional
from urllib.parse import urlsplit

from comfy_cluster.core.errors import ConfigError

__all__ = [
    "check_port",
    "default_name",
    "env_value",
    "load_json",
    "parse_address",
    "type_name",
]


def env_value(environ: Mapping[str, str], name: str) -> Optional[str]:
    """The stripped value of ``name``; empty or blank counts as unset (a cleared variable)."""
    value = environ.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def load_json(text: str, source: str) -> Any:
    """Parse JSON, turning a syntax error into a ConfigError with line and column."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}", source=source
        ) from None


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


def parse_address(text: str, source: str, field_name: str) -> tuple[str, str, Optional[int]]:
    """``[scheme://]host[:port][/]`` -> (scheme, host, port or None). IPv6 may be bare or [...]."""
    raw = text.strip()
    if "://" not in raw:
        raw = "http://" + raw
    try:
        parts = urlsplit(raw)
    except ValueError as exc:
        raise ConfigError(
            f"invalid address {text!r}: {exc}", source=source, field=field_name
        ) from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ConfigError(
            f"scheme must be http or https, got {parts.scheme!r} in {text!r}",
            source=source,
            field=field_name,
        )
    if "@" in parts.netloc:
        raise ConfigError(
            f"credentials in the address are not supported ({text!r}); use 'token' or 'headers'",
            source=source,
            field=field_name,
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(
            f"address must be scheme://host:port without a path, got {text!r}",
            source=source,
            field=field_name,
        )
    netloc = parts.netloc
    if netloc.count(":") > 1 and not netloc.startswith("["):
        return scheme, netloc, None  # bare IPv6 address, no port
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(
            f"port out of range or not a number in {text!r}", source=source, field="port"
        ) from None
    host = parts.hostname or ""
    if not host:
        raise ConfigError(f"missing host in {text!r}", source=source, field=field_name)
    if port is not None:
        check_port(port, source)
    return scheme, host, port


def default_name(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
