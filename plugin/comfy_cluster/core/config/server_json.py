"""The JSON form of one server: :func:`parse_server_dict` validates an object (as found in
``NUKE_COMFYUI_SERVERS`` or the user file) into a :class:`ServerConfig`, and :func:`server_to_dict`
writes one back so that the round trip is exact.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Optional

from comfy_cluster.core.config.credentials import parse_headers, parse_token
from comfy_cluster.core.config.values import (
    agreed_port,
    check_host,
    check_port,
    default_name,
    parse_address,
    reject_credentials,
    require_type,
    shown,
    split_host_port,
    type_name,
)
from comfy_cluster.core.errors import ConfigError
from comfy_cluster.core.server import DEFAULT_MAX_DOWNLOAD_BYTES, DEFAULT_PORT, ServerConfig

__all__ = ["SERVER_KEYS", "parse_server_dict", "server_to_dict"]

#: Keys a server object may carry (``ip`` and ``host`` are aliases; ``url`` replaces both + port).
SERVER_KEYS = (
    "name",
    "ip",
    "host",
    "url",
    "port",
    "scheme",
    "dir_local",
    "dir_remote",
    "priority",
    "enabled",
    "headers",
    "token",
    "verify_tls",
    "ca_bundle",
    "max_in_flight",
    "max_download_bytes",
    "tags",
)

#: Keys whose value a message never quotes: secrets, and addresses that may carry user:password@.
_UNQUOTED = frozenset({"token", "headers", "url", "ip", "host"})


def _check_host(value: object, source: str, key: str, who: str) -> str:
    """A bare host name or IP address (IPv6 bare or in brackets), as in a JSON ``ip``/``host``.

    A port is refused here even in ``[IPv6]:port`` form, as in ``host:port``: it goes in
    ``port`` (or write a ``url``).
    """
    text = require_type(value, str, f"{who}{key}", "a string", source=source, field=key).strip()
    reject_credentials(text, source, key, who)
    if "/" in text:
        raise ConfigError(
            f"{who}{key} must be a host name or IP address, not a URL (use 'url' for a URL)",
            source=source,
            field=key,
        )
    host, port_text = split_host_port(text, source, key, who)
    if port_text is not None:
        raise ConfigError(
            f"{who}{key} {shown(text)}contains a port; put the port in 'port' (or use 'url')",
            source=source,
            field=key,
        )
    return check_host(host, source, key, who)


def _check_ca_bundle(value: object, source: str, who: str, server: str) -> Optional[str]:
    """The ``ca_bundle`` key: a path to a PEM file, ``~`` expanded; must be absolute and exist.

    Only the local file system is looked at (never the network). A relative path is refused: it
    would depend on the current folder, which differs between Nuke, the farm and a shell.
    """
    what = f"{who}ca_bundle"
    given = require_type(
        value,
        str,
        what,
        "a string (the path of a PEM file)",
        source=source,
        field="ca_bundle",
        server=server,
    ).strip()
    if not given:
        return None
    path = os.path.expanduser(given)
    problem = ""
    if not os.path.isabs(path):
        problem = f" must be an absolute path (or start with ~), got {given!r}"
    elif not os.path.isfile(path):
        problem = f" {path!r}: no such file"
    if problem:
        raise ConfigError(what + problem, source=source, field="ca_bundle", server=server)
    return path


def _unknown_key_message(key: str, who: str) -> str:
    import difflib  # only on the error path

    close = difflib.get_close_matches(key, SERVER_KEYS, n=1)  # pragma: no mutate (best first)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{who}unknown key {key!r}{hint}; known keys: {', '.join(SERVER_KEYS)}"


def parse_server_dict(
    d: Mapping[str, Any],
    source: str,
    *,
    position: Optional[int] = None,
    default_priority: int = 1,
) -> ServerConfig:
    """Validate one JSON server object into a :class:`ServerConfig` whose ``source`` is ``source``.

    ``position`` (1-based) only makes messages say which entry is at fault. Raises
    :class:`ConfigError` naming ``source`` and the key on a missing host, bad port, wrong type or
    unknown key.
    """
    who = f"server #{position}: " if position is not None else ""
    if not isinstance(d, Mapping):
        raise ConfigError(
            f"{who}expected a server object, got {type_name(d)}", source=source, field=None
        )
    name_hint = d.get("name")
    if isinstance(name_hint, str) and name_hint.strip():
        who = f"server #{position} ({name_hint.strip()!r}): " if position else f"{name_hint!r}: "
    for key in d:
        if key not in SERVER_KEYS:
            raise ConfigError(_unknown_key_message(str(key), who), source=source, field=str(key))

    def typed(key: str, kind: type, label: str) -> Any:
        value = d[key]
        quoted = "" if key in _UNQUOTED else f" {value!r}"
        return require_type(
            value, kind, f"{who}{key}", label, source=source, field=key, after=quoted
        )

    scheme: Optional[str] = None
    port: Optional[int] = None
    if "url" in d:
        for other in ("ip", "host"):
            if other in d:
                raise ConfigError(
                    f"{who}give either 'url' or '{other}', not both", source=source, field=other
                )
        url = typed("url", str, "a string")
        scheme, host, port = parse_address(url, source, "url")
    else:
        given = {
            k: _check_host(d[k], source, k, who) for k in ("ip", "host") if d.get(k) is not None
        }
        if not given:
            raise ConfigError(f"{who}missing host ('ip' or 'host')", source=source, field="ip")
        if len(set(given.values())) > 1:
            raise ConfigError(
                f"{who}'ip' and 'host' are aliases and disagree ({given['ip']!r} vs "
                f"{given['host']!r})",
                source=source,
                field="host",
            )
        host = next(iter(given.values()))
    if "port" in d:
        port = agreed_port(check_port(d["port"], source, "port", who), port, "url", source, who)
    port = DEFAULT_PORT if port is None else port
    if "scheme" in d:
        given_scheme = typed("scheme", str, "a string").lower()
        if given_scheme not in ("http", "https"):
            raise ConfigError(
                f"{who}scheme must be 'http' or 'https', got {d['scheme']!r}",
                source=source,
                field="scheme",
            )
        if scheme is not None and given_scheme != scheme:
            raise ConfigError(
                f"{who}scheme {given_scheme!r} disagrees with url", source=source, field="scheme"
            )
        scheme = given_scheme
    scheme = scheme or "http"

    name = default_name(host, port)
    if d.get("name") is not None:
        name = typed("name", str, "a string").strip()
        if not name:
            raise ConfigError(f"{who}name must not be empty", source=source, field="name")

    def text(key: str) -> str:
        if d.get(key) is None:
            return ""
        return typed(key, str, "a string").strip()

    def positive(key: str, default: int) -> int:
        if d.get(key) is None:
            return default
        value = typed(key, int, "an integer")
        if value < 1:
            raise ConfigError(
                f"{who}{key} must be 1 or more, got {value}", source=source, field=key
            )
        return value

    def flag(key: str, default: bool) -> bool:
        if d.get(key) is None:
            return default
        return typed(key, bool, "true or false")

    headers = parse_headers(d.get("headers"), source, who, name)
    token = parse_token(d.get("token"), source, who, name)
    tags: tuple[str, ...] = ()
    if d.get("tags") is not None:
        raw_tags = typed("tags", list, "an array of strings")
        if not all(isinstance(tag, str) for tag in raw_tags):
            raise ConfigError(f"{who}tags must be an array of strings", source=source, field="tags")
        tags = tuple(raw_tags)
    ca_bundle: Optional[str] = None
    if d.get("ca_bundle") is not None:
        ca_bundle = _check_ca_bundle(d["ca_bundle"], source, who, name)

    return ServerConfig(
        name=name,
        host=host,
        port=port,
        scheme=scheme,
        dir_local=text("dir_local"),
        dir_remote=text("dir_remote"),
        priority=positive("priority", default_priority),
        enabled=flag("enabled", True),
        headers=headers,
        token=token,
        verify_tls=flag("verify_tls", True),
        ca_bundle=ca_bundle,
        max_in_flight=positive("max_in_flight", 1),
        max_download_bytes=positive("max_download_bytes", DEFAULT_MAX_DOWNLOAD_BYTES),
        tags=tags,
        source=source,
    )


def server_to_dict(server: ServerConfig) -> dict[str, Any]:
    """The JSON object :func:`parse_server_dict` reads back (secrets in clear: user file only)."""
    out: dict[str, Any] = {
        "name": server.name,
        "host": server.host,
        "port": server.port,
        "scheme": server.scheme,
        "dir_local": server.dir_local,
        "dir_remote": server.dir_remote,
        "priority": server.priority,
        "enabled": server.enabled,
        "verify_tls": server.verify_tls,
        "max_in_flight": server.max_in_flight,
    }
    if server.max_download_bytes != DEFAULT_MAX_DOWNLOAD_BYTES:
        out["max_download_bytes"] = server.max_download_bytes
    if server.headers:
        out["headers"] = dict(server.headers)
    if server.token:
        out["token"] = server.token
    if server.tags:
        out["tags"] = list(server.tags)
    if server.ca_bundle:
        out["ca_bundle"] = server.ca_bundle
    return out
