"""The user file (``COMFY_CLUSTER_CONFIG`` or ``~/.nuke/comfy_cluster/servers.json``): the user's
edits over the base servers, keyed by name (servers added, base servers removed, ``enabled`` and
``priority`` changes), held in an immutable :class:`UserConfig`. The file may hold tokens, so it
is written atomically with mode 0600.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from comfy_cluster.core.config.server_json import parse_server_dict, server_to_dict
from comfy_cluster.core.config.values import env_value, load_json, type_name
from comfy_cluster.core.errors import ConfigError
from comfy_cluster.core.input_file import InputFileError, read_input_text
from comfy_cluster.core.server import ServerConfig

__all__ = [
    "ENV_CONFIG",
    "USER_FILE_VERSION",
    "ServerEdit",
    "UserConfig",
    "apply_user_config",
    "load_user_config",
    "save_user_config",
    "user_config_path",
]

ENV_CONFIG = "COMFY_CLUSTER_CONFIG"
USER_FILE_VERSION = 1


def user_config_path(environ: Optional[Mapping[str, str]] = None) -> Path:
    """``COMFY_CLUSTER_CONFIG`` if set, else ``~/.nuke/comfy_cluster/servers.json``."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    override = env_value(env, ENV_CONFIG)
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
        raise ConfigError(f"expected a JSON object, got {type_name(data)}", source=source)
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
        text = read_input_text(target)
    except InputFileError as exc:
        if exc.missing:
            return UserConfig(source=source)
        raise ConfigError(f"cannot read: it {exc.reason}", source=source) from None
    return _parse_user_document(load_json(text, source), source)


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
