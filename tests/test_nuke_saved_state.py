"""Issue 12, points 3 and 6: what a saved script holds, and what the node shows when it reopens.

* ``cc_server`` is not written (the hidden ``cc_server_choice`` keeps the choice): Nuke would
  apply the saved item at load to a menu holding only ``Auto`` (the fake's load warning).
* ``cc_progress`` is not written; a saved status becomes a past fact on load; the tile gets the
  gizmo's colour back (or the user's own); after a complete job progress reads 100 until the
  next render or a load.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

from fixtures_nuke import FRAMES, TIMEOUT, Rig

from comfy_cluster.host import knobs as K
from comfy_cluster.host.node_status import past_status

_STAMP = r"\| \d{4}-\d\d-\d\d \d\d:\d\d$"


def _reopen(nuke: Any, path: Path, name: str) -> Any:
    nuke.scriptSaveAs(str(path), overwrite=1)
    nuke.scriptClear()
    nuke.scriptOpen(str(path))
    return nuke.toNode(name)


def test_saved_server_choice_loads_without_a_warning(
    rig_factory: Callable[..., Rig], tmp_path: Path
) -> None:
    rig = rig_factory({}, {})
    nuke = rig.nuke
    node = rig.create_node()
    nuke._fake.user_sets(node[K.SERVER], "sim2")
    name = node.name()
    script = tmp_path / "shot.nk"
    nuke.scriptSaveAs(str(script))
    text = script.read_text()
    assert "cc_server_choice sim2" in text
    assert not re.search(r"^\s*cc_server ", text, re.MULTILINE), "the menu item is not saved"

    nuke.scriptOpen(str(script))
    # (the fake warns about a few gizmo-file knobs it does not model, e.g. "help")
    assert [w for w in nuke._fake.load_warnings() if K.SERVER in w] == []
    loaded = nuke.toNode(name)
    assert loaded[K.SERVER].value() == "sim2"
    assert loaded[K.SERVER_CHOICE].value() == "sim2"


def test_a_script_saved_mid_render_reopens_with_a_past_fact(
    rig_factory: Callable[..., Rig], tmp_path: Path
) -> None:
    rig = rig_factory({"node_seconds": 0.4})
    nuke = rig.nuke
    node = rig.create_node()
    name = node.name()
    nuke._fake.press(node[K.RENDER])
    nuke._fake.pump_until(lambda: rig.status(node).startswith("1/6 frames"), TIMEOUT)
    script = tmp_path / "mid.nk"
    nuke.scriptSaveAs(str(script))  # saved while it renders: "1/6 frames | sim1 | ETA ..."
    nuke._fake.press(node[K.CANCEL])
    rig.wait_status(node, "Cancelled")
    text = script.read_text()
    assert "cc_progress" not in text, "progress is never saved"
    assert f"tile_color {hex(K.COLOR_RUNNING)}" in text

    nuke.scriptOpen(str(script))
    loaded = nuke.toNode(name)
    status = loaded[K.STATUS].value()
    assert status == "last render: stopped at 1/6 frames (saved while rendering)", status
    assert loaded[K.PROGRESS].value() == 0
    assert loaded[K.TILE_COLOR].value() == K.COLOR_GIZMO
    nuke._fake.pump_until(lambda: rig.prompts_left() == [], 5.0)


def test_a_finished_render_reads_100_then_reopens_as_last_render(
    rig_factory: Callable[..., Rig], tmp_path: Path
) -> None:
    rig = rig_factory({})
    nuke = rig.nuke
    node = rig.create_node()
    name = node.name()
    nuke._fake.press(node[K.RENDER])
    rig.wait_status(node, "Done")
    status = rig.status(node)
    assert re.match(rf"Done: {len(FRAMES)} frames.* {_STAMP}", status), status
    assert node[K.TILE_COLOR].value() == K.COLOR_GIZMO, "the gizmo's colour, not 0"
    for _ in range(3):  # nothing that lands later (a reload, a flush) takes the 100 away
        nuke._fake.pump()
        nuke._fake.open_panel(node)
    assert node[K.PROGRESS].value() == 100

    loaded = _reopen(nuke, tmp_path / "done.nk", name)
    assert loaded[K.STATUS].value() == "last render: " + status
    assert loaded[K.PROGRESS].value() == 0
    assert loaded[K.TILE_COLOR].value() == K.COLOR_GIZMO
    nuke.scriptSaveAs(str(tmp_path / "again.nk"))
    again = _reopen(nuke, tmp_path / "again.nk", name)
    assert again[K.STATUS].value() == "last render: " + status, "loading twice changes nothing"


def test_an_error_reopens_as_a_past_fact_with_the_gizmo_colour(
    rig_factory: Callable[..., Rig], tmp_path: Path
) -> None:
    rig = rig_factory({})
    nuke = rig.nuke
    node = rig.create_node()
    name = node.name()
    node[K.WORKFLOW].setValue(str(tmp_path / "missing.json"))
    nuke._fake.press(node[K.RENDER])
    assert node[K.TILE_COLOR].value() == K.COLOR_ERROR
    assert re.match(rf"Error: Workflow file not found: .* {_STAMP}", rig.status(node))
    loaded = _reopen(nuke, tmp_path / "err.nk", name)
    assert loaded[K.STATUS].value().startswith("last render: Error: Workflow file not found")
    assert loaded[K.TILE_COLOR].value() == K.COLOR_GIZMO


def test_the_users_own_tile_colour_survives_a_render(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory({})
    nuke = rig.nuke
    node = rig.create_node()
    node[K.TILE_COLOR].setValue(0x00FF00FF)
    nuke._fake.press(node[K.RENDER])
    assert node[K.TILE_COLOR].value() == K.COLOR_RUNNING
    rig.wait_status(node, "Done")
    assert node[K.TILE_COLOR].value() == 0x00FF00FF


def test_the_gizmo_colour_constant_is_the_gizmos() -> None:
    gizmo = (
        Path(__file__).resolve().parent.parent / "gizmos" / f"{K.GIZMO_CLASS}.gizmo"
    ).read_text()
    match = re.search(r"^ tile_color (0x[0-9a-fA-F]+)$", gizmo, re.MULTILINE)
    assert match and int(match.group(1), 16) == K.COLOR_GIZMO


def test_past_status_rules() -> None:
    assert past_status("") == ""
    assert past_status("4/10 frames | sim1 | ETA 0:12") == (
        "last render: stopped at 4/10 frames (saved while rendering)"
    )
    assert past_status("0/3 frames | writing input frames").startswith("last render: stopped at")
    assert past_status("Cancelling... 2/9 frames | sim1") == (
        "last render: stopped at 2/9 frames (saved while rendering)"
    )
    done = "Done: 6 frames in 1.0s (sim1: 6) | 2026-03-01 14:02"
    assert past_status(done) == "last render: " + done
    assert past_status(past_status(done)) == past_status(done)


def test_the_read_range_follows_the_frame_range_at_load(
    rig_factory: Callable[..., Rig], tmp_path: Path
) -> None:
    """A farm renders and never saves: the range must come from the knobs at load, not from
    whatever a render once set."""
    rig = rig_factory({})
    nuke = rig.nuke
    node = rig.create_node()
    name = node.name()
    node[K.FRAMES].setValue("3-5")  # a script's setValue: no knobChanged in this Nuke
    assert (node[K.FIRST].value(), node[K.LAST].value()) == (1, 1)
    loaded = _reopen(nuke, tmp_path / "r.nk", name)
    assert (loaded[K.FIRST].value(), loaded[K.LAST].value()) == (3, 5)
    loaded[K.FRAMES].setValue("")
    again = _reopen(nuke, tmp_path / "r2.nk", name)
    assert (again[K.FIRST].value(), again[K.LAST].value()) == (1, 6)  # the input's range
