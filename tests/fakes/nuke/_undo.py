"""``nuke.Undo``: the parts the fake models.

Nodes created from Python (``createNode``, ``nodes.X()``) and deleted with ``nuke.delete`` each
add an entry to the undo history (``nuke._fake.undo_log()``) unless undo is disabled
(``Undo.disable()`` ... ``Undo.enable()``, nestable). Knob changes are not recorded, and
``undo()``/``redo()`` are not modelled. Script loads add no entries.
"""

from __future__ import annotations

from typing import Any

from ._state import check_main, current


class Undo:
    """The undo history (class methods, like Nuke's)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        check_main("nuke.Undo()")

    @classmethod
    def disable(cls) -> None:
        """Stop recording until the matching :meth:`enable`."""
        check_main("nuke.Undo.disable()")
        current().undo_disabled += 1

    @classmethod
    def enable(cls) -> None:
        check_main("nuke.Undo.enable()")
        session = current()
        session.undo_disabled = max(0, session.undo_disabled - 1)

    @classmethod
    def disabled(cls) -> bool:
        check_main("nuke.Undo.disabled()")
        return current().undo_disabled > 0

    @classmethod
    def begin(cls, name: str = "") -> None:
        check_main("nuke.Undo.begin()")

    @classmethod
    def end(cls) -> None:
        check_main("nuke.Undo.end()")

    @classmethod
    def cancel(cls) -> None:
        check_main("nuke.Undo.cancel()")

    @classmethod
    def undoSize(cls) -> int:
        check_main("nuke.Undo.undoSize()")
        return len(current().undo_log)

    def __enter__(self) -> Undo:
        self.begin()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.end()
