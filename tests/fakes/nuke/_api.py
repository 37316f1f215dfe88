"""Script files, clipboard, plugin path and callback registration functions."""

from __future__ import annotations

import os
import sys
from typing import Any, Callable

from . import _callbacks, _nodes, _script
from ._state import current, main_only

CLIPBOARD = "%clipboard%"


# -- scripts -----------------------------------------------------------------------------------
@main_only
def scriptName() -> str:
    name = current().script_name
    if not name:
        raise RuntimeError("no script name (the script is untitled)")
    return name


@main_only
def scriptSaveAs(filename: str | None = None, overwrite: int | bool = -1) -> None:
    """Save the script (onScriptSave runs first); refuses to overwrite when ``overwrite`` is 0."""
    if not filename:
        raise RuntimeError("scriptSaveAs: no file name (the fake shows no file dialog)")
    if os.path.exists(filename) and overwrite in (0, False):
        raise RuntimeError(f"{filename} already exists")
    _script.run_script_callbacks("onScriptSave")
    with open(filename, "w", encoding="utf-8") as fh:
        fh.write(_script.script_text())
    current().script_name = filename
    current().modified = False


@main_only
def scriptSave(filename: str | None = None) -> bool:
    target = filename or current().script_name
    if not target:
        raise RuntimeError("scriptSave: the script is untitled; use scriptSaveAs")
    scriptSaveAs(target, overwrite=1)
    return True


@main_only
def scriptClear(*args: Any, **kwargs: Any) -> None:
    """Close the script: onScriptClose, all nodes removed, root knobs back to defaults."""
    session = current()
    _script.run_script_callbacks("onScriptClose")
    root = session.root
    for node in list(root._children):
        _nodes._detach(node)
    fresh = _nodes.make_root()
    root._knobs = fresh._knobs
    for knob in root._knobs.values():
        knob._node = root
    session.group_stack.clear()
    session.script_name = ""
    session.modified = False


@main_only
def scriptClose(*args: Any, **kwargs: Any) -> None:
    scriptClear()


@main_only
def scriptOpen(filename: str | None = None) -> None:
    """Load a script into the (cleared) session: onCreate runs for every node, then
    onScriptLoad."""
    if not filename:
        raise RuntimeError("scriptOpen: no file name (the fake shows no file dialog)")
    with open(filename, encoding="utf-8") as fh:
        text = fh.read()
    scriptClear()
    _script.load_text(text, current().root, filename)
    current().script_name = filename
    _script.run_script_callbacks("onScriptLoad")
    current().modified = False


@main_only
def scriptReadFile(s: str) -> None:
    """Insert the nodes of a script file into the current group (onCreate runs for each)."""
    with open(s, encoding="utf-8") as fh:
        _script.load_text(fh.read(), _nodes.context_group(), s)


@main_only
def scriptSource(s: str) -> None:
    scriptReadFile(s)


@main_only
def modified(state: bool | None = None) -> bool:
    if state is not None:
        current().modified = bool(state)
    return current().modified


@main_only
def nodeCopy(s: str) -> None:
    """Copy the selected nodes to a file, or to the fake clipboard with ``'%clipboard%'``."""
    text = _script.write_nodes(_nodes.selectedNodes())
    if s == CLIPBOARD:
        current().clipboard = text
    else:
        with open(s, "w", encoding="utf-8") as fh:
            fh.write(text)


@main_only
def nodePaste(s: str) -> Any:
    """Paste nodes (onCreate runs for each, like Nuke); the pasted nodes end up selected."""
    if s == CLIPBOARD:
        text = getattr(current(), "clipboard", "")
    else:
        with open(s, encoding="utf-8") as fh:
            text = fh.read()
    group = _nodes.context_group()
    for n in group._children:
        n._selected = False
    created = _script.load_text(text, group, s)
    top = [n for n in created if n._parent is group]
    for n in top:
        n._selected = True
    return top[-1] if top else None


# -- knob defaults -----------------------------------------------------------------------------
@main_only
def knobDefault(classknob: str, value: str | None = None) -> str | None:
    """Get (one argument) or set the value every new ``Class.knob`` starts with."""
    if value is None:
        return current().knob_defaults.get(classknob)
    if not isinstance(value, str):
        raise TypeError("knobDefault value must be a str (TCL text)")
    current().knob_defaults[classknob] = value
    return None


# -- plugin path -------------------------------------------------------------------------------
def _plugin_paths(args: Any) -> list[str]:
    items = [args] if isinstance(args, str) else list(args)
    return [os.path.normpath(str(p)).rstrip("/\\") or "/" for p in items]


def pluginAddPath(args: Any, addToSysPath: bool = True) -> None:
    """Prepend to the plugin path (moving an existing entry to the front); optionally sys.path."""
    session = current()
    for path in reversed(_plugin_paths(args)):
        if path in session.plugin_path:
            session.plugin_path.remove(path)
        session.plugin_path.insert(0, path)
        _add_sys_path(path, addToSysPath)


def pluginAppendPath(args: Any, addToSysPath: bool = True) -> None:
    session = current()
    for path in _plugin_paths(args):
        if path not in session.plugin_path:
            session.plugin_path.append(path)
        _add_sys_path(path, addToSysPath)


def _add_sys_path(path: str, wanted: bool) -> None:
    if wanted and path not in sys.path:
        sys.path.append(path)
        current().sys_path_added.append(path)


def pluginPath() -> list[str]:
    return list(current().plugin_path)


# -- callbacks ---------------------------------------------------------------------------------
def _pair(kind: str) -> tuple[Callable, Callable]:
    default = _callbacks.default_class(kind)

    def add(call: Callable, args: Any = (), kwargs: Any = None, nodeClass: str = default) -> None:
        _callbacks.add(kind, call, args, kwargs, nodeClass)

    def remove(call: Callable, args: Any = (), kwargs: Any = None, nodeClass: str = default):
        _callbacks.remove(kind, call, args, kwargs, nodeClass)

    return add, remove


addOnCreate, removeOnCreate = _pair("onCreate")
addOnUserCreate, removeOnUserCreate = _pair("onUserCreate")
addOnDestroy, removeOnDestroy = _pair("onDestroy")
addOnScriptLoad, removeOnScriptLoad = _pair("onScriptLoad")
addOnScriptSave, removeOnScriptSave = _pair("onScriptSave")
addOnScriptClose, removeOnScriptClose = _pair("onScriptClose")
addUpdateUI, removeUpdateUI = _pair("updateUI")
addAutolabel, removeAutolabel = _pair("autolabel")
addBeforeRender, removeBeforeRender = _pair("beforeRender")
addBeforeFrameRender, removeBeforeFrameRender = _pair("beforeFrameRender")
addAfterFrameRender, removeAfterFrameRender = _pair("afterFrameRender")
addAfterRender, removeAfterRender = _pair("afterRender")


def addKnobChanged(
    call: Callable, args: Any = (), kwargs: Any = None, nodeClass: str = "*", node: Any = None
) -> None:
    _callbacks.add("knobChanged", call, args, kwargs, nodeClass, node)


def removeKnobChanged(
    call: Callable, args: Any = (), kwargs: Any = None, nodeClass: str = "*", node: Any = None
) -> None:
    _callbacks.remove("knobChanged", call, args, kwargs, nodeClass, node)
