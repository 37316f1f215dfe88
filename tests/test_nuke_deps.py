"""Issue 12, point 2: without requests / websocket-client / tenacity, Render says what to run.

The host must load (script with the node, onCreate, the buttons) without them, and Render must
put one status line on the node naming ``python plugin/install_deps.py --nuke <major>``, not a
traceback. Checked in a fresh interpreter whose import system cannot find the three packages.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Optional

import pytest

from comfy_cluster.host.deps import (
    install_command,
    missing_dependencies,
    missing_from_error,
    missing_message,
)

ROOT = Path(__file__).resolve().parent.parent

_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, json, sys

    BLOCKED = ("requests", "websocket", "tenacity")

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Block())
    import nuke

    nuke._fake.set_gui(False)  # nuke -t
    nuke._fake.set_version(MAJOR)
    nuke.pluginAddPath(GIZMOS)
    read = nuke.nodes.Read(file="/nowhere/plate.####.png")
    node = nuke.createNode("ComfyClusterRender")  # onCreate installs the host
    node.setInput(0, read)
    node["cc_workflow"].setValue(WORKFLOW)
    node["cc_output"].setValue("/nowhere/out.####.png")
    node["cc_render"].execute()
    print(json.dumps({
        "status": node["cc_status"].value(),
        "menu": node["cc_server"].values(),
        "loaded": sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED),
        "errors": [repr(e) for e in nuke._fake.errors()],
        "tprints": nuke._fake.tprints(),
    }))
    """
)


def _run(major: int, servers: str, tmp_path: Path) -> dict:
    script = (
        f"MAJOR = {major}\nGIZMOS = {str(ROOT / 'gizmos')!r}\n"
        f"WORKFLOW = {str(ROOT / 'tests' / 'fixtures' / 'workflows' / 'invert.json')!r}\n" + _SCRIPT
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests" / "fakes"), str(ROOT / "plugin")])
    env["NUKE_COMFYUI_SERVERS"] = servers
    env["COMFY_CLUSTER_CONFIG"] = str(tmp_path / "none.json")
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stdout + out.stderr, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("major", [14, 16])
def test_render_without_runtime_packages_names_the_install_command(
    tmp_path: Path, major: int
) -> None:
    servers = json.dumps([{"name": "render1", "ip": "127.0.0.1", "port": 9}])
    result = _run(major, servers, tmp_path)
    status = result["status"]
    assert status.startswith(
        "Error: missing Python packages requests, websocket-client, tenacity: "
        f"run python plugin/install_deps.py --nuke {major}"
    ), status
    assert "\n" not in status
    assert result["loaded"] == []  # nothing imported them: loading the node did not need them
    assert result["errors"] == []
    (line,) = [t for t in result["tprints"] if "ERROR" in t]
    assert f"--nuke {major}" in line


def test_missing_dependencies_is_a_lookup_not_an_import() -> None:
    looked: list[str] = []

    def finder(name: str) -> Optional[object]:
        looked.append(name)
        return None if name == "websocket" else object()

    assert missing_dependencies(finder) == ["websocket-client"]
    assert looked == ["requests", "websocket", "tenacity"]
    assert missing_dependencies() == []  # the test environment has them


def test_an_import_error_at_start_becomes_the_same_hint() -> None:
    import types

    nuke = types.SimpleNamespace(NUKE_VERSION_MAJOR=15)
    assert install_command(nuke) == "python plugin/install_deps.py --nuke 15"
    assert missing_from_error(ModuleNotFoundError("x", name="urllib3.util")) == ["urllib3"]
    assert missing_from_error(ModuleNotFoundError("x", name="tenacity")) == ["tenacity"]
    assert missing_from_error(ModuleNotFoundError("x", name="comfy_cluster.nope")) == []
    assert missing_from_error(ValueError("x")) == []
    assert missing_message(nuke, ["tenacity"]) == (
        "missing Python packages tenacity: run python plugin/install_deps.py --nuke 15"
    )
