"""``executeInMainThread*`` and ``ProgressTask``.

* ``executeInMainThread`` queues (GUI mode) and returns; the test runs the queue with
  ``nuke._fake.pump()``. In terminal mode (``nuke.GUI`` False) there is no event loop: the call is
  recorded in ``nuke._fake.dropped()`` and never runs (the conservative reading of a [verify] item;
  code must call directly when not in GUI mode).
* ``executeInMainThreadWithResult`` raises on the main thread (Nuke hangs or errors there),
  raises in terminal mode, otherwise queues and blocks until pumped; an exception in the call is
  printed and swallowed (returns None) like the real one. A timeout (``result_timeout``, 5 s)
  turns a forgotten pump into TimeoutError instead of a hung suite.
"""

from __future__ import annotations

import threading
import traceback
from typing import Any, Callable

from ._state import check_main, current, gui, on_main_thread


def _coerce(args: Any, kwargs: Any) -> tuple[tuple, dict]:
    if type(args) is not tuple:  # the real function wraps anything but a tuple
        args = (args,)
    return args, dict(kwargs or {})


class _Request:
    def __init__(self, call: Callable, args: tuple, kwargs: dict, wants_result: bool) -> None:
        self.call, self.args, self.kwargs = call, args, kwargs
        self.wants_result = wants_result
        self.done = threading.Event()
        self.result: Any = None


def executeInMainThread(call: Callable, args: Any = (), kwargs: Any = None) -> None:
    args, kwargs = _coerce(args, kwargs)
    session = current()
    request = _Request(call, args, kwargs, wants_result=False)
    with session.cond:
        if not gui():
            session.dropped.append(request)
            return
        session.queue.append(request)
        session.cond.notify_all()


def executeInMainThreadWithResult(call: Callable, args: Any = (), kwargs: Any = None) -> Any:
    args, kwargs = _coerce(args, kwargs)
    session = current()
    if on_main_thread():
        raise RuntimeError(
            "executeInMainThreadWithResult called on the main thread: this hangs Nuke"
        )
    if not gui():
        raise RuntimeError(
            "executeInMainThreadWithResult in terminal mode: no event loop would ever run it"
        )
    request = _Request(call, args, kwargs, wants_result=True)
    with session.cond:
        session.queue.append(request)
        session.cond.notify_all()
    if not request.done.wait(session.result_timeout):
        raise TimeoutError(
            f"executeInMainThreadWithResult: not pumped within {session.result_timeout}s "
            "(call nuke._fake.pump() / pump_until() on the main thread)"
        )
    return request.result


def pump(limit: int = 10000) -> int:
    """Run queued main-thread calls (including ones queued while pumping); return the count."""
    check_main("nuke._fake.pump()")
    session = current()
    count = 0
    while count < limit:
        with session.cond:
            if not session.queue:
                break
            request = session.queue.popleft()
        count += 1
        try:
            request.result = request.call(*request.args, **request.kwargs)
        except Exception as exc:
            traceback.print_exc()
            if request.wants_result:
                session.swallowed.append(exc)
            else:
                session.errors.append(exc)
        finally:
            request.done.set()
    return count


class ProgressTask:
    """Progress UI for a long task. Create it on the main thread; ``setProgress``,
    ``setMessage`` and ``isCancelled`` are lock-protected and callable from any thread. The test
    side (``nuke._fake.progress_tasks()``, ``cancel_progress()``) sees every update."""

    def __init__(self, title: str = "", *args: Any, **kwargs: Any) -> None:
        check_main("nuke.ProgressTask()")
        self._record = ProgressRecord(str(title))
        session = current()
        with session.cond:
            session.progress.append(self._record)

    def setProgress(self, progress: int) -> None:
        with current().cond:
            self._record.progress.append(int(progress))

    def setMessage(self, message: str) -> None:
        with current().cond:
            self._record.messages.append(str(message))

    def isCancelled(self) -> bool:
        with current().cond:
            return self._record.cancelled

    def __del__(self) -> None:
        record = getattr(self, "_record", None)
        if record is not None:
            record.closed = True


class ProgressRecord:
    """What a ProgressTask showed (test side)."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.progress: list[int] = []
        self.messages: list[str] = []
        self.cancelled = False
        self.closed = False

    def cancel(self) -> None:
        self.cancelled = True

    def __repr__(self) -> str:
        return (
            f"<ProgressRecord {self.title!r} progress={self.progress[-1:]} "
            f"cancelled={self.cancelled} closed={self.closed}>"
        )
