"""Issue 12, point 8: inside Nuke the Nuke version picks the Qt binding, whatever ``QT_API`` says.

Studios set ``QT_API=pyside2`` for qtpy-based tools; in Nuke 16 that must not load PySide2 (or
fail to) and lose the panel. Outside Nuke ``QT_API`` still chooses.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from qt_support import require_nuke_binding

EXPECTED_BINDING = require_nuke_binding()

from comfy_cluster.ui import qt  # noqa: E402

OTHER = {"PySide6": "pyside2", "PySide2": "pyside6"}


@pytest.mark.parametrize(
    ("major", "qt_api", "expected"),
    [
        (16, "pyside2", ("PySide6",)),
        (17, "PySide2", ("PySide6",)),
        (15, "pyside6", ("PySide2",)),
        (14, "pyside6", ("PySide2",)),
        (None, "pyside2", ("PySide2",)),  # outside Nuke it still forces one
        (None, "pyside6", ("PySide6",)),
    ],
)
def test_qt_api_is_ignored_inside_nuke(major, qt_api, expected):
    assert qt.candidate_bindings(major, {"QT_API": qt_api}) == expected


def test_a_studio_qt_api_does_not_cost_the_panel_inside_nuke():
    """A fresh interpreter as Nuke (the version that ships this Python's binding) with
    ``QT_API`` naming the other binding still gets Nuke's binding."""
    major = 16 if EXPECTED_BINDING == "PySide6" else 15
    code = "import sys, types\n"
    code += f"nuke = types.ModuleType('nuke')\nnuke.NUKE_VERSION_MAJOR = {major}\n"
    code += "sys.modules['nuke'] = nuke\n"
    code += textwrap.dedent(
        """
        try:
            from comfy_cluster.ui import qt
        except ImportError as exc:
            print('ImportError', exc)
        else:
            print(qt.BINDING)
        """
    )
    env = dict(os.environ)
    env["QT_API"] = OTHER[EXPECTED_BINDING]
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == EXPECTED_BINDING
