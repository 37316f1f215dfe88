"""The node's server menu (``cc_server``) and the saved choice behind it (``cc_server_choice``).

The menu's items are rebuilt from the live server list, so the item the user picked may vanish;
the choice is therefore also kept in a hidden text knob. A choice that is no longer configured
stays visible as ``"<name> (missing)"`` rather than silently becoming another server. Main thread.

``cc_server`` itself is ``DO_NOT_WRITE`` in the gizmo: Nuke would save ``cc_server render1`` and
apply it at load to a menu that holds only ``Auto`` until ``onCreate`` rebuilds it (a load
warning, and the item lost). The hidden choice knob is what persists.

The choice follows the menu through knobChanged (:func:`remember_choice`). A Nuke whose
knobChanged fires only for user edits does not call it when a script does
``node["cc_server"].setValue("render2")``, so the Render button first adopts a menu item the saved
choice does not stand for (:func:`adopt_menu_choice`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from comfy_cluster.host import knobs as K

__all__ = [
    "adopt_menu_choice",
    "choice_from_item",
    "refresh_server_knob",
    "remember_choice",
    "server_menu",
]


def server_menu(choice: str, names: Sequence[str]) -> tuple[list[str], str]:
    """Menu items and the item to select for a saved ``choice`` and the live server ``names``."""
    items = [K.AUTO, *names]
    choice = choice or K.AUTO
    if choice in items:
        return items, choice
    missing = f"{choice}{K.MISSING_SUFFIX}"
    return [*items, missing], missing


def choice_from_item(item: str) -> str:
    """The server name an enumeration item stands for (``"x (missing)"`` -> ``"x"``)."""
    if item.endswith(K.MISSING_SUFFIX):
        return item[: -len(K.MISSING_SUFFIX)]
    return item or K.AUTO


def saved_choice(node: Any) -> str:
    """The server the node is pinned to, or ``Auto``."""
    return node.knob(K.SERVER_CHOICE).value() or K.AUTO


def refresh_server_knob(node: Any, names: Sequence[str]) -> None:
    """Rebuild ``cc_server``'s items from ``names``, keep the saved choice. Idempotent: a knob
    that already shows the right items and selection is not touched."""
    knob = node.knob(K.SERVER)
    choice_knob = node.knob(K.SERVER_CHOICE)
    if knob is None or choice_knob is None:
        return
    items, selected = server_menu(choice_knob.value() or K.AUTO, names)
    if list(knob.values()) != items:
        knob.setValues(items)
    if knob.value() != selected:
        knob.setValue(selected)


def adopt_menu_choice(node: Any) -> None:
    """The menu shows an item the saved choice does not stand for (set without knobChanged):
    the menu is the newer truth, save its server. Call only after ``onCreate`` has rebuilt the
    menu (at Render), never at load, when the menu still holds the gizmo's ``Auto``."""
    knob = node.knob(K.SERVER)
    if knob is not None and knob.value() in knob.values():
        remember_choice(node, knob)


def remember_choice(node: Any, menu_knob: Any) -> None:
    """The user picked a menu item: save the server it stands for."""
    choice = choice_from_item(menu_knob.value())
    choice_knob = node.knob(K.SERVER_CHOICE)
    if choice_knob is not None and choice_knob.value() != choice:
        choice_knob.setValue(choice)
