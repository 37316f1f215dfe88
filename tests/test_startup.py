"""init.py and menu.py, each run in a fresh interpreter with the fake nuke (as Nuke would run them).

A subprocess per case keeps the check honest: "no Qt imported" means nothing in that process
imported it, whatever other tests did in this one. The dependency cases run the interpreter with
``-S`` (no site-packages), so the only copies of requests & co. are the ones the case lays out.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Sequence
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
path_before = list(sys.path)
def qt_modules():
    return sorted(m for m in sys.modules if m.split(".")[0] in
                  ("PySide2", "PySide6", "PyQt5", "PyQt6", "shiboken2", "shiboken6"))
def comfy_modules():
    return sorted(m for m in sys.modules if m.startswith("comfy_cluster"))
runpy.run_path({init!r}, run_name="init")
result = {{"after_init_qt": qt_modules(), "after_init_comfy": comfy_modules(),
          "sys_path_has_plugin": {plugin!r} in sys.path,
          "plugin_path": [os.path.basename(p) for p in nuke.pluginPath()],
          "path_before": path_before, "path_after": list(sys.path),
          "deps_imported": [m for m in ("requests", "websocket", "tenacity") if m in sys.modules],
          "init_tprints": nuke._fake.tprints()}}
"""


def _run(
    gui: bool,
    body: str,
    env: dict[str, str] | None = None,
    checkout: Path = ROOT,
    flags: Sequence[str] = (),
) -> dict[str, Any]:
    """Run ``checkout``'s init.py, then ``body``, in a fresh interpreter started with ``flags``."""
    code = _PRELUDE.format(
        fakes=str(FAKES),
        gui=gui,
        init=str(checkout / "init.py"),
        plugin=str(checkout / "plugin"),
    )
    code += textwrap.dedent(body) + "\nprint('RESULT' + json.dumps(result))\n"
    proc = subprocess.run(
        [sys.executable, *flags, "-c", code],
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
    assert result["deps_imported"] == [], "init.py only looks the dependencies up"
    assert result["init_tprints"] == [], "the dependencies are found: nothing to say"


def _install_deps() -> Any:
    """plugin/install_deps.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location(
        "install_deps", ROOT / "plugin" / "install_deps.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _checkout(root: Path, deps: bool) -> Path:
    """A checkout with the real init.py and, if ``deps``, stub dependencies for this Python."""
    for folder in ("plugin", "gizmos", "icons"):
        (root / folder).mkdir(parents=True)
    shutil.copy(ROOT / "init.py", root / "init.py")
    if deps:
        folder = root / "plugin" / "_deps" / _install_deps().folder_name(sys.version_info[:2])
        for name in ("requests", "websocket", "tenacity"):
            (folder / name).mkdir(parents=True)
            (folder / name / "__init__.py").write_text("STUB = True\n")
    return root


def test_init_appends_this_pythons_deps_folder_and_keeps_the_order(tmp_path: Path) -> None:
    checkout = _checkout(tmp_path, deps=True)
    deps = str(checkout / "plugin" / "_deps" / f"py{sys.version_info[0]}{sys.version_info[1]}")
    result = _run(
        False,
        """
        import requests, websocket, tenacity
        result["stub_files"] = [m.__file__ for m in (requests, websocket, tenacity)]
        """,
        checkout=checkout,
        flags=["-S"],
    )
    before, after = result["path_before"], result["path_after"]
    assert deps in after
    assert after.index(deps) > max(after.index(p) for p in before), "appended, never first"
    assert [p for p in after if p in before] == before, "existing entries keep their order"
    assert result["sys_path_has_plugin"]
    assert result["deps_imported"] == [], "init.py only looks the dependencies up"
    assert result["init_tprints"] == []
    assert all(f.startswith(deps) for f in result["stub_files"])


def test_init_without_deps_prints_one_line_naming_the_install_command(tmp_path: Path) -> None:
    checkout = _checkout(tmp_path, deps=False)
    shutil.copytree(
        ROOT / "plugin" / "comfy_cluster",
        checkout / "plugin" / "comfy_cluster",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    result = _run(
        False,
        """
        import importlib.util
        result["package"] = importlib.util.find_spec("comfy_cluster").origin
        """,
        checkout=checkout,
        flags=["-S"],
    )
    (line,) = result["init_tprints"]
    assert "requests, websocket-client, tenacity not found" in line
    assert f'"{checkout / "plugin" / "install_deps.py"}" --nuke' in line
    by_python = {python: nuke for nuke, python in _install_deps().NUKE_PYTHON.items()}
    if sys.version_info[:2] in by_python:
        assert line.endswith(f"--nuke {by_python[sys.version_info[:2]]}")
    assert result["sys_path_has_plugin"]
    assert result["package"].startswith(str(checkout / "plugin")), "the package is importable"


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
