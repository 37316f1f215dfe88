"""init.py and menu.py, each run in a fresh interpreter with the fake nuke (as Nuke would run them).

A subprocess per case keeps the check honest: "no Qt imported" means nothing in that process
imported it, whatever other tests did in this one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
FAKES = ROOT / "tests" / "fakes"

_PRELUDE = """
import json, os, runpy, sys
sys.path.insert(0, {fakes!r})
import nuke
nuke._fake.reset()
nuke._fake.set_gui({gui})
def qt_modules():
    return sorted(m for m in sys.modules if m.split(".")[0] in
                  ("PySide2", "PySide6", "PyQt5", "PyQt6", "shiboken2", "shiboken6"))
def comfy_modules():
    return sorted(m for m in sys.modules if m.startswith("comfy_cluster"))
runpy.run_path({init!r}, run_name="init")
result = {{"after_init_qt": qt_modules(), "after_init_comfy": comfy_modules(),
          "sys_path_has_plugin": {plugin!r} in sys.path,
          "plugin_path": [os.path.basename(p) for p in nuke.pluginPath()]}}
"""


def _run(gui: bool, body: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    code = _PRELUDE.format(
        fakes=str(FAKES),
        gui=gui,
        init=str(ROOT / "init.py"),
        plugin=str(ROOT / "plugin"),
    )
    code += textwrap.dedent(body) + "\nprint('RESULT' + json.dumps(result))\n"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(ROOT),
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen", **(env or {})},
    )
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


@pytest.mark.parametrize("gui", [True, False])
def test_init_only_sets_paths(gui: bool) -> None:
    result = _run(gui, "")
    assert result["sys_path_has_plugin"]
    assert result["plugin_path"][:2] == ["icons", "gizmos"]
    assert result["after_init_qt"] == []
    assert result["after_init_comfy"] == [], "init.py imports nothing of the plugin"


def test_terminal_session_gets_callbacks_from_the_gizmo_without_qt() -> None:
    result = _run(
        False,
        """
        node = nuke.createNode("ComfyClusterRender")
        from comfy_cluster.host.install import current_session
        session = current_session()
        result["installed"] = session is not None
        result["callbacks"] = sorted(remove for remove, _, _ in session.callbacks)
        result["qt"] = qt_modules()
        result["ui"] = [m for m in comfy_modules() if m.startswith("comfy_cluster.ui")]
        """,
    )
    assert result["installed"]
    assert result["callbacks"] == ["removeKnobChanged", "removeOnCreate", "removeOnDestroy"]
    assert result["qt"] == []
    assert result["ui"] == []


def test_menu_in_terminal_mode_does_nothing() -> None:
    result = _run(
        False,
        f"""
        runpy.run_path(os.path.join({str(ROOT)!r}, "menu.py"), run_name="menu")
        result["comfy"] = comfy_modules()
        result["tprints"] = nuke._fake.tprints()
        """,
    )
    assert result["comfy"] == []
    assert result["tprints"] == []


def test_menu_installs_panel_and_node_entry() -> None:
    pytest.importorskip("PySide6" if sys.version_info >= (3, 11) else "PySide2")
    result = _run(
        True,
        f"""
        # Nuke 16 ships PySide6 (Python 3.11); 14/15 ship PySide2.
        nuke._fake.set_version(16 if sys.version_info >= (3, 11) else 15)
        from comfy_cluster.ui.qt import QtWidgets
        app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
        runpy.run_path(os.path.join({str(ROOT)!r}, "menu.py"), run_name="menu")
        result["node_entry"] = nuke.menu("Nodes").findItem(
            "ComfyUI Cluster/ComfyClusterRender") is not None
        result["pane_entry"] = nuke.menu("Pane").findItem("ComfyUI Cluster") is not None
        result["tprints"] = nuke._fake.tprints()
        from comfy_cluster.ui.install import uninstall_gui
        from comfy_cluster.host.install import uninstall_host
        uninstall_gui()
        uninstall_host()
        result["after"] = [i.name() for i in nuke.menu("Nodes").items()]
        """,
    )
    assert result["tprints"] == []
    assert result["node_entry"] and result["pane_entry"]
    assert "ComfyUI Cluster" not in result["after"]


def test_menu_reports_a_broken_panel_and_still_installs_the_node() -> None:
    result = _run(
        True,
        f"""
        sys.modules["comfy_cluster.ui.install"] = None  # the panel cannot be imported
        runpy.run_path(os.path.join({str(ROOT)!r}, "menu.py"), run_name="menu")
        result["node_entry"] = nuke.menu("Nodes").findItem(
            "ComfyUI Cluster/ComfyClusterRender") is not None
        result["tprints"] = nuke._fake.tprints()
        """,
    )
    assert result["node_entry"]
    assert len(result["tprints"]) == 1
    assert "server panel install failed" in result["tprints"][0]
