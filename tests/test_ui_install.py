"""ui/install.py with the fake nuke: Pane-menu entry, restore by id, uninstall, quitting."""

from __future__ import annotations

import json
import threading

import pytest
from qt_support import require_nuke_binding

EXPECTED_BINDING = require_nuke_binding(needs_pytest_qt=True)

from health_fakes import DownClient, health_threads, quick_monitor  # noqa: E402

from comfy_cluster.core.cluster import ClusterService  # noqa: E402
from comfy_cluster.core.health import HealthMonitor  # noqa: E402
from comfy_cluster.ui import install  # noqa: E402
from comfy_cluster.ui.install import (  # noqa: E402
    PANEL_ID,
    PANEL_LABEL,
    install_gui,
    service_host,
    uninstall_gui,
)
from comfy_cluster.ui.panel import ServerPanelWidget  # noqa: E402


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("COMFY_CLUSTER_CONFIG", str(tmp_path / "servers.json"))
    monkeypatch.setenv(
        "NUKE_COMFYUI_SERVERS",
        json.dumps([{"name": "a", "ip": "10.0.0.5"}, {"name": "b", "ip": "10.0.0.6"}]),
    )
    return tmp_path / "servers.json"


@pytest.fixture
def installed(qapp, fake_nuke, env):
    """install_gui() with a ClusterService whose monitor never touches the network."""
    services = []

    def factory():
        services.append(ClusterService(monitor_factory=quick_monitor))
        return services[-1]

    host = install_gui(service_factory=factory, interval_ms=20)
    host.built = services
    yield host
    uninstall_gui()
    for service in services:
        service.close()


def widget_of(panel) -> ServerPanelWidget:
    widget = panel.widget_knob.getObject().widget
    assert isinstance(widget, ServerPanelWidget)
    return widget


def test_install_adds_the_pane_menu_entry_and_registers_the_id(installed, fake_nuke):
    item = fake_nuke.menu("Pane").findItem(PANEL_LABEL)
    assert item is not None
    assert fake_nuke._fake.session().panels[PANEL_ID] is install.open_panel
    assert service_host() is installed
    assert not installed.started  # nothing runs until a panel opens (menu.py stays cheap)
    assert health_threads() == []


def test_install_twice_is_harmless(installed, fake_nuke):
    assert install_gui() is installed
    names = [i.name() for i in fake_nuke.menu("Pane").items()]
    assert names.count(PANEL_LABEL) == 1


def test_the_pane_menu_opens_a_docked_panel(qtbot, installed, fake_nuke):
    fake_nuke.menu("Pane").findItem(PANEL_LABEL).invoke()
    (dock,) = [d for d in fake_nuke._fake.session().panes.values() if d.panels]
    (panel,) = dock.panels
    assert panel._id == PANEL_ID and panel._title == PANEL_LABEL
    widget = widget_of(panel)
    qtbot.addWidget(widget)
    widget.show()
    qtbot.waitUntil(lambda: widget.controller.model.rowCount() == 2, timeout=2000)
    assert widget.controller.active
    assert installed.started and sorted(t.name for t in health_threads()) == [
        "comfy-cluster-health-a",
        "comfy-cluster-health-b",
    ]


def test_a_saved_layout_restores_the_panel_by_id(qtbot, installed, fake_nuke):
    nukescripts = pytest.importorskip("nukescripts")
    panel = nukescripts.restorePanel(PANEL_ID)
    assert panel is not None and panel._id == PANEL_ID
    assert panel._pane is not None and panel in panel._pane.panels
    widget = widget_of(panel)
    qtbot.addWidget(widget)
    # Two panes show the same cluster: one service for the whole session.
    second = widget_of(nukescripts.restorePanel(PANEL_ID))
    qtbot.addWidget(second)
    assert second.controller.service is widget.controller.service
    assert len(installed.built) == 1


def test_the_widget_knob_expression_resolves_without_comfy_cluster_in_main(
    qtbot, installed, fake_nuke
):
    namespace = fake_nuke._fake.main_namespace()
    assert "comfy_cluster" not in namespace
    knob = eval(install.WIDGET_KNOB_EXPRESSION, dict(namespace))
    widget = knob.makeUI()
    qtbot.addWidget(widget)
    assert isinstance(widget, ServerPanelWidget)


def test_uninstall_is_the_exact_inverse(qtbot, qapp, installed, fake_nuke, capsys):
    nukescripts = pytest.importorskip("nukescripts")
    widget = widget_of(nukescripts.restorePanel(PANEL_ID))
    qtbot.addWidget(widget)
    widget.show()
    qtbot.waitUntil(lambda: len(health_threads()) == 2, timeout=2000)
    service = installed.built[0]

    uninstall_gui()

    assert fake_nuke.menu("Pane").findItem(PANEL_LABEL) is None
    assert PANEL_ID not in fake_nuke._fake.session().panels
    assert nukescripts.restorePanel(PANEL_ID) is None
    assert "hasn't been registered" in capsys.readouterr().out
    assert service_host() is None
    assert service.closed and not widget.controller.active
    qtbot.waitUntil(lambda: health_threads() == [], timeout=3000)
    uninstall_gui()  # twice is harmless


def test_quitting_stops_timers_and_threads(qtbot, qapp, installed, fake_nuke):
    widget = widget_of(pytest.importorskip("nukescripts").restorePanel(PANEL_ID))
    qtbot.addWidget(widget)
    widget.show()
    qtbot.waitUntil(lambda: len(health_threads()) == 2, timeout=2000)
    assert widget.controller.timer.isActive()

    qapp.aboutToQuit.emit()

    assert not widget.controller.timer.isActive()
    assert installed.built[0].closed
    qtbot.waitUntil(lambda: health_threads() == [], timeout=3000)
    with pytest.raises(RuntimeError, match="shutting down"):
        installed.service  # noqa: B018 - no new service once Nuke is quitting


def test_a_given_service_is_used_and_not_closed(qtbot, qapp, fake_nuke, env):
    with ClusterService(monitor_factory=quick_monitor) as service:
        assert install_gui(service, interval_ms=20) is not None
        try:
            widget = install.make_panel_widget()
            qtbot.addWidget(widget)
            assert widget.controller.service is service
        finally:
            uninstall_gui()
        assert not service.closed  # the caller owns it


def test_no_gui_no_install(qapp, fake_nuke):
    fake_nuke._fake.set_gui(False)
    assert install_gui() is None
    uninstall_gui()
    assert service_host() is None
    fake_nuke._fake.set_gui(True)
    assert fake_nuke.menu("Pane").findItem(PANEL_LABEL) is None


def test_a_panel_before_install_says_why(qapp):
    assert service_host() is None
    with pytest.raises(RuntimeError, match="install_gui"):
        install.make_panel_widget()


# -- the panel and the render node share the host session's one service ---------------------------


@pytest.fixture
def host_session(qapp, fake_nuke, env):
    """install_host() whose service never touches the network, then install_gui() by default."""
    from comfy_cluster.host.install import install_host, uninstall_host

    built = []
    monitors = []

    def monitor(servers):
        monitors.append(quick_monitor(servers))
        return monitors[-1]

    def factory():
        built.append(ClusterService(monitor_factory=monitor, start=False))
        return built[-1]

    uninstall_host(fake_nuke)
    session = install_host(service_factory=factory, nuke=fake_nuke)
    session.built = built
    session.monitors = monitors
    host = install_gui(interval_ms=20)
    yield session, host
    uninstall_gui()
    uninstall_host(fake_nuke)
    for service in built:
        service.close()


def test_panel_and_node_share_one_service_and_one_monitor(qtbot, host_session, fake_nuke):
    session, host = host_session
    assert session.peek_cluster() is None  # nothing built before a panel or a render needs it
    widget = widget_of(pytest.importorskip("nukescripts").restorePanel(PANEL_ID))
    qtbot.addWidget(widget)
    widget.show()

    service = session.cluster()
    assert widget.controller.service is service and host.shared and not host.owns_service
    # The render node's side (what a render reads) uses the same service and monitor.
    servers, node_service = session.controller.configured(render=True)
    assert node_service is service and [s.name for s in servers] == ["a", "b"]
    assert len(session.built) == 1 and session.monitors == [service.monitor]
    qtbot.waitUntil(lambda: len(health_threads()) == 2, timeout=2000)
    # One monitor: one poller thread per server, not one per user of the service.
    assert sorted(t.name for t in health_threads()) == [
        "comfy-cluster-health-a",
        "comfy-cluster-health-b",
    ]
    # The node's chunk reports show in the panel's Job column.
    service.report_job("b", "Render1 chunk 2 (3-4)", job="j1")
    qtbot.waitUntil(
        lambda: widget.controller.model.row_named("b").job == "Render1 chunk 2 (3-4)", timeout=2000
    )
    service.report_job("b", "", job="j1")
    qtbot.waitUntil(lambda: widget.controller.model.row_named("b").job == "", timeout=2000)
    # A panel edit is what the node sees next.
    widget.controller.set_enabled("b", False)
    assert session.controller.server_names() == ["a"]

    uninstall_gui()  # removing the panel leaves the node's service running
    assert not service.closed
    # b is disabled now: its poller is told to stop (never joined) and only a is polled.
    qtbot.waitUntil(lambda: len(health_threads()) == 1, timeout=3000)


def test_quitting_closes_the_host_sessions_service(qtbot, qapp, host_session, fake_nuke):
    session, _host = host_session
    widget = widget_of(pytest.importorskip("nukescripts").restorePanel(PANEL_ID))
    qtbot.addWidget(widget)
    widget.show()
    service = session.cluster()
    qtbot.waitUntil(lambda: len(health_threads()) == 2, timeout=2000)

    qapp.aboutToQuit.emit()

    assert service.closed and not widget.controller.timer.isActive()
    assert session.cluster() is None  # nothing restarts it while Nuke quits
    qtbot.waitUntil(lambda: health_threads() == [], timeout=3000)


def test_quitting_closes_the_host_service_even_without_a_panel(qtbot, qapp, host_session):
    session, _host = host_session
    service = session.cluster()  # a render started it; no panel was ever opened
    qapp.aboutToQuit.emit()
    assert service.closed
    qtbot.waitUntil(lambda: health_threads() == [], timeout=3000)


def test_without_a_host_session_the_panel_owns_its_service(
    qtbot, qapp, fake_nuke, env, monkeypatch
):
    from comfy_cluster.host.install import current_session, uninstall_host

    uninstall_host(fake_nuke)
    assert current_session(fake_nuke) is None
    built = []

    def own():
        built.append(ClusterService(monitor_factory=quick_monitor))
        return built[-1]

    monkeypatch.setattr(install, "_default_service", own)
    host = install_gui(interval_ms=20)
    try:
        widget = install.make_panel_widget()
        qtbot.addWidget(widget)
        assert widget.controller.service is built[0]
        assert host.owns_service and not host.shared
    finally:
        uninstall_gui()
    assert built[0].closed
    qtbot.waitUntil(lambda: health_threads() == [], timeout=3000)


class StuckClient(DownClient):
    """A server whose health check hangs (black-holed) until the test lets it go."""

    release = threading.Event()

    def system_stats(self):
        self.release.wait(10.0)
        return super().system_stats()


def test_quitting_never_joins_a_poller_stuck_in_a_health_check(
    qtbot, qapp, fake_nuke, env, monkeypatch
):
    import time

    from comfy_cluster.host.install import uninstall_host

    uninstall_host(fake_nuke)  # the panel owns (and closes) its service
    built = []

    def own():
        monitor = lambda servers: HealthMonitor(  # noqa: E731
            servers, client_factory=StuckClient, interval_busy=0.05, timeout=5.0
        )
        built.append(ClusterService(monitor_factory=monitor))
        return built[-1]

    monkeypatch.setattr(install, "_default_service", own)
    StuckClient.release.clear()
    install_gui(interval_ms=20)
    try:
        widget = install.make_panel_widget()
        qtbot.addWidget(widget)
        widget.show()
        qtbot.waitUntil(lambda: len(health_threads()) == 2, timeout=2000)
        time.sleep(0.1)  # both pollers are inside system_stats now

        started = time.monotonic()
        qapp.aboutToQuit.emit()
        took = time.monotonic() - started

        assert built[0].closed
        assert took < 0.5, f"Nuke's main thread waited {took:.2f}s for the health pollers"
    finally:
        StuckClient.release.set()
        uninstall_gui()
    qtbot.waitUntil(lambda: health_threads() == [], timeout=3000)
