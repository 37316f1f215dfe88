"""Plain-text retry lines that say a repeated failure once, with how often it happened.

Why: a deterministic error (a workflow node that always fails) fails every attempt on a server
the same way. Printed once per attempt, a log shows the same long line three times and buries
what changed. So the plain view holds a server's retry line while further attempts fail
identically and then writes one line with the count::

    retry: chunk 0 on a failed 3 times (node 2 (ImageInvert) failed: ...); 1 frame(s) back ...

A held line is written as soon as anything else is printed, when that server fails differently,
when the job ends, or with the first event that comes ``hold_seconds`` after it started
(running prompts report progress often), whichever is first. A server's "left the job" line
waits for its held retry line, so the log still reads in cause-then-effect order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from comfy_cluster.core.engine.events import ChunkRetried

__all__ = ["RetryDigest"]


@dataclass
class _Run:
    """Attempts of one server that failed one after another with the same ``why``."""

    server: str
    why: str
    started: float
    count: int = 0
    chunks: list[int] = field(default_factory=list)
    frames: int = 0
    #: Lines about this server that must follow the retry line ("left the job").
    after: list[str] = field(default_factory=list)

    def line(self) -> str:
        if len(self.chunks) == 1:
            which = f"chunk {self.chunks[0]}"
        else:
            which = "chunks " + ", ".join(str(index) for index in self.chunks)
        times = f" {self.count} times" if self.count > 1 else ""
        return (
            f"retry: {which} on {self.server} failed{times} ({self.why}); "
            f"{self.frames} frame(s) back in the queue"
        )


class RetryDigest:
    """Folds identical consecutive retries per server into one line; see the module docstring.

    Every method returns the lines to write now, in order. Not thread-safe: the view calls it
    under its own lock.
    """

    def __init__(
        self, hold_seconds: float = 2.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.hold_seconds = hold_seconds
        self._clock = clock
        self._runs: dict[str, _Run] = {}

    def retried(self, event: ChunkRetried) -> list[str]:
        """A chunk attempt failed: fold it into its server's run, or start a new run."""
        lines: list[str] = []
        run = self._runs.get(event.server)
        if run is not None and run.why != event.why:
            lines += self._finish(event.server)
            run = None
        if run is None:
            run = _Run(event.server, event.why, self._clock())
            self._runs[event.server] = run
        run.count += 1
        if event.chunk_index not in run.chunks:
            run.chunks.append(event.chunk_index)
        run.frames = len(event.frames)
        return lines

    def left(self, server: str, line: str) -> list[str]:
        """``server`` left the job: ``line`` says so, after the server's held retry line."""
        run = self._runs.get(server)
        if run is not None:
            run.after.append(line)
            return []
        return [line]

    def due(self) -> list[str]:
        """The held lines older than ``hold_seconds`` (call on every event)."""
        now = self._clock()
        lines: list[str] = []
        old = [name for name, run in self._runs.items() if now - run.started >= self.hold_seconds]
        for server in old:
            lines += self._finish(server)
        return lines

    def flush(self) -> list[str]:
        """Every held line, oldest run first (before any other line, and at the end)."""
        lines: list[str] = []
        for server in list(self._runs):
            lines += self._finish(server)
        return lines

    def _finish(self, server: str) -> list[str]:
        run = self._runs.pop(server)
        return [run.line(), *run.after]
