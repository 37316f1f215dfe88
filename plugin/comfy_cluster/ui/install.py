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
   :class:`ServiceHost` parked on the QApplication under a fixed object name. The service lives
   outside any widget: every pane shows the same cluster, and closing a pane only stops that
   pane's timer.

Whose service: by default the panel shows the **host session's** service
(:meth:`comfy_cluster.host.install.HostSession.cluster`), the one the render node renders with,
so panel edits apply to the next render, the Job column shows the node's chunks, and one health
monitor polls the servers. It is looked up when the first panel opens (never from ``menu.py``:
nothing starts threads during Nuke's start-up), and the panel never closes it: the host session
owns it. Only when there is no host session (the widget on its own, e.g. in tests, or the host
install failed) does the panel build and own a service of its own. A ``service`` or
``service_factory`` given to :func:`install_gui` replaces the lookup.

Quitting: the ui owns Nuke's ``QApplication.aboutToQuit`` (the host cannot import Qt).
:meth:`ServiceHost.quit` stops the panels' timers, closes the panel's own service if it has one,
and calls the host session's ``shutdown()`` so the shared service's threads end too.
:func:`uninstall_gui` only removes the panel: the host's service keeps serving the render node.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional

from comfy_cluster.core.cluster import ClusterService
from comfy_cluster.host.install import HostSession, current_session
from comfy_cluster.ui.controller import DEFAULT_INTERVAL_MS
from comfy_cluster.ui.panel import WIDGET_OBJECT_NAME, ServerPanelWidget, create_panel_widget
from comfy_cluster.ui.qt import QtCore, QtWidgets, Slot
from comfy_cluster.ui.service import ClosableClusterService

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

#: Builds a service the panel owns (and closes when Nuke quits).
ServiceFactory = Callable[[], ClosableClusterService]


def _default_service() -> ClosableClusterService:
    """A service of the panel's own (only when there is no host session)."""
    return ClusterService()


def _host_session() -> Optional[HostSession]:
    """The host layer's session, or None. Main thread."""
    try:
        return current_session()
    except ImportError:  # no nuke module: the widget on its own
        return None


def _shared_service() -> Optional[ClusterService]:
    """The host session's cluster service, started; None without a host session (or one that
    has no service). Raises what building it raises (e.g. ConfigError)."""
    session = _host_session()
    if session is None:
        return None
    return session.cluster(start=True)


class ServiceHost(QtCore.QObject):
    """Holds the process-wide cluster service as a child of the QApplication. Main thread only.

    Parking it on the application (not in a module global) ties its lifetime to Qt's: it is
    found with :func:`service_host`, and :meth:`shutdown` runs on ``aboutToQuit``.
    """

    def __init__(
        self,
        factory: Optional[ServiceFactory] = None,
        *,
        owns_service: bool = True,
        interval_ms: int = DEFAULT_INTERVAL_MS,
        parent: Optional[QtCore.QObject] = None,
    ) -> None:
        """``factory`` None: the host session's service (not owned), else one of our own."""
        super().__init__(parent)
        self.setObjectName(SERVICE_OBJECT_NAME)
        self.interval_ms = interval_ms
        self.owns_service = owns_service
        self._factory = factory
        self._service: Optional[ClosableClusterService] = None
        self._shared = False

    @property
    def service(self) -> ClosableClusterService:
        """The service, found or created on first use (raises what building it raises, e.g.
        ConfigError)."""
        if self._service is None:
            if self._factory is None:
                shared = _shared_service()
                if shared is not None:
                    self._service, self.owns_service, self._shared = shared, False, True
                else:
                    self._service, self.owns_service = _default_service(), True
            else:
                self._service = self._factory()
        return self._service

    @property
    def shared(self) -> bool:
        """True when the service is the host session's (then the host closes it)."""
        return self._shared

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
            _close_without_waiting(service)
        # Later panels would otherwise start a fresh service during shutdown.
        self._factory = _closed_factory

    @Slot()
    def quit(self) -> None:
        """``QApplication.aboutToQuit``: :meth:`shutdown`, then the host session's shutdown,
        which closes the shared service (the host layer has no Qt to hear the quit itself)."""
        try:
            self.shutdown()
        finally:
            session = _host_session()
            if session is not None:
                session.shutdown()


def _close_without_waiting(service: ClosableClusterService) -> None:
    """``service.close(timeout=0)``: the main thread (Nuke quitting, a pane's uninstall) never
    joins a poller that may be inside a health check; the pollers are daemons and end on their
    own within one poll timeout."""
    service.close(timeout=0.0)


def _closed_factory() -> ClosableClusterService:
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
    service: Optional[ClosableClusterService] = None,
    *,
    service_factory: Optional[ServiceFactory] = None,
    interval_ms: int = DEFAULT_INTERVAL_MS,
) -> Optional[ServiceHost]:
    """Add the Pane-menu entry and register :data:`PANEL_ID` for layout restore.

    ``service`` is used as is (the caller keeps ownership and closes it); otherwise
    ``service_factory`` builds one when the first panel opens, closed when Nuke quits. Default:
    the host session's shared service when the first panel opens (the host closes it), or,
    without a host session, a :class:`~comfy_cluster.core.cluster.ClusterService` of the panel's
    own. Returns the :class:`ServiceHost`, or None outside a GUI session. Idempotent. Main thread.
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
            host = ServiceHost(service_factory, interval_ms=interval_ms, parent=app)
        app.aboutToQuit.connect(host.quit)
    pane_menu = nuke.menu("Pane")
    if pane_menu.findItem(PANEL_LABEL) is None:
        pane_menu.addCommand(PANEL_LABEL, open_panel)
    nukescripts.registerPanel(PANEL_ID, open_panel)
    return host


def uninstall_gui() -> None:
    """Undo :func:`install_gui`: menu entry, panel registration, open panels' timers, and the
    panel's own service (never the host session's: the render node still uses it)."""
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
            app.aboutToQuit.disconnect(host.quit)
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
