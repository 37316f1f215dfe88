"""Menus, toolbars, panes and prompts (GUI surfaces; main thread only)."""

from __future__ import annotations

import sys
from typing import Any, Callable

from ._state import current, guarded, gui, main_only

MENU_NAMES = ("Nuke", "Pane", "Nodes", "Properties", "Animation", "Viewer", "Node Graph", "Axis")
BUILTIN_PANES = ("Properties.1", "DAG.1", "DopeSheet.1", "Viewer.1", "Toolbar.1")


@guarded()
class MenuItem:
    """A command in a menu. ``invoke()`` "clicks" it: a callable is called, a string is run as
    Python in the session's ``__main__``-like namespace."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("menu items are made by Menu.addCommand()")

    def _setup(self, name: str, command: Any, shortcut: str, icon: str, tooltip: str) -> None:
        self._name, self._command = name, command
        self._shortcut, self._icon, self._tooltip = shortcut or "", icon or "", tooltip or ""
        self._enabled = True
        self._visible = True
        self._pane = False

    def name(self) -> str:
        return self._name

    def script(self) -> str:
        return self._command if isinstance(self._command, str) else ""

    def setScript(self, script: Any) -> None:
        self._command = script

    def shortcut(self) -> str:
        return self._shortcut

    def setShortcut(self, keySequence: str) -> None:
        self._shortcut = keySequence

    def icon(self) -> str:
        return self._icon

    def setIcon(self, icon: str) -> None:
        self._icon = icon

    def setEnabled(self, enabled: bool, recursive: bool = False) -> None:
        self._enabled = bool(enabled)

    def setVisible(self, visible: bool) -> None:
        self._visible = bool(visible)

    def action(self) -> None:
        return None

    def invoke(self) -> None:
        command = self._command
        if command is None:
            return
        session = current()
        saved = session.this_pane
        if self._pane:  # Nuke gives Pane-menu commands a pane to dock into
            session.this_pane = _Dock(f"pane:{self._name}")
            session.panes[session.this_pane.name] = session.this_pane
        try:
            if callable(command):
                command()
            else:
                code = compile(str(command), f"<menu {self._name}>", "exec")
                exec(code, session.namespace)
        finally:
            session.this_pane = saved


@guarded()
class _MenuTree:
    """The item tree shared by Menu and ToolBar: ``a/b/c`` paths create sub-menus."""

    def _setup_menu(self, name: str, icon: str = "") -> None:
        self._name, self._command, self._icon = name, None, icon
        self._shortcut, self._tooltip = "", ""
        self._enabled = self._visible = True
        self._pane = False  # items of the Pane menu run with a thisPane() context
        self._items: list[MenuItem] = []

    def _find(self, name: str) -> MenuItem | None:
        for item in self._items:
            if item._name == name:
                return item
        return None

    def _submenu(self, path: list[str], icon: str = "") -> Any:
        menu: Any = self
        for part in path:
            found = menu._find(part)
            if not isinstance(found, Menu):
                found = object.__new__(Menu)
                found._setup_menu(part, icon)
                found._pane = menu._pane
                menu._items.append(found)
            menu = found
        return menu

    def name(self) -> str:
        return self._name

    def addMenu(self, name: str, icon: str = "", tooltip: str = "", index: int = -1) -> Any:
        menu = self._submenu([p for p in name.split("/") if p], icon)
        if icon:
            menu._icon = icon
        return menu

    def addCommand(
        self,
        name: str,
        command: Callable | str | None = None,
        shortcut: str = "",
        icon: str = "",
        tooltip: str = "",
        index: int = -1,
        readonly: bool = False,
        shortcutContext: int = 0,
        tag: Any = None,
        tagTarget: Any = None,
    ) -> MenuItem:
        *path, leaf = [p for p in name.split("/") if p]
        menu = self._submenu(path)
        item = object.__new__(MenuItem)
        item._setup(leaf, command, shortcut, icon, tooltip)
        item._pane = menu._pane
        existing = menu._find(leaf)
        if existing is not None:
            menu._items[menu._items.index(existing)] = item
        elif 0 <= index < len(menu._items):
            menu._items.insert(index, item)
        else:
            menu._items.append(item)
        return item

    def addSeparator(self, *args: Any, **kwargs: Any) -> None:
        return None

    def findItem(self, name: str) -> Any:
        item: Any = self
        for part in [p for p in name.split("/") if p]:
            if not isinstance(item, _MenuTree):
                return None
            item = item._find(part)
        return None if item is self else item

    def menu(self, name: str) -> Any:
        found = self.findItem(name)
        return found if isinstance(found, Menu) else None

    def items(self) -> list[MenuItem]:
        return list(self._items)

    def removeItem(self, name: str) -> None:
        *path, leaf = [p for p in name.split("/") if p]
        parent = self.findItem("/".join(path)) if path else self
        if isinstance(parent, _MenuTree):
            parent._items = [i for i in parent._items if i._name != leaf]

    def clearMenu(self) -> None:
        self._items = []

    def updateMenuItems(self) -> None:
        return None


@guarded()
class Menu(_MenuTree, MenuItem):
    """A menu (also a MenuItem)."""


@guarded()
class ToolBar(_MenuTree):
    """``nuke.toolbar('Nodes')``: the same item tree as ``nuke.menu('Nodes')``."""


@main_only
def menu(name: str) -> Menu | None:
    if not gui():
        raise RuntimeError("nuke.menu() is not available in terminal mode (nuke.GUI is False)")
    if name not in MENU_NAMES:
        return None
    menus = current().menus
    if name not in menus:
        m = object.__new__(ToolBar if name == "Nodes" else Menu)
        m._setup_menu(name)
        m._pane = name == "Pane"
        menus[name] = m
    return menus[name]


@main_only
def toolbar(name: str, create: bool = True) -> ToolBar | None:
    if not gui():
        raise RuntimeError("nuke.toolbar() is not available in terminal mode (nuke.GUI is False)")
    menus = current().menus
    if name not in menus:
        if not create:
            return None
        tb = object.__new__(ToolBar)
        tb._setup_menu(name)
        menus[name] = tb
    return menus[name]


class _Dock:
    """A pane that panels dock into (what ``getPaneFor``/``thisPane`` return)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.panels: list[Any] = []


@main_only
def getPaneFor(panelName: str) -> Any:
    if not gui():
        return None
    panes = current().panes
    if panelName in BUILTIN_PANES:
        return panes.setdefault(panelName, _Dock(panelName))
    for dock in panes.values():
        if any(getattr(p, "_id", None) == panelName for p in dock.panels):
            return dock
    return None


@main_only
def thisPane() -> Any:
    return current().this_pane


def _answer(kind: str, prompt: str) -> Any:
    session = current()
    session.messages.append(f"{kind}: {prompt}")
    if not session.answers:
        raise RuntimeError(
            f"fake nuke: nuke.{kind}({prompt!r}) but the test scripted no answer "
            "(use nuke._fake.queue_answer(value))"
        )
    return session.answers.popleft()


@main_only
def message(prompt: str) -> None:
    current().messages.append(str(prompt))


@main_only
def alert(prompt: str) -> None:
    current().messages.append(str(prompt))


@main_only
def ask(prompt: str) -> bool:
    return bool(_answer("ask", prompt))


@main_only
def askWithCancel(prompt: str) -> Any:
    return _answer("askWithCancel", prompt)


@main_only
def getInput(prompt: str, default: str = "") -> Any:
    return _answer("getInput", prompt)


@main_only
def choice(title: str, prompt: str, options: Any, default: int = 0) -> Any:
    return _answer("choice", prompt)


@main_only
def getFramesAndViews(label: str, default: Any = None, maxviews: int = 0) -> Any:
    return _answer("getFramesAndViews", label)


def tprint(*args: Any, sep: str = " ", end: str = "\n", file: Any = None) -> None:
    """Print to the terminal (any thread) and record the line for tests."""
    text = sep.join(str(a) for a in args)
    current().tprints.append(text)
    print(text, end=end, file=file or sys.stdout)


def _log(level: str) -> Callable[[str], None]:
    def log(message: str) -> None:
        current().logs.append((level, str(message)))

    log.__name__ = level
    return log


debug = _log("debug")
warning = _log("warning")
error = _log("error")
critical = _log("critical")
