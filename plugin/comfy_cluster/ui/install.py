"""Registers the server panel with Nuke so it is in the Pane menu and comes back with layouts.

``menu.py`` calls :func:`install_gui`; :func:`uninstall_gui` is its exact inverse. Both run on the
main thread in a GUI session (``nuke`` and ``nukescripts`` are imported inside them, so importing
this module needs no Nuke).

How a panel is built (Foundry's own ``webBrowser`` example, made robust):

1. The Pane-menu command and ``nukescripts.registerPanel(PANEL_ID, ...)`` both call
   :func:`open_panel`, which creates a ``nukescripts.PythonPanel`` with id :data:`PANEL_ID` and
   adds it to the current pane. Saved workspaces refer to that id, so it never changes.
2. The panel holds one ``PyCustom_Knob`` whose expression, evaluated by Nuke in its own
   namespace, imports this module with ``__import__`` (a bare dotted name would only resolve if
   ``comfy_cluster`` happened to be imported in ``__main__``) and builds a :class:`PanelWidgetKnob`.
3. ``makeUI`` takes no arguments, so the widget finds the cluster service through a
   :class:`ServiceHost` parked on the QApplication under a fixed object name. The service is
   process-wide and lives outside any widget: every pane shows the same cluster, and closing a
   pane only stops that pane's timer. The service is created when the first panel opens (never
   from ``menu.py``: nothing starts threads during Nuke's start-up) and closed on ``aboutToQuit``.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional

from comfy_cluster.ui.controller import DEFAULT_INTERVAL_MS, create_panel_widget
from comfy_cluster.ui.panel import WIDGET_OBJECT_NAME, ServerPanelWidget
from comfy_cluster.ui.qt import QtCore, QtWidgets, Slot
from comfy_cluster.ui.service import ClusterServiceProtocol

log = logging.getLogger(__name__)

#: Stable id of the docked panel; saved workspaces restore it by this id. Never change it.
PANEL_ID = "uk.co.comfycluster.ServerPanel"
#: The Pane-menu label and the panel's title.
PANEL_LABEL = "ComfyUI Cluster"
#: ``objectName`` of the :class:`ServiceHost` child of the QApplication.
SERVICE_OBJECT_NAME = "comfyClusterServiceHost"
#: Name of the panel's PyCustom_Knob.
KNOB_NAME = "comfy_cluster_servers"
#: What Nuke evaluates to build the widget knob; only needs ``comfy_cluster`` on ``sys.path``.
WIDGET_KNOB_EXPRESSION = (
    "__import__('comfy_cluster.ui.install', fromlist=['PanelWidgetKnob']).PanelWidgetKnob()"
)

ServiceFactory = Callable[[], ClusterServiceProtocol]


def _default_service() -> ClusterServiceProtocol:
    from comfy_cluster.core.cluster import ClusterService

    return ClusterService()


class ServiceHost(QtCore.QObject):
    """Holds the process-wide cluster service as a child of the QApplication. Main thread only.

    Parking it on the application (not in a module global) ties its lifetime to Qt's: it is
    found with :func:`service_host`, and :meth:`shutdown` runs on ``aboutToQuit``.
    """

    def __init__(
        self,
        factory: ServiceFactory,
        *,
        owns_service: bool = True,
        interval_ms: int = DEFAULT_INTERVAL_MS,
        parent: Optional[QtCore.QObject] = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName(SERVICE_OBJECT_NAME)
        self.interval_ms = interval_ms
        self.owns_service = owns_service
        self._factory = factory
        self._service: Optional[ClusterServiceProtocol] = None

    @property
    def service(self) -> ClusterServiceProtocol:
        """The service, created on first use (raises what the factory raises, e.g. ConfigError)."""
        if self._service is None:
            self._service = self._factory()
        return self._service

    @property
    def started(self) -> bool:
        """True once the service exists."""
        return self._service is not None

    @Slot()
    def shutdown(self) -> None:
        """Stop open panels' timers and close the service we own (idempotent)."""
        for widget in open_panel_widgets():
            widget.controller.shutdown()
        service, self._service = self._service, None
        if service is not None and self.owns_service:
            close = getattr(service, "close", None)
            if callable(close):
                close()
        # Later panels would otherwise start a fresh service during shutdown.
        self._factory = _closed_factory


def _closed_factory() -> ClusterServiceProtocol:
    raise RuntimeError("ComfyUI Cluster is shutting down")


def _app() -> QtCore.QCoreApplication:
    app = QtWidgets.QApplication.instance()
    if app is None:
        raise RuntimeError("the ComfyUI Cluster panel needs a QApplication (a Nuke GUI session)")
    return app


def service_host() -> Optional[ServiceHost]:
    """The installed :class:`ServiceHost`, or None when :func:`install_gui` has not run."""
    app = QtWidgets.QApplication.instance()
    if app is None:
        return None
    host = app.findChild(QtCore.QObject, SERVICE_OBJECT_NAME)
    return host if isinstance(host, ServiceHost) else None


def open_panel_widgets() -> list[ServerPanelWidget]:
    """Every live server panel widget (docked or floating)."""
    app = QtWidgets.QApplication.instance()
    if app is None:
        return []
    return [
        widget
        for widget in QtWidgets.QApplication.allWidgets()
        if isinstance(widget, ServerPanelWidget) and widget.objectName() == WIDGET_OBJECT_NAME
    ]


def make_panel_widget() -> ServerPanelWidget:
    """Build one panel widget on the installed service; what ``makeUI`` calls. Main thread."""
    host = service_host()
    if host is None:
        raise RuntimeError("ComfyUI Cluster: install_gui() has not run in this session")
    return create_panel_widget(host.service, interval_ms=host.interval_ms)


class PanelWidgetKnob:
    """The object behind the panel's PyCustom_Knob: Nuke calls ``makeUI()`` to get the widget."""

    def __init__(self) -> None:
        self.widget: Optional[ServerPanelWidget] = None

    def makeUI(self) -> ServerPanelWidget:
        self.widget = make_panel_widget()
        return self.widget

    def updateValue(self) -> None:
        pass


def _new_python_panel() -> Any:
    """A ``nukescripts.PythonPanel`` with id :data:`PANEL_ID` holding the widget knob."""
    import nuke
    import nukescripts

    class ServerPythonPanel(nukescripts.PythonPanel):
        def __init__(self) -> None:
            nukescripts.PythonPanel.__init__(self, PANEL_LABEL, PANEL_ID)
            self.widget_knob = nuke.PyCustom_Knob(KNOB_NAME, "", WIDGET_KNOB_EXPRESSION)
            self.addKnob(self.widget_knob)

    return ServerPythonPanel()


def open_panel() -> Any:
    """Create the panel in the current pane; the Pane-menu command and the layout restorer.

    Nuke provides the pane (``nuke.thisPane()``) while it runs either of them. Main thread.
    """
    return _new_python_panel().addToPane()


def install_gui(
    service: Optional[ClusterServiceProtocol] = None,
    *,
    service_factory: Optional[ServiceFactory] = None,
    interval_ms: int = DEFAULT_INTERVAL_MS,
) -> Optional[ServiceHost]:
    """Add the Pane-menu entry and register :data:`PANEL_ID` for layout restore.

    ``service`` is used as is (the caller keeps ownership and closes it); otherwise
    ``service_factory`` (default: a :class:`~comfy_cluster.core.cluster.ClusterService` from the
    environment and user file) builds one when the first panel opens, and it is closed when Nuke
    quits. Returns the :class:`ServiceHost`, or None outside a GUI session. Idempotent. Main thread.
    """
    import nuke
    import nukescripts

    if not getattr(nuke, "GUI", False):
        return None
    app = _app()
    host = service_host()
    if host is None:
        if service is not None:
            given = service
            host = ServiceHost(
                lambda: given, owns_service=False, interval_ms=interval_ms, parent=app
            )
        else:
            host = ServiceHost(
                service_factory or _default_service, interval_ms=interval_ms, parent=app
            )
        app.aboutToQuit.connect(host.shutdown)
    pane_menu = nuke.menu("Pane")
    if pane_menu.findItem(PANEL_LABEL) is None:
        pane_menu.addCommand(PANEL_LABEL, open_panel)
    nukescripts.registerPanel(PANEL_ID, open_panel)
    return host


def uninstall_gui() -> None:
    """Undo :func:`install_gui`: menu entry, panel registration, open panels' timers, service."""
    import nuke
    import nukescripts

    if not getattr(nuke, "GUI", False):
        return
    pane_menu = nuke.menu("Pane")
    if pane_menu.findItem(PANEL_LABEL) is not None:
        pane_menu.removeItem(PANEL_LABEL)
    try:
        nukescripts.unregisterPanel(PANEL_ID, open_panel)
    except KeyError:  # never registered, or already gone
        pass
    host = service_host()
    if host is None:
        return
    app = QtCore.QCoreApplication.instance()
    if app is not None:
        try:
            app.aboutToQuit.disconnect(host.shutdown)
        except (RuntimeError, TypeError):  # not connected
            pass
    host.shutdown()
    host.setParent(None)  # no longer found by service_host()
    host.deleteLater()


__all__ = [
    "KNOB_NAME",
    "PANEL_ID",
    "PANEL_LABEL",
    "SERVICE_OBJECT_NAME",
    "WIDGET_KNOB_EXPRESSION",
    "PanelWidgetKnob",
    "ServiceHost",
    "install_gui",
    "make_panel_widget",
    "open_panel",
    "open_panel_widgets",
    "service_host",
    "uninstall_gui",
]
