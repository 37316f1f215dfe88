"""The knob names in host/knobs.py and the .gizmo file agree, and the pure knob helpers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from comfy_cluster.core.balance import STRATEGIES
from comfy_cluster.core.engine.job import EXISTING_MODES, MODES
from comfy_cluster.core.frames import FRAME_ORDERS
from comfy_cluster.host import knobs as K
from comfy_cluster.host.node_status import format_status
from comfy_cluster.host.server_knob import choice_from_item, server_menu

GIZMO = Path(__file__).resolve().parent.parent / "gizmos" / f"{K.GIZMO_CLASS}.gizmo"
_USER_KNOB = re.compile(r"^\s*addUserKnob \{(\d+) (\S+)(.*)\}\s*$", re.MULTILINE)


def _user_knobs() -> dict[str, tuple[int, str]]:
    text = GIZMO.read_text(encoding="utf-8")
    found: dict[str, tuple[int, str]] = {}
    for type_id, name, rest in _USER_KNOB.findall(text):
        assert name not in found, f"{name} declared twice"
        found[name] = (int(type_id), rest)
    return found


def _items(rest: str) -> list[str]:
    match = re.search(r"M \{([^}]*)\}", rest)
    assert match, rest
    return match.group(1).split()


def test_every_knob_constant_is_in_the_gizmo() -> None:
    declared = _user_knobs()
    missing = [name for name in K.ALL_KNOBS if name not in declared]
    assert missing == []


def test_knob_types_are_what_the_host_expects() -> None:
    declared = _user_knobs()
    expected = {
        K.WORKFLOW: 2,
        K.FRAMES: 1,
        K.OUTPUT: 2,
        K.MODE: 4,
        K.CHUNK_SIZE: 3,
        K.STRATEGY: 4,
        K.EXISTING: 4,
        K.SERVER: 4,
        K.SERVER_CHOICE: 1,
        K.RENDER: 22,
        K.CANCEL: 22,
        K.PROGRESS: 7,
        K.STATUS: 1,
        K.FIRST: 3,
        K.LAST: 3,
    }
    assert {name: declared[name][0] for name in expected} == expected
    for name in (K.SERVER_CHOICE, K.FIRST, K.LAST):
        assert "+INVISIBLE" in declared[name][1]
    for name in (K.PROGRESS, K.STATUS):
        assert "+DISABLED" in declared[name][1], "read-only for the user"


def test_menus_match_the_core() -> None:
    declared = _user_knobs()
    assert tuple(_items(declared[K.MODE][1])) == K.MODES == tuple(MODES)
    assert tuple(_items(declared[K.STRATEGY][1])) == K.STRATEGIES
    assert set(K.STRATEGIES) == set(STRATEGIES)
    assert _items(declared[K.SERVER][1]) == [K.AUTO]
    # cc_existing: overwrite first (the default), items quoted as TCL words; both are modes
    # RenderJob accepts.
    assert 'M {overwrite "skip existing (resume)"}' in declared[K.EXISTING][1]
    assert list(K.EXISTING_MODES) == [K.EXISTING_OVERWRITE, K.EXISTING_RESUME]
    assert set(K.EXISTING_MODES.values()) == {"overwrite", "resume"} <= set(EXISTING_MODES)
    # cc_order: sequential first (the default), then preview: the engine's frame orders.
    assert tuple(_items(declared[K.ORDER][1])) == K.ORDERS == FRAME_ORDERS


def test_gizmo_buttons_and_oncreate_are_one_liners_into_the_host() -> None:
    text = GIZMO.read_text(encoding="utf-8")
    for fn in ("render_pressed", "cancel_pressed", "node_created"):
        assert f"comfy_cluster.host.install as cc; cc.{fn}(nuke.thisNode())" in text
    assert 'file "\\[value parent.cc_output]"' in text
    assert "first {{parent.cc_first}}" in text and "last {{parent.cc_last}}" in text
    assert f"name {K.INTERNAL_READ}" in text


@pytest.mark.parametrize(
    ("choice", "names", "items", "selected"),
    [
        ("", ["a", "b"], ["Auto", "a", "b"], "Auto"),
        ("Auto", [], ["Auto"], "Auto"),
        ("b", ["a", "b"], ["Auto", "a", "b"], "b"),
        ("render3", ["a"], ["Auto", "a", "render3 (missing)"], "render3 (missing)"),
    ],
)
def test_server_menu(choice: str, names: list[str], items: list[str], selected: str) -> None:
    assert server_menu(choice, names) == (items, selected)
    assert choice_from_item(selected) == (choice or "Auto")


def test_status_line() -> None:
    assert format_status(4, 10, ["sim2", "sim1"], 75.4) == "4/10 frames | sim1, sim2 | ETA 1:15"
    assert format_status(0, 3, [], None) == "0/3 frames"
    assert format_status(1, 3, [], 3 * 3600 + 120) == "1/3 frames | ETA 3:02:00"
