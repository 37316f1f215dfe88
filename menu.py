"""Nuke start-up for GUI sessions only: the server panel, the Nodes menu entry, node callbacks.

Each install is guarded: a failure is reported with ``nuke.tprint`` and never breaks Nuke's
start-up. The host install runs first and on its own, so the render node still works (menu entry
and callbacks) when the Qt panel cannot load. The host session owns the session's one cluster
service; the panel shows that same service (looked up when the first panel opens) and hooks
Nuke's quit to close it. Neither install starts a thread. Both are idempotent.
"""

from __future__ import annotations

import traceback

import nuke


def _guarded(what: str, install: str) -> None:
    """Import ``module:function`` and call it; report a failure instead of raising."""
    module_name, _, function = install.partition(":")
    try:
        module = __import__(module_name, fromlist=[function])
        getattr(module, function)()
    except Exception:
        nuke.tprint(
            f"comfy_cluster: {what} failed; continuing without it\n{traceback.format_exc()}"
        )


if nuke.GUI:
    _guarded("the render node install", "comfy_cluster.host.install:install_host")
    _guarded("the server panel install", "comfy_cluster.ui.install:install_gui")
