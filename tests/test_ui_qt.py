"""ui/qt.py: PySide6 on Nuke 16+, PySide2 before; outside Nuke whichever imports."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from qt_support import require_nuke_binding

EXPECTED_BINDING = require_nuke_binding()

from comfy_cluster.ui import qt  # noqa: E402


@pytest.mark.parametrize(
    ("nuke_major", "env", "expected"),
    [
        (16, {}, ("PySide6",)),
        (17, {}, ("PySide6",)),
        (15, {}, ("PySide2",)),
        (14, {}, ("PySide2",)),
        (None, {}, ("PySide6", "PySide2")),
        (None, {"QT_API": "pyside2"}, ("PySide2",)),
        (16, {"QT_API": "PySide2"}, ("PySide6",)),  # inside Nuke the version decides
        (14, {"QT_API": "pyqt5"}, ("PySide2",)),  # unknown values are ignored
        (None, {"QT_API": " "}, ("PySide6", "PySide2")),
    ],
)
def test_candidate_bindings(nuke_major, env, expected):
    assert qt.candidate_bindings(nuke_major, env) == expected


def test_exports():
    assert qt.BINDING == EXPECTED_BINDING
    assert qt.QtCore.__name__ == f"{EXPECTED_BINDING}.QtCore"
    assert qt.QtWidgets.__name__ == f"{EXPECTED_BINDING}.QtWidgets"
    assert qt.QtGui.__name__ == f"{EXPECTED_BINDING}.QtGui"
    assert qt.Signal is qt.QtCore.Signal and qt.Slot is qt.QtCore.Slot
    assert qt.QT_VERSION.split(".")[0] == ("6" if EXPECTED_BINDING == "PySide6" else "5")


def _import_in_subprocess(nuke_source: str | None, extra_env: dict | None = None):
    """Import comfy_cluster.ui.qt in a fresh interpreter, with a stand-in ``nuke`` if given."""
    env = {k: v for k, v in os.environ.items() if k != "QT_API"}
    env.update(extra_env or {})
    paths = [p for p in sys.path if p]
    code = "import sys\n"
    if nuke_source is not None:
        code += "import types\nnuke = types.ModuleType('nuke')\n" + nuke_source
        code += "\nsys.modules['nuke'] = nuke\n"
    else:
        code += "sys.modules['nuke'] = None  # 'import nuke' raises ImportError\n"
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
    env["PYTHONPATH"] = os.pathsep.join(paths)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_outside_nuke_whichever_imports():
    assert _import_in_subprocess(None) == EXPECTED_BINDING


def test_inside_nuke_the_version_decides():
    major = 16 if EXPECTED_BINDING == "PySide6" else 15
    assert _import_in_subprocess(f"nuke.NUKE_VERSION_MAJOR = {major}") == EXPECTED_BINDING


def test_inside_nuke_a_missing_binding_is_not_replaced_by_another():
    wrong = 15 if EXPECTED_BINDING == "PySide6" else 16
    missing = "PySide2" if EXPECTED_BINDING == "PySide6" else "PySide6"
    try:
        __import__(f"{missing}.QtWidgets")
    except ImportError:
        pass
    else:
        pytest.skip(f"{missing} is installed too; cannot show the no-fallback rule here")
    result = _import_in_subprocess(f"nuke.NUKE_VERSION_MAJOR = {wrong}")
    assert result.startswith("ImportError") and missing in result
