"""JobMonitor under concurrent events: the final status is never overwritten by a late update."""

from __future__ import annotations

import threading
from typing import Any

from comfy_cluster.core.events import FrameWritten, JobDone
from comfy_cluster.host import knobs as K
from comfy_cluster.host.render_node import JobMonitor


class _SlowDispatcher:
    """Records dispatcher calls in order; the first status update stalls (the worker thread is
    pre-empted between computing its status and handing it to the dispatcher)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.entered = threading.Event()
        self.proceed = threading.Event()
        self._lock = threading.Lock()

    def post(self, fn: Any, *args: Any) -> None:
        with self._lock:
            self.calls.append(("post", args))

    def set_knob_later(self, node: str, knob: str, value: Any) -> None:
        if knob == K.STATUS and not self.entered.is_set():
            self.entered.set()
            self.proceed.wait(2.0)
        with self._lock:
            self.calls.append(("knob", (knob, value)))


def test_a_progress_update_in_flight_never_lands_after_the_final_event() -> None:
    dispatcher = _SlowDispatcher()
    monitor = JobMonitor("Render1", dispatcher, 2, lambda *a: None, job_id="J")  # type: ignore[arg-type]
    written = FrameWritten(
        job_id="J", progress=1.0, eta_seconds=0.0, frame=2, path="/o.0002.png", server="s"
    )
    done = JobDone(job_id="J", progress=1.0, eta_seconds=0.0, frames_written=2)

    worker = threading.Thread(target=monitor.on_event, args=(written,))
    worker.start()
    assert dispatcher.entered.wait(2.0)
    # The scheduler's controller thread reports the end while the worker is still mid-update.
    final = threading.Thread(target=monitor.on_event, args=(done,))
    final.start()
    final.join(0.3)
    dispatcher.proceed.set()
    worker.join(2.0)
    final.join(2.0)

    kinds = [kind for kind, _ in dispatcher.calls]
    assert kinds[-1] == "post", dispatcher.calls  # the end is the last thing the main thread sees
    assert kinds.count("post") == 1
