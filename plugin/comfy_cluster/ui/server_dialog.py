"""Add or edit a server with every field the JSON config has, validated by the config's own parser.

:class:`ServerDialog` builds the very object a server has in ``NUKE_COMFYUI_SERVERS`` or the user
file and hands it to :func:`~comfy_cluster.core.config.server_json.parse_server_dict`, so the panel
accepts exactly what the config accepts, and a refusal shows the parser's own ``ConfigError``
message in the dialog, naming the field, with that field outlined and focused; the dialog stays
open until the entry is valid or cancelled.

Secrets (the token, header values) are password-mode fields and are never filled back in: editing
a server that has one shows an empty field whose placeholder says the stored value is kept, and
only typing a new value (or ticking "Remove token", or removing the header) changes it.
Main (Qt) thread only.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from typing import Any, Optional

from comfy_cluster.core.config.server_json import parse_server_dict
from comfy_cluster.core.errors import ConfigError
from comfy_cluster.core.server import DEFAULT_PORT, MASK, ServerConfig
from comfy_cluster.ui.headers_editor import KEEP_PLACEHOLDER, HeadersEditor
from comfy_cluster.ui.qt import QtWidgets

#: The ``source`` a server entered in the panel reports until the user file stores it.
SOURCE = "panel"

#: How the dialog names each JSON key (and the parser's aliases of it) in an error.
FIELD_LABELS = {
    "name": "Name",
    "host": "Host",
    "ip": "Host",
    "url": "Host",
    "port": "Port",
    "scheme": "Scheme",
    "token": "Token",
    "headers": "Headers",
    "verify_tls": "Verify TLS",
    "ca_bundle": "CA bundle",
    "dir_local": "Local folder",
    "dir_remote": "Server folder",
    "priority": "Priority",
    "max_in_flight": "Max in flight",
    "max_download_bytes": "Max download (MiB)",
    "enabled": "Enabled",
    "tags": "Tags",
}

_ERROR_STYLE = "color: #e06c6c;"
#: The label of the field at fault: red and bold (the field itself keeps its look and gets focus).
_INVALID_LABEL_STYLE = "color: #e06c6c; font-weight: bold;"


def _spin(low: int, high: int, value: int, tip: str) -> QtWidgets.QSpinBox:
    spin = QtWidgets.QSpinBox()
    spin.setRange(low, high)
    spin.setValue(value)
    spin.setToolTip(tip)
    return spin


def _line(text: str, placeholder: str, tip: str) -> QtWidgets.QLineEdit:
    edit = QtWidgets.QLineEdit(text)
    edit.setPlaceholderText(placeholder)
    edit.setToolTip(tip)
    return edit


def _group(
    title: str, rows: list[tuple[str, QtWidgets.QWidget]], labels: dict[str, QtWidgets.QLabel]
) -> QtWidgets.QGroupBox:
    """A titled form of (label, widget) rows; each label is recorded in ``labels`` by its text."""
    box = QtWidgets.QGroupBox(title)
    form = QtWidgets.QFormLayout(box)
    for text, widget in rows:
        label = QtWidgets.QLabel(text, box)
        labels[text] = label
        form.addRow(label, widget)
    return box


class ServerDialog(QtWidgets.QDialog):
    """Asks for every field of a server; ``existing`` fills it in for editing.

    ``taken_names`` are the servers already configured: adding one of those names (or renaming to
    one) is refused, since it would silently replace that server. After ``exec()`` returned
    accepted, :meth:`server` is the validated :class:`ServerConfig`.
    """

    def __init__(
        self,
        existing: Optional[ServerConfig] = None,
        *,
        taken_names: Collection[str] = (),
        parent: Optional[QtWidgets.QWidget] = None,
    ) -> None:
        super().__init__(parent)
        self.existing = existing
        self._taken = frozenset(taken_names)
        self._result: Optional[ServerConfig] = None
        self.invalid_field: Optional[str] = None
        old = existing or ServerConfig(name="", host="")
        self.setWindowTitle(f"Edit server {old.name!r}" if existing else "Add ComfyUI server")

        self.name_edit = _line(old.name, "host:port if empty", "JSON key: name")
        self.host_edit = _line(old.host, "10.0.0.5, or paste http://host:8188", "JSON key: host")
        self.port_spin = _spin(1, 65535, old.port if existing else DEFAULT_PORT, "JSON key: port")
        self.scheme_combo = QtWidgets.QComboBox()
        self.scheme_combo.addItems(["http", "https"])
        self.scheme_combo.setCurrentText(old.scheme)
        self.scheme_combo.setToolTip("JSON key: scheme")
        self.token_edit = _line("", "none", "Sent as 'Authorization: Bearer ...' (JSON key: token)")
        self.token_edit.setEchoMode(QtWidgets.QLineEdit.EchoMode.Password)
        self.clear_token_check = QtWidgets.QCheckBox("Remove the stored token")
        self.clear_token_check.setVisible(bool(old.token))
        if old.token:
            self.token_edit.setPlaceholderText(KEEP_PLACEHOLDER)
        self.headers_editor = HeadersEditor(old.headers)
        self.verify_tls_check = QtWidgets.QCheckBox("Check the server's https certificate")
        self.verify_tls_check.setChecked(old.verify_tls)
        self.verify_tls_check.setToolTip("https only; untick for a self-signed one (verify_tls)")
        self.ca_bundle_edit = _line(
            old.ca_bundle or "", "default CAs", "https only: a PEM file's absolute path (ca_bundle)"
        )
        self.ca_browse_button = QtWidgets.QPushButton("Browse...")
        self.ca_browse_button.clicked.connect(self._browse_ca_bundle)
        self.dir_local_edit = _line(old.dir_local, "e.g. U:/", "ComfyUI's folder as Nuke sees it")
        self.dir_remote_edit = _line(
            old.dir_remote, "e.g. /srv/comfy/", "The same folder as the server sees it"
        )
        self.priority_spin = _spin(1, 999, old.priority, "1 is the most preferred server")
        self.max_in_flight_spin = _spin(
            1, 999, old.max_in_flight, "How many of our prompts may sit in its queue at once"
        )
        # MiB on screen (a spin box holds at most 2**31-1); an unchanged value keeps exact bytes.
        self._old_download_bytes = old.max_download_bytes
        self.max_download_spin = _spin(
            1, 1 << 20, max(1, old.max_download_bytes >> 20), "The largest output file accepted"
        )
        self.enabled_check = QtWidgets.QCheckBox("Use this server for renders")
        self.enabled_check.setChecked(old.enabled)
        self.tags_edit = _line(", ".join(old.tags), "comma separated", "Free labels (tags)")
        self.error_label = QtWidgets.QLabel()
        self.error_label.setStyleSheet(_ERROR_STYLE)
        self.error_label.setWordWrap(True)
        self.error_label.hide()
        #: The form's row labels by their text (see :data:`FIELD_LABELS`).
        self.labels: dict[str, QtWidgets.QLabel] = {}
        self._layout()

        self.host_edit.editingFinished.connect(self._split_url)

    def _layout(self) -> None:
        ca_line = QtWidgets.QHBoxLayout()
        ca_line.setContentsMargins(0, 0, 0, 0)
        ca_line.addWidget(self.ca_bundle_edit, 1)
        ca_line.addWidget(self.ca_browse_button)
        ca_widget = QtWidgets.QWidget()
        ca_widget.setLayout(ca_line)
        token_widget = QtWidgets.QWidget()
        token_lines = QtWidgets.QVBoxLayout(token_widget)
        token_lines.setContentsMargins(0, 0, 0, 0)
        token_lines.addWidget(self.token_edit)
        token_lines.addWidget(self.clear_token_check)
        buttons = QtWidgets.QDialogButtonBox(
            QtWidgets.QDialogButtonBox.StandardButton.Ok
            | QtWidgets.QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        self.buttons = buttons
        layout = QtWidgets.QVBoxLayout(self)
        connection = [("Name", self.name_edit), ("Host", self.host_edit)]
        connection += [("Port", self.port_spin), ("Scheme", self.scheme_combo)]
        layout.addWidget(_group("Server", connection, self.labels))
        access = [("Token", token_widget), ("Headers", self.headers_editor)]
        access += [("Verify TLS", self.verify_tls_check), ("CA bundle", ca_widget)]
        layout.addWidget(_group("Access", access, self.labels))
        layout.addWidget(
            _group(
                "Path mapping",
                [("Local folder", self.dir_local_edit), ("Server folder", self.dir_remote_edit)],
                self.labels,
            )
        )
        scheduling = [("Priority", self.priority_spin), ("Max in flight", self.max_in_flight_spin)]
        scheduling += [("Max download (MiB)", self.max_download_spin)]
        scheduling += [("Enabled", self.enabled_check), ("Tags", self.tags_edit)]
        layout.addWidget(_group("Scheduling", scheduling, self.labels))
        layout.addWidget(self.error_label)
        layout.addWidget(buttons)

    # -- the JSON object and its validation ------------------------------------------------
    def _download_bytes(self) -> int:
        mib = self.max_download_spin.value()
        return (
            self._old_download_bytes if mib == max(1, self._old_download_bytes >> 20) else mib << 20
        )

    def server_dict(self) -> dict[str, Any]:
        """The JSON object this entry stands for, secrets included (kept or newly typed)."""
        host = self.host_edit.text().strip()
        d: dict[str, Any] = {}
        name = self.name_edit.text().strip()
        if name:
            d["name"] = name
        if "://" in host:  # a pasted URL carries its own scheme and port
            d["url"] = host
        else:
            d.update(host=host, port=self.port_spin.value(), scheme=self.scheme_combo.currentText())
        d.update(
            priority=self.priority_spin.value(),
            enabled=self.enabled_check.isChecked(),
            max_in_flight=self.max_in_flight_spin.value(),
            max_download_bytes=self._download_bytes(),
            verify_tls=self.verify_tls_check.isChecked(),
            dir_local=self.dir_local_edit.text().strip(),
            dir_remote=self.dir_remote_edit.text().strip(),
        )
        token = self.token_edit.text().strip() or self._kept_token()
        if token:
            d["token"] = token
        headers = self.headers_editor.headers(SOURCE)
        if headers:
            d["headers"] = headers
        tags = [tag.strip() for tag in self.tags_edit.text().split(",") if tag.strip()]
        if tags:
            d["tags"] = tags
        if self.ca_bundle_edit.text().strip():
            d["ca_bundle"] = self.ca_bundle_edit.text().strip()
        return d

    def _kept_token(self) -> Optional[str]:
        if self.existing is None or self.clear_token_check.isChecked():
            return None
        return self.existing.token

    def validate(self) -> ServerConfig:
        """The entry as a :class:`ServerConfig`, checked by the config parser.

        Raises :class:`ConfigError` (with ``field`` set) exactly where the config file would,
        plus for a name that another configured server already has.
        """
        config = parse_server_dict(self.server_dict(), SOURCE)
        renamed = self.existing is None or config.name != self.existing.name
        if renamed and config.name in self._taken:
            raise ConfigError(
                f"a server named {config.name!r} already exists; edit that one instead",
                source=SOURCE,
                field="name",
            )
        return config

    def server(self) -> Optional[ServerConfig]:
        """The validated server once the dialog was accepted, else None."""
        return self._result

    def accept(self) -> None:
        """Close only with a valid entry; otherwise show why and stay open."""
        try:
            config = self.validate()
        except ConfigError as exc:
            self.show_error(exc)
            return
        self._result = config
        super().accept()

    # -- showing a refusal ---------------------------------------------------------------
    def field_widget(self, field: Optional[str]) -> Optional[QtWidgets.QWidget]:
        """The widget that edits JSON key ``field`` (aliases included), or None."""
        widgets: dict[str, QtWidgets.QWidget] = {
            "name": self.name_edit,
            "host": self.host_edit,
            "ip": self.host_edit,
            "url": self.host_edit,
            "port": self.port_spin,
            "scheme": self.scheme_combo,
            "token": self.token_edit,
            "headers": self.headers_editor,
            "verify_tls": self.verify_tls_check,
            "ca_bundle": self.ca_bundle_edit,
            "dir_local": self.dir_local_edit,
            "dir_remote": self.dir_remote_edit,
            "priority": self.priority_spin,
            "max_in_flight": self.max_in_flight_spin,
            "max_download_bytes": self.max_download_spin,
            "enabled": self.enabled_check,
            "tags": self.tags_edit,
        }
        return widgets.get(field or "")

    def show_error(self, exc: ConfigError) -> None:
        """Say which field is wrong and why (never echoing a secret); mark its label, focus it."""
        for label in self.labels.values():
            label.setStyleSheet("")
        name = FIELD_LABELS.get(exc.field or "")
        message = f"{name}: {exc.message}" if name else str(exc)
        for secret in self._secrets():
            message = message.replace(secret, MASK)
        self.error_label.setText(message)
        self.error_label.show()
        self.invalid_field = exc.field
        if name in self.labels:
            self.labels[name].setStyleSheet(_INVALID_LABEL_STYLE)
        widget = self.field_widget(exc.field)
        if isinstance(widget, HeadersEditor):
            widget.focus_first()
        elif widget is not None:
            widget.setFocus()

    def _secrets(self) -> list[str]:
        values = [self.token_edit.text().strip()]
        values += [row.value_edit.text() for row in self.headers_editor.rows]
        if self.existing is not None:
            values += self.existing.secret_values()
        return [value for value in values if value]

    # -- small conveniences --------------------------------------------------------------
    def _split_url(self) -> None:
        """A pasted URL is split into host, port and scheme by the config's own parser."""
        text = self.host_edit.text().strip()
        if "://" not in text:
            return
        try:
            parsed = parse_server_dict({"url": text}, SOURCE)
        except ConfigError as exc:
            self.show_error(exc)
            return
        self.host_edit.setText(parsed.host)
        self.port_spin.setValue(parsed.port)
        self.scheme_combo.setCurrentText(parsed.scheme)

    def _browse_ca_bundle(self) -> None:
        start = os.path.dirname(self.ca_bundle_edit.text().strip()) or os.path.expanduser("~")
        path, _ = QtWidgets.QFileDialog.getOpenFileName(
            self, "CA bundle (PEM)", start, "PEM files (*.pem *.crt);;All files (*)"
        )
        if path:
            self.ca_bundle_edit.setText(path)


__all__ = ["FIELD_LABELS", "SOURCE", "ServerDialog"]
