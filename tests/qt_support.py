"""Qt set-up shared by the ui tests: offscreen, and the binding the matching Nuke ships.

Nuke 16 ships PySide6 on Python 3.11; Nuke 14 and 15 ship PySide2 on 3.9 and 3.10. Call
:func:`require_nuke_binding` at the top of a ui test module, before importing Qt.
"""

from __future__ import annotations

import os
import sys

import pytest

EXPECTED_BINDING = "PySide6" if sys.version_info >= (3, 11) else "PySide2"


def require_nuke_binding(*, needs_pytest_qt: bool = False) -> str:
    """Pin ``QT_API`` to this Python's Nuke binding and skip the module only if that binding (or
    pytest-qt, when asked) is missing; anything else fails loudly. Returns the binding's name."""
    if not os.environ.get("QT_QPA_PLATFORM"):  # unset or empty: no display here
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    os.environ.setdefault("QT_API", EXPECTED_BINDING.lower())
    try:
        __import__(f"{EXPECTED_BINDING}.QtWidgets")
    except ImportError as exc:
        version = f"{sys.version_info[0]}.{sys.version_info[1]}"
        pytest.skip(
            f"{EXPECTED_BINDING} (Nuke's Qt for Python {version}) is not importable: {exc}",
            allow_module_level=True,
        )
    if needs_pytest_qt:
        pytest.importorskip(
            "pytestqt", reason="pytest-qt is not installed (pip install -e '.[test]')"
        )
    return EXPECTED_BINDING
