"""``nukescripts.utils``: re-exports of the main-thread helpers."""

from __future__ import annotations

from nuke import executeInMainThread, executeInMainThreadWithResult

__all__ = ["executeInMainThread", "executeInMainThreadWithResult"]
