"""Are the runtime dependencies there? Asked before a render, answered without importing them.

The engine needs ``requests``, ``websocket-client`` and ``tenacity``, installed into the plugin's
``plugin/`` folder for the Python of the running Nuke. Nothing in ``comfy_cluster.host`` imports
them at module import (a Nuke without them must still start and load scripts with the node); they
are first imported when a render builds the cluster service or the scheduler. So the Render button
checks first and, when one is missing, the node's status names the one command that fixes it,
instead of an import traceback.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any, Callable, Optional

__all__ = [
    "RUNTIME_DEPENDENCIES",
    "install_command",
    "missing_dependencies",
    "missing_from_error",
    "missing_message",
]

#: Import name -> the package to install.
RUNTIME_DEPENDENCIES: dict[str, str] = {
    "requests": "requests",
    "websocket": "websocket-client",
    "tenacity": "tenacity",
}

#: ``find_spec(name)``: None when the module cannot be found (injectable for tests).
SpecFinder = Callable[[str], Optional[object]]


def _find_spec(name: str) -> Optional[object]:
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):  # a broken half-import, or a module without a spec
        return None


def missing_dependencies(find_spec: SpecFinder = _find_spec) -> list[str]:
    """The packages (as pip names them) whose module cannot be imported; [] when all are there.
    Looks the modules up without importing them."""
    return [
        package for module, package in RUNTIME_DEPENDENCIES.items() if find_spec(module) is None
    ]


def install_command(nuke: Any) -> str:
    """The command that installs them for this Nuke (its major version picks the Python)."""
    major = getattr(nuke, "NUKE_VERSION_MAJOR", None)
    return f"python plugin/install_deps.py --nuke {major if isinstance(major, int) else 16}"


def missing_message(nuke: Any, missing: Sequence[str]) -> str:
    """One status line: what is missing and the command to run."""
    return f"missing Python packages {', '.join(missing)}: run {install_command(nuke)}"


def missing_from_error(exc: BaseException) -> list[str]:
    """The package a ``ModuleNotFoundError`` raised while starting a render is about (one of
    ours by its pip name, or one they need, e.g. ``urllib3``); [] for anything else."""
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return []
    top = exc.name.split(".")[0]
    if top == "comfy_cluster":
        return []
    return [RUNTIME_DEPENDENCIES.get(top, top)]
