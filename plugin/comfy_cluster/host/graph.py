"""Finding nodes by name and creating nodes, whatever group Nuke's current context is.

Nuke resolves ``nuke.toNode(name)`` and creates ``nuke.nodes.X()`` in the *current context*.
A Python button on a Group or gizmo runs with that group as the context, so inside the
ComfyClusterRender node's Render button (and in terminal sessions the whole job runs inside it)
a bare ``nuke.toNode("Group1.ComfyClusterRender1")`` looks *inside the gizmo* and finds nothing.
Every lookup by full name therefore happens at the root (``with nuke.root():``), and every node
the host creates is created in an explicit group (the render node's own ``parent()``). Main
thread only, like everything that touches nodes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Optional

__all__ = ["at_root", "find_node", "inside"]


@contextlib.contextmanager
def at_root(nuke: Any) -> Iterator[None]:
    """Run the block with the script's root as the current context."""
    root = nuke.root()
    root.begin()
    try:
        yield
    finally:
        root.end()


@contextlib.contextmanager
def inside(group: Any) -> Iterator[Any]:
    """Run the block with ``group`` (a Group, gizmo or the root) as the current context."""
    group.begin()
    try:
        yield group
    finally:
        group.end()


def find_node(nuke: Any, full_name: str) -> Optional[Any]:
    """The node called ``full_name`` (``"Group1.Render1"``, as ``node.fullName()`` gives it),
    looked up from the root so the caller's context does not matter; None if there is none."""
    if not full_name:
        return None
    with at_root(nuke):
        try:
            return nuke.toNode(full_name)
        except ValueError:  # a group on the path was deleted meanwhile
            return None
