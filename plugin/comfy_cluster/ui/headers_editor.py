"""Rows of HTTP header name + value for the server dialog, with the values treated as secrets.

Header values are often API keys, so each value is a password-mode field and an existing value is
never put back into a widget: a row for a header the server already has shows an empty value with
"unchanged" as its placeholder, and leaving it empty keeps the stored value (held in Python only).
Main (Qt) thread only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional

from comfy_cluster.core.errors import ConfigError
from comfy_cluster.ui.qt import QtWidgets

#: Placeholder of a secret field whose stored value is kept when left empty.
KEEP_PLACEHOLDER = "unchanged (type to replace)"


@dataclass
class HeaderRow:
    """One header's widgets, and the stored value it keeps when its value field is left empty."""

    widget: QtWidgets.QWidget
    name_edit: QtWidgets.QLineEdit
    value_edit: QtWidgets.QLineEdit
    remove_button: QtWidgets.QToolButton
    kept_value: Optional[str] = None


class HeadersEditor(QtWidgets.QWidget):
    """Edits a server's ``headers`` object; :meth:`headers` returns the JSON object to validate."""

    def __init__(
        self, existing: Mapping[str, str], parent: Optional[QtWidgets.QWidget] = None
    ) -> None:
        super().__init__(parent)
        self.rows: list[HeaderRow] = []
        self._rows_layout = QtWidgets.QVBoxLayout()
        self._rows_layout.setContentsMargins(0, 0, 0, 0)
        self.add_button = QtWidgets.QPushButton("Add header", self)
        self.add_button.setToolTip("An extra HTTP header sent on every request (JSON key: headers)")
        self.add_button.clicked.connect(lambda: self.add_row())
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(self._rows_layout)
        add_line = QtWidgets.QHBoxLayout()
        add_line.addWidget(self.add_button)
        add_line.addStretch(1)
        layout.addLayout(add_line)
        for name, value in existing.items():
            self.add_row(name, kept_value=value)

    def add_row(self, name: str = "", *, kept_value: Optional[str] = None) -> HeaderRow:
        """Add a header row; ``kept_value`` is the stored secret kept if the value stays empty."""
        widget = QtWidgets.QWidget(self)
        name_edit = QtWidgets.QLineEdit(name, widget)
        name_edit.setPlaceholderText("Header name")
        value_edit = QtWidgets.QLineEdit(widget)
        value_edit.setEchoMode(QtWidgets.QLineEdit.EchoMode.Password)
        value_edit.setPlaceholderText(KEEP_PLACEHOLDER if kept_value is not None else "Value")
        remove = QtWidgets.QToolButton(widget)
        remove.setText("x")
        remove.setToolTip("Remove this header")
        line = QtWidgets.QHBoxLayout(widget)
        line.setContentsMargins(0, 0, 0, 0)
        line.addWidget(name_edit, 2)
        line.addWidget(value_edit, 3)
        line.addWidget(remove)
        row = HeaderRow(widget, name_edit, value_edit, remove, kept_value)
        remove.clicked.connect(lambda: self.remove_row(row))
        self.rows.append(row)
        self._rows_layout.addWidget(widget)
        return row

    def remove_row(self, row: HeaderRow) -> None:
        """Drop ``row`` (and its stored value) from the headers."""
        self.rows.remove(row)
        self._rows_layout.removeWidget(row.widget)
        row.widget.deleteLater()

    def focus_first(self) -> None:
        """Put the keyboard focus on the first header's name (or on "Add header")."""
        target = self.rows[0].name_edit if self.rows else self.add_button
        target.setFocus()

    def headers(self, source: str) -> dict[str, str]:
        """The ``headers`` JSON object: typed values, else the kept ones; blank rows skipped.

        Raises :class:`ConfigError` (field ``headers``, naming ``source``) for a value without a
        name, a name used twice, or a new header without a value.
        """
        out: dict[str, str] = {}
        for row in self.rows:
            name = row.name_edit.text().strip()
            typed = row.value_edit.text()
            if not name and not typed:
                continue
            if not name:
                raise ConfigError(
                    "a header has a value but no name", source=source, field="headers"
                )
            if name in out:
                raise ConfigError(f"header {name!r} is given twice", source=source, field="headers")
            value = typed if typed else row.kept_value
            if value is None:
                raise ConfigError(f"header {name!r} has no value", source=source, field="headers")
            out[name] = value
        return out


__all__ = ["KEEP_PLACEHOLDER", "HeaderRow", "HeadersEditor"]
