"""Nuke start-up (all sessions, farm included): make the plugin importable, nothing else."""

import os

import nuke

_HERE = os.path.dirname(os.path.abspath(__file__))
nuke.pluginAddPath(os.path.join(_HERE, "plugin"))
nuke.pluginAddPath(os.path.join(_HERE, "gizmos"))
nuke.pluginAddPath(os.path.join(_HERE, "icons"))
