"""The environment sources of base servers, one reader each: ``NUKE_COMFYUI_SERVERS`` (a JSON
array or the path of a file holding one), the numbered ``NUKE_COMFYUI_IP_<n>`` variables, and the
single-server variables of ComfyUI-for-Nuke (which also give the default ``local`` server). Which
one applies is decided in :mod:`comfy_cluster.core.config.loading`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Optional

from comfy_cluster.core.config.server_json import parse_server_dict
from comfy_cluster.core.config.values import (
    agreed_port,
    check_port,
    default_name,
    env_value,
    load_json,
    parse_address,
    type_name,
)
from comfy_cluster.core.errors import ConfigError
from comfy_cluster.core.input_file import InputFileError, read_input_text
from comfy_cluster.core.server import DEFAULT_MAX_DOWNLOAD_BYTES, DEFAULT_PORT, ServerConfig

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_NAME",
    "ENV_MAX_DOWNLOAD_BYTES",
    "ENV_SERVERS",
    "from_legacy",
    "from_numbered",
    "from_servers_variable",
]

ENV_SERVERS = "NUKE_COMFYUI_SERVERS"
#: ``max_download_bytes`` of the single-server (and default) source; ``_<n>`` for numbered ones.
ENV_MAX_DOWNLOAD_BYTES = "NUKE_COMFYUI_MAX_DOWNLOAD_BYTES"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_NAME = "local"

# Any digits here, so that "_01" or "_0" is reported instead of silently ignored.
_NUMBERED = re.compile(
    r"^NUKE_COMFYUI_(IP|HOST|PORT|DIR_LOCAL|DIR_REMOTE|NAME|PRIORITY|ENABLED|MAX_DOWNLOAD_BYTES)"
    r"_([0-9]+)$"
)
# '[::1]:8188' in NUKE_COMFYUI_URL is one IPv6 address, not a JSON list of URLs.
_BRACKETED_HOST = re.compile(r"\[[^\]\s\"]*:[^\]\s\"]*\](:\S*)?/?")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _int_from_text(text: str, source: str, field_name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(
            f"expected an integer, got {text!r}", source=source, field=field_name
        ) from None


def _positive_from_text(text: str, source: str, field_name: str) -> int:
    value = _int_from_text(text, source, field_name)
    if value < 1:
        raise ConfigError(
            f"{field_name} must be 1 or more, got {value}", source=source, field=field_name
        )
    return value


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


def from_servers_variable(value: str) -> tuple[ServerConfig, ...]:
    """``NUKE_COMFYUI_SERVERS``: inline JSON array, or the path of a file holding one."""
    source = ENV_SERVERS
    if value[0] in "[{":
        data = load_json(value, source)
    else:
        path = Path(os.path.expanduser(value))
        source = f"{ENV_SERVERS} ({path})"
        data = load_json(_read_servers_file(path), source)
    if not isinstance(data, list):
        raise ConfigError(
            f"expected a JSON array of server objects, got {type_name(data)}", source=source
        )
    if not data:
        raise ConfigError("the server list is empty ([])", source=source)
    servers = [
        parse_server_dict(item, source, position=index, default_priority=index)
        for index, item in enumerate(data, 1)
    ]
    _check_unique(servers, {})
    return tuple(servers)


def _read_servers_file(path: Path) -> str:
    """The text of the file ``NUKE_COMFYUI_SERVERS`` names (a regular file of bounded size)."""
    try:
        return read_input_text(path)
    except InputFileError as exc:
        # The value is not quoted when it looks like mangled JSON: it may hold a token.
        named = "" if any(ch in str(path) for ch in "{[\"'") else f" {str(path)!r}"
        if exc.missing:
            raise ConfigError(
                f"not a JSON array (that starts with '[') and no such file{named}",
                source=ENV_SERVERS,
            ) from None
        raise ConfigError(f"cannot read{named}: it {exc.reason}", source=ENV_SERVERS) from None


def _numbered_index(var: str, key: str, digits: str) -> int:
    """The ``<n>`` of a numbered variable: 1, 2, 3... written without leading zeros."""
    if digits.startswith("0"):
        fixed = f"NUKE_COMFYUI_{key}_{int(digits)}" if int(digits) else ""
        hint = f"; rename it {fixed}" if fixed else ""
        raise ConfigError(
            f"numbered variables count from 1 without leading zeros{hint}",
            source=var,
            field=key.lower(),
        )
    return int(digits)


def from_numbered(environ: Mapping[str, str]) -> tuple[ServerConfig, ...]:
    """``NUKE_COMFYUI_IP_<n>`` and friends; every index set must name a host."""
    groups: dict[int, dict[str, tuple[str, str]]] = {}
    for var in environ:
        match = _NUMBERED.match(var)
        if match is None:
            continue
        value = env_value(environ, var)
        if value is None:
            continue
        key = match.group(1)
        index = _numbered_index(var, key, match.group(2))
        groups.setdefault(index, {})[key] = (var, value)
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
        scheme, host, port = parse_address(host_text, host_var, "ip")
        if "PORT" in group:
            port_var, port_text = group["PORT"]
            given = check_port(_int_from_text(port_text, port_var, "port"), port_var)
            port = agreed_port(given, port, host_var, port_var)
        port = DEFAULT_PORT if port is None else port
        name = group["NAME"][1] if "NAME" in group else default_name(host, port)
        priority = len(servers) + 1
        if "PRIORITY" in group:
            var, text = group["PRIORITY"]
            priority = _positive_from_text(text, var, "priority")
        enabled = True
        if "ENABLED" in group:
            var, text = group["ENABLED"]
            enabled = _bool_from_text(text, var, "enabled")
        max_download_bytes = DEFAULT_MAX_DOWNLOAD_BYTES
        if "MAX_DOWNLOAD_BYTES" in group:
            var, text = group["MAX_DOWNLOAD_BYTES"]
            max_download_bytes = _positive_from_text(text, var, "max_download_bytes")
        server = ServerConfig(
            name=name,
            host=host,
            port=port,
            scheme=scheme,
            dir_local=group["DIR_LOCAL"][1] if "DIR_LOCAL" in group else "",
            dir_remote=group["DIR_REMOTE"][1] if "DIR_REMOTE" in group else "",
            priority=priority,
            enabled=enabled,
            max_download_bytes=max_download_bytes,
            source=host_var,
        )
        source_of[name] = group["NAME"][0] if "NAME" in group else host_var
        servers.append(server)
    _check_unique(servers, source_of)
    return tuple(servers)


def _legacy_dirs(environ: Mapping[str, str], count: int) -> tuple[list[str], str]:
    """Local dirs for ``count`` legacy servers (``NUKE_COMFYUI_DIR`` may be a parallel list)."""
    remote = env_value(environ, "NUKE_COMFYUI_DIR_REMOTE") or ""
    local = env_value(environ, "NUKE_COMFYUI_DIR_LOCAL")
    if local is not None:
        return [local] * count, remote
    old = env_value(environ, "NUKE_COMFYUI_DIR")
    if old is None:
        return [""] * count, remote
    if not old.startswith("["):
        return [old] * count, remote
    dirs = load_json(old, "NUKE_COMFYUI_DIR")
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


def from_legacy(environ: Mapping[str, str]) -> tuple[ServerConfig, ...]:
    """The ComfyUI-for-Nuke variables; the default server when none is set."""
    addresses: list[tuple[str, str, Optional[int]]] = []
    source = "default"
    url = env_value(environ, "NUKE_COMFYUI_URL")
    if url is not None:
        source = "NUKE_COMFYUI_URL"
        if url.startswith("[") and not _BRACKETED_HOST.fullmatch(url):
            urls = load_json(url, source)
            if not isinstance(urls, list):
                raise ConfigError("expected a URL or a JSON array of URLs", source=source)
            if not urls:
                raise ConfigError("the URL list is empty ([])", source=source)
            for index, item in enumerate(urls, 1):
                if not isinstance(item, str) or not item.strip():
                    raise ConfigError(
                        f"URL #{index} must be a non-empty string, got {type_name(item)}",
                        source=source,
                        field="url",
                    )
                addresses.append(parse_address(item, source, "url"))
        else:
            addresses.append(parse_address(url, source, "url"))
    elif env_value(environ, "NUKE_COMFYUI_HOST") is not None:
        source = "NUKE_COMFYUI_HOST"
        addresses.append(parse_address(environ["NUKE_COMFYUI_HOST"], source, "host"))
    elif env_value(environ, "NUKE_COMFYUI_IP") is not None or env_value(
        environ, "NUKE_COMFYUI_PORT"
    ):
        ip = env_value(environ, "NUKE_COMFYUI_IP")
        source = "NUKE_COMFYUI_IP" if ip is not None else "NUKE_COMFYUI_PORT"
        scheme, host, port = (
            parse_address(ip, "NUKE_COMFYUI_IP", "ip") if ip else ("http", DEFAULT_HOST, None)
        )
        port_text = env_value(environ, "NUKE_COMFYUI_PORT")
        if port_text is not None:
            given = _int_from_text(port_text, "NUKE_COMFYUI_PORT", "port")
            given = check_port(given, "NUKE_COMFYUI_PORT")
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
    max_download_bytes = DEFAULT_MAX_DOWNLOAD_BYTES
    limit_text = env_value(environ, ENV_MAX_DOWNLOAD_BYTES)
    if limit_text is not None:
        max_download_bytes = _positive_from_text(
            limit_text, ENV_MAX_DOWNLOAD_BYTES, "max_download_bytes"
        )
    servers = []
    for index, ((scheme, host, port), local) in enumerate(zip(addresses, locals_), 1):
        port = DEFAULT_PORT if port is None else port
        servers.append(
            ServerConfig(
                name=DEFAULT_NAME if source == "default" else default_name(host, port),
                host=host,
                port=port,
                scheme=scheme,
                dir_local=local,
                dir_remote=remote,
                priority=index,
                max_download_bytes=max_download_bytes,
                source=source,
            )
        )
    _check_unique(servers, {})
    return tuple(servers)
