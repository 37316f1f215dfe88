"""The server panel's widgets: action buttons, the table, the details area and two message lines.

Widgets only: :class:`ServerPanelWidget` shows its controller's model and turns clicks into
request signals; :class:`~comfy_cluster.ui.controller.PanelController` decides what they do.
:func:`create_panel_widget` builds the pair. Main (Qt) thread only, like every widget.

The table has the few columns a docked pane (about 520 px) has room for; the selected server's
details, its last error in full among them, are in the area under it (a splitter between the two
lets the artist trade rows for detail).
"""

from __future__ import annotations

from typing import Optional

from comfy_cluster.core.server import ServerConfig
from comfy_cluster.ui.controller import DEFAULT_INTERVAL_MS, PanelController
from comfy_cluster.ui.details import ServerDetails
from comfy_cluster.ui.panel_model import COLUMN_KEYS, NAME_ROLE, STATE_COLOUR_ROLE
from comfy_cluster.ui.qt import QtCore, QtGui, QtWidgets, Signal
from comfy_cluster.ui.server_dialog import ServerDialog
from comfy_cluster.ui.service import ClusterServiceProtocol
from comfy_cluster.ui.state_badge import StateBadgeDelegate

#: ``objectName`` of every panel widget, so tools (and tests) can find open panels.
WIDGET_OBJECT_NAME = "comfyClusterServerPanel"

_ERROR_STYLE = "color: #e06c6c;"


class ServerPanelWidget(QtWidgets.QWidget):
    """Servers table, the selected server's details, and add/edit/remove/enable controls.

    The widget owns ``controller`` from here on (it becomes a child), so closing the pane stops
    the controller's timer. Requests go out as signals; the controller is connected to them.
    """

    #: The pane became visible (True) or hidden (False): the controller polls only while shown.
    visibility_changed = Signal(bool)
    enable_requested = Signal(str, bool)
    priority_requested = Signal(str, int)
    add_requested = Signal(object)  # a ServerConfig
    edit_requested = Signal(str, object)  # old name, the edited ServerConfig
    remove_requested = Signal(str)
    refresh_requested = Signal()

    def __init__(
        self, controller: PanelController, parent: Optional[QtWidgets.QWidget] = None
    ) -> None:
        super().__init__(parent)
        self.setObjectName(WIDGET_OBJECT_NAME)
        self.controller = controller
        controller.setParent(self)

        self.table = self._make_table(controller)
        self.details = ServerDetails(self)
        self.splitter = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical, self)
        self.splitter.setChildrenCollapsible(False)
        self.splitter.addWidget(self.table)
        self.splitter.addWidget(self.details)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)

        self.add_button = QtWidgets.QPushButton("Add...", self)
        self.add_button.setToolTip("Add a server (saved to your user config file)")
        self.edit_button = QtWidgets.QPushButton("Edit...", self)
        self.edit_button.setToolTip("Edit every setting of the selected server")
        self.remove_button = QtWidgets.QPushButton("Remove", self)
        self.refresh_button = QtWidgets.QPushButton("Refresh", self)
        self.refresh_button.setToolTip("Check every server's health now")
        self.enabled_button = QtWidgets.QPushButton("Enabled", self)
        self.enabled_button.setCheckable(True)
        self.enabled_button.setToolTip("Use the selected server for renders")
        self.priority_spin = QtWidgets.QSpinBox(self)
        self.priority_spin.setRange(1, 999)
        self.priority_spin.setPrefix("Priority ")
        self.priority_spin.setToolTip("1 is the most preferred server")
        self.priority_spin.setKeyboardTracking(False)
        self.status_label = QtWidgets.QLabel(self)
        self.error_label = QtWidgets.QLabel(self)
        self.error_label.setStyleSheet(_ERROR_STYLE)
        self.error_label.setWordWrap(True)
        self.error_label.setTextInteractionFlags(
            QtCore.Qt.TextInteractionFlag.TextSelectableByMouse
        )
        self.error_label.hide()
        self._lay_out()

        self.enabled_button.clicked.connect(self._enabled_clicked)
        self.priority_spin.valueChanged.connect(self._priority_changed)
        self.add_button.clicked.connect(self._add_clicked)
        self.edit_button.clicked.connect(self._edit_clicked)
        self.table.doubleClicked.connect(self._edit_clicked)
        self.remove_button.clicked.connect(self._remove_clicked)
        self.refresh_button.clicked.connect(self.refresh_requested)
        self.table.selectionModel().selectionChanged.connect(self.sync_selection)
        model = controller.model
        for signal in (model.dataChanged, model.modelReset, model.rowsRemoved):
            signal.connect(self.sync_selection)
        for signal in (model.dataChanged, model.modelReset, model.rowsInserted):
            signal.connect(self._fit_columns)
        self._splitter_fitted = False
        controller.bind(self)
        self.sync_selection()

    def _make_table(self, controller: PanelController) -> QtWidgets.QTableView:
        table = QtWidgets.QTableView(self)
        table.setModel(controller.model)
        table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        table.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.SingleSelection)
        table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        table.setAlternatingRowColors(True)
        table.setWordWrap(False)
        table.verticalHeader().setVisible(False)
        table.verticalHeader().setDefaultSectionSize(table.fontMetrics().height() + 12)
        # The state colour is drawn as a badge, so the selection highlight cannot hide it.
        self.state_delegate = StateBadgeDelegate(STATE_COLOUR_ROLE, table)
        table.setItemDelegateForColumn(COLUMN_KEYS.index("state"), self.state_delegate)
        header = table.horizontalHeader()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(QtWidgets.QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(
            COLUMN_KEYS.index("name"), QtWidgets.QHeaderView.ResizeMode.Stretch
        )
        return table

    def _fit_columns(self, *_args: object) -> None:
        """Size the columns to their text again: the header does not when rows arrive later."""
        for column, key in enumerate(COLUMN_KEYS):
            if key != "name":  # the name column takes what is left
                self.table.resizeColumnToContents(column)

    def _fit_splitter(self) -> None:
        """Once, when first shown: the table as tall as its rows (3 to 8), details the rest."""
        rows = min(max(self.controller.model.rowCount(), 3), 8)
        frame = 2 * self.table.frameWidth()
        wanted = self.table.horizontalHeader().height() + frame
        wanted += rows * self.table.verticalHeader().defaultSectionSize()
        total = sum(self.splitter.sizes())
        if total <= 0:
            return
        table = min(wanted, total * 2 // 3)
        self.splitter.setSizes([table, total - table])
        self._splitter_fitted = True

    def _lay_out(self) -> None:
        actions = QtWidgets.QHBoxLayout()
        for widget in (self.add_button, self.edit_button, self.remove_button):
            actions.addWidget(widget)
        actions.addStretch(1)
        actions.addWidget(self.refresh_button)
        selected = QtWidgets.QHBoxLayout()
        selected.addWidget(self.enabled_button)
        selected.addWidget(self.priority_spin)
        selected.addStretch(1)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(actions)
        layout.addWidget(self.splitter, 1)
        layout.addLayout(selected)
        layout.addWidget(self.error_label)
        layout.addWidget(self.status_label)

    # -- called by the controller ------------------------------------------------------------
    def show_status(self, text: str) -> None:
        """The grey line at the bottom: how many servers, when last refreshed."""
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
        """Show the selected server's details, enabled flag and priority on the controls."""
        name = self.selected_name()
        row = self.controller.model.row_named(name) if name else None
        self.details.show_row(row)
        for widget in (self.enabled_button, self.priority_spin, self.remove_button):
            widget.setEnabled(row is not None)
        self.edit_button.setEnabled(bool(name) and self.controller.server_config(name) is not None)
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

    def _edit_clicked(self, *_args: object) -> None:
        name = self.selected_name()
        existing = self.controller.server_config(name) if name else None
        if existing is None:
            return
        config = self.ask_edited_server(existing)
        if config is not None:
            self.edit_requested.emit(existing.name, config)

    def _remove_clicked(self) -> None:
        name = self.selected_name()
        if name and self.confirm(f"Remove server {name!r} from the cluster?"):
            self.remove_requested.emit(name)

    def ask_new_server(self) -> Optional[ServerConfig]:
        """Ask for a new server with a modal dialog; None if cancelled. Tests override this."""
        return run_dialog(ServerDialog(taken_names=self.controller.server_names(), parent=self))

    def ask_edited_server(self, existing: ServerConfig) -> Optional[ServerConfig]:
        """Ask for ``existing``'s new settings; None if cancelled. Tests override this."""
        names = self.controller.server_names()
        return run_dialog(ServerDialog(existing, taken_names=names, parent=self))

    def confirm(self, question: str) -> bool:
        """Ask yes/no; tests override this."""
        answer = QtWidgets.QMessageBox.question(self, "ComfyUI Cluster", question)
        return answer == QtWidgets.QMessageBox.StandardButton.Yes

    # -- Qt events -----------------------------------------------------------------------
    def showEvent(self, event: QtGui.QShowEvent) -> None:
        super().showEvent(event)
        self.visibility_changed.emit(True)
        if not self._splitter_fitted:
            self._fit_splitter()

    def hideEvent(self, event: QtGui.QHideEvent) -> None:
        super().hideEvent(event)
        self.visibility_changed.emit(False)


def run_dialog(dialog: ServerDialog) -> Optional[ServerConfig]:
    """Run ``dialog`` modally (``exec`` on PySide6, ``exec_`` on PySide2); its server or None."""
    try:
        run = dialog.exec if hasattr(dialog, "exec") else dialog.exec_
        return dialog.server() if run() else None
    finally:
        dialog.deleteLater()


def create_panel_widget(
    service: ClusterServiceProtocol,
    *,
    interval_ms: int = DEFAULT_INTERVAL_MS,
    parent: Optional[QtWidgets.QWidget] = None,
) -> ServerPanelWidget:
    """Build controller + widget for ``service``; the controller lives and dies with the widget."""
    controller = PanelController(service, interval_ms=interval_ms)
    return ServerPanelWidget(controller, parent)


__all__ = [
    "WIDGET_OBJECT_NAME",
    "ServerDialog",
    "ServerPanelWidget",
    "create_panel_widget",
    "run_dialog",
]
