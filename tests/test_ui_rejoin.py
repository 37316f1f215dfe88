"""Issue 13: the panel shows a server out of a job with why, and working again once it rejoins.

The render node's job monitor reports each server's Job text to the cluster; the panel shows it
in the selected server's details. Offscreen pytest-qt.
"""

from __future__ import annotations

import pytest
from qt_support import require_nuke_binding

require_nuke_binding(needs_pytest_qt=True)

from qt_support import FakeService, snapshot, status  # noqa: E402
from test_views_rejoin import BLOCKED, REJOINED_AT, WHY, Dispatcher, story  # noqa: E402

from comfy_cluster.core.server import ServerConfig  # noqa: E402
from comfy_cluster.host.jobs import JobMonitor  # noqa: E402
from comfy_cluster.ui.panel import create_panel_widget  # noqa: E402


class ServiceBoard:
    """The cluster's Job board, writing into the fake service the panel reads."""

    def __init__(self, service: FakeService) -> None:
        self.service = service

    def report_job(self, server: str, text: str, *, job: str = "") -> None:
        if text:
            self.service.jobs[server] = text
        else:
            self.service.jobs.pop(server, None)

    def clear_job(self, job: str) -> None:
        self.service.jobs.clear()


@pytest.fixture
def panel(qtbot):
    names = ("a", "b", "c")
    service = FakeService(
        snapshot(*(status(n) for n in names)), servers=tuple(ServerConfig(n, n) for n in names)
    )
    widget = create_panel_widget(service, interval_ms=20)
    qtbot.addWidget(widget)
    widget.resize(520, 560)
    widget.show()
    qtbot.waitUntil(lambda: widget.controller.model.rowCount() == 3, timeout=2000)
    return widget, service


def test_the_details_say_out_then_show_the_chunk_after_a_rejoin(qtbot, panel) -> None:
    widget, service = panel
    monitor = JobMonitor(
        "Render1", Dispatcher(), 4, lambda *a: None, job_id="j", cluster=ServiceBoard(service)
    )
    events = story()
    for event in events[: BLOCKED + 1]:
        monitor.on_event(event)
    assert widget.select("b")
    details = widget.details
    qtbot.waitUntil(lambda: f"Render1: out: {WHY}" in details.toPlainText(), timeout=2000)
    monitor.on_event(events[REJOINED_AT])
    qtbot.waitUntil(lambda: "out:" not in details.toPlainText(), timeout=2000)
    monitor.on_event(events[REJOINED_AT + 1])
    qtbot.waitUntil(lambda: "Render1 chunk 2 (3-4)" in details.toPlainText(), timeout=2000)
    assert widget.select("c")
    qtbot.waitUntil(lambda: "ckpt_name" in details.toPlainText(), timeout=2000)
