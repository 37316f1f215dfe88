"""The prompt clock: a prompt takes what the cost model says, the sim's own work included.

Every cost (a node's ``node_seconds / speed``, a checkpoint load, the warm-up of a cold server, a
foreign prompt's work) is added to one budget that starts when the prompt starts; a node then
sleeps only until ``start + budget``. Whatever the sim spent itself (decoding, pixel math, PNG
encoding, event plumbing) is therefore inside the budget instead of on top of it, so a client sees
the cost model's time and no more (unless the sim's own work alone exceeds the budget).
"""

from __future__ import annotations

import threading
import time
from typing import Optional


class ServerStopping(Exception):
    """The server is stopping; abandon the prompt without any event."""


class PromptClock:
    """Budget and deadline of one running prompt; used on the work thread only.

    ``add`` books seconds of wall time; ``wait`` sleeps until everything booked so far has
    elapsed since ``start`` (at once when the sim is already late). ``stop_event`` ends a wait
    early with ``ServerStopping``.
    """

    def __init__(self, stop_event: threading.Event, start: Optional[float] = None) -> None:
        self.stop_event = stop_event
        #: ``time.monotonic()`` when the prompt started.
        self.start = time.monotonic() if start is None else start
        #: Wall seconds booked so far.
        self.budget = 0.0

    def add(self, seconds: float) -> None:
        if seconds > 0:
            self.budget += seconds

    def remaining(self) -> float:
        return self.start + self.budget - time.monotonic()

    def wait(self) -> None:
        delay = self.remaining()
        if delay > 0 and self.stop_event.wait(delay):
            raise ServerStopping()
        if self.stop_event.is_set():
            raise ServerStopping()


__all__ = ["PromptClock", "ServerStopping"]
