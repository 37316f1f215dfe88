"""Waiting for input frames the host is still writing: :data:`InputHook` and :class:`InputWaiter`.

With ``wait_for_input`` a job starts before its input frames exist (the Nuke host exports them
chunk by chunk); each worker waits for the frames of its chunk, in short steps so that cancel
stays responsive, and fails the job naming a frame that never comes.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

from comfy_cluster.core.engine.attempt import Aborted
from comfy_cluster.core.errors import ConfigError

__all__ = ["InputHook", "InputWaiter"]

#: ``wait_for_input(frame, timeout) -> ready``: whether input ``frame`` is ready, blocking up to
#: ``timeout`` seconds. Called on worker threads.
InputHook = Callable[[int, float], bool]


class InputWaiter:
    """Blocks a worker until the host says an input frame is ready. One per worker slot.

    ``check()`` raises :class:`Aborted` when the attempt must stop; ``cancel`` is the job's
    cancel token (waited on between steps).
    """

    def __init__(
        self,
        hook: InputHook,
        *,
        clock: Callable[[], float],
        cancel: threading.Event,
        timeout: float,
        poll: float,
    ) -> None:
        self.hook = hook
        self.clock = clock
        self.cancel = cancel
        #: How long to wait in all for one frame.
        self.timeout = timeout
        #: The longest single call of the hook.
        self.poll = poll

    def wait(self, frame: int, path: Path, check: Callable[[], None]) -> None:
        """Return once ``frame`` is ready; raise ConfigError (the job's fault) naming the frame
        when it is not ready within ``timeout`` or the hook raises, Aborted on cancel."""
        clock = self.clock
        deadline = clock() + self.timeout
        while True:
            check()
            began = clock()
            step = max(0.0, min(self.poll, deadline - began))
            try:
                ready = self.hook(frame, step)
            except Exception as exc:
                raise ConfigError(
                    f"waiting for input frame {frame} ({path}) failed: {exc!r}", field="input"
                ) from exc
            if ready:
                return
            now = clock()
            if now >= deadline:
                raise ConfigError(
                    f"input frame {frame} ({path}) was not ready after {self.timeout:.0f} s",
                    field="input",
                )
            # A hook that says no at once (its export stopped) must not make us spin.
            rest = step - (now - began)
            if rest > 0 and self.cancel.wait(rest):
                raise Aborted()
