"""``comfy-cluster servers [--json]``: show the resolved servers and where each came from.

Reads the configuration only (never contacts a server), so it is the quick check that the
environment says what you meant. Tokens and header values are shown as ``***``. A bad
configuration prints the :class:`ConfigError` message and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import Any, Optional, TextIO

from comfy_cluster.commands.common import ExitCode, io_for, load_servers_or_report
from comfy_cluster.core.config.loading import user_config_path
from comfy_cluster.core.server import ServerConfig

_COLUMNS = ("NAME", "URL", "PRI", "ENABLED", "MAX", "DIRS", "AUTH", "SOURCE")


def register(subparsers: Any) -> None:
    """Add the ``servers`` sub-command to the CLI."""
    parser = subparsers.add_parser(
        "servers",
        help="show the configured ComfyUI servers (no network)",
        description=(
            "Show the servers resolved from NUKE_COMFYUI_SERVERS, the numbered or legacy "
            "NUKE_COMFYUI_* variables and the user file, each with its source. "
            "Nothing is contacted; secrets are shown as ***."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print a JSON array instead")
    parser.set_defaults(func=run)


def run(
    args: argparse.Namespace,
    environ: Optional[Mapping[str, str]] = None,
    out: Optional[TextIO] = None,
    err: Optional[TextIO] = None,
) -> int:
    """Print the servers; 0 on success, 2 on a bad configuration."""
    io = io_for(environ, out, err)
    out, env = io.out, io.env
    servers = load_servers_or_report("servers", io)
    if servers is None:
        return ExitCode.USAGE
    if args.json:
        json.dump([server.masked() for server in servers], out, indent=2)
        out.write("\n")
        return ExitCode.OK
    if not servers:
        print(f"no servers (all removed in {user_config_path(env)})", file=out)
        return ExitCode.OK
    rows = [_COLUMNS] + [_row(server) for server in servers]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip(), file=out)
    return ExitCode.OK


def _row(server: ServerConfig) -> tuple[str, ...]:
    view = server.masked()
    dirs = "-"
    if server.dir_local or server.dir_remote:
        dirs = f"{server.dir_local or '-'} -> {server.dir_remote or '-'}"
    auth = []
    if view["token"]:
        auth.append("token=***")
    auth.extend(f"{key}=***" for key in server.headers)
    return (
        server.name,
        server.url,
        str(server.priority),
        "yes" if server.enabled else "no",
        str(server.max_in_flight),
        dirs,
        ",".join(auth) or "-",
        server.source,
    )
