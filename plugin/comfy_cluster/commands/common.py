"""What every sub-command shares: exit codes, injectable streams, loading servers with one message,
the help layout, and the one-line answer when the ``sim`` extra is not installed.

Commands take ``environ``, ``out`` and ``err`` so tests run them in-process without touching the
real environment or terminal; :func:`io_for` fills in the real ones, and :func:`server_command`
adds them (with the configured servers) to a command that needs the configuration.
"""

from __future__ import annotations

import argparse
import enum
import os
import sys
from collections.abc import Mapping
from typing import Any, Callable, NamedTuple, Optional, TextIO

from comfy_cluster.core.config.loading import load_servers
from comfy_cluster.core.errors import ConfigError
from comfy_cluster.core.server import ServerConfig


class ExitCode(enum.IntEnum):
    """What every ``comfy-cluster`` command's exit status means."""

    #: The command did what was asked (render: every requested frame is on disk).
    OK = 0
    #: The job could not be done: no server can run it (down, authentication refused, a missing
    #: node class or model), or frames failed on every server that tried them.
    FAILED = 1
    #: The workflow, arguments or configuration are wrong: found before any server did work, or a
    #: prompt rejected by every server for the same validation reason; the message names it.
    USAGE = 2
    #: Interrupted (Ctrl-C); servers that may still hold a prompt of ours are named.
    INTERRUPTED = 130


#: Columns a live display (the render bars, ``status --watch``) leaves free at the right edge.
#: A line that reaches the last column leaves the cursor waiting to wrap; the ``^C`` the terminal
#: echoes on Ctrl-C then starts a new line, the redraw lands one line low and the top line of
#: the display is left behind, doubled. Two free columns take the echo without a wrap.
LIVE_MARGIN = 2


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


#: A command's own part: (parsed arguments, its streams, the configured servers) -> exit status.
ServerCommandBody = Callable[[argparse.Namespace, CommandIO, tuple[ServerConfig, ...]], int]
#: A command as ``cli.py`` and the tests call it: ``run(args, environ=None, out=None, err=None)``.
CommandRun = Callable[..., int]


def server_command(command: str) -> Callable[[ServerCommandBody], CommandRun]:
    """Make ``body(args, io, servers)`` the command ``run(args, environ=None, out=None, err=None)``.

    Why: every command that reads the configuration starts the same way (the streams, the
    servers, exit status 2 after one line on a bad configuration); this way each module states
    only what is its own. ``command`` names the sub-command in the configuration error.
    """

    def decorate(body: ServerCommandBody) -> CommandRun:
        def run(
            args: argparse.Namespace,
            environ: Optional[Mapping[str, str]] = None,
            out: Optional[TextIO] = None,
            err: Optional[TextIO] = None,
        ) -> int:
            io = io_for(environ, out, err)
            servers = load_servers_or_report(command, io)
            if servers is None:
                return ExitCode.USAGE
            return body(args, io, servers)

        run.__name__, run.__qualname__ = body.__name__, body.__qualname__
        run.__module__, run.__doc__ = body.__module__, body.__doc__
        return run

    return decorate


class HelpFormatter(argparse.HelpFormatter):
    """``--help`` that keeps the examples epilog as written and shows each option's default.

    Text with line breaks (the examples) is kept as written, one-line text (descriptions) is
    wrapped as usual. argparse's own ``ArgumentDefaultsHelpFormatter`` also prints
    ``(default: None)`` and ``(default: False)`` for flags, which tells nobody anything; this one
    adds ``(default: X)`` only for a real value, and only when the help does not say it already.
    """

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or not action.option_strings
            or default is None
            or default is argparse.SUPPRESS
            or isinstance(default, bool)
            or default in ("", [], ())
        ):
            return text
        return f"{text} (default: %(default)s)"


def add_command(subparsers: Any, name: str, *, examples: str, **kwargs: Any) -> Any:
    """Add sub-command ``name`` with :class:`HelpFormatter` and an ``examples:`` epilog."""
    epilog = "examples:\n" + "\n".join(
        f"  {line}" if line else "" for line in examples.strip("\n").splitlines()
    )
    return subparsers.add_parser(name, formatter_class=HelpFormatter, epilog=epilog, **kwargs)


#: How to get the simulator's dependencies from a checkout (no package index needed).
SIM_EXTRA_INSTALL = "python -m pip install -e '.[sim]'"
#: The ``sim`` extra by import name -> package name. The simulator imports them lazily (inside
#: its server thread), so a missing one would only fail after start-up: check them first.
SIM_EXTRA_MODULES = (("aiohttp", "aiohttp"), ("PIL", "Pillow"))


def missing_sim_extra() -> Optional[str]:
    """The first package of the ``sim`` extra that cannot be imported, or None."""
    import importlib

    for module, package in SIM_EXTRA_MODULES:
        try:
            importlib.import_module(module)
        except ImportError:
            return package
    return None


def report_missing_sim_extra(command: str, package: str, err: TextIO) -> int:
    """Say in one line what is missing and how to install the ``sim`` extra; exit status 2.

    Why: ``sim`` and ``demo`` need aiohttp and Pillow, which the runtime install leaves out so
    Nuke's Python stays small; a ``ModuleNotFoundError`` traceback says neither what to do nor
    that nothing is broken.
    """
    print(
        f"comfy-cluster {command} needs the sim extra ({package} is not installed); "
        f"from the comfy_cluster checkout: {SIM_EXTRA_INSTALL}",
        file=err,
    )
    return ExitCode.USAGE
