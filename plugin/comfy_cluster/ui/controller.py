"""The server panel's presenter: owns the refresh QTimer and turns user actions into service calls.

It sits between a :class:`PanelView` (the widgets,
:class:`~comfy_cluster.ui.panel.ServerPanelWidget`) and a
:class:`~comfy_cluster.ui.service.ClusterServiceProtocol` (the cluster). Each timer tick reads the
service's cached snapshot and rebuilds the rows; it never touches the network, so the main thread
never waits on a server. Everything here runs on the Qt main thread.

The presenter knows its view only as the small :class:`PanelView` protocol, so imports run one
way: the panel module builds a controller (:func:`~comfy_cluster.ui.panel.create_panel_widget`),
this module never imports the panel.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Optional, Protocol

from comfy_cluster.core.server import ServerConfig
from comfy_cluster.ui.panel_model import ServerTableModel, build_rows
from comfy_cluster.ui.qt import QtCore, Signal, Slot
from comfy_cluster.ui.service import ClusterServiceProtocol

log = logging.getLogger(__name__)

#: How often the table re-reads the snapshot. Cheap (no I/O), so twice a second is fine.
DEFAULT_INTERVAL_MS = 500


def _wall_clock() -> str:
    """The time of day the status line says it refreshed at."""
    return time.strftime("%H:%M:%S")


class BoundSignal(Protocol):
    """A Qt signal of a live object: all the presenter does with one is connect to it."""

    def connect(self, slot: Callable[..., Any]) -> Any: ...


class PanelView(Protocol):
    """What the presenter needs of the panel's widgets: their requests, two message lines."""

    @property
    def visibility_changed(self) -> BoundSignal:
        """``(bool)``: the pane was shown or hidden."""
        ...

    @property
    def enable_requested(self) -> BoundSignal:
        """``(name, enabled)``."""
        ...

    @property
    def priority_requested(self) -> BoundSignal:
        """``(name, priority)``."""
        ...

    @property
    def add_requested(self) -> BoundSignal:
        """``(ServerConfig)``."""
        ...

    @property
    def edit_requested(self) -> BoundSignal:
        """``(old name, ServerConfig)``: replace a server with an edited one."""
        ...

    @property
    def remove_requested(self) -> BoundSignal:
        """``(name)``."""
        ...

    @property
    def refresh_requested(self) -> BoundSignal:
        """``()``."""
        ...

    @property
    def destroyed(self) -> BoundSignal:
        """Qt's own: the widget is gone (closing a pane sends no hide event)."""
        ...

    def show_status(self, text: str) -> None:
        """The grey status line."""
        ...

    def show_error(self, text: str) -> None:
        """The red error line; "" hides it."""
        ...


class _Watch:
    """Tells the service once that a panel started, and once that it stopped, watching.

    A plain Python object (not a QObject) so it can still be called from ``destroyed`` after Qt
    has deleted the controller.
    """

    def __init__(self, service: ClusterServiceProtocol) -> None:
        self._service = service
        self._on = False

    def set(self, on: bool) -> None:
        if on == self._on:
            return
        self._on = on
        try:
            self._service.set_active(on)
        except Exception:  # a closed service must not break closing a pane
            log.exception("comfy_cluster: set_active(%s) failed", on)

    def off(self, *_args: object) -> None:
        self.set(False)


class PanelController(QtCore.QObject):
    """Feeds the table from ``service`` on a QTimer and applies the panel's actions.

    Main thread only. The timer runs while the panel is visible, stops when it is hidden,
    destroyed, or when the application is about to quit (:meth:`shutdown`).
    """

    #: Emitted after each refresh with the number of rows (for tests and the status line).
    refreshed = Signal(int)

    def __init__(
        self,
        service: ClusterServiceProtocol,
        *,
        interval_ms: int = DEFAULT_INTERVAL_MS,
        clock: Callable[[], str] = _wall_clock,
        parent: Optional[QtCore.QObject] = None,
    ) -> None:
        super().__init__(parent)
        if interval_ms <= 0:
            raise ValueError(f"interval_ms must be positive, got {interval_ms}")
        self.service = service
        #: Gives the status line's time; the docs' pictures pass a fixed one.
        self.clock = clock
        self.model = ServerTableModel(self)
        self.timer = QtCore.QTimer(self)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self.refresh)
        self._view: Optional[PanelView] = None
        self._watch = _Watch(service)
        self._closed = False
        app = QtCore.QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)

    # -- wiring --------------------------------------------------------------------------
    def bind(self, view: PanelView) -> None:
        """Connect ``view``'s requests to this controller; called once by the view."""
        self._view = view
        view.visibility_changed.connect(self._on_visibility)
        view.enable_requested.connect(self.set_enabled)
        view.priority_requested.connect(self.set_priority)
        view.add_requested.connect(self.add_server)
        view.edit_requested.connect(self.edit_server)
        view.remove_requested.connect(self.remove_server)
        view.refresh_requested.connect(self.refresh_now)
        # Closing the pane deletes the widget (and this controller with it) without a hide event.
        view.destroyed.connect(self._watch.off)

    @property
    def active(self) -> bool:
        """True while the refresh timer runs."""
        return self.timer.isActive()

    # -- lifecycle -----------------------------------------------------------------------
    @Slot()
    def start(self) -> None:
        """Start polling: refresh at once, then on every tick; tell the service we watch."""
        if self._closed:
            return
        self._watch.set(True)
        self.refresh()
        self.timer.start()

    @Slot()
    def stop(self) -> None:
        """Stop the timer (the panel is hidden); :meth:`start` resumes."""
        self.timer.stop()
        self._watch.set(False)

    @Slot()
    def shutdown(self) -> None:
        """Stop for good; connected to ``QCoreApplication.aboutToQuit``."""
        self._closed = True
        self.stop()

    @Slot(bool)
    def _on_visibility(self, visible: bool) -> None:
        if visible:
            self.start()
        else:
            self.stop()

    # -- reading -------------------------------------------------------------------------
    @Slot()
    def refresh(self) -> None:
        """Re-read the cached snapshot, servers and jobs into the model. Never blocks."""
        try:
            rows = build_rows(
                self.service.snapshot(), self.service.servers(), self.service.active_jobs()
            )
        except Exception as exc:  # keep ticking: the next snapshot may be fine
            log.exception("comfy_cluster: panel refresh failed")
            self._show("status", f"refresh failed: {exc}")
            return
        self.model.set_rows(rows)
        up = sum(1 for row in rows if row.state in ("READY", "BUSY"))
        self._show("status", f"{len(rows)} servers, {up} up - {self.clock()}")
        self.refreshed.emit(len(rows))

    # -- actions (each saves to the user config file through the service) ----------------
    @Slot()
    def refresh_now(self) -> None:
        """Ask the poller for fresh data (returns at once) and redraw what we have."""
        self._act("refresh", self.service.poll_now)

    @Slot(str, bool)
    def set_enabled(self, name: str, enabled: bool) -> None:
        """Enable or disable ``name`` and persist it."""
        verb = "enable" if enabled else "disable"
        self._act(f"{verb} {name}", self.service.set_enabled, name, enabled)

    @Slot(str, int)
    def set_priority(self, name: str, priority: int) -> None:
        """Set ``name``'s priority and persist it."""
        self._act(f"set the priority of {name}", self.service.set_priority, name, priority)

    @Slot(object)
    def add_server(self, config: ServerConfig) -> None:
        """Add ``config`` to the cluster and persist it."""
        self._act(f"add {config.name}", self.service.add_server, config)

    @Slot(str, object)
    def edit_server(self, old_name: str, config: ServerConfig) -> None:
        """Replace ``old_name`` with ``config`` and persist it.

        The service replaces a server of the same name; a renamed server is added under its new
        name first and the old one removed after, so a failure never loses the server.
        """
        if not self._act(f"save {config.name}", self.service.add_server, config):
            return
        if config.name != old_name:
            self._act(f"remove {old_name}", self.service.remove_server, old_name)

    def server_config(self, name: str) -> Optional[ServerConfig]:
        """The configured server ``name`` (for the edit dialog), or None."""
        for config in self.service.servers():
            if config.name == name:
                return config
        return None

    def server_names(self) -> tuple[str, ...]:
        """Names of the configured servers (a new server must not take one)."""
        return tuple(config.name for config in self.service.servers())

    @Slot(str)
    def remove_server(self, name: str) -> None:
        """Remove ``name`` from the cluster and persist it."""
        self._act(f"remove {name}", self.service.remove_server, name)

    def _act(self, what: str, fn: Callable[..., object], *args: object) -> bool:
        """Run one user action; show its error (it stays until the next action succeeds)."""
        try:
            fn(*args)
            if fn != self.service.poll_now:
                self.service.poll_now()  # show the effect soon, not at the next slow poll
        except Exception as exc:  # shown to the user; the panel stays usable
            log.warning("comfy_cluster: could not %s: %s", what, exc)
            self._show("error", f"Could not {what}: {exc}")
            return False
        self._show("error", "")
        self.refresh()
        return True

    def _show(self, which: str, text: str) -> None:
        view = self._view
        if view is None:
            return
        try:
            if which == "error":
                view.show_error(text)
            else:
                view.show_status(text)
        except RuntimeError:  # the widget was deleted under us
            self._view = None


__all__ = ["DEFAULT_INTERVAL_MS", "BoundSignal", "PanelController", "PanelView"]
