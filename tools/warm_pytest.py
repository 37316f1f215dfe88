"""A warm pytest for ``mutate.py``: each run in a forked child of a process that already
imported pytest and our third-party dependencies, never our own code.

A mutant's run is mostly start-up: the interpreter, pytest, Qt, requests and hypothesis take
about 0.4 s of a quick mutant's 1.1 s on our 2-core machines. This process imports them once
and forks a child per run, so every run still imports ``comfy_cluster`` and the tests afresh
from its checkout (the planted mutant included) and no test's state outlives its run.

Protocol, one JSON object per line: the parent writes ``{"args": [...], "out": path,
"timeout": seconds}`` on stdin; this process runs ``pytest.main(args)`` in a child (its own
process group, output to ``out``) and answers ``{"code": exit code or null}`` (null: it ran out
of time, and its whole process group was killed, servers it started included).
Started by ``mutate.py`` in the copy's directory, with the copy's ``PYTHONPATH``. POSIX only.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from typing import Optional

#: What every run imports that is not ours (import errors are fine: the run will report them).
PRELOAD = (
    "pytest",
    "_pytest.python",
    "_pytest.runner",
    "pytest_timeout",
    "pytestqt.plugin",
    "PySide6.QtCore",
    "requests",
    "websocket",
    "tenacity",
    "hypothesis",
)


def preload() -> None:
    for name in PRELOAD:
        try:
            __import__(name)
        except Exception:  # a missing extra is the run's to report
            pass
    if any(name.split(".")[0] == "comfy_cluster" for name in sys.modules):
        raise SystemExit("warm_pytest: comfy_cluster was imported before a fork")


def run(args: list[str], out: str, timeout: float) -> Optional[int]:
    """``pytest.main(args)`` in a forked child; its exit code, or None after ``timeout`` s."""
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 3
        try:
            os.setpgrp()  # one group with whatever it starts, for the kill below
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            import pytest

            code = int(pytest.main(args))
        except BaseException:
            traceback.print_exc()  # into ``out``: the parent reports it as a tool error
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            _kill_group(pid)
            return None
        time.sleep(0.01)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)


def main() -> int:
    preload()
    for line in sys.stdin:
        request = json.loads(line)
        code = run(request["args"], request["out"], float(request["timeout"]))
        sys.stdout.write(json.dumps({"code": code}) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
