"""The ``comfy-cluster`` command: a thin argparse front over ``comfy_cluster.commands``.

Each sub-command lives in its own module under ``commands/`` and exposes ``register(subparsers)``,
which adds its parser and sets ``func(args) -> int``. Heavy imports (aiohttp, rich) happen inside
``func``, so ``comfy-cluster servers`` stays fast and works with the runtime dependencies alone.

``main`` keeps the arguments as typed in ``args.command_line`` (sub-command first), so a command
can print the exact line to run next (``render`` after Ctrl-C: the same line with ``--resume``).
"""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
from collections.abc import Sequence
from typing import Optional

from comfy_cluster import __version__
from comfy_cluster.commands.common import ExitCode, HelpFormatter

#: Sub-command modules, in the order ``--help`` lists them.
COMMANDS = ("servers", "status", "render", "sim", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="comfy-cluster",
        description="Run ComfyUI workflows on a cluster of ComfyUI servers.",
        epilog="Run 'comfy-cluster COMMAND --help' for its options and examples.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"comfy-cluster {__version__} (Python {platform.python_version()})",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"comfy_cluster.commands.{name}")
        module.register(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    typed = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(typed)
    args.command_line = typed
    if not getattr(args, "func", None):
        parser.print_help()
        return ExitCode.USAGE
    try:
        return int(args.func(args) or ExitCode.OK)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
