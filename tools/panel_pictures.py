"""Draw the pictures of the server panel that the docs show, from the real widgets, offscreen.

Why a script: pictures drawn by hand go stale the day the panel changes. This one builds the
real :class:`~comfy_cluster.ui.panel.ServerPanelWidget` on a fake cluster of five servers, one in
each state (the offline one with a long error, selected so the details area shows it in full),
under a dark palette like Nuke's, and saves it at a docked pane's 520 px and at 900 px, plus the
edit dialog refusing a bad field. ``tests/test_ui_pictures.py`` grabs the same widgets again and
fails when the saved pictures no longer match, so the docs cannot drift from the code.

Usage, from the checkout (PySide6; no display needed)::

    python tools/panel_pictures.py            # writes docs/images/panel-*.png
    python tools/panel_pictures.py --out DIR  # somewhere else
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "images"
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
if str(ROOT / "plugin") not in sys.path:
    sys.path.insert(0, str(ROOT / "plugin"))  # draw this checkout's widgets, not an installed copy
if str(ROOT / "tools") not in sys.path:
    sys.path.insert(0, str(ROOT / "tools"))

from nuke_palette import nuke_like_palette  # noqa: E402

from comfy_cluster.core.errors import ConfigError  # noqa: E402
from comfy_cluster.core.health_status import (  # noqa: E402
    HealthSnapshot,
    ServerState,
    ServerStatus,
)
from comfy_cluster.core.server import ServerConfig  # noqa: E402
from comfy_cluster.ui.controller import PanelController  # noqa: E402
from comfy_cluster.ui.panel import ServerPanelWidget  # noqa: E402
from comfy_cluster.ui.qt import QtCore, QtGui, QtWidgets  # noqa: E402
from comfy_cluster.ui.server_dialog import ServerDialog  # noqa: E402

#: The pictures: file name -> (width, height) of the panel.
PANEL_SIZES: Mapping[str, tuple[int, int]] = {
    "panel-520.png": (520, 600),
    "panel-900.png": (900, 470),
}
DIALOG_PICTURE = "panel-edit-dialog.png"
#: The font the pictures are drawn with (DejaVu ships with most Linux images).
FONT_FAMILY = "DejaVu Sans"
SELECTED = "gpu-d"

_GIB = 1 << 30
_NOW = 1_750_000_000.0
_LONG_ERROR = (
    "connection refused: HTTPConnectionPool(host='10.0.0.8', port=8188): Max retries exceeded "
    "with url: /system_stats (Caused by NewConnectionError('Failed to establish a new "
    "connection: [Errno 111] Connection refused'))\n"
    "last answer 12 min ago; the render farm's nightly reboot of gpu-d was due at 02:00"
)


def fake_servers() -> tuple[ServerConfig, ...]:
    """Five configured servers; gpu-b has a token and a header (shown only by name)."""
    return (
        ServerConfig("gpu-a", "10.0.0.5", priority=1, source="NUKE_COMFYUI_SERVERS"),
        ServerConfig(
            "gpu-b",
            "gpu-b.studio.lan",
            port=8443,
            scheme="https",
            token="not-a-real-token",
            headers={"X-Studio-Key": "not-a-real-key"},
            max_in_flight=2,
            source="user file",
        ),
        ServerConfig("gpu-c", "10.0.0.7", priority=2, source="user file"),
        ServerConfig(
            "gpu-d",
            "10.0.0.8",
            dir_local="U:/comfy/",
            dir_remote="/srv/comfy/",
            priority=2,
            source="user file",
        ),
        ServerConfig("gpu-e", "10.0.0.9", enabled=False, priority=3, source="user file"),
    )


def fake_snapshot() -> HealthSnapshot:
    """One status per state, at a fixed time, so every picture is the same."""

    def status(name: str, url: str, state: ServerState, **values: object) -> ServerStatus:
        return ServerStatus(name, url, state, checked_at=_NOW - 2, **values)  # type: ignore[arg-type]

    gpu = {"device": "cuda:0 NVIDIA GeForce RTX 4090", "vram_total": 24 * _GIB}
    statuses = (
        status(
            "gpu-a",
            "http://10.0.0.5:8188",
            ServerState.READY,
            latency_ms=14.2,
            vram_free=int(20.4 * _GIB),
            since=_NOW - 3 * 3600,
            **gpu,
        ),
        status(
            "gpu-b",
            "https://gpu-b.studio.lan:8443",
            ServerState.BUSY,
            queue_running=1,
            queue_pending=2,
            latency_ms=38.0,
            vram_free=int(6.1 * _GIB),
            since=_NOW - 95,
            **gpu,
        ),
        status(
            "gpu-c",
            "http://10.0.0.7:8188",
            ServerState.DEGRADED,
            latency_ms=22.0,
            vram_free=int(11.8 * _GIB),
            since=_NOW - 600,
            reason="missing node classes: KSamplerAdvanced, VAEDecodeTiled",
            device="cuda:0 NVIDIA RTX A5000",
            vram_total=24 * _GIB,
        ),
        status(
            "gpu-d",
            "http://10.0.0.8:8188",
            ServerState.OFFLINE,
            since=_NOW - 720,
            last_error=_LONG_ERROR,
            failures=9,
        ),
        status("gpu-e", "http://10.0.0.9:8188", ServerState.DISABLED, since=_NOW - 86400),
    )
    return HealthSnapshot({s.name: s for s in statuses}, taken_at=_NOW)


class FakeCluster:
    """A ClusterServiceProtocol with canned, fixed values; edits are ignored."""

    def snapshot(self) -> HealthSnapshot:
        return fake_snapshot()

    def servers(self) -> Sequence[ServerConfig]:
        return fake_servers()

    def active_jobs(self) -> Mapping[str, str]:
        return {"gpu-b": "shot010_comp / frames 1009-1016"}

    def poll_now(self) -> None: ...

    def set_active(self, active: bool) -> None: ...

    def set_enabled(self, name: str, enabled: bool) -> None: ...

    def set_priority(self, name: str, priority: int) -> None: ...

    def add_server(self, config: ServerConfig) -> None: ...

    def remove_server(self, name: str) -> None: ...


def _dress(widget: QtWidgets.QWidget) -> None:
    widget.setPalette(nuke_like_palette())
    widget.setFont(QtGui.QFont(FONT_FAMILY, 9))
    widget.setAttribute(QtCore.Qt.WidgetAttribute.WA_DontShowOnScreen, True)


def _settle() -> None:
    for _ in range(3):
        QtWidgets.QApplication.processEvents()


def grab_panel(width: int, height: int, selected: str = SELECTED) -> QtGui.QImage:
    """The panel at ``width`` x ``height`` with server ``selected`` selected, as an image."""
    controller = PanelController(FakeCluster(), clock=lambda: "14:32:05")
    panel = ServerPanelWidget(controller)
    try:
        _dress(panel)
        panel.resize(width, height)
        panel.show()
        _settle()
        controller.stop()  # the picture needs no ticking
        panel.select(selected)
        _settle()
        return panel.grab().toImage()
    finally:
        panel.close()
        panel.deleteLater()


def grab_dialog() -> QtGui.QImage:
    """The edit dialog of gpu-b (token and header stored, so masked) refusing a CA bundle."""
    existing = fake_servers()[1]
    dialog = ServerDialog(existing, taken_names=[s.name for s in fake_servers()])
    try:
        _dress(dialog)
        dialog.ca_bundle_edit.setText("/studio/certs/missing-ca.pem")
        try:
            dialog.validate()
        except ConfigError as exc:
            dialog.show_error(exc)
        dialog.show()
        dialog.resize(dialog.sizeHint().width() + 60, dialog.sizeHint().height())
        _settle()
        return dialog.grab().toImage()
    finally:
        dialog.close()
        dialog.deleteLater()


def pictures() -> dict[str, QtGui.QImage]:
    """Every picture, by file name."""
    images = {name: grab_panel(*size) for name, size in PANEL_SIZES.items()}
    images[DIALOG_PICTURE] = grab_dialog()
    return images


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"folder (default {OUT})")
    args = parser.parse_args(argv)
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    app.setStyle("Fusion")
    args.out.mkdir(parents=True, exist_ok=True)
    for name, image in pictures().items():
        path = args.out / name
        if not image.save(str(path)):
            print(f"could not write {path}", file=sys.stderr)
            return 1
        print(f"{path} ({image.width()} x {image.height()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
