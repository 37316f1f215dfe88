"""Callback registries (``nuke.addOnCreate`` and friends) and the thisNode/thisKnob context.

Mirrors Foundry's ``nuke_internal/callbacks.py``: entries are stored per ``nodeClass`` with
de-duplication on add; per-class entries run first, then ``'*'``; ``args`` that is not a tuple is
wrapped as one argument. Exceptions in callbacks are printed and recorded in
``nuke._fake.errors`` (the fixture fails the test if nobody takes them).
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Iterator
from typing import Any, Callable

from ._state import check_main, current, record_error

KINDS = (
    "onCreate",
    "onUserCreate",
    "onDestroy",
    "knobChanged",
    "onScriptLoad",
    "onScriptSave",
    "onScriptClose",
    "updateUI",
    "autolabel",
    "beforeRender",
    "beforeFrameRender",
    "afterFrameRender",
    "afterRender",
)
_ROOT_KINDS = ("onScriptLoad", "onScriptSave", "onScriptClose")


@contextlib.contextmanager
def this_context(node: Any, knob: Any = None) -> Iterator[None]:
    stack = current().this_stack
    stack.append((node, knob))
    try:
        yield
    finally:
        stack.pop()


def _entry(call: Callable, args: Any, kwargs: Any, node: Any) -> tuple:
    if not callable(call):
        raise ValueError("call must be a callable")
    if type(args) is not tuple:
        args = (args,)
    return (call, args, dict(kwargs or {}), node)


def _same(a: tuple, b: tuple) -> bool:
    return a[0] == b[0] and a[1] == b[1] and a[2] == b[2] and a[3] is b[3]


def add(kind: str, call: Callable, args: Any, kwargs: Any, node_class: str, node: Any = None):
    check_main(f"nuke.add{kind[0].upper()}{kind[1:]}()")
    registry = current().callbacks.setdefault(kind, {})
    entries = registry.setdefault(node_class, [])
    entry = _entry(call, args, kwargs, node)
    if not any(_same(entry, e) for e in entries):
        entries.append(entry)


def remove(kind: str, call: Callable, args: Any, kwargs: Any, node_class: str, node: Any = None):
    check_main(f"nuke.remove{kind[0].upper()}{kind[1:]}()")
    entries = current().callbacks.get(kind, {}).get(node_class, [])
    entry = _entry(call, args, kwargs, node)
    entries[:] = [e for e in entries if not _same(entry, e)]


def class_of(node: Any) -> str:
    return node._class_name() if node is not None else "Root"


def run(kind: str, node: Any, knob: Any = None) -> None:
    """Run the ``kind`` callbacks for ``node`` with thisNode/thisKnob set."""
    registry = current().callbacks.get(kind, {})
    cls = class_of(node)
    entries = list(registry.get(cls, [])) + (list(registry.get("*", [])) if cls != "*" else [])
    with this_context(node, knob):
        for call, args, kwargs, only in entries:
            if only is not None and only is not node:
                continue
            try:
                call(*args, **kwargs)
            except Exception as exc:  # Nuke prints callback errors and carries on
                traceback.print_exc()
                record_error(exc)


def run_node_knob(node: Any, knob_name: str, knob: Any = None) -> None:
    """Run the Python code in a node's own ``onCreate``/``knobChanged``/... knob, if any."""
    code_knob = node._knobs.get(knob_name)
    code = code_knob.value() if code_knob is not None else ""
    if not code or not code.strip():
        return
    with this_context(node, knob):
        try:
            exec(compile(code, f"<{node.name()}.{knob_name}>", "exec"), current().namespace)
        except Exception as exc:
            traceback.print_exc()
            record_error(exc)


def fire_knob_changed(knob: Any) -> None:
    """knobChanged for ``knob``: the node's own ``knobChanged`` knob, then the registered
    callbacks, with thisNode/thisKnob set (what Nuke does after a user edit)."""
    node = knob.node()
    if node is None:
        return
    if hasattr(node, "_builtin"):
        run_node_knob(node, "knobChanged", knob)
    run("knobChanged", node, knob)


def default_class(kind: str) -> str:
    return "Root" if kind in _ROOT_KINDS else "*"
