"""Where the servers come from: the environment (base) plus the user's own edits (user file).

Base sources, first match wins; each record remembers its ``source``:

1. ``NUKE_COMFYUI_SERVERS``: a JSON array of server objects, or the path of a file holding one.
2. Numbered variables ``NUKE_COMFYUI_IP_<n>`` (or ``_HOST_<n>``), ``_PORT_<n>``, ``_DIR_LOCAL_<n>``,
   ``_DIR_REMOTE_<n>``, ``_NAME_<n>``, ``_PRIORITY_<n>``, ``_ENABLED_<n>``.
3. The single-server variables of ComfyUI-for-Nuke: ``NUKE_COMFYUI_URL`` (one URL or a JSON
   list), ``NUKE_COMFYUI_HOST``, ``NUKE_COMFYUI_IP`` + ``NUKE_COMFYUI_PORT``, with
   ``NUKE_COMFYUI_DIR_LOCAL`` (or the old ``NUKE_COMFYUI_DIR``) and ``NUKE_COMFYUI_DIR_REMOTE``.
4. One server, ``local``, at ``127.0.0.1:8188``.

A broken source raises :class:`ConfigError` naming the variable or file and the field; we never fall
back to the next source, because rendering on the wrong machine is worse than not starting.

The user file (``COMFY_CLUSTER_CONFIG`` or ``~/.nuke/comfy_cluster/servers.json``) records edits
keyed by server name: servers added, base servers removed, ``enabled`` and ``priority`` changes.
It may hold tokens, so it is written atomically with mode 0600. Nothing here touches the network.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union
from urllib.parse import urlsplit

from comfy_cluster.core.errors import ConfigError
from comfy_cluster.core.server import DEFAULT_PORT, ServerConfig

__all__ = [
    "ENV_CONFIG",
    "ENV_SERVERS",
    "USER_FILE_VERSION",
    "ServerEdit",
    "UserConfig",
    "apply_user_config",
    "load_base_servers",
    "load_servers",
    "load_user_config",
    "parse_server_dict",
    "save_user_config",
    "server_to_dict",
    "user_config_path",
]

ENV_SERVERS = "NUKE_COMFYUI_SERVERS"
ENV_CONFIG = "COMFY_CLUSTER_CONFIG"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_NAME = "local"
USER_FILE_VERSION = 1

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
    "max_in_flight",
    "tags",
)

_NUMBERED = re.compile(
    r"^NUKE_COMFYUI_(IP|HOST|PORT|DIR_LOCAL|DIR_REMOTE|NAME|PRIORITY|ENABLED)_([1-9][0-9]*)$"
)
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


# --------------------------------------------------------------------------- small parsers


def _env(environ: Mapping[str, str], name: str) -> Optional[str]:
    """The stripped value of ``name``; empty or blank counts as unset (a cleared variable)."""
    value = environ.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def _json_loads(text: str, source: str) -> Any:
    """Parse JSON, turning a syntax error into a ConfigError with line and column."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}", source=source
        ) from None


def _type_name(value: object) -> str:
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


def _check_port(port: object, source: str, field_name: str = "port", who: str = "") -> int:
    if isinstance(port, bool) or not isinstance(port, int):
        raise ConfigError(
            f"{who}port must be an integer, got {_type_name(port)} {port!r}",
            source=source,
            field=field_name,
        )
    if not 1 <= port <= 65535:
        raise ConfigError(
            f"{who}port {port} is out of range (1-65535)", source=source, field=field_name
        )
    return port


def _int_from_text(text: str, source: str, field_name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(
            f"expected an integer, got {text!r}", source=source, field=field_name
        ) from None


def _bool_from_text(text: str, source: str, field_name: str) -> bool:
    lowered = text.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(
        f"expected 1/0, true/false, yes/no or on/off, got {text!r}",
        source=source,
        field=field_name,
    )


def _parse_address(text: str, source: str, field_name: str) -> tuple[str, str, Optional[int]]:
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
        _check_port(port, source)
    return scheme, host, port


def _check_host(value: object, source: str, key: str, who: str) -> str:
    """A bare host name or IP address, as given in a JSON ``ip``/``host`` key."""
    if not isinstance(value, str):
        raise ConfigError(
            f"{who}{key} must be a string, got {_type_name(value)}", source=source, field=key
        )
    host = value.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise ConfigError(f"{who}missing host", source=source, field=key)
    if "/" in host or any(ch.isspace() for ch in host) or "@" in host:
        raise ConfigError(
            f"{who}{key} must be a host name or IP address, got {value!r} (use 'url' for a URL)",
            source=source,
            field=key,
        )
    if host.count(":") == 1:
        raise ConfigError(
            f"{who}{key} {value!r} contains a port; put the port in 'port'",
            source=source,
            field=key,
        )
    return host


def _default_name(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _unknown_key_message(key: str, who: str) -> str:
    import difflib  # only on the error path

    close = difflib.get_close_matches(key, SERVER_KEYS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{who}unknown key {key!r}{hint}; known keys: {', '.join(SERVER_KEYS)}"


# --------------------------------------------------------------------------- server objects


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
            f"{who}expected a server object, got {_type_name(d)}", source=source, field=None
        )
    name_hint = d.get("name")
    if isinstance(name_hint, str) and name_hint.strip():
        who = f"server #{position} ({name_hint.strip()!r}): " if position else f"{name_hint!r}: "
    for key in d:
        if key not in SERVER_KEYS:
            raise ConfigError(_unknown_key_message(str(key), who), source=source, field=str(key))

    def typed(key: str, kind: Union[type, tuple[type, ...]], label: str) -> Any:
        value = d[key]
        ok = isinstance(value, kind) and not (isinstance(value, bool) and kind is int)
        if not ok:
            raise ConfigError(
                f"{who}{key} must be {label}, got {_type_name(value)} {value!r}",
                source=source,
                field=key,
            )
        return value

    scheme: Optional[str] = None
    port: Optional[int] = None
    if "url" in d:
        for other in ("ip", "host"):
            if other in d:
                raise ConfigError(
                    f"{who}give either 'url' or '{other}', not both", source=source, field=other
                )
        url = typed("url", str, "a string")
        scheme, host, port = _parse_address(url, source, "url")
    else:
        if "ip" in d and "host" in d and d["ip"] != d["host"]:
            raise ConfigError(
                f"{who}'ip' and 'host' are aliases and disagree ({d['ip']!r} vs {d['host']!r})",
                source=source,
                field="host",
            )
        key = "ip" if "ip" in d else "host"
        if key not in d or d[key] is None:
            raise ConfigError(f"{who}missing host ('ip' or 'host')", source=source, field="ip")
        host = _check_host(d[key], source, key, who)
    if "port" in d:
        given = _check_port(d["port"], source, "port", who)
        if port is not None and given != port:
            raise ConfigError(
                f"{who}port {given} disagrees with the port in url ({port})",
                source=source,
                field="port",
            )
        port = given
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

    name = _default_name(host, port)
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

    headers: dict[str, str] = {}
    if d.get("headers") is not None:
        for hkey, hvalue in typed("headers", dict, "an object").items():
            if not isinstance(hvalue, str):
                raise ConfigError(
                    f"{who}header {hkey!r} must be a string, got {_type_name(hvalue)}",
                    source=source,
                    field="headers",
                )
            headers[hkey] = hvalue
    token: Optional[str] = None
    if d.get("token") is not None:
        token = typed("token", str, "a string").strip() or None
    tags: tuple[str, ...] = ()
    if d.get("tags") is not None:
        raw_tags = typed("tags", list, "an array of strings")
        if not all(isinstance(tag, str) for tag in raw_tags):
            raise ConfigError(f"{who}tags must be an array of strings", source=source, field="tags")
        tags = tuple(raw_tags)

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
        max_in_flight=positive("max_in_flight", 1),
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
    if server.headers:
        out["headers"] = dict(server.headers)
    if server.token:
        out["token"] = server.token
    if server.tags:
        out["tags"] = list(server.tags)
    return out


def _check_unique(servers: list[ServerConfig], source_of: Mapping[str, str]) -> None:
    seen: dict[str, int] = {}
    for index, server in enumerate(servers, 1):
        if server.name in seen:
            raise ConfigError(
                f"duplicate server name {server.name!r} "
                f"(servers #{seen[server.name]} and #{index})",
                source=source_of.get(server.name, server.source),
                field="name",
                server=server.name,
            )
        seen[server.name] = index


# --------------------------------------------------------------------------- base sources


def _from_servers_variable(value: str) -> tuple[ServerConfig, ...]:
    """``NUKE_COMFYUI_SERVERS``: inline JSON array, or the path of a file holding one."""
    source = ENV_SERVERS
    if value[0] in "[{":
        data = _json_loads(value, source)
    else:
        path = Path(os.path.expanduser(value))
        source = f"{ENV_SERVERS} ({path})"
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(
                f"not a JSON array and no such file: {value!r}", source=ENV_SERVERS
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}", source=ENV_SERVERS) from None
        data = _json_loads(text, source)
    if not isinstance(data, list):
        raise ConfigError(
            f"expected a JSON array of server objects, got {_type_name(data)}", source=source
        )
    if not data:
        raise ConfigError("the server list is empty ([])", source=source)
    servers = [
        parse_server_dict(item, source, position=index, default_priority=index)
        for index, item in enumerate(data, 1)
    ]
    _check_unique(servers, {})
    return tuple(servers)


def _from_numbered(environ: Mapping[str, str]) -> tuple[ServerConfig, ...]:
    """``NUKE_COMFYUI_IP_<n>`` and friends; every index set must name a host."""
    groups: dict[int, dict[str, tuple[str, str]]] = {}
    for var in environ:
        match = _NUMBERED.match(var)
        if match is None:
            continue
        value = _env(environ, var)
        if value is None:
            continue
        groups.setdefault(int(match.group(2)), {})[match.group(1)] = (var, value)
    servers: list[ServerConfig] = []
    source_of: dict[str, str] = {}
    for n in sorted(groups):
        group = groups[n]
        if "IP" in group and "HOST" in group and group["IP"][1] != group["HOST"][1]:
            raise ConfigError(
                f"NUKE_COMFYUI_IP_{n} and NUKE_COMFYUI_HOST_{n} disagree",
                source=group["HOST"][0],
                field="host",
            )
        address = group.get("IP") or group.get("HOST")
        if address is None:
            first_var = sorted(var for var, _ in group.values())[0]
            raise ConfigError(
                f"server {n} has no host: set NUKE_COMFYUI_IP_{n}",
                source=first_var,
                field="ip",
            )
        host_var, host_text = address
        scheme, host, port = _parse_address(host_text, host_var, "ip")
        if "PORT" in group:
            port_var, port_text = group["PORT"]
            given = _check_port(_int_from_text(port_text, port_var, "port"), port_var)
            if port is not None and port != given:
                raise ConfigError(
                    f"port {given} disagrees with the port in {host_var} ({port})",
                    source=port_var,
                    field="port",
                )
            port = given
        port = DEFAULT_PORT if port is None else port
        name = group["NAME"][1] if "NAME" in group else _default_name(host, port)
        priority = len(servers) + 1
        if "PRIORITY" in group:
            var, text = group["PRIORITY"]
            priority = _int_from_text(text, var, "priority")
            if priority < 1:
                raise ConfigError(
                    f"priority must be 1 or more, got {priority}", source=var, field="priority"
                )
        enabled = True
        if "ENABLED" in group:
            var, text = group["ENABLED"]
            enabled = _bool_from_text(text, var, "enabled")
        server = ServerConfig(
            name=name,
            host=host,
            port=port,
            scheme=scheme,
            dir_local=group["DIR_LOCAL"][1] if "DIR_LOCAL" in group else "",
            dir_remote=group["DIR_REMOTE"][1] if "DIR_REMOTE" in group else "",
            priority=priority,
            enabled=enabled,
            source=host_var,
        )
        source_of[name] = group["NAME"][0] if "NAME" in group else host_var
        servers.append(server)
    _check_unique(servers, source_of)
    return tuple(servers)


def _legacy_dirs(environ: Mapping[str, str], count: int) -> tuple[list[str], str]:
    """Local dirs for ``count`` legacy servers (``NUKE_COMFYUI_DIR`` may be a parallel list)."""
    remote = _env(environ, "NUKE_COMFYUI_DIR_REMOTE") or ""
    local = _env(environ, "NUKE_COMFYUI_DIR_LOCAL")
    if local is not None:
        return [local] * count, remote
    old = _env(environ, "NUKE_COMFYUI_DIR")
    if old is None:
        return [""] * count, remote
    if not old.startswith("["):
        return [old] * count, remote
    dirs = _json_loads(old, "NUKE_COMFYUI_DIR")
    if not isinstance(dirs, list) or not all(isinstance(item, str) for item in dirs):
        raise ConfigError(
            "expected a directory or a JSON array of directories", source="NUKE_COMFYUI_DIR"
        )
    if len(dirs) == 1:
        return [dirs[0]] * count, remote
    if len(dirs) != count:
        raise ConfigError(
            f"{len(dirs)} directories for {count} servers (NUKE_COMFYUI_URL); "
            "give one directory or one per URL",
            source="NUKE_COMFYUI_DIR",
        )
    return list(dirs), remote


def _from_legacy(environ: Mapping[str, str]) -> tuple[ServerConfig, ...]:
    """The ComfyUI-for-Nuke variables; the default server when none is set."""
    addresses: list[tuple[str, str, Optional[int]]] = []
    source = "default"
    url = _env(environ, "NUKE_COMFYUI_URL")
    if url is not None:
        source = "NUKE_COMFYUI_URL"
        if url.startswith("["):
            urls = _json_loads(url, source)
            if not isinstance(urls, list):
                raise ConfigError("expected a URL or a JSON array of URLs", source=source)
            if not urls:
                raise ConfigError("the URL list is empty ([])", source=source)
            for index, item in enumerate(urls, 1):
                if not isinstance(item, str) or not item.strip():
                    raise ConfigError(
                        f"URL #{index} must be a non-empty string, got {_type_name(item)}",
                        source=source,
                        field="url",
                    )
                addresses.append(_parse_address(item, source, "url"))
        else:
            addresses.append(_parse_address(url, source, "url"))
    elif _env(environ, "NUKE_COMFYUI_HOST") is not None:
        source = "NUKE_COMFYUI_HOST"
        addresses.append(_parse_address(environ["NUKE_COMFYUI_HOST"], source, "host"))
    elif _env(environ, "NUKE_COMFYUI_IP") is not None or _env(environ, "NUKE_COMFYUI_PORT"):
        ip = _env(environ, "NUKE_COMFYUI_IP")
        source = "NUKE_COMFYUI_IP" if ip is not None else "NUKE_COMFYUI_PORT"
        scheme, host, port = (
            _parse_address(ip, "NUKE_COMFYUI_IP", "ip") if ip else ("http", DEFAULT_HOST, None)
        )
        port_text = _env(environ, "NUKE_COMFYUI_PORT")
        if port_text is not None:
            given = _int_from_text(port_text, "NUKE_COMFYUI_PORT", "port")
            given = _check_port(given, "NUKE_COMFYUI_PORT")
            if port is not None and port != given:
                raise ConfigError(
                    f"port {given} disagrees with the port in NUKE_COMFYUI_IP ({port})",
                    source="NUKE_COMFYUI_PORT",
                    field="port",
                )
            port = given
        addresses.append((scheme, host, port))
    else:
        addresses.append(("http", DEFAULT_HOST, DEFAULT_PORT))

    locals_, remote = _legacy_dirs(environ, len(addresses))
    servers = []
    for index, ((scheme, host, port), local) in enumerate(zip(addresses, locals_), 1):
        port = DEFAULT_PORT if port is None else port
        servers.append(
            ServerConfig(
                name=DEFAULT_NAME if source == "default" else _default_name(host, port),
                host=host,
                port=port,
                scheme=scheme,
                dir_local=local,
                dir_remote=remote,
                priority=index,
                source=source,
            )
        )
    _check_unique(servers, {})
    return tuple(servers)


def load_base_servers(environ: Optional[Mapping[str, str]] = None) -> tuple[ServerConfig, ...]:
    """The servers of the first configured source (see the module docstring); never connects.

    Raises :class:`ConfigError` naming the variable or file and the field at fault.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    value = _env(env, ENV_SERVERS)
    if value is not None:
        return _from_servers_variable(value)
    numbered = _from_numbered(env)
    if numbered:
        return numbered
    return _from_legacy(env)


# --------------------------------------------------------------------------- user file


def user_config_path(environ: Optional[Mapping[str, str]] = None) -> Path:
    """``COMFY_CLUSTER_CONFIG`` if set, else ``~/.nuke/comfy_cluster/servers.json``."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    override = _env(env, ENV_CONFIG)
    if override is not None:
        return Path(os.path.expanduser(override))
    return Path.home() / ".nuke" / "comfy_cluster" / "servers.json"


@dataclass(frozen=True)
class ServerEdit:
    """The user's change to one base server; ``None`` keeps the base value."""

    enabled: Optional[bool] = None
    priority: Optional[int] = None


@dataclass(frozen=True)
class UserConfig:
    """The user's edits over the base servers, keyed by name. Immutable: edits return a new one.

    ``added`` servers replace a base server of the same name; ``removed`` names hide base servers
    (kept so a server still set in the environment stays removed); ``edits`` change ``enabled`` /
    ``priority`` of base servers. ``source`` is what added servers report as their source.
    """

    added: tuple[ServerConfig, ...] = ()
    edits: Mapping[str, ServerEdit] = field(default_factory=dict)
    removed: frozenset[str] = frozenset()
    source: str = "user file"

    def _added_index(self, name: str) -> Optional[int]:
        for index, server in enumerate(self.added):
            if server.name == name:
                return index
        return None

    def _edit(self, name: str, **change: Any) -> UserConfig:
        index = self._added_index(name)
        if index is not None:
            added = list(self.added)
            added[index] = dataclasses.replace(added[index], **change)
            return dataclasses.replace(self, added=tuple(added))
        edits = dict(self.edits)
        edits[name] = dataclasses.replace(edits.get(name, ServerEdit()), **change)
        return dataclasses.replace(self, edits=edits)

    def set_enabled(self, name: str, enabled: bool) -> UserConfig:
        """Enable or disable ``name`` (a base or an added server)."""
        if not isinstance(enabled, bool):
            raise ConfigError(
                f"enabled must be true or false, got {enabled!r}",
                source=self.source,
                field="enabled",
                server=name,
            )
        return self._edit(name, enabled=enabled)

    def set_priority(self, name: str, priority: int) -> UserConfig:
        """Set the priority of ``name`` (1 = most preferred)."""
        if isinstance(priority, bool) or not isinstance(priority, int) or priority < 1:
            raise ConfigError(
                f"priority must be an integer of 1 or more, got {priority!r}",
                source=self.source,
                field="priority",
                server=name,
            )
        return self._edit(name, priority=priority)

    def add_server(self, server: ServerConfig) -> UserConfig:
        """Add ``server`` (or replace the one of that name, base or added)."""
        if not isinstance(server, ServerConfig):
            raise TypeError(f"add_server needs a ServerConfig, got {type(server).__name__}")
        # Round-trip through the file format so what we keep is what we can save and load.
        record = parse_server_dict(server_to_dict(server), self.source)
        added = [s for s in self.added if s.name != server.name] + [record]
        edits = {k: v for k, v in self.edits.items() if k != server.name}
        return dataclasses.replace(
            self, added=tuple(added), edits=edits, removed=self.removed - {server.name}
        )

    def remove_server(self, name: str) -> UserConfig:
        """Remove ``name``; a base server is recorded as removed so it stays hidden."""
        added = tuple(s for s in self.added if s.name != name)
        edits = {k: v for k, v in self.edits.items() if k != name}
        return dataclasses.replace(self, added=added, edits=edits, removed=self.removed | {name})

    def restore_server(self, name: str) -> UserConfig:
        """Undo :meth:`remove_server` for a base server."""
        return dataclasses.replace(self, removed=self.removed - {name})

    def apply(self, base: tuple[ServerConfig, ...]) -> tuple[ServerConfig, ...]:
        """Base servers with these edits applied, then the added servers."""
        replaced = {s.name for s in self.added}
        out: list[ServerConfig] = []
        for server in base:
            if server.name in self.removed or server.name in replaced:
                continue
            edit = self.edits.get(server.name)
            if edit is not None:
                change: dict[str, Any] = {}
                if edit.enabled is not None:
                    change["enabled"] = edit.enabled
                if edit.priority is not None:
                    change["priority"] = edit.priority
                server = dataclasses.replace(server, **change)
            out.append(server)
        out.extend(self.added)
        return tuple(out)

    def to_json(self) -> dict[str, Any]:
        """The user file's JSON document."""
        edits: dict[str, dict[str, Any]] = {}
        for name in sorted(self.edits):
            edit = self.edits[name]
            entry: dict[str, Any] = {}
            if edit.enabled is not None:
                entry["enabled"] = edit.enabled
            if edit.priority is not None:
                entry["priority"] = edit.priority
            if entry:
                edits[name] = entry
        added = {}
        for server in self.added:
            record = server_to_dict(server)
            del record["name"]
            added[server.name] = record
        return {
            "version": USER_FILE_VERSION,
            "added": added,
            "edits": edits,
            "removed": sorted(self.removed),
        }


def apply_user_config(base: tuple[ServerConfig, ...], user: UserConfig) -> tuple[ServerConfig, ...]:
    """Function form of :meth:`UserConfig.apply`."""
    return user.apply(base)


_USER_KEYS = ("version", "added", "edits", "removed")


def _parse_user_document(data: Any, source: str) -> UserConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"expected a JSON object, got {_type_name(data)}", source=source)
    for key in data:
        if key not in _USER_KEYS:
            raise ConfigError(
                f"unknown key {key!r}; known keys: {', '.join(_USER_KEYS)}",
                source=source,
                field=key,
            )
    version = data.get("version", USER_FILE_VERSION)
    if version != USER_FILE_VERSION:
        raise ConfigError(
            f"version {version!r} is not supported (this comfy_cluster reads version "
            f"{USER_FILE_VERSION})",
            source=source,
            field="version",
        )
    added_raw = {} if data.get("added") is None else data["added"]
    if not isinstance(added_raw, dict):
        raise ConfigError("'added' must be an object keyed by name", source=source, field="added")
    added = []
    for name, body in added_raw.items():
        if not isinstance(body, dict):
            raise ConfigError(
                f"added server {name!r} must be an object", source=source, field="added"
            )
        if "name" in body and body["name"] != name:
            raise ConfigError(
                f"added server {name!r} has a different name {body['name']!r}",
                source=source,
                field="name",
            )
        added.append(parse_server_dict({**body, "name": name}, source))
    edits_raw = {} if data.get("edits") is None else data["edits"]
    if not isinstance(edits_raw, dict):
        raise ConfigError("'edits' must be an object keyed by name", source=source, field="edits")
    edits = {}
    for name, body in edits_raw.items():
        if not isinstance(body, dict) or set(body) - {"enabled", "priority"}:
            raise ConfigError(
                f"edit of {name!r} must be an object with 'enabled' and/or 'priority'",
                source=source,
                field="edits",
            )
        enabled = body.get("enabled")
        if enabled is not None and not isinstance(enabled, bool):
            raise ConfigError(
                f"edit of {name!r}: enabled must be true or false", source=source, field="enabled"
            )
        priority = body.get("priority")
        if priority is not None and (
            isinstance(priority, bool) or not isinstance(priority, int) or priority < 1
        ):
            raise ConfigError(
                f"edit of {name!r}: priority must be an integer of 1 or more",
                source=source,
                field="priority",
            )
        edits[name] = ServerEdit(enabled=enabled, priority=priority)
    removed_raw = [] if data.get("removed") is None else data["removed"]
    if not isinstance(removed_raw, list) or not all(isinstance(n, str) for n in removed_raw):
        raise ConfigError("'removed' must be an array of names", source=source, field="removed")
    return UserConfig(
        added=tuple(added), edits=edits, removed=frozenset(removed_raw), source=source
    )


def load_user_config(path: Union[str, Path, None] = None) -> UserConfig:
    """Read the user file; a missing file is an empty :class:`UserConfig`.

    Raises :class:`ConfigError` naming the file (with line and column for malformed JSON).
    """
    target = Path(path) if path is not None else user_config_path()
    source = f"user file {target}"
    try:
        text = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        return UserConfig(source=source)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", source=source) from None
    return _parse_user_document(_json_loads(text, source), source)


def save_user_config(cfg: UserConfig, path: Union[str, Path, None] = None) -> Path:
    """Write ``cfg`` atomically (temp file, fsync, rename) with mode 0600; returns the path.

    On any failure the previous file is left untouched and the temp file removed; OS errors are
    raised as :class:`ConfigError` naming the file.
    """
    target = Path(path) if path is not None else user_config_path()
    source = f"user file {target}"
    # Serialise first: a value that cannot be written must not cost us the old file.
    text = json.dumps(cfg.to_json(), indent=2, sort_keys=False) + "\n"
    tmp_name: Optional[str] = None
    try:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            dir=str(target.parent), prefix=f".{target.name}.", suffix=".tmp"
        )
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o600)  # mkstemp already does; be explicit, the file holds tokens
        os.replace(tmp_name, target)
        tmp_name = None
        _fsync_dir(target.parent)
    except OSError as exc:
        raise ConfigError(f"cannot write: {exc}", source=source) from exc
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass
    return target


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable (POSIX only; best effort)."""
    if os.name != "posix":
        return
    try:
        fd = os.open(str(directory), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_servers(
    environ: Optional[Mapping[str, str]] = None, user_path: Union[str, Path, None] = None
) -> tuple[ServerConfig, ...]:
    """The servers everyone uses: the base source with the user file's edits applied.

    Raises :class:`ConfigError` on a bad base source or a bad user file; never connects.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    base = load_base_servers(env)
    path = Path(user_path) if user_path is not None else user_config_path(env)
    return load_user_config(path).apply(base)
