"""The server table's Qt model: one row per server, applied as a diff so selection survives.

The rows themselves (what each cell says) are plain values built in :mod:`comfy_cluster.ui.rows`;
:class:`ServerTableModel` holds the current rows and applies a new list as a diff: removed
servers' rows are removed, new ones inserted, and only changed rows emit ``dataChanged``, so the
selection and scroll position survive the once-per-tick update.

The table keeps to what fits a docked pane (server, state, queue, latency, VRAM); everything else
about the selected server is in the details area under it (:mod:`comfy_cluster.ui.details`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

from comfy_cluster.ui.qt import QtCore, QtGui
from comfy_cluster.ui.rows import (
    STATE_COLOURS,
    UNKNOWN,
    ServerRow,
    build_rows,
    row_from_config,
    row_from_status,
    state_colour,
)

Qt = QtCore.Qt

#: Column keys and their headers, in display order: what fits a 520 px docked pane.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("name", "Server"),
    ("state", "State"),
    ("queue", "Queue"),
    ("latency", "Latency"),
    ("vram", "VRAM free"),
)
COLUMN_KEYS: tuple[str, ...] = tuple(key for key, _ in COLUMNS)

#: ``data(index, NAME_ROLE)`` returns the row's server name, whatever the column.
NAME_ROLE = int(Qt.ItemDataRole.UserRole) + 1
#: ``data(index, ROW_ROLE)`` returns the whole :class:`ServerRow`, whatever the column.
ROW_ROLE = NAME_ROLE + 1
#: ``data(index, STATE_COLOUR_ROLE)`` on the state column: the state's ``QColor``.
STATE_COLOUR_ROLE = NAME_ROLE + 2


class ServerTableModel(QtCore.QAbstractTableModel):
    """Read-only table model of :class:`ServerRow` values. Main (Qt) thread only."""

    def __init__(self, parent: Optional[QtCore.QObject] = None) -> None:
        super().__init__(parent)
        self._rows: list[ServerRow] = []

    # -- reading -------------------------------------------------------------------------
    def rows(self) -> tuple[ServerRow, ...]:
        """The rows currently shown, top to bottom."""
        return tuple(self._rows)

    def row_named(self, name: str) -> Optional[ServerRow]:
        """The row of server ``name``, or None."""
        for row in self._rows:
            if row.name == name:
                return row
        return None

    def row_of(self, name: str) -> int:
        """Row index of server ``name``, or -1."""
        for i, row in enumerate(self._rows):
            if row.name == name:
                return i
        return -1

    def rowCount(self, parent: QtCore.QModelIndex = QtCore.QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: QtCore.QModelIndex = QtCore.QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(
        self,
        section: int,
        orientation: QtCore.Qt.Orientation,
        role: int = Qt.ItemDataRole.DisplayRole,
    ) -> Any:
        if (
            orientation == Qt.Orientation.Horizontal
            and role == Qt.ItemDataRole.DisplayRole
            and 0 <= section < len(COLUMNS)
        ):
            return COLUMNS[section][1]
        return None

    def data(self, index: QtCore.QModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not (0 <= index.row() < len(self._rows)):
            return None
        row = self._rows[index.row()]
        key = COLUMN_KEYS[index.column()]
        if role == Qt.ItemDataRole.DisplayRole:
            return row.text(key)
        if role == Qt.ItemDataRole.ToolTipRole:
            return row.tooltip(key) or None
        if role == NAME_ROLE:
            return row.name
        if role == ROW_ROLE:
            return row
        if key == "state" and role in (Qt.ItemDataRole.BackgroundRole, STATE_COLOUR_ROLE):
            colour = QtGui.QColor(state_colour(row.state))
            return colour if role == STATE_COLOUR_ROLE else QtGui.QBrush(colour)
        if role == Qt.ItemDataRole.ForegroundRole:
            if key == "state":
                return QtGui.QBrush(QtGui.QColor("#ffffff"))
            if not row.enabled:
                return QtGui.QBrush(QtGui.QColor("#808080"))
        if role == Qt.ItemDataRole.TextAlignmentRole and key in ("queue", "latency", "vram"):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    # -- updating ------------------------------------------------------------------------
    def set_rows(self, rows: Sequence[ServerRow]) -> None:
        """Show ``rows``: remove, insert and update only what differs from the current rows.

        Raises ``ValueError`` on duplicate names (they would make the diff ambiguous).
        """
        new = list(rows)
        names = [row.name for row in new]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate server names in rows: {names}")
        wanted = set(names)
        root = QtCore.QModelIndex()
        for i in range(len(self._rows) - 1, -1, -1):
            if self._rows[i].name not in wanted:
                self.beginRemoveRows(root, i, i)
                del self._rows[i]
                self.endRemoveRows()
        kept = [row.name for row in self._rows]
        kept_set = set(kept)
        if [name for name in names if name in kept_set] != kept:
            # The surviving servers changed order: rare, so a reset is simpler than a move diff.
            self.beginResetModel()
            self._rows = new
            self.endResetModel()
            return
        for i, row in enumerate(new):
            if i >= len(self._rows) or self._rows[i].name != row.name:
                self.beginInsertRows(root, i, i)
                self._rows.insert(i, row)
                self.endInsertRows()
            elif self._rows[i] != row:
                self._rows[i] = row
                self.dataChanged.emit(self.index(i, 0), self.index(i, len(COLUMNS) - 1))


__all__ = [
    "COLUMNS",
    "COLUMN_KEYS",
    "NAME_ROLE",
    "ROW_ROLE",
    "STATE_COLOURS",
    "STATE_COLOUR_ROLE",
    "UNKNOWN",
    "ServerRow",
    "ServerTableModel",
    "build_rows",
    "row_from_config",
    "row_from_status",
]
