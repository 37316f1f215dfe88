"""The server table's data: health snapshots in, one immutable row per server out.

:func:`build_rows` is pure (snapshot + configured servers + active jobs -> rows) so the table's
content is testable without widgets. :class:`ServerTableModel` holds the current rows and applies a
new list as a diff: removed servers' rows are removed, new ones inserted, and only changed rows emit
``dataChanged``, so the selection and scroll position survive the once-per-tick update.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from comfy_cluster.core.formatting import gib_text
from comfy_cluster.ui.qt import QtCore, QtGui

if TYPE_CHECKING:
    from comfy_cluster.core.health import HealthSnapshot, ServerStatus
    from comfy_cluster.core.server import ServerConfig

Qt = QtCore.Qt

#: Shown for a configured server the poller has not reported on yet.
UNKNOWN = "UNKNOWN"

#: Background colour per state name; muted so the text stays readable in Nuke's dark theme.
STATE_COLOURS: Mapping[str, str] = {
    "READY": "#2e7d32",
    "BUSY": "#1f5fa8",
    "DEGRADED": "#b7791f",
    "OFFLINE": "#a12b2b",
    "DISABLED": "#4a4a4a",
    UNKNOWN: "#3a3a3a",
}

#: Column keys and their headers, in display order.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("name", "Server"),
    ("url", "URL"),
    ("state", "State"),
    ("priority", "Priority"),
    ("queue", "Queue"),
    ("latency", "Latency"),
    ("device", "Device"),
    ("vram", "VRAM free"),
    ("job", "Job / chunk"),
    ("last_error", "Last error"),
)
COLUMN_KEYS: tuple[str, ...] = tuple(key for key, _ in COLUMNS)

#: ``data(index, NAME_ROLE)`` returns the row's server name, whatever the column.
NAME_ROLE = int(Qt.ItemDataRole.UserRole) + 1


@dataclass(frozen=True)
class ServerRow:
    """Everything one table row shows, as plain values (no Qt); compared to diff updates."""

    name: str
    url: str = ""
    state: str = UNKNOWN
    enabled: bool = True
    priority: Optional[int] = None
    queue_running: Optional[int] = None
    queue_pending: Optional[int] = None
    latency_ms: Optional[float] = None
    device: str = ""
    vram_free: Optional[int] = None
    vram_total: Optional[int] = None
    job: str = ""
    last_error: str = ""
    reason: str = ""
    #: Seconds the server has been in ``state`` when the snapshot was taken.
    state_age: Optional[float] = None
    source: str = ""

    def text(self, key: str) -> str:
        """The display text of column ``key``."""
        if key == "state":
            return self.state.lower()
        if key == "priority":
            return "" if self.priority is None else str(self.priority)
        if key == "queue":
            if self.queue_running is None and self.queue_pending is None:
                return ""
            return f"{self.queue_running or 0} run / {self.queue_pending or 0} wait"
        if key == "latency":
            return "" if self.latency_ms is None else f"{self.latency_ms:.0f} ms"
        if key == "vram":
            known = self.vram_free is not None or self.vram_total is not None
            return gib_text(self.vram_free, self.vram_total) if known else ""
        if key == "last_error":
            return self.last_error.splitlines()[0] if self.last_error else ""
        return str(getattr(self, key))

    def tooltip(self, key: str) -> str:
        """Longer text for the hover tip: why a server is in its state, the full error."""
        if key == "state":
            parts = [self.state.lower()]
            if self.state_age is not None:
                parts[0] += f" for {_format_age(self.state_age)}"
            if self.reason:
                parts.append(self.reason)
            return " - ".join(parts)
        if key == "name" and self.source:
            return f"{self.name} (from {self.source})"
        if key == "last_error":
            return self.last_error
        return self.text(key)


def _format_age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def _state_name(state: Any) -> str:
    name = getattr(state, "name", None) or str(state or UNKNOWN)
    return name.upper()


def row_from_status(
    status: ServerStatus,
    config: Optional[ServerConfig] = None,
    job: str = "",
    taken_at: Optional[float] = None,
) -> ServerRow:
    """One row from a server's health status plus, when known, its configuration.

    ``taken_at`` is the snapshot's time, on the same clock as ``status.since``.
    """
    age = None
    if taken_at is not None and status.since:
        age = float(round(taken_at - status.since))
    return ServerRow(
        name=status.name,
        url=status.url or (config.url if config else ""),
        state=_state_name(status.state),
        enabled=config.enabled if config is not None else _state_name(status.state) != "DISABLED",
        priority=config.priority if config is not None else None,
        queue_running=status.queue_running,
        queue_pending=status.queue_pending,
        latency_ms=status.latency_ms,
        device=status.device or "",
        vram_free=status.vram_free,
        vram_total=status.vram_total,
        job=job,
        last_error=status.last_error or "",
        reason=status.reason or "",
        state_age=age,
        source=config.source if config is not None else "",
    )


def row_from_config(config: ServerConfig, job: str = "") -> ServerRow:
    """A row for a configured server that no snapshot mentions yet (just added, not polled)."""
    return ServerRow(
        name=config.name,
        url=config.url,
        state=UNKNOWN if config.enabled else "DISABLED",
        enabled=config.enabled,
        priority=config.priority,
        job=job,
        source=config.source,
    )


def build_rows(
    snapshot: Optional[HealthSnapshot],
    servers: Sequence[ServerConfig] = (),
    jobs: Optional[Mapping[str, str]] = None,
) -> tuple[ServerRow, ...]:
    """The table's rows: configured servers in config order, then any others the snapshot has.

    Pure; any thread. A server in neither the snapshot nor the config has no row, so rows appear
    and disappear as servers are added to or removed from the cluster.
    """
    statuses: Mapping[str, ServerStatus] = snapshot.statuses if snapshot is not None else {}
    taken_at = snapshot.taken_at if snapshot is not None else None
    jobs = jobs or {}
    rows = []
    seen = set()
    for config in servers:
        if config.name in seen:
            continue
        seen.add(config.name)
        status = statuses.get(config.name)
        job = jobs.get(config.name, "")
        if status is not None:
            rows.append(row_from_status(status, config, job, taken_at))
        else:
            rows.append(row_from_config(config, job))
    for name in sorted(n for n in statuses if n not in seen):
        rows.append(row_from_status(statuses[name], None, jobs.get(name, ""), taken_at))
    return tuple(rows)


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
        if key == "state" and role == Qt.ItemDataRole.BackgroundRole:
            return QtGui.QBrush(QtGui.QColor(STATE_COLOURS.get(row.state, STATE_COLOURS[UNKNOWN])))
        if role == Qt.ItemDataRole.ForegroundRole:
            if key == "state":
                return QtGui.QBrush(QtGui.QColor("#ffffff"))
            if not row.enabled:
                return QtGui.QBrush(QtGui.QColor("#808080"))
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
    "STATE_COLOURS",
    "UNKNOWN",
    "ServerRow",
    "ServerTableModel",
    "build_rows",
    "row_from_config",
    "row_from_status",
]
