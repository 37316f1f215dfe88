"""Nuke start-up for every session, farms included: make the plugin findable, nothing else.

Puts ``plugin/`` (the ``comfy_cluster`` package and the pip ``--target`` dependencies) on
``sys.path`` and ``gizmos/`` and ``icons/`` on Nuke's plugin path. No menus, no Qt, no callbacks:
terminal sessions get the render node's callbacks from the gizmo's own ``onCreate`` knob, which
installs the host layer the first time a ComfyClusterRender node is created or loaded.
"""

from __future__ import annotations

import os
import sys

import nuke

_HERE = os.path.dirname(os.path.abspath(__file__))
_PLUGIN = os.path.join(_HERE, "plugin")
if _PLUGIN not in sys.path:
    sys.path.insert(0, _PLUGIN)
nuke.pluginAddPath(os.path.join(_HERE, "gizmos"))
nuke.pluginAddPath(os.path.join(_HERE, "icons"))
