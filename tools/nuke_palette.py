"""A dark Qt palette like Nuke's, for drawing the panel outside Nuke: the docs' pictures
(``tools/panel_pictures.py``) and the ui tests that check colours stay visible in a dark theme.

Not part of the plugin: inside Nuke the panel takes Nuke's own palette.
"""

from __future__ import annotations

from comfy_cluster.ui.qt import QtGui

#: The selection colour of :func:`nuke_like_palette`: an orange like Nuke's.
NUKE_HIGHLIGHT = "#f7931e"


def nuke_like_palette(highlight: str = NUKE_HIGHLIGHT) -> QtGui.QPalette:
    """Greys and an orange highlight close to Nuke's default look (the pictures' setting; the
    tests also try other ``highlight`` colours to check the state stays visible when selected)."""
    palette = QtGui.QPalette()
    roles = QtGui.QPalette.ColorRole
    for role, colour in (
        (roles.Window, "#323232"),
        (roles.WindowText, "#d0d0d0"),
        (roles.Base, "#262626"),
        (roles.AlternateBase, "#2e2e2e"),
        (roles.Text, "#d0d0d0"),
        (roles.Button, "#3c3c3c"),
        (roles.ButtonText, "#d0d0d0"),
        (roles.Highlight, highlight),
        (roles.HighlightedText, "#101010"),
        (roles.ToolTipBase, "#3c3c3c"),
        (roles.ToolTipText, "#d0d0d0"),
    ):
        palette.setColor(role, QtGui.QColor(colour))
    return palette


__all__ = ["NUKE_HIGHLIGHT", "nuke_like_palette"]
