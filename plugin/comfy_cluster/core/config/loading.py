"""Where the servers come from: the first configured environment source (the base, see
:func:`load_base_servers`) with the user file's edits applied (:func:`load_servers`, which everyone
else calls). The readers live in ``env_sources``, ``server_json``, ``config_values`` and
``user_config``; their public names are re-exported here. Nothing here touches the network.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Optional, Union

from comfy_cluster.core.config.env_sources import (
    ENV_SERVERS,
    from_legacy,
    from_numbered,
    from_servers_variable,
)
from comfy_cluster.core.config.server_json import parse_server_dict, server_to_dict
from comfy_cluster.core.config.user_file import (
    ENV_CONFIG,
    USER_FILE_VERSION,
    ServerEdit,
    UserConfig,
    apply_user_config,
    load_user_config,
    save_user_config,
    user_config_path,
)
from comfy_cluster.core.config.values import env_value
from comfy_cluster.core.server import ServerConfig

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


def load_base_servers(environ: Optional[Mapping[str, str]] = None) -> tuple[ServerConfig, ...]:
    """The servers of the first configured source; never connects. Each record keeps its ``source``.

    Sources, first match wins:

    1. ``NUKE_COMFYUI_SERVERS``: a JSON array of server objects, or the path of a file holding one.
    2. Numbered variables ``NUKE_COMFYUI_IP_<n>`` (or ``_HOST_<n>``), ``_PORT_<n>``,
       ``_DIR_LOCAL_<n>``, ``_DIR_REMOTE_<n>``, ``_NAME_<n>``, ``_PRIORITY_<n>``, ``_ENABLED_<n>``,
       ``_MAX_DOWNLOAD_BYTES_<n>`` (``<n>`` without leading zeros).
    3. The single-server variables of ComfyUI-for-Nuke: ``NUKE_COMFYUI_URL`` (one URL or a JSON
       list), ``NUKE_COMFYUI_HOST``, ``NUKE_COMFYUI_IP`` + ``NUKE_COMFYUI_PORT``, with
       ``NUKE_COMFYUI_DIR_LOCAL`` (or the old ``NUKE_COMFYUI_DIR``) and ``NUKE_COMFYUI_DIR_REMOTE``.
    4. One server, ``local``, at ``127.0.0.1:8188``.

    ``NUKE_COMFYUI_MAX_DOWNLOAD_BYTES`` applies to the servers of 3 and 4. Files are read with
    :func:`comfy_cluster.core.input_file.read_input_text` (regular files of at most 16 MiB).

    A broken source raises :class:`ConfigError` naming the variable or file and the field; we never
    fall back to the next source, because rendering on the wrong machine is worse than not starting.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    value = env_value(env, ENV_SERVERS)
    if value is not None:
        return from_servers_variable(value)
    numbered = from_numbered(env)
    if numbered:
        return numbered
    return from_legacy(env)


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
