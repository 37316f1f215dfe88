"""A fake of Foundry's ``nukescripts`` package: panels and the main-thread helpers."""

from __future__ import annotations

from . import panels, utils
from .panels import (
    PythonPanel,
    WidgetKnob,
    registerPanel,
    registerWidgetAsPanel,
    restorePanel,
    unregisterPanel,
)
from .utils import executeInMainThread, executeInMainThreadWithResult

__all__ = [
    "PythonPanel",
    "WidgetKnob",
    "executeInMainThread",
    "executeInMainThreadWithResult",
    "panels",
    "registerPanel",
    "registerWidgetAsPanel",
    "restorePanel",
    "unregisterPanel",
    "utils",
]
