"""The details area under the server table: everything about the selected server, in full.

The table keeps to the few columns a docked pane has room for; this area shows the rest for the
selected row: its state and why, the last error in full (wrapped to the pane's width, every line,
selectable to copy into a ticket), URL, device, VRAM, queue, models when the status reports them,
and how it is configured (never a secret's value). Main (Qt) thread only.
"""

from __future__ import annotations

import html
from typing import Optional

from comfy_cluster.ui.qt import QtCore, QtGui, QtWidgets
from comfy_cluster.ui.rows import ServerRow, format_age, state_colour

Qt = QtCore.Qt

#: What the area says when no server is selected.
PLACEHOLDER = "Select a server to see its details."


def details_html(row: ServerRow) -> str:
    """The rich text shown for ``row``: a title line with the coloured state, then a table.

    Every value is escaped; multi-line values (the last error) keep their line breaks and wrap.
    """
    age = "" if row.state_age is None else f" for {format_age(row.state_age)}"
    title = (
        f"<p><b>{html.escape(row.name)}</b>&nbsp;&nbsp;"
        f'<span style="background-color:{state_colour(row.state)}; color:#ffffff;">'
        f"&nbsp;{html.escape(row.state.lower())}&nbsp;</span>{html.escape(age)}</p>"
    )
    cells = "".join(
        f'<tr><td style="padding-right:8px;"><b>{html.escape(label)}</b></td>'
        f'<td style="white-space:pre-wrap;">{html.escape(text)}</td></tr>'
        for label, text in row.details()
        if label != "State"  # in the title
    )
    return f'{title}<table cellspacing="0" cellpadding="1">{cells}</table>'


class ServerDetails(QtWidgets.QTextBrowser):
    """Read-only, selectable, wrapping view of one :class:`ServerRow`.

    It never scrolls sideways: long words (paths, URLs in errors) break anywhere. While the user
    has text selected in it, updates of the same server wait, so a refresh tick does not snatch
    the selection away mid-copy.
    """

    def __init__(self, parent: Optional[QtWidgets.QWidget] = None) -> None:
        super().__init__(parent)
        self.setObjectName("comfyClusterServerDetails")
        self.setOpenLinks(False)
        self.setLineWrapMode(QtWidgets.QTextEdit.LineWrapMode.WidgetWidth)
        self.setWordWrapMode(QtGui.QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse
            | Qt.TextInteractionFlag.TextSelectableByKeyboard
        )
        self._row: Optional[ServerRow] = None
        #: The latest row, held back while the user had text selected.
        self._pending: Optional[ServerRow] = None
        self.selectionChanged.connect(self._selection_changed)
        self._show_placeholder()

    @property
    def row(self) -> Optional[ServerRow]:
        """The row shown, or None (nothing selected)."""
        return self._row

    def show_row(self, row: Optional[ServerRow]) -> None:
        """Show ``row`` (None: the placeholder). Unchanged rows are not redrawn."""
        self._pending = None
        if row == self._row:
            return
        same_server = row is not None and self._row is not None and row.name == self._row.name
        if same_server and self.textCursor().hasSelection():
            self._pending = row  # the user is selecting text: hold still until they are done
            return
        self._row = row
        if row is None:
            self._show_placeholder()
            return
        scroll = self.verticalScrollBar().value() if same_server else 0
        self.setHtml(details_html(row))
        self.verticalScrollBar().setValue(scroll)

    def _selection_changed(self) -> None:
        if self._pending is not None and not self.textCursor().hasSelection():
            self.show_row(self._pending)

    def _show_placeholder(self) -> None:
        self.setHtml(f"<p><i>{html.escape(PLACEHOLDER)}</i></p>")

    def sizeHint(self) -> QtCore.QSize:
        """A few lines tall by default; the splitter above lets the user give it more."""
        hint = super().sizeHint()
        return QtCore.QSize(hint.width(), self.fontMetrics().lineSpacing() * 9)


__all__ = ["PLACEHOLDER", "ServerDetails", "details_html"]
