"""ui/panel_model.py, ui/controller.py, ui/panel.py: the server table follows health snapshots.

Runs offscreen with pytest-qt: PySide6 on Python 3.11+, PySide2 on 3.9/3.10 (Nuke 16 vs 14/15).
"""

from __future__ import annotations

import json
import threading

import pytest
from qt_support import require_nuke_binding

EXPECTED_BINDING = require_nuke_binding(needs_pytest_qt=True)

from health_fakes import health_threads, quick_monitor  # noqa: E402
from qt_support import GIB, FakeService, snapshot, status  # noqa: E402

from comfy_cluster.core.cluster import ClusterService  # noqa: E402
from comfy_cluster.core.health import HealthSnapshot, ServerState  # noqa: E402
from comfy_cluster.core.server import ServerConfig  # noqa: E402
from comfy_cluster.ui.controller import PanelController  # noqa: E402
from comfy_cluster.ui.panel import ServerPanelWidget, create_panel_widget  # noqa: E402
from comfy_cluster.ui.panel_model import (  # noqa: E402
    COLUMN_KEYS,
    NAME_ROLE,
    STATE_COLOURS,
    UNKNOWN,
    ServerRow,
    ServerTableModel,
    build_rows,
)
from comfy_cluster.ui.qt import BINDING, QtCore, QtGui  # noqa: E402

Qt = QtCore.Qt


def col(key: str) -> int:
    return COLUMN_KEYS.index(key)


@pytest.fixture
def service():
    return FakeService(snapshot(status("a"), status("b", ServerState.OFFLINE)))


@pytest.fixture
def panel(qtbot, service):
    widget = create_panel_widget(service, interval_ms=20)
    qtbot.addWidget(widget)
    widget.show()
    qtbot.waitUntil(lambda: widget.controller.model.rowCount() == 2, timeout=2000)
    return widget


def shown_names(widget: ServerPanelWidget) -> list[str]:
    model = widget.controller.model
    return [model.index(r, 0).data() for r in range(model.rowCount())]


# --------------------------------------------------------------------------- binding


def test_the_binding_is_nukes_for_this_python():
    assert BINDING == EXPECTED_BINDING


# --------------------------------------------------------------------------- rows (pure)


def test_rows_follow_config_order_then_snapshot_only_servers():
    servers = (ServerConfig("b", "h2", priority=2), ServerConfig("new", "h3", enabled=True))
    snap = snapshot(status("z"), status("a"), status("b", ServerState.BUSY))
    rows = build_rows(snap, servers, {"b": "job 7 / chunk 3"})
    assert [r.name for r in rows] == ["b", "new", "a", "z"]
    b, new, a, _ = rows
    assert (b.state, b.priority, b.job, b.source) == ("BUSY", 2, "job 7 / chunk 3", "default")
    assert (new.state, new.url, new.priority) == (UNKNOWN, "http://h3:8188", 1)
    assert a.priority is None and a.enabled


def test_a_disabled_server_not_yet_polled_shows_disabled():
    rows = build_rows(None, (ServerConfig("off", "h", enabled=False),))
    assert rows[0].state == "DISABLED" and not rows[0].enabled


def test_row_texts():
    snap = HealthSnapshot(
        {
            "a": status(
                "a",
                ServerState.DEGRADED,
                queue_running=1,
                queue_pending=3,
                latency_ms=41.6,
                vram_free=int(1.5 * GIB),
                last_error="refused\ntraceback...",
                reason="missing node class KSamplerX",
                since=1000.0,
            )
        },
        taken_at=1000.0 + 125,
    )
    row = build_rows(snap)[0]
    assert row.text("state") == "degraded"
    assert row.text("queue") == "1 run / 3 wait"
    assert row.text("latency") == "42 ms"
    assert row.text("vram") == "1.5 / 24.0 GiB"
    assert row.text("last_error") == "refused"
    assert row.tooltip("last_error") == "refused\ntraceback..."
    assert row.tooltip("state") == "degraded for 2 min - missing node class KSamplerX"
    assert row.tooltip("name") == "a - http://a:8188"
    configured = build_rows(None, (ServerConfig("c", "10.0.0.9", source="user file"),))[0]
    assert configured.tooltip("name") == "c - http://10.0.0.9:8188 (from user file)"
    empty = ServerRow("x")
    assert [empty.text(k) for k in ("queue", "latency", "vram", "priority")] == ["-"] * 4


# --------------------------------------------------------------------------- model


class Recorder:
    def __init__(self, model: ServerTableModel):
        self.events: list = []
        model.rowsInserted.connect(lambda _p, a, b: self.events.append(("insert", a, b)))
        model.rowsRemoved.connect(lambda _p, a, b: self.events.append(("remove", a, b)))
        model.dataChanged.connect(
            lambda tl, br, *_: self.events.append(("changed", tl.row(), br.row()))
        )
        model.modelReset.connect(lambda: self.events.append(("reset",)))


def test_model_applies_a_diff(qtbot):
    model = ServerTableModel()
    model.set_rows([ServerRow("a"), ServerRow("b"), ServerRow("c")])
    rec = Recorder(model)
    model.set_rows([ServerRow("a"), ServerRow("c", state="READY"), ServerRow("d")])
    assert [r.name for r in model.rows()] == ["a", "c", "d"]
    assert rec.events == [("remove", 1, 1), ("changed", 1, 1), ("insert", 2, 2)]
    rec.events.clear()
    model.set_rows(model.rows())
    assert rec.events == []  # nothing changed, nothing emitted


def test_model_resets_when_servers_change_order(qtbot):
    model = ServerTableModel()
    model.set_rows([ServerRow("a"), ServerRow("b")])
    rec = Recorder(model)
    model.set_rows([ServerRow("b"), ServerRow("a")])
    assert rec.events == [("reset",)]
    assert [r.name for r in model.rows()] == ["b", "a"]


def test_model_rejects_duplicate_names(qtbot):
    with pytest.raises(ValueError, match="duplicate"):
        ServerTableModel().set_rows([ServerRow("a"), ServerRow("a")])


@pytest.mark.parametrize("state", list(ServerState))
def test_state_cell_is_coloured(qtbot, state):
    model = ServerTableModel()
    model.set_rows(build_rows(snapshot(status("a", state))))
    index = model.index(0, col("state"))
    brush = index.data(Qt.ItemDataRole.BackgroundRole)
    assert isinstance(brush, QtGui.QBrush)
    assert brush.color().name() == STATE_COLOURS[state.name]
    assert index.data() == state.name.lower()
    assert index.data(NAME_ROLE) == "a"
    assert model.index(0, col("queue")).data(Qt.ItemDataRole.BackgroundRole) is None


def test_state_colours_are_distinct_and_cover_every_state():
    assert {s.name for s in ServerState} <= set(STATE_COLOURS)
    assert len(set(STATE_COLOURS.values())) == len(STATE_COLOURS)


def test_headers(qtbot):
    model = ServerTableModel()
    headers = [
        model.headerData(i, Qt.Orientation.Horizontal, Qt.ItemDataRole.DisplayRole)
        for i in range(model.columnCount())
    ]
    assert headers == ["Server", "State", "Queue", "Latency", "VRAM free"]


# --------------------------------------------------------------------------- panel + timer


def test_rows_follow_snapshots(qtbot, panel, service):
    assert shown_names(panel) == ["a", "b"]
    service.snap = snapshot(status("a", ServerState.BUSY, queue_running=1), status("c"))
    service.jobs = {"a": "job 1 / chunk 2"}
    qtbot.waitUntil(lambda: shown_names(panel) == ["a", "c"], timeout=2000)
    model = panel.controller.model
    qtbot.waitUntil(lambda: model.row_named("a").job == "job 1 / chunk 2", timeout=2000)
    assert model.index(0, col("state")).data() == "busy"
    service.snap = snapshot()
    qtbot.waitUntil(lambda: model.rowCount() == 0, timeout=2000)


def test_ticks_only_read_cached_values_on_the_main_thread(qtbot, panel, service):
    service.calls.clear()
    qtbot.waitUntil(lambda: len(service.named("snapshot")) >= 3, timeout=2000)
    assert {c[0] for c in service.calls} <= {"snapshot", "servers", "active_jobs"}
    assert service.threads == {threading.main_thread()}


def test_selection_drives_the_buttons(qtbot, panel, service):
    service.configs = (ServerConfig("a", "h", priority=3), ServerConfig("b", "h", enabled=False))
    panel.controller.refresh()
    assert not panel.remove_button.isEnabled()  # nothing selected
    assert panel.select("b")
    assert panel.remove_button.isEnabled()
    assert not panel.enabled_button.isChecked()
    assert panel.select("a")
    assert panel.enabled_button.isChecked() and panel.priority_spin.value() == 3
    assert not panel.select("nope")
    assert service.named("set_priority") == []  # syncing the spin box is not an edit


def test_actions_call_the_service(qtbot, panel, service, monkeypatch):
    panel.select("a")
    panel.enabled_button.click()
    panel.priority_spin.setValue(4)
    added = ServerConfig("c", "10.0.0.9", port=8190)
    monkeypatch.setattr(panel, "ask_new_server", lambda: added)
    panel.add_button.click()
    monkeypatch.setattr(panel, "confirm", lambda question: "'a'" in question)
    panel.select("a")
    panel.remove_button.click()
    panel.refresh_button.click()
    edits = [c for c in service.calls if c[0] not in ("snapshot", "servers", "active_jobs")]
    edits = [c for c in edits if c[0] not in ("poll_now", "set_active")]
    assert edits == [
        ("set_enabled", "a", False),
        ("set_priority", "a", 4),
        ("add_server", added),
        ("remove_server", "a"),
    ]
    assert len(service.named("poll_now")) >= 5  # every action asks for fresh health


def test_cancelled_dialogs_do_nothing(qtbot, panel, service, monkeypatch):
    monkeypatch.setattr(panel, "ask_new_server", lambda: None)
    monkeypatch.setattr(panel, "confirm", lambda question: False)
    panel.add_button.click()
    panel.select("a")
    panel.remove_button.click()
    assert service.named("add_server") == [] and service.named("remove_server") == []


def test_a_failed_action_is_shown_and_the_panel_keeps_working(qtbot, panel, service):
    service.fail_with = ValueError("priority must be 1 or more")
    panel.select("a")
    panel.enabled_button.click()
    assert "priority must be 1 or more" in panel.error_label.text()
    assert not panel.error_label.isHidden()
    service.fail_with = None
    service.snap = snapshot(status("a"))
    qtbot.waitUntil(lambda: shown_names(panel) == ["a"], timeout=2000)
    assert "priority" in panel.error_label.text()  # ticks do not wipe the error
    panel.refresh_button.click()
    assert panel.error_label.isHidden()


def test_a_failing_snapshot_does_not_stop_the_timer(qtbot, panel, service, monkeypatch):
    def boom():
        raise RuntimeError("monitor exploded")

    monkeypatch.setattr(service, "snapshot", boom)
    qtbot.waitUntil(lambda: "monitor exploded" in panel.status_label.text(), timeout=2000)
    assert panel.controller.active


def test_timer_runs_only_while_visible(qtbot, panel, service):
    controller = panel.controller
    assert controller.active and service.named("set_active") == [("set_active", True)]
    panel.hide()
    assert not controller.active
    assert service.named("set_active")[-1] == ("set_active", False)
    panel.show()
    assert controller.active


def test_destroying_the_widget_stops_watching(qtbot, service):
    widget = create_panel_widget(service, interval_ms=20)
    widget.show()
    assert service.named("set_active") == [("set_active", True)]
    destroyed = []
    widget.destroyed.connect(lambda *_: destroyed.append(True))
    widget.deleteLater()
    qtbot.waitUntil(lambda: destroyed == [True], timeout=2000)
    assert service.named("set_active")[-1] == ("set_active", False)


def test_about_to_quit_stops_the_timer(qtbot, qapp, panel, service):
    controller = panel.controller
    assert controller.active
    qapp.aboutToQuit.emit()
    assert not controller.active
    assert service.named("set_active")[-1] == ("set_active", False)
    panel.hide()
    panel.show()  # after quit, showing again does not restart polling
    assert not controller.active


def test_interval_must_be_positive(qtbot, service):
    with pytest.raises(ValueError):
        PanelController(service, interval_ms=0)


# --------------------------------------------------------------------------- persistence


def test_actions_persist_to_the_user_file(qtbot, tmp_path, monkeypatch):
    user_file = tmp_path / "servers.json"
    monkeypatch.setenv("COMFY_CLUSTER_CONFIG", str(user_file))
    monkeypatch.setenv(
        "NUKE_COMFYUI_SERVERS",
        json.dumps([{"name": "a", "ip": "10.0.0.5"}, {"name": "b", "ip": "10.0.0.6"}]),
    )
    with ClusterService(monitor_factory=quick_monitor) as cluster:
        widget = create_panel_widget(cluster, interval_ms=20)
        qtbot.addWidget(widget)
        widget.show()
        qtbot.waitUntil(lambda: shown_names(widget) == ["a", "b"], timeout=2000)

        widget.select("b")
        widget.enabled_button.click()
        widget.priority_spin.setValue(7)
        monkeypatch.setattr(widget, "ask_new_server", lambda: ServerConfig("c", "10.0.0.7"))
        widget.add_button.click()
        monkeypatch.setattr(widget, "confirm", lambda question: True)
        widget.select("a")
        widget.remove_button.click()

        qtbot.waitUntil(lambda: shown_names(widget) == ["b", "c"], timeout=2000)
        assert widget.error_label.isHidden(), widget.error_label.text()
        row_b = widget.controller.model.row_named("b")
        assert (row_b.enabled, row_b.priority, row_b.state) == (False, 7, "DISABLED")
        qtbot.waitUntil(
            lambda: "connection refused" in widget.controller.model.row_named("c").last_error,
            timeout=3000,
        )
        assert widget.controller.model.row_named("c").state == "OFFLINE"
    assert health_threads() == []

    doc = json.loads(user_file.read_text(encoding="utf-8"))
    assert doc["edits"] == {"b": {"enabled": False, "priority": 7}}
    assert doc["removed"] == ["a"]
    assert doc["added"]["c"]["host"] == "10.0.0.7"
