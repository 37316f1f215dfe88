"""Installing the host layer into a Nuke session, and its exact inverse.

:func:`install_host` registers what the ComfyClusterRender node needs: the node callbacks
(``onCreate``, ``knobChanged``, ``onDestroy``, filtered to the gizmo's class) and, in a GUI
session, the Nodes-menu entry *ComfyUI Cluster/ComfyClusterRender*. :func:`uninstall_host` removes
exactly that, so menus and callbacks are as before. Both are idempotent; main thread only.

Who calls it:

* GUI sessions: ``menu.py`` (through the GUI install, then directly, each guarded).
* Terminal sessions (``nuke -t``, farms) never run ``menu.py``. There the gizmo's own ``onCreate``
  knob calls :func:`node_created`, which installs the host on first use. So a farm render of a
  script containing the node gets the callbacks without ``init.py`` doing more than set paths, and
  without any Qt import. The Render/Cancel buttons call :func:`render_pressed` /
  :func:`cancel_pressed`, which also install on first use.

The session's state (dispatcher, job registry, installed callbacks, the cluster service) is one
:class:`HostSession`. Nuke's buttons and callbacks are strings and plain functions that need to
find it, so it is parked on the ``nuke`` module itself (attribute ``_comfy_cluster_host``), whose
lifetime is exactly the Nuke session's; this package keeps no module-level state.

The cluster service (one per Nuke session)
------------------------------------------

The session owns the one :class:`~comfy_cluster.core.cluster.ClusterService` of the Nuke session:
the configured servers (environment + user file), their :class:`HealthMonitor`, and the "job /
chunk" text per server. The render node takes its server list and health from it, and reports its
chunks into it; the server panel (``ui/install.py``) shows the same object, so a panel edit
applies to the next render and there is only one set of health pollers.

* Created lazily by :meth:`HostSession.cluster`, never from ``menu.py`` or an install: reading the
  config is cheap, so a knob refresh (``onCreate`` at script load) may *build* it; its poller
  threads *start* only when a render or a panel needs health. Nothing in it waits on the network
  on the main thread.
* Closed by :func:`uninstall_host` and by :meth:`HostSession.shutdown`. In a GUI session the
  panel's ``QApplication.aboutToQuit`` hook calls ``shutdown`` (the host cannot import Qt); in
  every session an ``atexit`` hook registered when the service is built does the same (terminal
  sessions have no Qt). The poller threads are daemons, so neither is needed for Nuke to exit;
  they stop the pollers cleanly. After ``shutdown`` the session builds no new service.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from comfy_cluster.core.cluster import ClusterService
from comfy_cluster.core.config.loading import load_servers
from comfy_cluster.core.server import ServerConfig
from comfy_cluster.host import knobs as K
from comfy_cluster.host.collaborators import HealthHints, RenderScheduler, SchedulerFactory
from comfy_cluster.host.dispatch import Dispatcher
from comfy_cluster.host.render_node import RenderController
from comfy_cluster.host.session_cluster import (
    FixedServers,
    ServerList,
    ServiceFactory,
    SessionCluster,
)

__all__ = [
    "HostSession",
    "cancel_pressed",
    "current_session",
    "install_host",
    "node_created",
    "render_pressed",
    "uninstall_host",
]

#: Attribute of the ``nuke`` module holding the installed :class:`HostSession`.
SESSION_ATTR = "_comfy_cluster_host"


def _default_scheduler(
    servers: Sequence[ServerConfig], health: Optional[HealthHints] = None
) -> RenderScheduler:
    """The real engine. Imported here, at the first render, not at Nuke start-up: the scheduler
    loads the runtime dependencies (tenacity, requests), which a session that never renders
    does not need, and whose absence must not stop the node's menu entry from installing."""
    from comfy_cluster.core.engine.scheduler import Scheduler

    return Scheduler(tuple(servers), health=health)


def _default_service() -> ClusterService:
    """The session's ClusterService from the environment and user file, threads not started."""
    return ClusterService(start=False)


@dataclass
class HostSession:
    """What one install owns: dispatcher, render controller (with its job registry), the Nuke
    session's shared cluster service (:meth:`cluster`), and the record of every callback and menu
    item added, so :meth:`uninstall` removes exactly those (and closes the service).

    Main thread only.
    """

    nuke: Any
    dispatcher: Dispatcher
    controller: RenderController
    #: The session's one cluster service (and the render node's source of servers).
    clusters: SessionCluster
    #: (remove function name, callable, nodeClass) for each callback added.
    callbacks: list[tuple[str, Callable[..., Any], str]] = field(default_factory=list)
    #: Menu entries added: (menu path within "Nodes", item name); the submenu if we created it.
    menu_items: list[tuple[str, str]] = field(default_factory=list)
    created_submenu: bool = False

    # -- the shared cluster service --------------------------------------------------------------

    def cluster(self, start: bool = True) -> Optional[ClusterService]:
        """The session's cluster service, built on first use; None when there is none (servers
        given to :func:`install_host`, or after :meth:`shutdown`). ``start``: also start its
        health pollers. Raises what building it raises (``ConfigError``); a failed build is
        retried on the next call. The server panel shows this same service."""
        return self.clusters.service(start)

    def peek_cluster(self) -> Optional[ClusterService]:
        """The service if it was built (started or not), else None; never builds one."""
        return self.clusters.peek()

    def shutdown(self) -> None:
        """Close the cluster service (its health threads end) and build no new one. Idempotent.
        Qt's ``aboutToQuit`` (through the panel), ``atexit`` at interpreter exit, and
        :meth:`uninstall` call it; it never waits for the pollers."""
        self.clusters.shutdown()

    # -- callbacks (bound methods, so add/remove compare equal) ----------------------------------

    def on_create(self) -> None:
        self.controller.on_create(self.nuke.thisNode())

    def on_knob_changed(self) -> None:
        self.controller.on_knob_changed(self.nuke.thisNode(), self.nuke.thisKnob())

    def on_destroy(self) -> None:
        self.controller.on_destroy(self.nuke.thisNode())

    def create_node(self) -> Any:
        """The Nodes-menu command."""
        return self.nuke.createNode(K.GIZMO_CLASS)

    # -- install / uninstall ---------------------------------------------------------------------

    def install(self) -> None:
        nuke = self.nuke
        for add, remove, call in (
            ("addOnCreate", "removeOnCreate", self.on_create),
            ("addKnobChanged", "removeKnobChanged", self.on_knob_changed),
            ("addOnDestroy", "removeOnDestroy", self.on_destroy),
        ):
            getattr(nuke, add)(call, nodeClass=K.GIZMO_CLASS)
            self.callbacks.append((remove, call, K.GIZMO_CLASS))
        if getattr(nuke, "GUI", False):
            self._install_menu()

    def _install_menu(self) -> None:
        nodes = self.nuke.menu("Nodes")
        submenu = nodes.findItem(K.MENU_NAME)
        if submenu is None:
            submenu = nodes.addMenu(K.MENU_NAME, icon=K.ICON)
            self.created_submenu = True
        if submenu.findItem(K.MENU_ITEM) is None:
            submenu.addCommand(K.MENU_ITEM, self.create_node, icon=K.ICON)
            self.menu_items.append((K.MENU_NAME, K.MENU_ITEM))

    def uninstall(self) -> None:
        self.controller.cancel_all()
        self.clusters.close()
        nuke = self.nuke
        for remove, call, node_class in reversed(self.callbacks):
            getattr(nuke, remove)(call, nodeClass=node_class)
        self.callbacks.clear()
        if self.menu_items or self.created_submenu:
            nodes = nuke.menu("Nodes")
            for menu_name, item in reversed(self.menu_items):
                submenu = nodes.findItem(menu_name)
                if submenu is not None and submenu.findItem(item) is not None:
                    submenu.removeItem(item)
            self.menu_items.clear()
            if self.created_submenu and nodes.findItem(K.MENU_NAME) is not None:
                nodes.removeItem(K.MENU_NAME)
            self.created_submenu = False


def _nuke() -> Any:
    import nuke

    return nuke


def current_session(nuke: Any = None) -> Optional[HostSession]:
    """The installed session, or None. Main thread."""
    return getattr(nuke or _nuke(), SESSION_ATTR, None)


def install_host(
    *,
    servers: Optional[ServerList] = None,
    scheduler_factory: Optional[SchedulerFactory] = None,
    service_factory: Optional[ServiceFactory] = None,
    nuke: Any = None,
    export_batch: int = 4,
    temp_root: Optional[str] = None,
    reload_interval: Optional[float] = None,
) -> HostSession:
    """Install the callbacks (and, with a GUI, the Nodes menu entry); idempotent. Main thread.

    ``service_factory()`` builds the session's shared cluster service (default: a
    ``ClusterService`` from the environment and user file); the render node takes its servers
    and health from it. ``servers`` (tests) instead gives the render node a fixed server list
    and the session no service at all (no health, no job reports); give one or the other.
    ``scheduler_factory(servers, health)`` builds the render engine. ``reload_interval``: seconds
    between two reloads of a node's Read while frames land (tests shorten it). If already
    installed, returns the existing session unchanged.
    """
    if servers is not None and service_factory is not None:
        raise TypeError("install_host takes servers or service_factory, not both")
    nuke = nuke or _nuke()
    session = getattr(nuke, SESSION_ATTR, None)
    if session is not None:
        return session
    if servers is None:
        # After shutdown (Nuke quitting) a render still reads the configuration, unmonitored.
        clusters = SessionCluster(service_factory or _default_service, FixedServers(load_servers))
    else:
        clusters = SessionCluster(None, FixedServers(servers))
    dispatcher = Dispatcher(nuke)
    controller = RenderController(
        nuke,
        dispatcher,
        clusters,
        scheduler_factory or _default_scheduler,
        export_batch=export_batch,
        temp_root=temp_root,
        **({} if reload_interval is None else {"reload_interval": reload_interval}),
    )
    session = HostSession(nuke, dispatcher, controller, clusters)
    session.install()
    setattr(nuke, SESSION_ATTR, session)
    return session


def uninstall_host(nuke: Any = None) -> None:
    """Exact inverse of :func:`install_host`: running jobs are cancelled, callbacks and menu
    entries removed. Idempotent. Main thread."""
    nuke = nuke or _nuke()
    session = getattr(nuke, SESSION_ATTR, None)
    if session is None:
        return
    try:
        session.uninstall()
    finally:
        delattr(nuke, SESSION_ATTR)


# -- entry points for the gizmo's knobs (one-liners in the .gizmo call these) ---------------------


def node_created(node: Any) -> None:
    """The gizmo's ``onCreate`` knob: install on first use (terminal sessions), refresh the node."""
    nuke = _nuke()
    installed = getattr(nuke, SESSION_ATTR, None) is not None
    session = install_host(nuke=nuke)
    if not installed:
        # Our addOnCreate callback was registered during this node's creation; do its work now.
        session.controller.on_create(node)


def render_pressed(node: Any) -> None:
    """The Render button. GUI: returns at once. Terminal: blocks until the render ends."""
    install_host().controller.render(node)


def cancel_pressed(node: Any) -> None:
    """The Cancel button."""
    install_host().controller.cancel(node)
