"""The dispatcher contract (post, coalesced knob updates, call_sync, terminal drain) against a
tiny stand-in for ``nuke``.

The stand-in records main-thread requests in a list the test pumps, and refuses knob access off
the main thread, which is all the dispatcher relies on. The end-to-end render tests exercise the
same class through the shared fake.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

import pytest

from comfy_cluster.host.dispatch import Dispatcher, DispatchTimeout


class _Knob:
    def __init__(self, owner: _Nuke) -> None:
        self._owner = owner
        self.values: list[Any] = []

    def setValue(self, value: Any) -> None:
        self._owner.check_main()
        self.values.append(value)


class _Node:
    def __init__(self, owner: _Nuke, knobs: tuple[str, ...]) -> None:
        self._owner = owner
        self._knobs = {name: _Knob(owner) for name in knobs}

    def knob(self, name: str) -> _Knob | None:
        self._owner.check_main()
        return self._knobs.get(name)


class _Root:
    """The root group: ``begin``/``end`` make it the context ``toNode`` resolves names in."""

    def __init__(self, owner: _Nuke) -> None:
        self._owner = owner

    def begin(self) -> _Root:
        self._owner.check_main()
        self._owner.context.append("root")
        return self

    def end(self) -> None:
        self._owner.context.pop()


class _Nuke:
    """Just enough of ``nuke`` for the dispatcher: GUI, executeInMainThread, root, toNode.
    ``toNode`` only finds nodes with the root as the context, as in a button on a gizmo whose
    context is the gizmo itself (the dispatcher must not rely on the caller's context)."""

    def __init__(self, gui: bool = True) -> None:
        self.GUI = gui
        self.main = threading.current_thread()
        self.requests: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self.nodes: dict[str, _Node] = {}
        self.lock = threading.Lock()
        self.context: list[str] = ["gizmo"]
        self._root = _Root(self)

    def root(self) -> _Root:
        self.check_main()
        return self._root

    def check_main(self) -> None:
        if threading.current_thread() is not self.main:
            raise RuntimeError("nuke touched off the main thread")

    def executeInMainThread(self, call: Any, args: Any = (), kwargs: Any = None) -> None:
        assert isinstance(args, tuple), "Nuke wraps a non-tuple args as one argument"
        with self.lock:
            self.requests.append((call, args))

    def toNode(self, name: str) -> _Node | None:
        self.check_main()
        return self.nodes.get(name) if self.context[-1] == "root" else None

    def pump(self) -> int:
        self.check_main()
        with self.lock:
            requests, self.requests = self.requests, []
        for call, args in requests:
            call(*args)
        return len(requests)


def _in_worker(fn: Callable[[], Any]) -> Any:
    box: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            box.append(fn())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name="test-worker")
    thread.start()
    thread.join(5)
    assert not thread.is_alive()
    if errors:
        raise errors[0]
    return box[0] if box else None


@pytest.fixture
def fake() -> _Nuke:
    fake = _Nuke()
    fake.nodes["N1"] = _Node(fake, ("cc_progress", "cc_status"))
    return fake


def _dispatcher(fake: _Nuke) -> Dispatcher:
    return Dispatcher(fake, is_main_thread=lambda: threading.current_thread() is fake.main)


def test_post_on_main_thread_runs_now(fake: _Nuke) -> None:
    seen: list[int] = []
    _dispatcher(fake).post(seen.append, 1)
    assert seen == [1]
    assert fake.requests == []


def test_post_from_worker_queues_in_gui_mode(fake: _Nuke) -> None:
    seen: list[str] = []
    dispatcher = _dispatcher(fake)
    _in_worker(lambda: dispatcher.post(seen.append, "x"))
    assert seen == []
    assert fake.pump() == 1
    assert seen == ["x"]


def test_knob_updates_coalesce_to_one_flush(fake: _Nuke) -> None:
    dispatcher = _dispatcher(fake)

    def work() -> None:
        for value in range(1000):
            dispatcher.set_knob_later("N1", "cc_progress", value)
            dispatcher.set_knob_later("N1", "cc_status", f"{value}/999")

    _in_worker(work)
    assert len(fake.requests) == 1, "one flush queued, however many updates"
    fake.pump()
    node = fake.nodes["N1"]
    assert node.knob("cc_progress").values == [999]
    assert node.knob("cc_status").values == ["999/999"]
    # The next update queues a fresh flush.
    _in_worker(lambda: dispatcher.set_knob_later("N1", "cc_progress", 1000))
    assert fake.pump() == 1
    assert node.knob("cc_progress").values == [999, 1000]


def test_knob_update_for_deleted_node_is_skipped(
    fake: _Nuke, caplog: pytest.LogCaptureFixture
) -> None:
    """A node deleted between the worker's update and the main-thread flush is skipped quietly,
    and the updates queued beside it (for a live node) still land."""
    fake.nodes["Gone"] = _Node(fake, ("cc_progress",))
    dispatcher = _dispatcher(fake)

    def work() -> None:
        dispatcher.set_knob_later("Gone", "cc_progress", 5)  # first: a crash would drop the rest
        dispatcher.set_knob_later("N1", "missing_knob", 5)
        dispatcher.set_knob_later("N1", "cc_status", "still here")

    _in_worker(work)
    del fake.nodes["Gone"]  # deleted before the main thread runs the flush
    caplog.set_level(logging.DEBUG)
    assert fake.pump() == 1
    assert fake.nodes["N1"].knob("cc_status").values == ["still here"]
    assert "failed" not in caplog.text


def test_set_knob_on_main_thread_applies_now(fake: _Nuke) -> None:
    _dispatcher(fake).set_knob_later("N1", "cc_status", "now")
    assert fake.nodes["N1"].knob("cc_status").values == ["now"]
    assert fake.requests == []


def test_discard_drops_pending_values(fake: _Nuke) -> None:
    dispatcher = _dispatcher(fake)
    _in_worker(lambda: dispatcher.set_knob_later("N1", "cc_status", "stale"))
    dispatcher.discard("N1")
    fake.pump()
    assert fake.nodes["N1"].knob("cc_status").values == []


def test_failing_posted_call_is_logged_not_raised(
    fake: _Nuke, caplog: pytest.LogCaptureFixture
) -> None:
    dispatcher = _dispatcher(fake)

    def boom() -> None:
        raise ValueError("boom")

    _in_worker(lambda: dispatcher.post(boom))
    fake.pump()
    assert "boom" in caplog.text


def test_call_sync_returns_the_main_thread_result(fake: _Nuke) -> None:
    dispatcher = _dispatcher(fake)
    result: list[Any] = []
    thread = threading.Thread(
        target=lambda: result.append(dispatcher.call_sync(lambda a, b: a + b, 2, 3, timeout=5))
    )
    thread.start()
    while thread.is_alive():
        fake.pump()
        thread.join(0.01)
    assert result == [5]


def test_call_sync_reraises_and_refuses_main_thread(fake: _Nuke) -> None:
    dispatcher = _dispatcher(fake)
    with pytest.raises(RuntimeError, match="main thread"):
        dispatcher.call_sync(lambda: 1)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            dispatcher.call_sync(lambda: 1 / 0, timeout=5)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    while thread.is_alive():
        fake.pump()
        thread.join(0.01)
    assert isinstance(errors[0], ZeroDivisionError)


def test_call_sync_gives_up_on_cancel(fake: _Nuke) -> None:
    dispatcher = _dispatcher(fake)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(DispatchTimeout):
        _in_worker(lambda: dispatcher.call_sync(lambda: 1, cancel=cancel))


def test_terminal_mode_queues_to_own_queue_drained_by_caller(fake: _Nuke) -> None:
    fake.GUI = False
    dispatcher = _dispatcher(fake)
    seen: list[int] = []
    done = threading.Event()

    def worker() -> None:
        for value in range(5):
            dispatcher.post(seen.append, value)
            dispatcher.set_knob_later("N1", "cc_progress", value)
        assert dispatcher.call_sync(lambda: "synced", timeout=5) == "synced"
        dispatcher.post(done.set)

    thread = threading.Thread(target=worker)
    thread.start()
    assert dispatcher.run_until(done.is_set, timeout=10)
    thread.join(5)
    assert fake.requests == [], "nothing went through executeInMainThread"
    assert seen == [0, 1, 2, 3, 4]
    assert fake.nodes["N1"].knob("cc_progress").values[-1] == 4


def test_run_until_times_out(fake: _Nuke) -> None:
    fake.GUI = False
    assert _dispatcher(fake).run_until(lambda: False, timeout=0.1) is False


def test_rename_rekeys_pending_updates_and_newer_values_win(fake: _Nuke) -> None:
    """A node renamed while updates are pending: the flush lands them on the new name."""
    dispatcher = _dispatcher(fake)
    renamed = fake.nodes.pop("N1")
    fake.nodes["N2"] = renamed

    def before() -> None:
        dispatcher.set_knob_later("N1", "cc_progress", 10.0)
        dispatcher.set_knob_later("N1", "cc_status", "old")
        dispatcher.set_knob_later("N2", "cc_status", "newer")  # already under the new name

    _in_worker(before)
    dispatcher.rename("N1", "N2")
    _in_worker(lambda: dispatcher.set_knob_later("N2", "cc_progress", 20.0))
    fake.pump()
    assert renamed.knob("cc_progress").values == [20.0]  # type: ignore[union-attr]
    assert renamed.knob("cc_status").values == ["newer"]  # type: ignore[union-attr]
    dispatcher.rename("N2", "N2")  # a no-op
    dispatcher.discard("N2")
    fake.pump()
    assert renamed.knob("cc_status").values == ["newer"]  # type: ignore[union-attr]
