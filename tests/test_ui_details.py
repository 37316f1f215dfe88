"""Issue 13 item 7: the selected server's details, its last error in full, under the table.

At 520 px (a docked pane) the table keeps to the columns that fit, and the details area shows the
rest: state, reason, the whole error wrapped and selectable, URL, device, VRAM, models when the
status has them. Offscreen pytest-qt, PySide6 on 3.11+, PySide2 on 3.9/3.10.
"""

from __future__ import annotations

import dataclasses

import pytest
from qt_support import require_nuke_binding

require_nuke_binding(needs_pytest_qt=True)

from qt_support import GIB, FakeService, snapshot, status  # noqa: E402

from comfy_cluster.core.health import ServerState, ServerStatus  # noqa: E402
from comfy_cluster.core.server import ServerConfig  # noqa: E402
from comfy_cluster.ui.panel import create_panel_widget  # noqa: E402
from comfy_cluster.ui.panel_model import COLUMN_KEYS, build_rows  # noqa: E402
from comfy_cluster.ui.qt import QtCore, QtGui  # noqa: E402

Qt = QtCore.Qt
DOCKED_WIDTH = 520

LONG_ERROR = (
    "connection refused: HTTPConnectionPool(host='10.0.0.8', port=8188): Max retries exceeded "
    "with url: /system_stats (Caused by NewConnectionError('Failed to establish a new "
    "connection: [Errno 111] Connection refused'))\n"
    "second line: /a/very/long/path/without/any/spaces/that/must/still/wrap/inside/the/pane/"
    "because/nobody/scrolls/sideways/in/a/docked/panel/error.log"
)


@dataclasses.dataclass(frozen=True)
class StatusWithModels(ServerStatus):
    """A status that reports the models the server holds (ServerStatus may grow this field)."""

    models: tuple = ()


@pytest.fixture
def service() -> FakeService:
    return FakeService(
        snapshot(
            status("gpu-a", queue_running=1, queue_pending=2, vram_free=int(6.5 * GIB)),
            status(
                "gpu-d",
                ServerState.OFFLINE,
                last_error=LONG_ERROR,
                reason="HTTP fails",
                url="http://10.0.0.8:8188",
            ),
        ),
        servers=(
            ServerConfig("gpu-a", "gpu-a", token="s3cret-token", headers={"X-Key": "hdr-secret"}),
            ServerConfig("gpu-d", "10.0.0.8", dir_local="U:/", dir_remote="/srv/comfy/"),
        ),
    )


@pytest.fixture
def docked(qtbot, service):
    """The panel at a docked pane's width, shown, with its rows in."""
    widget = create_panel_widget(service, interval_ms=20)
    qtbot.addWidget(widget)
    widget.resize(DOCKED_WIDTH, 560)
    widget.show()
    qtbot.waitUntil(lambda: widget.controller.model.rowCount() == 2, timeout=2000)
    return widget


def test_at_520_px_the_selected_servers_full_error_is_in_the_details_area(qtbot, docked):
    assert docked.select("gpu-d")
    details = docked.details
    qtbot.waitUntil(lambda: LONG_ERROR in details.toPlainText(), timeout=2000)
    # Visible, inside the pane, wrapped (never scrolled sideways) and selectable.
    assert details.isVisible()
    right_edge = details.mapTo(docked, QtCore.QPoint(details.width(), 0)).x()
    assert right_edge <= docked.width()
    assert details.horizontalScrollBar().maximum() == 0
    assert details.document().size().width() <= details.viewport().width() + 1
    flags = details.textInteractionFlags()
    assert flags & Qt.TextInteractionFlag.TextSelectableByMouse
    assert flags & Qt.TextInteractionFlag.TextSelectableByKeyboard
    text = details.toPlainText()
    for expected in (
        "gpu-d",
        "offline",
        "HTTP fails",
        "http://10.0.0.8:8188",
        "U:/ -> /srv/comfy/",
    ):
        assert expected in text


def test_at_520_px_every_table_column_fits(qtbot, docked):
    table = docked.table
    assert docked.width() == DOCKED_WIDTH
    assert docked.minimumSizeHint().width() <= DOCKED_WIDTH
    assert table.horizontalScrollBar().maximum() == 0  # nothing off the right edge
    header = table.horizontalHeader()
    used = sum(header.sectionSize(i) for i in range(header.count()))
    assert used <= table.viewport().width()
    assert set(COLUMN_KEYS) >= {"name", "state", "queue", "latency", "vram"}
    assert "last_error" not in COLUMN_KEYS and "url" not in COLUMN_KEYS  # in the details
    # Each cell's text fits its column: nothing elided.
    metrics = QtGui.QFontMetrics(table.font())
    model = table.model()
    for row in range(model.rowCount()):
        for column, key in enumerate(COLUMN_KEYS):
            if key == "name":
                continue
            text = model.index(row, column).data()
            assert metrics.horizontalAdvance(text) < header.sectionSize(column), (key, text)


def test_details_show_the_live_values_of_a_working_server(qtbot, docked):
    docked.select("gpu-a")
    text = docked.details.toPlainText()
    for expected in (
        "ready",
        "cuda:0 NVIDIA RTX 4090",
        "6.5 / 24.0 GiB",
        "1 run / 2 wait",
        "12 ms",
    ):
        assert expected in text


def test_details_never_show_a_secret(qtbot, docked):
    docked.select("gpu-a")
    text = docked.details.toPlainText()
    assert "token" in text and "X-Key" in text  # that there are secrets, by name
    assert "s3cret-token" not in text and "hdr-secret" not in text
    assert "s3cret-token" not in docked.details.toHtml()


def test_details_follow_the_selection_and_say_when_nothing_is_selected(qtbot, docked):
    assert "Select a server" in docked.details.toPlainText()
    docked.select("gpu-d")
    assert "gpu-d" in docked.details.toPlainText()
    docked.table.clearSelection()
    assert "Select a server" in docked.details.toPlainText()


def test_details_follow_new_health_of_the_selected_server(qtbot, docked, service):
    docked.select("gpu-d")
    service.snap = snapshot(status("gpu-a"), status("gpu-d", last_error=None))
    qtbot.waitUntil(lambda: "ready" in docked.details.toPlainText(), timeout=2000)
    assert "Connection refused" not in docked.details.toPlainText()


def test_details_hold_still_while_text_is_selected(qtbot, docked, service):
    docked.select("gpu-d")
    details = docked.details
    details.selectAll()
    service.snap = snapshot(status("gpu-a"), status("gpu-d", ServerState.OFFLINE, last_error="x"))
    qtbot.wait(100)  # several ticks
    assert LONG_ERROR in details.toPlainText() and details.textCursor().hasSelection()
    details.moveCursor(QtGui.QTextCursor.MoveOperation.Start)  # selection cleared
    qtbot.waitUntil(lambda: LONG_ERROR not in details.toPlainText(), timeout=2000)


def test_models_are_listed_when_the_status_has_them_and_omitted_otherwise():
    held = StatusWithModels(
        "a", "http://a:8188", ServerState.READY, models=("sdxl_base.safetensors", "vae.pt")
    )
    plain = ServerStatus("b", "http://b:8188", ServerState.READY)
    rows = build_rows(snapshot(held, plain))
    assert dict(rows[0].details())["Models"] == "sdxl_base.safetensors, vae.pt"
    assert "Models" not in dict(rows[1].details())


def test_details_give_the_whole_multi_line_error_and_skip_empty_lines():
    row = build_rows(snapshot(status("d", ServerState.OFFLINE, last_error=LONG_ERROR)))[0]
    details = dict(row.details())
    assert details["Last error"] == LONG_ERROR
    assert "Reason" not in details  # empty: left out
    assert "VRAM free" not in details and "Queue" not in details  # offline: not live
