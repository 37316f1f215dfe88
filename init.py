"""Nuke start-up for every session, farms included: make the plugin findable, nothing else.

Puts ``plugin/`` (the ``comfy_cluster`` package) on ``sys.path``, *appends* the dependency folder
of the running Python (``plugin/_deps/py39`` for Nuke 14, ``py310`` for 15, ``py311`` for 16, made
by ``plugin/install_deps.py``) so other plugins' own copies of requests or urllib3 keep
precedence, and puts ``gizmos/`` and ``icons/`` on Nuke's plugin path. When the dependencies
cannot be found it prints one line naming the install command instead of failing: Nuke still
starts. They are looked up, never imported, here. No menus, no Qt, no callbacks: terminal
sessions get the render node's callbacks from the gizmo's own ``onCreate`` knob, which installs the
host layer the first time a ComfyClusterRender node is created or loaded.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import nuke

#: The Nuke version whose Python this is: the ``--nuke`` value that installs its folder.
_NUKE_FOR_PYTHON = {(3, 9): 14, (3, 10): 15, (3, 11): 16}
#: The three runtime dependencies: import name -> pip name.
_DEPS = {"requests": "requests", "websocket": "websocket-client", "tenacity": "tenacity"}

_HERE = os.path.dirname(os.path.abspath(__file__))
_PLUGIN = os.path.join(_HERE, "plugin")


def _add_paths() -> None:
    """Put the package and this Python's dependency folder on sys.path; say if deps are missing."""
    if _PLUGIN not in sys.path:
        # First place shadows nothing of anyone else: the folder holds only this plugin's code.
        sys.path.insert(0, _PLUGIN)
    major, minor = sys.version_info[:2]
    deps = os.path.join(_PLUGIN, "_deps", f"py{major}{minor}")
    if os.path.isdir(deps) and deps not in sys.path:
        sys.path.append(deps)
    missing = [
        pip_name
        for name, pip_name in _DEPS.items()
        if name not in sys.modules and importlib.util.find_spec(name) is None
    ]
    if missing:
        version = _NUKE_FOR_PYTHON.get((major, minor), nuke.NUKE_VERSION_MAJOR)
        launcher = "py -3" if sys.platform == "win32" else "python3"
        script = os.path.join(_PLUGIN, "install_deps.py")
        nuke.tprint(
            f"comfy_cluster: {', '.join(missing)} not found for Python {major}.{minor}; "
            f'install them with: {launcher} "{script}" --nuke {version}'
        )


_add_paths()
nuke.pluginAddPath(os.path.join(_HERE, "gizmos"))
nuke.pluginAddPath(os.path.join(_HERE, "icons"))
