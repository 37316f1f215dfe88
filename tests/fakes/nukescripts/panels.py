"""``nukescripts.panels``: PythonPanel, the panel registry and registerWidgetAsPanel.

Behaviour follows what Foundry's ``nukescripts/panels.py`` does (PythonPanel, addToPane, the
registry of panel ids), written from its documented behaviour, not copied. The registry lives in
the fake nuke session, so ``nuke._fake.reset()`` clears it.
"""

from __future__ import annotations

from typing import Any, Callable

import nuke
from nuke import _state
from nuke._state import current, guarded


@guarded()
class PythonPanel:
    """A knob panel. ``showModalDialog()`` returns the next ``nuke._fake.queue_modal_result``;
    ``addToPane(pane=None)`` needs a pane or a ``thisPane()`` context (Pane menu, restore)."""

    def __init__(self, title: str = "", id: str = "", scrollable: bool = True) -> None:
        self._title = title
        self._id = id
        self._scrollable = scrollable
        self._node = nuke.PanelNode()
        self._open_tab_groups = 0
        self._shown = False
        self._modal = False
        self._pane: Any = None
        self._callback_installed = False
        self._created = False

    # -- knobs ----------------------------------------------------------------------------
    def addKnob(self, knob: nuke.Knob) -> None:
        if isinstance(knob, nuke.Tab_Knob) and self._open_tab_groups == 0:
            self._node.addKnob(nuke.BeginTabGroup_Knob())
            self._open_tab_groups += 1
        self._node.addKnob(knob)
        knob.setFlag(nuke.NO_UNDO | nuke.NO_ANIMATION)

    def removeKnob(self, knob: nuke.Knob) -> None:
        self._node.removeKnob(knob)

    def knobs(self) -> dict:
        return self._node.knobs()

    def writeKnobs(self, flags: int = 0) -> str:
        return self._node.writeKnobs(flags)

    def readKnobs(self, s: str) -> None:
        self._node.readKnobs(s)

    # -- callbacks ------------------------------------------------------------------------
    def knobChanged(self, knob: nuke.Knob) -> None:
        """Override hook: called when a knob on this panel changes."""

    def knobChangedCallback(self) -> None:
        knob = nuke.thisKnob()
        self.knobChanged(knob)
        if self._modal and knob is not None and knob.name() in ("OK", "Cancel"):
            self.finishModalDialog(knob.name() == "OK")

    def addCallback(self) -> None:
        if not self._callback_installed:
            nuke.addKnobChanged(self.knobChangedCallback, nodeClass="PanelNode", node=self._node)
            self._callback_installed = True

    def removeCallback(self) -> None:
        if self._callback_installed:
            nuke.removeKnobChanged(self.knobChangedCallback, nodeClass="PanelNode", node=self._node)
            self._callback_installed = False

    # -- showing --------------------------------------------------------------------------
    def create(self) -> None:
        while self._open_tab_groups:
            self._node.addKnob(nuke.EndTabGroup_Knob())
            self._open_tab_groups -= 1
        if not self._created:
            self._node.createWidget()
            self._created = True

    def show(self) -> bool:
        self.addCallback()
        self.create()
        self._shown = True
        return True

    def hide(self) -> None:
        self._shown = False

    def showModal(self) -> Any:
        answers = current().modal_answers
        if not answers:
            raise RuntimeError(
                f"fake nuke: modal panel {self._title!r} shown but the test scripted no result "
                "(use nuke._fake.queue_modal_result(True/False/None))"
            )
        self.addCallback()
        self.create()
        self._modal = True
        try:
            return answers.popleft()
        finally:
            self._modal = False
            self.removeCallback()

    def showModalDialog(self, defaultKnobText: str = "") -> Any:
        names = self._node.knobs()
        if "OK" not in names:
            self.addKnob(nuke.Script_Knob("OK"))
        if "Cancel" not in names:
            self.addKnob(nuke.Script_Knob("Cancel"))
        return self.showModal()

    def finishModalDialog(self, result: bool) -> None:
        self._modal = False

    def addToPane(self, pane: Any = None) -> PythonPanel:
        target = pane or nuke.thisPane()
        if target is None:
            raise RuntimeError(
                "addToPane() without a pane outside a Pane-menu command or layout restore; "
                "pass nuke.getPaneFor('Properties.1')"
            )
        self.create()
        target.panels.append(self)
        self._pane = target
        self.addCallback()
        self._shown = True
        return self

    def setMinimumSize(self, w: int, h: int) -> None:
        self._min_size = (w, h)

    def setMaximumSize(self, w: int, h: int) -> None:
        self._max_size = (w, h)


class WidgetKnob:
    """What a registerWidgetAsPanel PyCustom_Knob evaluates to: ``makeUI()`` calls the widget
    class with no arguments."""

    def __init__(self, widget: Callable[[], Any]) -> None:
        self.widgetClass = widget
        self.widget: Any = None

    def makeUI(self) -> Any:
        self.widget = self.widgetClass()
        return self.widget


def registerPanel(id: str, command: Callable[[], Any]) -> None:
    _state.check_main("nukescripts.registerPanel()")
    current().panels[id] = command


def unregisterPanel(id: str, command: Callable[[], Any] | None = None) -> None:
    _state.check_main("nukescripts.unregisterPanel()")
    current().panels.pop(id, None)


def restorePanel(id: str) -> Any:
    """What Nuke does for each panel id of a saved layout: call the registered factory with a
    pane to dock into; prints a message when nothing is registered."""
    _state.check_main("nukescripts.restorePanel()")
    session = current()
    factory = session.panels.get(id)
    if factory is None:
        print(f"Can't restore panel {id!r} because it hasn't been registered")
        session.logs.append(("warning", f"Can't restore panel {id!r}: not registered"))
        return None
    saved = session.this_pane
    from nuke._menus import _Dock

    session.this_pane = _Dock(f"restore:{id}")
    session.panes[session.this_pane.name] = session.this_pane
    try:
        return factory()
    finally:
        session.this_pane = saved


def registerWidgetAsPanel(widget: str, name: str, id: str, create: bool = False) -> Any:
    """Register a Qt widget class (given as an expression *string*, evaluated later in the
    ``__main__``-like namespace) as a dockable panel; adds a Pane-menu command."""
    if not isinstance(widget, str):
        raise TypeError("registerWidgetAsPanel: widget must be a string naming the class")

    class _WidgetPanel(PythonPanel):
        def __init__(self) -> None:
            super().__init__(name, id)
            expr = "__import__('nukescripts').panels.WidgetKnob(" + widget + ")"
            self.customKnob = nuke.PyCustom_Knob(name, "", expr)
            self.addKnob(self.customKnob)

    def add_panel() -> Any:
        return _WidgetPanel().addToPane()

    nuke.menu("Pane").addCommand(name, add_panel)
    registerPanel(id, add_panel)
    return _WidgetPanel() if create else None
