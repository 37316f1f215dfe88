"""Issue 12, point 7: the node's handlers under both knobChanged behaviours.

Foundry's current docs say a programmatic ``setValue`` fires knobChanged too; older ones promise
it only for user edits. Every test here runs under both (``on_set``): a render whose own progress
updates may each fire knobChanged, and farm-style scripts that set knobs with ``setValue``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
from fixtures_nuke import FRAMES, Rig

from comfy_cluster.host import knobs as K

BOTH = pytest.mark.parametrize("on_set", [False, True], ids=["user-only", "on-set"])


def _counting(nuke: Any) -> list[str]:
    """Record every knobChanged the node class hears (after the host's own handler)."""
    heard: list[str] = []
    nuke.addKnobChanged(lambda: heard.append(nuke.thisKnob().name()), nodeClass=K.GIZMO_CLASS)
    return heard


@BOTH
def test_a_render_under_either_behaviour(rig_factory: Callable[..., Rig], on_set: bool) -> None:
    rig = rig_factory({}, {}, on_set=on_set)
    nuke = rig.nuke
    node = rig.create_node()
    heard = _counting(nuke)
    nuke._fake.press(node[K.RENDER])
    rig.wait_status(node, "Done")
    rig.assert_inverted()
    assert node[K.PROGRESS].value() == 100
    assert nuke._fake.messages() == []
    if on_set:  # the progress updates were heard, and nothing looped
        assert K.STATUS in heard and K.PROGRESS in heard
        assert heard.count(K.STATUS) < 40
    else:
        assert heard == [K.RENDER]


@BOTH
def test_a_server_pinned_with_set_value_is_used(
    rig_factory: Callable[..., Rig], on_set: bool
) -> None:
    rig = rig_factory({}, {}, on_set=on_set)
    nuke = rig.nuke
    node = rig.create_node()
    node[K.SERVER].setValue("sim2")  # a script, not the user
    nuke._fake.press(node[K.RENDER])
    rig.wait_status(node, "Done")
    assert rig.sims[0].prompts_seen == []
    assert len(rig.sims[1].prompts_seen) == len(FRAMES)
    assert node[K.SERVER_CHOICE].value() == "sim2"
    assert node[K.SERVER].value() == "sim2"


@BOTH
def test_the_menu_refresh_keeps_the_choice(
    rig_factory: Callable[..., Rig], tmp_path: Path, on_set: bool
) -> None:
    rig = rig_factory({}, {}, on_set=on_set)
    nuke = rig.nuke
    node = rig.create_node()
    nuke._fake.user_sets(node[K.SERVER], "sim1")
    name = node.name()
    nuke.scriptSaveAs(str(tmp_path / "s.nk"))
    rig.servers[:] = rig.servers[1:]  # sim1 leaves the configuration
    nuke.scriptOpen(str(tmp_path / "s.nk"))
    loaded = nuke.toNode(name)
    nuke._fake.open_panel(loaded)
    assert loaded[K.SERVER].value() == "sim1 (missing)"
    assert loaded[K.SERVER_CHOICE].value() == "sim1"
    nuke._fake.press(loaded[K.RENDER])  # refuses rather than using sim2
    assert "sim1" in rig.status(loaded) and "missing" in rig.status(loaded)
    assert rig.sims[1].prompts_seen == []


@BOTH
def test_frames_set_with_set_value_reach_the_read(
    rig_factory: Callable[..., Rig], on_set: bool
) -> None:
    rig = rig_factory({}, on_set=on_set)
    nuke = rig.nuke
    node = rig.create_node()
    node[K.FRAMES].setValue("2-4")
    if on_set:
        assert (node[K.FIRST].value(), node[K.LAST].value()) == (2, 4)
    nuke._fake.press(node[K.RENDER])
    assert (node[K.FIRST].value(), node[K.LAST].value()) == (2, 4)
    rig.wait_status(node, "Done")
    rig.assert_inverted(range(2, 5))


@BOTH
def test_missing_frames_set_with_set_value(rig_factory: Callable[..., Rig], on_set: bool) -> None:
    """Heard at once where knobChanged fires for setValue; otherwise the Read follows at the
    next render (and at every script load)."""
    rig = rig_factory({}, on_set=on_set)
    nuke = rig.nuke
    node = rig.create_node()
    read = node.node(K.INTERNAL_READ)
    node[K.MISSING_FRAMES].setValue(K.MISSING_BLACK)
    assert read["on_error"].value() == ("black" if on_set else "error")
    node[K.MISSING_FRAMES].setValue(K.MISSING_NEAREST)
    nuke._fake.press(node[K.RENDER])
    rig.wait_status(node, "Done")
    assert read["on_error"].value() == "nearest frame"


@BOTH
def test_a_rename_with_set_value_mid_render(rig_factory: Callable[..., Rig], on_set: bool) -> None:
    rig = rig_factory({"node_seconds": 0.1}, on_set=on_set)
    nuke = rig.nuke
    node = rig.create_node()
    nuke._fake.press(node[K.RENDER])
    nuke._fake.pump_until(lambda: rig.prompt_count() >= 1)
    node["name"].setValue("Hero")  # heard as a rename only where setValue fires knobChanged
    rig.wait_status(node, "Done")
    assert node.fullName() == "Hero"
    assert node[K.PROGRESS].value() == 100
    rig.assert_inverted()
