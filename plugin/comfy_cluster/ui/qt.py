"""The one place that imports a Qt binding: PySide6 on Nuke 16+, PySide2 on Nuke 14/15.

Inside Nuke the binding is chosen by ``nuke.NUKE_VERSION_MAJOR`` and nothing else: a binding that
happens to be installed in the wrong interpreter can import "successfully" and crash later, so we
never fall back blindly (Foundry's Katana Qt6 guide says the same). ``QT_API`` is ignored there:
studios set it for qtpy (``QT_API=pyside2`` for Nuke 13-15 tools), and honouring it would load
PySide2 into Nuke 16 and lose the panel. Outside Nuke (tests, the CLI) whichever binding imports is
used, PySide6 first; ``QT_API=pyside2|pyside6`` forces one.

Everything else in ``comfy_cluster.ui`` imports Qt names from here::

    from comfy_cluster.ui.qt import QtCore, QtGui, QtWidgets, Signal, Slot

Importing this module never imports ``nuke`` unless it is already importable, and it has no
side effects beyond importing the binding.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from types import ModuleType
from typing import Optional

PYSIDE6 = "PySide6"
PYSIDE2 = "PySide2"
_BY_ENV = {"pyside6": PYSIDE6, "pyside2": PYSIDE2}


def candidate_bindings(
    nuke_major: Optional[int], environ: Optional[Mapping[str, str]] = None
) -> tuple[str, ...]:
    """The bindings to try, in order.

    Inside Nuke (``nuke_major`` not None) exactly one binding, the one that Nuke version ships,
    whatever ``QT_API`` says. Outside Nuke ``QT_API`` wins when set to a known value, else
    PySide6 is preferred, then PySide2. Pure function.
    """
    if nuke_major is not None:
        return (PYSIDE6,) if nuke_major >= 16 else (PYSIDE2,)
    env = os.environ if environ is None else environ
    forced = _BY_ENV.get(env.get("QT_API", "").strip().lower())
    if forced:
        return (forced,)
    return (PYSIDE6, PYSIDE2)


def _nuke_major() -> Optional[int]:
    """Nuke's major version, or None outside Nuke (no ``nuke`` module, or one without a version)."""
    try:
        import nuke
    except ImportError:
        return None
    major = getattr(nuke, "NUKE_VERSION_MAJOR", None)
    return int(major) if isinstance(major, int) else None


def _import_binding(names: tuple[str, ...]) -> tuple[str, ModuleType, ModuleType, ModuleType]:
    errors = []
    for name in names:
        try:
            core = importlib.import_module(f"{name}.QtCore")
            gui = importlib.import_module(f"{name}.QtGui")
            widgets = importlib.import_module(f"{name}.QtWidgets")
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
            continue
        return name, core, gui, widgets
    raise ImportError("no usable Qt binding (" + "; ".join(errors) + ")")


BINDING, QtCore, QtGui, QtWidgets = _import_binding(candidate_bindings(_nuke_major()))
Signal = QtCore.Signal
Slot = QtCore.Slot
#: The Qt library version the binding was built against, e.g. ``"6.8.1"``.
QT_VERSION: str = QtCore.qVersion()

__all__ = [
    "BINDING",
    "PYSIDE2",
    "PYSIDE6",
    "QT_VERSION",
    "QtCore",
    "QtGui",
    "QtWidgets",
    "Signal",
    "Slot",
    "candidate_bindings",
]
