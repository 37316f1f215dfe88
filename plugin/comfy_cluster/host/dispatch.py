"""The one road from worker threads to Nuke.

Nuke's nodes, knobs and menus belong to the main thread: Foundry's threading guide says to touch
them only there and to talk back from a worker with ``nuke.executeInMainThread``, and calling that
from the main thread itself can hang Nuke. Workers never call ``nuke``; they hand work to a
:class:`Dispatcher`, which runs it on the main thread:

* GUI session: through ``nuke.executeInMainThread`` (fire and forget), run by Nuke's event loop.
* Terminal session (``nuke -t``, farms): there is no event loop that runs queued calls, so the
  dispatcher keeps its own queue; the main thread, blocked in :meth:`Dispatcher.run_until` while a
  render runs, drains it.
* Already on the main thread: the call runs at once (queueing from the main thread can hang Nuke).

Knob updates are coalesced (:meth:`Dispatcher.set_knob_later`): the latest value per
``(node name, knob name)`` wins and at most one flush is queued at a time, so thousands of progress
messages cost a handful of main-thread calls. Workers pass node *names*; the flush re-resolves them
from the root (whatever the current context: in a terminal session the flush runs inside the
Render button, whose context is the gizmo) and skips nodes deleted in the meantime. A node renamed
while updates are pending has them re-keyed by :meth:`Dispatcher.rename` (main thread, from the
host's rename handling).
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Callable, Optional

from comfy_cluster.host.graph import find_node

_log = logging.getLogger(__name__)

#: How long :meth:`Dispatcher.call_sync` waits between checks of its cancel event.
_WAIT_SLICE = 0.05


class DispatchTimeout(TimeoutError):
    """:meth:`Dispatcher.call_sync` gave up waiting for the main thread."""


class Dispatcher:
    """Marshal calls and knob updates to Nuke's main thread.

    ``post``, ``set_knob_later`` and ``call_sync`` may be called from any thread (``call_sync``
    from workers only); ``drain``, ``run_until`` and ``flush`` run on the main thread only.
    ``nuke_module`` is injectable so the class can be tested with a stand-in.
    """

    def __init__(
        self,
        nuke_module: Any = None,
        *,
        is_main_thread: Optional[Callable[[], bool]] = None,
    ) -> None:
        if nuke_module is None:
            import nuke as nuke_module
        self._nuke = nuke_module
        self._is_main = is_main_thread or _on_main_thread
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], Any] = {}
        self._flush_queued = False
        #: Terminal-mode queue of (fn, args), drained by the blocked main thread.
        self._queue: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]]] = (
            queue.SimpleQueue()
        )

    # -- any thread -------------------------------------------------------------------------------

    @property
    def gui(self) -> bool:
        """Whether Nuke runs its own event loop (read at each call: tests flip it)."""
        return bool(getattr(self._nuke, "GUI", False))

    def on_main_thread(self) -> bool:
        return self._is_main()

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the main thread: now if already there, else queued (no result).

        Exceptions from a queued call are logged with their traceback, never raised into Nuke's
        event loop or the terminal drain loop.
        """
        if self._is_main():
            fn(*args)
        else:
            self._enqueue(self._guarded, (fn, args))

    def set_knob_later(self, node_name: str, knob_name: str, value: Any) -> None:
        """Set ``node_name[knob_name]`` to ``value`` on the main thread; the latest value wins.

        A node or knob that no longer exists when the flush runs is skipped silently (the node was
        deleted; its job is being cancelled by the delete callback).
        """
        with self._lock:
            self._pending[(node_name, knob_name)] = value
            if self._is_main():
                queue_flush = False
            else:
                queue_flush = not self._flush_queued
                self._flush_queued = True
        if self._is_main():
            self.flush()
        elif queue_flush:
            self._enqueue(self._guarded, (self._flush_from_queue, ()))

    def discard(self, node_name: str) -> None:
        """Drop pending knob updates for ``node_name``: its job ended; no stale value may land."""
        with self._lock:
            for key in [key for key in self._pending if key[0] == node_name]:
                del self._pending[key]

    def rename(self, old_name: str, new_name: str) -> None:
        """Re-key pending knob updates of node ``old_name`` to ``new_name``: the node was renamed
        while its job runs, so a flush must resolve the new name. An update already pending for
        ``new_name`` is newer and wins. Any thread (the host calls it on the main thread, after
        the job's monitor stopped using the old name, so nothing is queued under it afterwards).
        """
        if old_name == new_name:
            return
        with self._lock:
            for key in [key for key in self._pending if key[0] == old_name]:
                value = self._pending.pop(key)
                self._pending.setdefault((new_name, key[1]), value)

    def call_sync(
        self,
        fn: Callable[..., Any],
        *args: Any,
        timeout: Optional[float] = None,
        cancel: Optional[threading.Event] = None,
    ) -> Any:
        """Run ``fn(*args)`` on the main thread and return its result; workers only.

        Raises ``RuntimeError`` on the main thread (it would wait for itself), re-raises what ``fn``
        raised, raises :class:`DispatchTimeout` after ``timeout`` seconds or once ``cancel`` is set.
        Built on ``executeInMainThread`` plus an event, not ``executeInMainThreadWithResult``:
        that one blocks without a timeout, and when the call raises it prints the traceback and
        returns None, so the caller cannot tell a failure from a result.
        """
        if self._is_main():
            raise RuntimeError("call_sync on the main thread would wait for itself")
        done = threading.Event()
        box: list[tuple[bool, Any]] = []

        def run() -> None:
            try:
                box.append((True, fn(*args)))
            except BaseException as exc:  # handed back to the waiting worker
                box.append((False, exc))
            finally:
                done.set()

        self._enqueue(run, ())
        waited = 0.0
        while not done.wait(_WAIT_SLICE):
            waited += _WAIT_SLICE
            if (cancel is not None and cancel.is_set()) or (
                timeout is not None and waited >= timeout
            ):
                raise DispatchTimeout(f"main thread did not run {_name(fn)} in time")
        ok, value = box[0]
        if not ok:
            raise value
        return value

    # -- main thread only -------------------------------------------------------------------------

    def flush(self) -> None:
        """Apply every pending knob update now. Main thread only."""
        with self._lock:
            pending, self._pending = self._pending, {}
        for (node_name, knob_name), value in pending.items():
            _set_knob(self._nuke, node_name, knob_name, value)

    def drain(self) -> int:
        """Run every call queued for terminal mode; returns how many ran. Main thread only."""
        count = 0
        while True:
            try:
                fn, args = self._queue.get_nowait()
            except queue.Empty:
                return count
            fn(*args)
            count += 1

    def run_until(self, done: Callable[[], bool], timeout: Optional[float] = None) -> bool:
        """Block the main thread, running queued calls, until ``done()``; False on timeout.

        This is how a terminal session renders: the caller sits here while workers post to the
        queue. Waits on the queue (no sleeping), checking ``done`` after every call.
        """
        waited = 0.0
        while True:
            self.drain()
            if done():
                return True
            if timeout is not None and waited >= timeout:
                return False
            try:
                fn, args = self._queue.get(timeout=_WAIT_SLICE)
            except queue.Empty:
                waited += _WAIT_SLICE
                continue
            fn(*args)

    # -- internals --------------------------------------------------------------------------------

    def _enqueue(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        if self.gui:
            # args must be a real tuple: Nuke passes anything else (a list, say) as one argument.
            self._nuke.executeInMainThread(fn, args=args)
        else:
            self._queue.put((fn, args))

    def _guarded(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            fn(*args)
        except Exception:
            _log.exception("comfy_cluster: main-thread call %s failed", _name(fn))

    def _flush_from_queue(self) -> None:
        with self._lock:
            self._flush_queued = False
        self.flush()


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _set_knob(nuke_module: Any, node_name: str, knob_name: str, value: Any) -> None:
    # From the root: in a terminal session this runs inside the Render button, whose context
    # is the gizmo itself.
    node = find_node(nuke_module, node_name)
    if node is None:
        return
    try:
        knob = node.knob(knob_name)
        if knob is not None:
            knob.setValue(value)
    except ValueError:  # "A PythonObject is not attached to a node": deleted meanwhile
        return


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)
