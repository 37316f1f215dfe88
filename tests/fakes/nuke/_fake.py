"""Test-side controls of the fake Nuke session (``nuke._fake``).

Nothing here exists in real Nuke; production code must never import it.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, Callable

from . import _callbacks, _state, _threads
from . import _knobs as K
from ._state import FakeThreadViolation, check_main, current
from ._threads import ProgressRecord

__all__ = [
    "FakeThreadViolation",
    "ProgressRecord",
    "cancel_progress",
    "dropped",
    "errors",
    "executions",
    "invoke",
    "load_warnings",
    "logs",
    "main_namespace",
    "messages",
    "open_panel",
    "press",
    "progress_tasks",
    "pump",
    "pump_until",
    "queue_answer",
    "queue_modal_result",
    "queued",
    "reloads",
    "rendered",
    "reset",
    "session",
    "set_gui",
    "set_knob_changed",
    "set_result_timeout",
    "set_version",
    "substituted",
    "swallowed",
    "take_errors",
    "tprints",
    "undo_log",
    "user_sets",
]

#: The Nuke release that ships this Python: Nuke 14 has 3.9, 15 has 3.10, 16 has 3.11.
_VERSION_FOR_PYTHON = {(3, 9): (14, 1, 4), (3, 10): (15, 1, 1), (3, 11): (16, 0, 1)}
_DEFAULT_VERSION = _VERSION_FOR_PYTHON.get(sys.version_info[:2], (16, 0, 1))


def _nuke() -> Any:
    return sys.modules[__package__]


def reset() -> None:
    """Forget everything (nodes, callbacks, menus, panels, plugin path, queue, records); the
    calling thread becomes Nuke's main thread; GUI mode on; the version is the Nuke release
    that ships this Python."""
    old = _state._CURRENT[0] if _state._CURRENT else None
    if old is not None:
        for path in old.sys_path_added:
            if path in sys.path:
                sys.path.remove(path)
        with old.cond:  # release any worker still blocked in executeInMainThreadWithResult
            for request in old.queue:
                request.done.set()
    _state.replace()
    set_gui(True)
    set_version(*_DEFAULT_VERSION)


def session() -> _state.Session:
    """The live session object (for assertions the helpers below do not cover)."""
    return current()


def set_gui(gui: bool) -> None:
    nuke = _nuke()
    nuke.GUI = bool(gui)
    nuke.env["gui"] = bool(gui)


def set_version(major: int, minor: int = 0, release: int = 0) -> None:
    nuke = _nuke()
    nuke.NUKE_VERSION_MAJOR = major
    nuke.NUKE_VERSION_MINOR = minor
    nuke.NUKE_VERSION_RELEASE = release
    nuke.NUKE_VERSION_STRING = f"{major}.{minor}v{release}"
    nuke.env.update(
        NukeVersionMajor=major,
        NukeVersionMinor=minor,
        NukeVersionRelease=release,
        NukeVersionString=nuke.NUKE_VERSION_STRING,
    )


def set_knob_changed(*, on_set: bool) -> None:
    """Which Nuke's knobChanged the session has. ``on_set=False`` (the default): only user
    edits (``user_sets``, ``press``, ``open_panel``) fire it, as older Foundry docs promise.
    ``on_set=True``: a programmatic ``setValue`` on a node's knob fires it too, as Foundry's
    current docs say. Code that reacts to knob changes must work under both."""
    current().knob_changed_on_set = bool(on_set)


def set_result_timeout(seconds: float) -> None:
    current().result_timeout = float(seconds)


# -- the main-thread queue ---------------------------------------------------------------------
def pump() -> int:
    """Run the queued main-thread calls; returns how many ran. Main thread only."""
    return _threads.pump()


def pump_until(predicate: Callable[[], bool], timeout: float = 5.0) -> int:
    """Pump until ``predicate()`` is true; TimeoutError after ``timeout`` seconds."""
    check_main("nuke._fake.pump_until()")
    session = current()
    deadline = time.monotonic() + timeout
    total = 0
    while True:
        total += _threads.pump()
        if predicate():
            return total
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"pump_until: condition still false after {timeout}s")
        with session.cond:
            if not session.queue:
                session.cond.wait(min(remaining, 0.02))


def queued() -> int:
    with current().cond:
        return len(current().queue)


def dropped() -> list[tuple[Callable, tuple, dict]]:
    """executeInMainThread calls made in terminal mode (they never run)."""
    return [(r.call, r.args, r.kwargs) for r in current().dropped]


def main_thread() -> threading.Thread:
    return current().main_thread


# -- records -----------------------------------------------------------------------------------
def errors() -> list[BaseException]:
    """Unhandled exceptions from pumped calls and callbacks (the fixture fails on leftovers)."""
    return list(current().errors)


def take_errors() -> list[BaseException]:
    """Return and clear the unhandled exceptions (a test that expects them calls this)."""
    errs = list(current().errors)
    current().errors.clear()
    return errs


def swallowed() -> list[BaseException]:
    """Exceptions executeInMainThreadWithResult printed and turned into None."""
    return list(current().swallowed)


def messages() -> list[str]:
    """nuke.message/alert texts, and 'ask: ...' style entries for prompts."""
    return list(current().messages)


def tprints() -> list[str]:
    return list(current().tprints)


def logs() -> list[tuple[str, str]]:
    """(level, message) from nuke.debug/warning/error/critical."""
    return list(current().logs)


def load_warnings() -> list[str]:
    """Knobs and statements ignored while reading scripts and gizmos."""
    return list(current().load_warnings)


def rendered() -> list[tuple[str, int, str]]:
    """(write node full name, frame, written path) for every frame nuke.execute wrote."""
    return list(current().rendered)


def executions() -> list[tuple[str, tuple[int, ...], bool]]:
    """(write full name, frames, GUI?) for every nuke.execute call: in the GUI each is one
    modal progress dialog that blocks the user interface."""
    return list(current().executions)


def substituted() -> list[tuple[str, int, str]]:
    """(read full name, frame, "black"/"checkerboard"/"nearest"): frames a render made up
    because the Read's file was missing and its ``on_error`` said not to fail."""
    return list(current().substituted)


def reloads() -> list[str]:
    """Full names of the Read nodes whose Reload button ran, in order."""
    return list(current().reloads)


def undo_log() -> list[str]:
    """Undo entries recorded ("create Write1", "delete Write1"); see ``nuke.Undo``."""
    return list(current().undo_log)


def main_namespace() -> dict[str, Any]:
    """The ``__main__``-like namespace PyScript knobs, menu strings and PyCustom_Knob
    expressions run in; tests may add names (as Nuke's script editor would have them)."""
    return current().namespace


# -- scripted user interaction -----------------------------------------------------------------
def queue_answer(*values: Any) -> None:
    """Answers for nuke.ask/askWithCancel/getInput/choice/getFramesAndViews, in order."""
    current().answers.extend(values)


def queue_modal_result(*values: Any) -> None:
    """Results for nukescripts.PythonPanel.showModalDialog (True=OK, False=Cancel, None)."""
    current().modal_answers.extend(values)


def progress_tasks() -> list[ProgressRecord]:
    with current().cond:
        return list(current().progress)


def cancel_progress(task: ProgressRecord | None = None) -> None:
    """Press Cancel on one ProgressTask record, or on all open ones."""
    with current().cond:
        targets = [task] if task is not None else [r for r in current().progress if not r.closed]
        for record in targets:
            record.cancel()


def user_sets(knob: K.Knob, value: Any) -> None:
    """What a user editing a knob does: set the value, then fire knobChanged (the node's own
    ``knobChanged`` knob, then nuke.addKnobChanged callbacks) with thisNode/thisKnob set."""
    check_main("nuke._fake.user_sets()")
    session = current()
    session.set_depth += 1  # one knobChanged, whichever behaviour the session has
    try:
        knob.setValue(value)
    finally:
        session.set_depth -= 1
    _fire_knob_changed(knob)


def press(knob: K.Knob) -> None:
    """Click a button knob: run it, then fire knobChanged like Nuke."""
    check_main("nuke._fake.press()")
    if not isinstance(knob, K.Script_Knob):
        raise TypeError(f"{knob!r} is not a button")
    knob.execute()
    _fire_knob_changed(knob)


def open_panel(node: Any) -> None:
    """Open a node's properties: knobChanged fires with the dummy ``showPanel`` knob."""
    check_main("nuke._fake.open_panel()")
    dummy = K.Knob("showPanel")
    dummy._node = node
    node._panel_shown = True
    _callbacks.run_node_knob(node, "knobChanged", dummy)
    _callbacks.run("knobChanged", node, dummy)


def invoke(menu_name: str, path: str) -> None:
    """Click ``nuke.menu(menu_name)``'s item at ``path`` (AttributeError-free helper)."""
    item = _nuke().menu(menu_name).findItem(path)
    if item is None:
        raise LookupError(f"no menu item {path!r} in {menu_name!r}")
    item.invoke()


def _fire_knob_changed(knob: K.Knob) -> None:
    _callbacks.fire_knob_changed(knob)
