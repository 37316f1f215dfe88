"""The columns of the live render view: sized to the terminal, showing any text literally.

Why this exists: a server's failure message is often longer than the terminal is wide, and it
can hold square brackets (a workflow node called ``[/x]``). Given a too-long row, rich shrinks
*every* column, so the bars and names vanished; given a plain string, rich reads markup, so
``[/x]`` raised ``MarkupError`` and ended the render with a traceback.

So each row here is laid out as::

    NAME (fixed width, cut …)  BAR (fits the terminal)  12/24  0:00:07  NOTE (the rest, cut …)

Every cell is a :class:`rich.text.Text`, which rich never parses as markup, so text from servers,
workflows or configuration is shown exactly as it is. Styles come from the view, never from the
text. :class:`RowLayout` works the widths out again on each refresh, so a resized terminal still
fits, and leaves :data:`~comfy_cluster.commands.common.LIVE_MARGIN` columns free at the right.

rich is imported here at module level: only :class:`~comfy_cluster.commands.progress.RichView`
imports this module, and only once it knows rich is installed.
"""

from __future__ import annotations

from typing import Callable

from rich.progress import BarColumn, ProgressColumn, Task
from rich.progress_bar import ProgressBar
from rich.table import Column
from rich.text import Text

from comfy_cluster.commands.common import LIVE_MARGIN

__all__ = [
    "BAR_MAX",
    "BAR_MIN",
    "NOTE_MIN",
    "FittedBarColumn",
    "NameColumn",
    "NoteColumn",
    "RowLayout",
    "name_width",
]

#: The bar never gets wider than this (wider says nothing more) nor narrower than this.
BAR_MAX = 40
BAR_MIN = 10
#: Room the note keeps before the bar may grow: enough for "frames 101-116" or "out: offline".
NOTE_MIN = 30
#: Names are cut to at most this many characters ("all frames" sets the minimum).
NAME_MAX = 20
NAME_MIN = len("all frames")
#: ``TimeElapsedColumn`` shows H:MM:SS.
ELAPSED_WIDTH = 7


def name_width(names: tuple[str, ...]) -> int:
    """The name column's width: the longest name, within ``NAME_MIN..NAME_MAX``."""
    longest = max((len(name) for name in names), default=0)
    return max(NAME_MIN, min(NAME_MAX, longest))


class RowLayout:
    """The widths of one row's columns on the terminal as it is now.

    ``terminal`` and ``total`` (the largest frame count shown: ``12/24`` is ``2 * digits + 1``
    wide) are asked each time, so a resize or a late total re-fits the row. ``name`` is set by
    the view once it knows the servers.
    """

    def __init__(self, terminal: Callable[[], int], total: Callable[[], int]) -> None:
        self._terminal = terminal
        self._total = total
        self.name = NAME_MIN

    def usable(self) -> int:
        """Columns a row may fill: the terminal less the live margin."""
        return max(1, self._terminal() - LIVE_MARGIN)

    def fixed(self) -> int:
        """The name, count and elapsed columns, and the one space between each two columns."""
        digits = len(str(max(0, self._total())))
        return self.name + (2 * digits + 1) + ELAPSED_WIDTH + 4

    def bar(self) -> int:
        """What is left after the fixed columns and the note's minimum, within the bar's range."""
        return max(BAR_MIN, min(BAR_MAX, self.usable() - self.fixed() - NOTE_MIN))

    def note(self) -> int:
        """Everything else (at least one column: a very narrow terminal cuts the note first)."""
        return max(1, self.usable() - self.fixed() - self.bar())


class NameColumn(ProgressColumn):
    """The row's name (``all frames`` or a server), cut to the layout's width with an ellipsis."""

    def __init__(self, layout: RowLayout) -> None:
        super().__init__()
        self.layout = layout

    def get_table_column(self) -> Column:
        return Column(width=self.layout.name, no_wrap=True, overflow="ellipsis")

    def render(self, task: Task) -> Text:
        return Text(str(task.description), no_wrap=True, overflow="ellipsis")


class FittedBarColumn(BarColumn):
    """A bar as wide as the terminal allows once the other columns and the note have room."""

    def __init__(self, layout: RowLayout) -> None:
        super().__init__(bar_width=BAR_MAX)
        self.layout = layout

    def render(self, task: Task) -> ProgressBar:
        self.bar_width = self.layout.bar()
        return super().render(task)


class NoteColumn(ProgressColumn):
    """What the row's server is doing, or why it left: the width that is left, cut with an
    ellipsis. Reads the task fields ``note`` (the text, shown literally) and ``style``."""

    def __init__(self, layout: RowLayout) -> None:
        super().__init__()
        self.layout = layout

    def get_table_column(self) -> Column:
        return Column(width=self.layout.note(), no_wrap=True, overflow="ellipsis")

    def render(self, task: Task) -> Text:
        note = str(task.fields.get("note", ""))
        style = str(task.fields.get("style", ""))
        return Text(note, style=style, no_wrap=True, overflow="ellipsis")
