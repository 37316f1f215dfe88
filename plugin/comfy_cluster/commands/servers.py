"""``comfy-cluster servers [--json]``: show the resolved servers and where each came from.

Reads the configuration only (never contacts a server), so it is the quick check that the
environment says what you meant. Tokens and header values are shown as ``***``. A bad
configuration prints the :class:`ConfigError` message and exits with status 2.

A server from the environment that the user file edits (the Nuke panel writes it when a server
is disabled or re-prioritised there) names that file as the source of the edit, next to where
the server itself came from: otherwise "why is this server off?" has no answer on screen.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import Any

from comfy_cluster.commands.common import CommandIO, ExitCode, add_command, server_command
from comfy_cluster.core.config.loading import UserConfig, load_user_config, user_config_path
from comfy_cluster.core.errors import ConfigError
from comfy_cluster.core.server import ServerConfig

_COLUMNS = ("NAME", "URL", "PRI", "ENABLED", "MAX", "DIRS", "AUTH", "SOURCE")

EXAMPLES = """
comfy-cluster servers
comfy-cluster servers --json
NUKE_COMFYUI_SERVERS=/studio/comfy_servers.json comfy-cluster servers
"""


def register(subparsers: Any) -> None:
    """Add the ``servers`` sub-command to the CLI."""
    parser = add_command(
        subparsers,
        "servers",
        examples=EXAMPLES,
        help="show the configured ComfyUI servers (no network)",
        description=(
            "Show the servers resolved from NUKE_COMFYUI_SERVERS, the numbered or legacy "
            "NUKE_COMFYUI_* variables and the user file, each with its source. "
            "Nothing is contacted; secrets are shown as ***."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print a JSON array instead")
    parser.set_defaults(func=run)


@server_command("servers")
def run(args: argparse.Namespace, io: CommandIO, servers: tuple[ServerConfig, ...]) -> int:
    """Print the servers; 0 on success, 2 on a bad configuration."""
    out, env = io.out, io.env
    user = _user_edits(env)
    if args.json:
        json.dump([_record(server, user) for server in servers], out, indent=2)
        out.write("\n")
        return ExitCode.OK
    if not servers:
        print(f"no servers (all removed in {user_config_path(env)})", file=out)
        return ExitCode.OK
    rows = [_COLUMNS] + [_row(server, user) for server in servers]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip(), file=out)
    return ExitCode.OK


def _user_edits(env: Mapping[str, str]) -> UserConfig:
    """The user file (already read once without error by ``load_servers``)."""
    try:
        return load_user_config(user_config_path(env))
    except ConfigError:
        return UserConfig()


def edit_of(server: ServerConfig, user: UserConfig) -> dict[str, Any]:
    """What the user file changed on ``server`` (``{"enabled": False}``), empty when nothing.

    Only servers from the environment are edited; servers the user file adds are its own.
    """
    edit = user.edits.get(server.name)
    if edit is None or any(added.name == server.name for added in user.added):
        return {}
    changed: dict[str, Any] = {}
    if edit.enabled is not None:
        changed["enabled"] = edit.enabled
    if edit.priority is not None:
        changed["priority"] = edit.priority
    return changed


def _record(server: ServerConfig, user: UserConfig) -> dict[str, object]:
    """``--json``: the masked server, plus ``edits`` (with their ``source``) when edited."""
    record = server.masked()
    changed = edit_of(server, user)
    if changed:
        record["edits"] = {**changed, "source": user.source}
    return record


def source_text(server: ServerConfig, user: UserConfig) -> str:
    """``NUKE_COMFYUI_SERVERS; disabled in user file /home/me/.nuke/...``"""
    changed = edit_of(server, user)
    if not changed:
        return server.source
    what = []
    if "enabled" in changed:
        what.append("enabled" if changed["enabled"] else "disabled")
    if "priority" in changed:
        what.append(f"priority {changed['priority']}")
    return f"{server.source}; {', '.join(what)} in {user.source}"


def _row(server: ServerConfig, user: UserConfig) -> tuple[str, ...]:
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
        source_text(server, user),
    )
