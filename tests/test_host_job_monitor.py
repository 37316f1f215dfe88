"""JobMonitor under concurrent events: the final status is never overwritten by a late update."""

from __future__ import annotations

import threading
from typing import Any

from comfy_cluster.core.engine.events import FrameWritten, JobDone
from comfy_cluster.host import knobs as K
from comfy_cluster.host.jobs import JobMonitor


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


class _QueueDispatcher:
    """Queues posts (as the GUI does) and records knob updates by node name."""

    def __init__(self) -> None:
        self.posted: list[tuple[Any, tuple[Any, ...]]] = []
        self.knobs: list[tuple[str, str, Any]] = []

    def post(self, fn: Any, *args: Any) -> None:
        self.posted.append((fn, args))

    def set_knob_later(self, node: str, knob: str, value: Any) -> None:
        self.knobs.append((node, knob, value))

    def run(self) -> None:
        posted, self.posted = self.posted, []
        for fn, args in posted:
            fn(*args)


def test_a_rename_redirects_later_updates_and_an_end_already_queued() -> None:
    dispatcher = _QueueDispatcher()
    ends: list[tuple[str, Any]] = []
    monitor = JobMonitor(
        "Render1",
        dispatcher,  # type: ignore[arg-type]
        2,
        lambda name, event: ends.append((name, event)),
        job_id="J",
    )
    first = FrameWritten(
        job_id="J", progress=0.5, eta_seconds=1.0, frame=1, path="/o.0001.png", server="s"
    )
    monitor.on_event(first)
    monitor.rename("Shot")
    second = FrameWritten(
        job_id="J", progress=1.0, eta_seconds=0.0, frame=2, path="/o.0002.png", server="s"
    )
    monitor.on_event(second)
    done = JobDone(job_id="J", progress=1.0, eta_seconds=0.0, frames_written=2)
    monitor.on_event(done)  # the end is queued under no name ...
    monitor.rename("Shot2")  # ... and the node is renamed again before it runs
    dispatcher.run()
    assert {node for node, _, _ in dispatcher.knobs[:2]} == {"Render1"}
    assert {node for node, _, _ in dispatcher.knobs[2:]} == {"Shot"}
    assert ends == [("Shot2", done)]
