"""Printing preflight verdicts (``render --check``): one line per server, and the exit status.

::

    gpu-a  ok
    gpu-b  unusable: missing node classes: ImageInvert
    gpu-c  unreachable: connection refused

Names are padded to one column so the verdicts line up. With ``color`` the verdict word is
green (ok), red (unusable, authentication) or yellow (unreachable, disabled), with plain ANSI
codes so it needs no rich. Server text is printed on one line whatever it holds: a message with
a newline must not forge a line for another server.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TextIO

from comfy_cluster.core.preflight import ServerVerdict, VerdictState

__all__ = ["check_exit_code", "print_verdicts", "verdict_line", "verdicts_to_json"]

_RESET = "\033[0m"
_COLORS = {
    VerdictState.OK: "\033[32m",
    VerdictState.UNUSABLE: "\033[31m",
    VerdictState.AUTH: "\033[31m",
    VerdictState.ERROR: "\033[31m",
    VerdictState.UNREACHABLE: "\033[33m",
    VerdictState.DISABLED: "\033[33m",
}


def _one_line(text: str) -> str:
    return " ".join(text.split())


def verdict_line(verdict: ServerVerdict, *, width: int = 0, color: bool = False) -> str:
    """``gpu-b  unusable: ...``: the name padded to ``width``, two spaces, the verdict."""
    name = _one_line(verdict.name).ljust(width)
    text = _one_line(verdict.text)
    if color:
        code = _COLORS.get(verdict.state, "")
        word, sep, rest = text.partition(":")
        text = f"{code}{word}{_RESET}{sep}{rest}" if code else text
    return f"{name}  {text}"


def print_verdicts(verdicts: Iterable[ServerVerdict], out: TextIO, *, color: bool) -> None:
    """Write one line per verdict to ``out``, in the order given."""
    verdicts = list(verdicts)
    width = max((len(_one_line(v.name)) for v in verdicts), default=0)
    for verdict in verdicts:
        out.write(verdict_line(verdict, width=width, color=color) + "\n")
    out.flush()


def check_exit_code(verdicts: Iterable[ServerVerdict]) -> int:
    """0 when at least one server can run the job, else 1 (``ExitCode.OK`` / ``FAILED``)."""
    return 0 if any(v.ok for v in verdicts) else 1


def verdicts_to_json(verdicts: Sequence[ServerVerdict]) -> list[dict[str, Any]]:
    """The verdicts as plain dicts, for ``render --check --json``."""
    return [
        {"server": v.name, "ok": v.ok, "state": v.state, "reasons": list(v.reasons)}
        for v in verdicts
    ]
