"""Thin Nuke adapter: gizmo knobs, main-thread dispatch, Read nodes. Imports no Qt."""
