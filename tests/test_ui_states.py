"""Issue 13 item 9: units and states as the artist reads them.

VRAM in GiB everywhere; offline and disabled rows show ``-`` for queue, latency and VRAM (not a
stale or made-up ``0 run / 0 wait``); and the state colour stays visible on the selected row, also
under a dark palette like Nuke's. Offscreen pytest-qt, PySide6 on 3.11+, PySide2 on 3.9/3.10.
"""

from __future__ import annotations

import pytest
from qt_support import require_nuke_binding

require_nuke_binding(needs_pytest_qt=True)

from qt_support import GIB, FakeService, snapshot, status, tools_module  # noqa: E402

from comfy_cluster.core.health import ServerState  # noqa: E402
from comfy_cluster.core.server import ServerConfig  # noqa: E402
from comfy_cluster.ui.panel import create_panel_widget  # noqa: E402
from comfy_cluster.ui.panel_model import COLUMN_KEYS, STATE_COLOURS, build_rows  # noqa: E402
from comfy_cluster.ui.qt import QtGui  # noqa: E402

STATES = ("READY", "BUSY", "DEGRADED", "OFFLINE", "DISABLED")
NOT_LIVE = ("queue", "latency", "vram")


def every_state_snapshot():
    # Offline and disabled statuses keep numbers from before (or defaults): they must not show.
    return snapshot(
        *(
            status(
                name.lower(),
                ServerState[name],
                queue_running=1,
                queue_pending=2,
                latency_ms=30.0,
                vram_free=int(7.25 * GIB),
            )
            for name in STATES
        )
    )


def cells(key: str, rows) -> dict[str, str]:
    return {row.state: row.text(key) for row in rows}


# --------------------------------------------------------------------------- dashes and GiB


def test_offline_and_disabled_rows_show_a_dash(qtbot):
    rows = build_rows(every_state_snapshot())
    for key in NOT_LIVE:
        shown = cells(key, rows)
        assert shown["OFFLINE"] == "-" and shown["DISABLED"] == "-", key
        assert shown["READY"] != "-" and shown["BUSY"] != "-", key


def test_a_fresh_offline_status_does_not_claim_an_empty_queue():
    row = build_rows(snapshot(status("x", ServerState.OFFLINE, latency_ms=None)))[0]
    assert [row.text(key) for key in NOT_LIVE] == ["-", "-", "-"]  # not "0 run / 0 wait"


def test_servers_not_polled_yet_show_a_dash():
    rows = build_rows(None, (ServerConfig("new", "h"), ServerConfig("off", "h", enabled=False)))
    assert [[row.text(key) for key in NOT_LIVE] for row in rows] == [["-"] * 3] * 2


def test_vram_is_in_gib_in_the_table_and_the_details(qtbot):
    rows = build_rows(every_state_snapshot())
    ready = rows[0]
    assert ready.text("vram") == "7.2 / 24.0 GiB"
    assert dict(ready.details())["VRAM free"] == "7.2 / 24.0 GiB"
    assert all("GiB" in row.text("vram") for row in rows if row.live)


def test_the_model_shows_the_dash_too(qtbot):
    service = FakeService(every_state_snapshot())
    widget = create_panel_widget(service, interval_ms=20)
    qtbot.addWidget(widget)
    widget.show()
    model = widget.controller.model
    qtbot.waitUntil(lambda: model.rowCount() == len(STATES), timeout=2000)
    for state in STATES:
        row = model.row_of(state.lower())
        texts = [model.index(row, COLUMN_KEYS.index(key)).data() for key in NOT_LIVE]
        if state in ("OFFLINE", "DISABLED"):
            assert texts == ["-", "-", "-"]
        else:
            assert "-" not in texts


# --------------------------------------------------------------------------- colour when selected


def distance(a: QtGui.QColor, b: QtGui.QColor) -> int:
    return max(abs(a.red() - b.red()), abs(a.green() - b.green()), abs(a.blue() - b.blue()))


def share_of_colour(image: QtGui.QImage, rect, colour: QtGui.QColor, slack: int = 10) -> float:
    """The share of ``rect``'s pixels within ``slack`` of ``colour``."""
    hits = total = 0
    for y in range(rect.top(), rect.bottom() + 1, 2):
        for x in range(rect.left(), rect.right() + 1, 2):
            total += 1
            hits += distance(image.pixelColor(x, y), colour) <= slack
    return hits / max(total, 1)


def outlined(image: QtGui.QImage, rect, ring: QtGui.QColor, fill: QtGui.QColor) -> bool:
    """Along the cell's middle line, from its left edge, the ``ring`` colour comes before the
    ``fill`` colour: the badge has an outline between it and the highlight."""
    y = rect.center().y()
    for x in range(rect.left(), rect.center().x()):
        colour = image.pixelColor(x, y)
        if distance(colour, fill) <= 10:
            return False
        if distance(colour, ring) <= 40:
            return True
    return False


@pytest.fixture
def dark_panel(qtbot):
    service = FakeService(every_state_snapshot())
    widget = create_panel_widget(service, interval_ms=1000)
    qtbot.addWidget(widget)
    widget.resize(520, 420)
    widget.show()
    qtbot.waitUntil(lambda: widget.controller.model.rowCount() == len(STATES), timeout=2000)
    return widget


@pytest.mark.parametrize("highlight", ["#f7931e", "#2a64b0", "#308cc6"])
def test_the_state_colour_stays_visible_on_the_selected_row_in_a_dark_palette(
    qtbot, dark_panel, highlight
):
    """Nuke-like dark palette, with its orange highlight and two blues close to busy's colour."""
    dark_panel.setPalette(tools_module("nuke_palette").nuke_like_palette(highlight))
    table = dark_panel.table
    model = table.model()
    column = COLUMN_KEYS.index("state")
    seen = {}
    for state in STATES:
        row = dark_panel.controller.model.row_of(state.lower())
        dark_panel.select(state.lower())
        qtbot.wait(10)
        image = table.viewport().grab().toImage()
        rect = table.visualRect(model.index(row, column))
        # Fusion draws the highlight as a slight gradient: compare it loosely.
        selected_cell = share_of_colour(image, rect, QtGui.QColor(highlight), slack=40)
        state_colour = QtGui.QColor(STATE_COLOURS[state])
        assert share_of_colour(image, rect, state_colour) > 0.4, (state, highlight)
        # The row is really drawn selected: the highlight shows in its other cells...
        other = table.visualRect(model.index(row, COLUMN_KEYS.index("name")))
        assert share_of_colour(image, other, QtGui.QColor(highlight), slack=40) > 0.6
        # ...and the badge stands apart from it: by its colour, and always by its outline in the
        # highlighted-text colour (for a highlight of the same hue as the state).
        if distance(state_colour, QtGui.QColor(highlight)) > 40:
            assert selected_cell < 0.5, (state, highlight)
        ring = dark_panel.palette().color(QtGui.QPalette.ColorRole.HighlightedText)
        assert outlined(image, rect, ring, state_colour), (state, highlight)
        seen[state] = image.pixelColor(rect.center())
    centres = list(seen.values())
    assert all(distance(a, b) > 20 for i, a in enumerate(centres) for b in centres[i + 1 :])
