"""Helpers for configuration tests that go through ``comfy_cluster.cli.main``: a clean environment
holding only the variables a test sets, and the checks every bad configuration must pass (exit 2,
one line on stderr, nothing on stdout, no secret anywhere).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any, Callable, NamedTuple

import pytest

from comfy_cluster.cli import main

#: The secret every test hides somewhere; it must never be printed.
SECRET = "SUPERSECRET"
#: Variables we read; tests start without any of them.
OUR_PREFIXES = ("NUKE_COMFYUI", "COMFY_CLUSTER")


class CliResult(NamedTuple):
    code: int
    out: str
    err: str


def run_cli(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: Mapping[str, str],
    *argv: str,
) -> CliResult:
    """``comfy-cluster ARGV`` in-process with exactly our variables from ``env``."""
    for name in list(os.environ):
        if name.startswith(OUR_PREFIXES):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)


def assert_one_config_error(result: CliResult, *words: str, secret: str = SECRET) -> str:
    """Exit 2 with one ``configuration error`` line holding ``words`` and never ``secret``."""
    assert result.code == 2, result
    assert result.out == ""
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert "configuration error: " in lines[0]
    assert "Traceback" not in result.err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert secret not in result.err + result.out
    return lines[0]


def finishes_within(seconds: float, call: Callable[[], Any]) -> Any:
    """``call()``'s result, or a test failure (not a hung run) if it blocks, e.g. on a FIFO."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = call()
        except BaseException as exc:  # handed to the test thread below
            box["error"] = exc

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        pytest.fail(f"still blocked after {seconds} s")
    if "error" in box:
        raise box["error"]
    return box["result"]
