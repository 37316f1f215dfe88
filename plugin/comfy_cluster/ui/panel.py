"""The server panel's widgets: the table, the action buttons and two message lines.

Widgets only: :class:`ServerPanelWidget` shows its controller's model and turns clicks into
request signals; :class:`~comfy_cluster.ui.controller.PanelController` decides what they do.
:func:`create_panel_widget` builds the pair. Main (Qt) thread only, like every widget.
"""

from __future__ import annotations

from typing import Optional

from comfy_cluster.core.server import DEFAULT_PORT, ServerConfig
from comfy_cluster.ui.controller import DEFAULT_INTERVAL_MS, PanelController
from comfy_cluster.ui.panel_model import COLUMN_KEYS, NAME_ROLE
from comfy_cluster.ui.qt import QtCore, QtGui, QtWidgets, Signal
from comfy_cluster.ui.service import ClusterServiceProtocol

#: ``objectName`` of every panel widget, so tools (and tests) can find open panels.
WIDGET_OBJECT_NAME = "comfyClusterServerPanel"

_ERROR_STYLE = "color: #e06c6c;"


class AddServerDialog(QtWidgets.QDialog):
    """Asks for a new server's name, host, port and priority. Main thread only."""

    def __init__(self, parent: Optional[QtWidgets.QWidget] = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Add ComfyUI server")
        self.name_edit = QtWidgets.QLineEdit(self)
        self.name_edit.setPlaceholderText("gpu-box-1")
        self.host_edit = QtWidgets.QLineEdit(self)
        self.host_edit.setPlaceholderText("10.0.0.5 or http://host:8188")
        self.port_spin = QtWidgets.QSpinBox(self)
        self.port_spin.setRange(1, 65535)
        self.port_spin.setValue(DEFAULT_PORT)
        self.priority_spin = QtWidgets.QSpinBox(self)
        self.priority_spin.setRange(1, 999)
        self.priority_spin.setValue(1)
        form = QtWidgets.QFormLayout(self)
        form.addRow("Name", self.name_edit)
        form.addRow("Host", self.host_edit)
        form.addRow("Port", self.port_spin)
        form.addRow("Priority", self.priority_spin)
        buttons = QtWidgets.QDialogButtonBox(
            QtWidgets.QDialogButtonBox.StandardButton.Ok
            | QtWidgets.QDialogButtonBox.StandardButton.Cancel,
            parent=self,
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def server(self) -> Optional[ServerConfig]:
        """The entered server, or None when name or host is empty."""
        name = self.name_edit.text().strip()
        host = self.host_edit.text().strip()
        if not name or not host:
            return None
        scheme = "http"
        port = self.port_spin.value()
        if "://" in host:
            url = QtCore.QUrl(host)
            scheme = url.scheme() or scheme
            port = url.port(port)
            host = url.host() or host
        return ServerConfig(
            name=name,
            host=host,
            port=port,
            scheme=scheme,
            priority=self.priority_spin.value(),
            source="panel",
        )


class ServerPanelWidget(QtWidgets.QWidget):
    """Table of servers plus enable, priority, add, remove and refresh controls.

    The widget owns ``controller`` from here on (it becomes a child), so closing the pane stops
    the controller's timer. Requests go out as signals; the controller is connected to them.
    """

    #: The pane became visible (True) or hidden (False): the controller polls only while shown.
    visibility_changed = Signal(bool)
    enable_requested = Signal(str, bool)
    priority_requested = Signal(str, int)
    add_requested = Signal(object)  # a ServerConfig
    remove_requested = Signal(str)
    refresh_requested = Signal()

    def __init__(
        self, controller: PanelController, parent: Optional[QtWidgets.QWidget] = None
    ) -> None:
        super().__init__(parent)
        self.setObjectName(WIDGET_OBJECT_NAME)
        self.controller = controller
        controller.setParent(self)

        self.table = QtWidgets.QTableView(self)
        self.table.setModel(controller.model)
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        header.setStretchLastSection(True)
        header.setSectionResizeMode(QtWidgets.QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(
            COLUMN_KEYS.index("last_error"), QtWidgets.QHeaderView.ResizeMode.Stretch
        )

        self.enabled_button = QtWidgets.QPushButton("Enabled", self)
        self.enabled_button.setCheckable(True)
        self.enabled_button.setToolTip("Use the selected server for renders")
        self.priority_spin = QtWidgets.QSpinBox(self)
        self.priority_spin.setRange(1, 999)
        self.priority_spin.setPrefix("Priority ")
        self.priority_spin.setToolTip("1 is the most preferred server")
        self.priority_spin.setKeyboardTracking(False)
        self.add_button = QtWidgets.QPushButton("Add...", self)
        self.remove_button = QtWidgets.QPushButton("Remove", self)
        self.refresh_button = QtWidgets.QPushButton("Refresh now", self)
        self.status_label = QtWidgets.QLabel(self)
        self.error_label = QtWidgets.QLabel(self)
        self.error_label.setStyleSheet(_ERROR_STYLE)
        self.error_label.setWordWrap(True)
        self.error_label.setTextInteractionFlags(
            QtCore.Qt.TextInteractionFlag.TextSelectableByMouse
        )
        self.error_label.hide()

        buttons = QtWidgets.QHBoxLayout()
        for widget in (self.enabled_button, self.priority_spin, self.add_button):
            buttons.addWidget(widget)
        buttons.addWidget(self.remove_button)
        buttons.addStretch(1)
        buttons.addWidget(self.refresh_button)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(buttons)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.error_label)
        layout.addWidget(self.status_label)

        self.enabled_button.clicked.connect(self._enabled_clicked)
        self.priority_spin.valueChanged.connect(self._priority_changed)
        self.add_button.clicked.connect(self._add_clicked)
        self.remove_button.clicked.connect(self._remove_clicked)
        self.refresh_button.clicked.connect(self.refresh_requested)
        self.table.selectionModel().selectionChanged.connect(self.sync_selection)
        controller.model.dataChanged.connect(self.sync_selection)
        controller.model.modelReset.connect(self.sync_selection)
        controller.model.rowsRemoved.connect(self.sync_selection)
        controller.bind(self)
        self.sync_selection()

    # -- called by the controller ------------------------------------------------------------
    def show_status(self, text: str) -> None:
        """The grey line under the table: how many servers, when last refreshed."""
        self.status_label.setText(text)

    def show_error(self, text: str) -> None:
        """The red line: why the last action failed; empty hides it."""
        self.error_label.setText(text)
        self.error_label.setVisible(bool(text))

    # -- selection -----------------------------------------------------------------------
    def selected_name(self) -> Optional[str]:
        """The selected server's name, or None."""
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        return rows[0].data(NAME_ROLE)

    def select(self, name: str) -> bool:
        """Select the row of server ``name``; False if there is none."""
        row = self.controller.model.row_of(name)
        if row < 0:
            return False
        self.table.selectRow(row)
        return True

    def sync_selection(self, *_args: object) -> None:
        """Make the buttons show the selected server's enabled flag and priority."""
        name = self.selected_name()
        row = self.controller.model.row_named(name) if name else None
        for widget in (self.enabled_button, self.priority_spin, self.remove_button):
            widget.setEnabled(row is not None)
        if row is None:
            return
        blockers = (self.enabled_button.blockSignals(True), self.priority_spin.blockSignals(True))
        try:
            self.enabled_button.setChecked(row.enabled)
            self.enabled_button.setText("Enabled" if row.enabled else "Disabled")
            if row.priority is not None:
                self.priority_spin.setValue(row.priority)
        finally:
            self.enabled_button.blockSignals(blockers[0])
            self.priority_spin.blockSignals(blockers[1])

    # -- user actions --------------------------------------------------------------------
    def _enabled_clicked(self, checked: bool) -> None:
        name = self.selected_name()
        if name:
            self.enable_requested.emit(name, bool(checked))

    def _priority_changed(self, value: int) -> None:
        name = self.selected_name()
        row = self.controller.model.row_named(name) if name else None
        if row is not None and row.priority != value:
            self.priority_requested.emit(row.name, int(value))

    def _add_clicked(self) -> None:
        config = self.ask_new_server()
        if config is not None:
            self.add_requested.emit(config)

    def _remove_clicked(self) -> None:
        name = self.selected_name()
        if name and self.confirm(f"Remove server {name!r} from the cluster?"):
            self.remove_requested.emit(name)

    def ask_new_server(self) -> Optional[ServerConfig]:
        """Ask for a new server with a modal dialog; None if cancelled. Tests override this."""
        dialog = AddServerDialog(self)
        accepted = dialog.exec() if hasattr(dialog, "exec") else dialog.exec_()
        return dialog.server() if accepted else None

    def confirm(self, question: str) -> bool:
        """Ask yes/no; tests override this."""
        answer = QtWidgets.QMessageBox.question(self, "ComfyUI Cluster", question)
        return answer == QtWidgets.QMessageBox.StandardButton.Yes

    # -- Qt events -----------------------------------------------------------------------
    def showEvent(self, event: QtGui.QShowEvent) -> None:
        super().showEvent(event)
        self.visibility_changed.emit(True)

    def hideEvent(self, event: QtGui.QHideEvent) -> None:
        super().hideEvent(event)
        self.visibility_changed.emit(False)


def create_panel_widget(
    service: ClusterServiceProtocol,
    *,
    interval_ms: int = DEFAULT_INTERVAL_MS,
    parent: Optional[QtWidgets.QWidget] = None,
) -> ServerPanelWidget:
    """Build controller + widget for ``service``; the controller lives and dies with the widget."""
    controller = PanelController(service, interval_ms=interval_ms)
    return ServerPanelWidget(controller, parent)


__all__ = ["WIDGET_OBJECT_NAME", "AddServerDialog", "ServerPanelWidget", "create_panel_widget"]
