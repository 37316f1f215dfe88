"""Qt widgets (PySide6 on Nuke 16, PySide2 before) for the docked cluster panel."""
