"""The fake Nuke session: one state object, replaced by ``nuke._fake.reset()``.

Everything the fake remembers (nodes, callbacks, menus, panels, the main-thread queue, prompts)
lives on one :class:`Session`. ``current()`` returns it; ``replace()`` swaps in a fresh one. This is
the single piece of module state in the fake, by design: reset() must be able to wipe it all.
"""

from __future__ import annotations

import collections
import functools
import sys
import threading
from typing import Any, Callable, TypeVar

DETACHED = "A PythonObject is not attached to a node"

F = TypeVar("F", bound=Callable[..., Any])


class FakeThreadViolation(RuntimeError):
    """A node, knob, menu or panel was touched off Nuke's main thread."""


class Session:
    """All state of one fake Nuke session. Main thread = the thread that built it."""

    def __init__(self) -> None:
        self.main_thread = threading.current_thread()
        self.cond = threading.Condition()  # guards queue, progress records
        self.queue: collections.deque = collections.deque()
        self.dropped: list = []  # executeInMainThread calls made in terminal mode (never run)
        self.errors: list[BaseException] = []  # unhandled: queued calls, callbacks
        self.swallowed: list[BaseException] = []  # executeInMainThreadWithResult failures
        self.messages: list[str] = []
        self.tprints: list[str] = []
        self.logs: list[tuple[str, str]] = []
        self.answers: collections.deque = collections.deque()
        self.modal_answers: collections.deque = collections.deque()
        self.callbacks: dict[str, dict[str, list]] = {}
        self.this_stack: list[tuple[Any, Any]] = []
        self.group_stack: list[Any] = []
        self.menus: dict[str, Any] = {}
        self.toolbars: dict[str, Any] = {}
        self.plugin_path: list[str] = []
        self.panels: dict[str, Callable[[], Any]] = {}
        self.panel_instances: list[Any] = []
        self.panes: dict[str, Any] = {}
        self.this_pane: Any = None
        self.progress: list[Any] = []
        self.namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__}
        self.script_name = ""
        self.modified = False
        self.frame = 1
        self.load_warnings: list[str] = []
        self.root: Any = None
        self.result_timeout = 5.0
        self.var_counter = 0
        self.executing = False
        self.clipboard = ""
        self.sys_path_added: list[str] = []
        self.rendered: list[tuple[str, int, str]] = []
        #: knobChanged also fires for programmatic ``setValue`` (see ``_fake.set_knob_changed``).
        self.knob_changed_on_set = False
        self.set_depth = 0  # nesting of setValue calls (only the outermost one notifies)
        self.undo_disabled = 0  # nesting of nuke.Undo.disable()
        self.undo_log: list[str] = []
        self.knob_defaults: dict[str, str] = {}
        #: (write full name, frames, GUI?) for every nuke.execute call (one UI block each).
        self.executions: list[tuple[str, tuple[int, ...], bool]] = []
        #: (read full name, frame, what was written instead: "black", "checkerboard", "nearest")
        self.substituted: list[tuple[str, int, str]] = []
        self.reloads: list[str] = []  # full names of Read nodes whose Reload ran


_CURRENT: list[Session] = []


def current() -> Session:
    if not _CURRENT:
        replace()
    return _CURRENT[0]


def replace() -> Session:
    session = Session()
    _CURRENT[:] = [session]
    # The root node needs the node module; import late to avoid a cycle.
    from . import _nodes

    session.root = _nodes.make_root()
    ns = session.namespace
    ns["nuke"] = sys.modules[__package__]
    if "nukescripts" in sys.modules:
        ns["nukescripts"] = sys.modules["nukescripts"]
    return session


def gui() -> bool:
    return bool(sys.modules[__package__].GUI)


def on_main_thread() -> bool:
    return threading.current_thread() is current().main_thread


def check_main(what: str) -> None:
    """Raise FakeThreadViolation unless called on the session's main thread."""
    if not on_main_thread():
        raise FakeThreadViolation(
            f"nuke: {what} called off the main thread (thread "
            f"{threading.current_thread().name!r}); marshal it with nuke.executeInMainThread"
        )


def main_only(fn: F) -> F:
    """Decorator for module functions that Nuke only allows on the main thread."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        check_main(f"nuke.{fn.__name__}()")
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


_GUARDED_DUNDERS = ("__init__", "__getitem__", "__len__", "__enter__", "__exit__", "__iter__")


def guarded(alive: Callable[[Any], bool] | None = None) -> Callable[[type], type]:
    """Class decorator: every public method checks the main thread, then (optionally) that the
    object is still attached to a node (else ValueError, like real Nuke)."""

    def deco(cls: type) -> type:
        for attr, fn in list(vars(cls).items()):
            if not callable(fn) or isinstance(fn, (staticmethod, classmethod, type)):
                continue
            if attr.startswith("_") and attr not in _GUARDED_DUNDERS:
                continue
            setattr(cls, attr, _wrap(cls.__name__, attr, fn, None if attr == "__init__" else alive))
        return cls

    return deco


def _wrap(cls_name: str, attr: str, fn: Callable, alive: Callable[[Any], bool] | None) -> Callable:
    what = f"{cls_name}.{attr}()"

    @functools.wraps(fn)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        check_main(what)
        if alive is not None and not alive(self):
            raise ValueError(DETACHED)
        return fn(self, *args, **kwargs)

    return wrapper


def record_error(exc: BaseException) -> None:
    current().errors.append(exc)
