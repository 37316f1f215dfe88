"""What every sub-command shares: exit codes, injectable streams, loading servers with one message.

Commands take ``environ``, ``out`` and ``err`` so tests run them in-process without touching the
real environment or terminal; :func:`io_for` fills in the real ones.
"""

from __future__ import annotations

import enum
import os
import sys
from collections.abc import Mapping
from typing import NamedTuple, Optional, TextIO

from comfy_cluster.core.config.loading import load_servers
from comfy_cluster.core.errors import ConfigError
from comfy_cluster.core.server import ServerConfig


class ExitCode(enum.IntEnum):
    """What every ``comfy-cluster`` command's exit status means."""

    #: The command did what was asked (render: every requested frame is on disk).
    OK = 0
    #: The job could not be done (no usable server, frames failed everywhere).
    FAILED = 1
    #: A bad argument or configuration, found before any server did work; the message names it.
    USAGE = 2
    #: Interrupted (Ctrl-C).
    INTERRUPTED = 130


class CommandIO(NamedTuple):
    """The environment and streams a command reads and writes."""

    env: Mapping[str, str]
    out: TextIO
    err: TextIO


def io_for(
    environ: Optional[Mapping[str, str]] = None,
    out: Optional[TextIO] = None,
    err: Optional[TextIO] = None,
) -> CommandIO:
    """The given environment and streams, or the process's own."""
    return CommandIO(
        os.environ if environ is None else environ,
        sys.stdout if out is None else out,
        sys.stderr if err is None else err,
    )


def load_servers_or_report(command: str, io: CommandIO) -> Optional[tuple[ServerConfig, ...]]:
    """The configured servers, or ``None`` after printing the configuration error once."""
    try:
        return load_servers(io.env)
    except ConfigError as exc:
        print(f"comfy-cluster {command}: configuration error: {exc}", file=io.err)
        return None
