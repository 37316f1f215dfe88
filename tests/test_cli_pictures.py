"""Issue 13 item 10: the docs' picture of the live CLI view is the view as the code draws it.

``tools/cli_pictures.py`` runs the real ``comfy-cluster render`` on sims in a pseudo-terminal,
reads the screen through a terminal emulator and paints it. Here it runs again: the screen's text
(clocks and durations masked) must equal ``docs/images/cli-live.txt``, and the painted screen
must match ``docs/images/cli-live.png`` within a small tolerance (the clocks differ). Python 3.11
with PySide6 only, like the panel's pictures: fonts and Qt versions differ elsewhere. When this
fails because the view changed on purpose, run ``python tools/cli_pictures.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from qt_support import require_nuke_binding

if sys.version_info[:2] != (3, 11):
    pytest.skip("the pictures are drawn with Python 3.11 / PySide6", allow_module_level=True)
pytest.importorskip("pyte")
pytest.importorskip("aiohttp")
require_nuke_binding(needs_pytest_qt=True)

from qt_support import tools_module  # noqa: E402
from test_ui_pictures import MAX_DIFFERING, MAX_MEAN, difference  # noqa: E402

from comfy_cluster.ui.qt import QtGui  # noqa: E402

IMAGES = Path(__file__).resolve().parent.parent / "docs" / "images"


@pytest.fixture(scope="module")
def screen() -> Any:
    return tools_module("cli_pictures").capture()


def test_the_screen_text_is_the_committed_one(screen: Any) -> None:
    pictures = tools_module("cli_pictures")
    lines = pictures.masked(pictures.screen_lines(screen))
    committed = (IMAGES / "cli-live.txt").read_text(encoding="utf-8").splitlines()
    assert lines == committed, "run python tools/cli_pictures.py if the view changed on purpose"


def test_the_screen_shows_every_bar_and_why_each_server_did_no_work(screen: Any) -> None:
    lines = tools_module("cli_pictures").screen_lines(screen)
    rows = {line.split()[0]: line for line in lines[:4]}
    assert set(rows) == {"all", "gpu-a", "gpu-b", "gpu-c"}
    assert all("━" * 20 in row for row in rows.values())  # the bars survive long notes
    assert rows["gpu-b"].rstrip().endswith("…") and "out: unusable: node 4" in rows["gpu-b"]
    assert all(len(line) <= 120 for line in lines)
    text = "\n".join(lines)
    assert "ckpt_name: 'sd15.safetensors'" in text and "gpu-c did no work: offline" in text


def test_the_picture_matches_the_committed_one(qtbot: Any, screen: Any) -> None:
    drawn = tools_module("cli_pictures").draw(screen)
    saved = QtGui.QImage(str(IMAGES / "cli-live.png"))
    assert not saved.isNull()
    assert (drawn.width(), drawn.height()) == (saved.width(), saved.height())
    differing, mean = difference(drawn, saved)
    assert differing <= MAX_DIFFERING and mean <= MAX_MEAN, (differing, mean)
