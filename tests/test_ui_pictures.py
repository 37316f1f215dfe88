"""Issue 13 item 10: the docs' pictures of the panel are the panel as the code draws it today.

``tools/panel_pictures.py`` draws them from the real widgets offscreen; here the same widgets are
grabbed again and compared with the saved files, within a small tolerance (antialiasing). Python
3.11 with PySide6 only: fonts and Qt versions differ elsewhere, and the pictures come from 3.11.
When this fails because the panel changed on purpose, run ``python tools/panel_pictures.py``.
"""

from __future__ import annotations

import re
import sys
from array import array
from pathlib import Path

import pytest
from qt_support import require_nuke_binding

if sys.version_info[:2] != (3, 11):
    pytest.skip("the pictures are drawn with Python 3.11 / PySide6", allow_module_level=True)

require_nuke_binding(needs_pytest_qt=True)

from qt_support import tools_module  # noqa: E402

from comfy_cluster.ui.qt import QtGui, QtWidgets  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "docs" / "images"
#: A pixel "differs" when a channel moves by more than this (antialiasing moves a few).
CHANNEL_SLACK = 32
#: At most this share of the pixels may differ, and the mean channel difference stay under...
MAX_DIFFERING = 0.005
MAX_MEAN = 1.0


def pixels(image: QtGui.QImage) -> array:
    """The image's pixels as 0xAARRGGBB integers, row by row (no padding)."""
    rgb = image.convertToFormat(QtGui.QImage.Format.Format_RGB32)
    out = array("I")
    raw = bytes(rgb.constBits())
    width = rgb.width() * 4
    for y in range(rgb.height()):
        start = y * rgb.bytesPerLine()
        out.frombytes(raw[start : start + width])
    return out


def difference(a: QtGui.QImage, b: QtGui.QImage) -> tuple[float, float]:
    """(share of pixels differing by more than CHANNEL_SLACK, mean channel difference)."""
    left, right = pixels(a), pixels(b)
    differing = total = 0
    for p, q in zip(left, right):
        if p == q:
            continue
        deltas = [abs((p >> shift & 0xFF) - (q >> shift & 0xFF)) for shift in (0, 8, 16)]
        total += sum(deltas)
        differing += max(deltas) > CHANNEL_SLACK
    count = max(len(left), 1)
    return differing / count, total / (3 * count)


@pytest.fixture(scope="module")
def tool():
    module = tools_module("panel_pictures")
    if QtWidgets.QApplication.instance() is None:
        QtWidgets.QApplication([])
    families = QtGui.QFontDatabase.families()
    if module.FONT_FAMILY not in families:
        pytest.skip(f"font {module.FONT_FAMILY!r} is not installed; the pictures use it")
    if QtWidgets.QApplication.style().objectName().lower() != "fusion":
        pytest.skip("the pictures are drawn in Qt's Fusion style")
    return module


def test_every_picture_is_saved(tool):
    names = [*tool.PANEL_SIZES, tool.DIALOG_PICTURE]
    missing = [name for name in names if not (IMAGES / name).is_file()]
    assert not missing, f"run python tools/panel_pictures.py (missing {missing})"


@pytest.mark.parametrize("name", ["panel-520.png", "panel-900.png"])
def test_the_saved_panel_picture_matches_a_fresh_grab(qtbot, tool, name):
    width, height = tool.PANEL_SIZES[name]
    fresh = tool.grab_panel(width, height)
    saved = QtGui.QImage(str(IMAGES / name))
    assert not saved.isNull(), f"{name}: unreadable; run python tools/panel_pictures.py"
    assert (saved.width(), saved.height()) == (width, height) == (fresh.width(), fresh.height())
    share, mean = difference(saved, fresh)
    assert share <= MAX_DIFFERING and mean <= MAX_MEAN, (
        f"{name} is out of date ({share:.2%} of pixels differ, mean {mean:.2f}): "
        "run python tools/panel_pictures.py"
    )


def test_the_saved_dialog_picture_matches_a_fresh_grab(qtbot, tool):
    fresh = tool.grab_dialog()
    saved = QtGui.QImage(str(IMAGES / tool.DIALOG_PICTURE))
    assert (saved.width(), saved.height()) == (fresh.width(), fresh.height())
    share, mean = difference(saved, fresh)
    assert share <= MAX_DIFFERING and mean <= MAX_MEAN, "run python tools/panel_pictures.py"


def test_a_changed_panel_would_be_caught(qtbot, tool):
    """The comparison is not blind: the same panel with another server selected differs beyond
    the tolerance."""
    saved = QtGui.QImage(str(IMAGES / "panel-520.png"))
    changed = tool.grab_panel(*tool.PANEL_SIZES["panel-520.png"], selected="gpu-a")
    share, mean = difference(saved, changed)
    assert share > MAX_DIFFERING or mean > MAX_MEAN


def test_the_docs_show_the_pictures():
    panel_doc = (ROOT / "docs" / "panel.md").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    shown = set(re.findall(r"!\[[^\]]*\]\((?:docs/)?images/([\w.-]+\.png)\)", panel_doc))
    assert {"panel-520.png", "panel-900.png", "panel-edit-dialog.png"} <= shown
    assert re.search(r"!\[[^\]]*\]\(docs/images/panel-\d+\.png\)", readme)
