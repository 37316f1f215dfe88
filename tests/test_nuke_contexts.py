"""Issue 12, point 1: the Render button runs with the gizmo as Nuke's current context.

In ``nuke -t`` the whole job runs inside that button, so every lookup by name and every node
the host creates must name its group explicitly. Rendered through the button, at the top level
and inside a user Group, in a terminal session (the farm) and in the GUI.
"""

from __future__ import annotations

from typing import Callable, Optional

import pytest
from fixtures_nuke import TIMEOUT, Rig

from comfy_cluster.host import knobs as K
from comfy_cluster.host.export import EXPORT_NODE_NAME


@pytest.mark.parametrize("group", [None, "Shot"])
def test_terminal_render_through_the_button(
    rig_factory: Callable[..., Rig], group: Optional[str]
) -> None:
    rig = rig_factory({}, gui=False)
    nuke = rig.nuke
    node = rig.create_node(group=group)
    assert node.fullName() == (f"{group}.ComfyClusterRender1" if group else "ComfyClusterRender1")

    node[K.RENDER].execute()  # the button: blocks until the job ends, inside the gizmo's context

    assert rig.status(node).startswith("Done"), rig.status(node)
    assert node[K.PROGRESS].value() == 100
    rig.assert_inverted()
    # The temporary Write was made next to the node (in its group), then deleted.
    (write_name,) = {name for name, _, _ in nuke._fake.executions()}
    prefix = f"{group}." if group else ""
    assert write_name.startswith(prefix + EXPORT_NODE_NAME)
    with nuke.root():
        assert nuke.allNodes("Write", recurseGroups=True) == []
    lines = [line for line in nuke._fake.tprints() if line.startswith("comfy_cluster:")]
    assert any(f"{node.fullName()}: Done" in line for line in lines), lines
    assert nuke._fake.dropped() == [] and nuke._fake.queued() == 0


@pytest.mark.parametrize("group", [None, "Shot"])
def test_gui_error_found_inside_the_button_lands_on_the_node(
    rig_factory: Callable[..., Rig], group: Optional[str]
) -> None:
    rig = rig_factory({})
    nuke = rig.nuke
    node = rig.create_node(group=group)
    node[K.WORKFLOW].setValue("")
    nuke._fake.press(node[K.RENDER])  # fails before anything starts, inside the button
    assert rig.status(node).startswith("Error: Workflow (cc_workflow) is empty"), rig.status(node)
    assert node[K.TILE_COLOR].value() == K.COLOR_ERROR
    assert len(nuke._fake.messages()) == 1


def test_gui_render_inside_a_group_lands_frames_and_status(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory({}, {})
    nuke = rig.nuke
    node = rig.create_node(group="Shot")
    nuke._fake.press(node[K.RENDER])
    rig.wait_status(node, "Done", TIMEOUT)
    rig.assert_inverted()
    assert node[K.PROGRESS].value() == 100
    assert node[K.TILE_COLOR].value() == K.COLOR_GIZMO


def test_terminal_error_inside_a_group_is_on_the_node(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory({"fail_node": "ImageInvert"}, gui=False)
    nuke = rig.nuke
    node = rig.create_node(group="Shot")
    node[K.RENDER].execute()
    assert rig.status(node).startswith("Error"), rig.status(node)
    errors = [line for line in nuke._fake.tprints() if "ERROR" in line]
    assert len(errors) == 1 and "Shot.ComfyClusterRender1" in errors[0]


def test_cancel_button_inside_a_group_finds_the_job(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory({"node_seconds": 0.3})
    nuke = rig.nuke
    node = rig.create_node(group="Shot")
    nuke._fake.press(node[K.RENDER])
    nuke._fake.pump_until(lambda: rig.prompt_count() >= 1, TIMEOUT)
    nuke._fake.press(node[K.CANCEL])
    rig.wait_status(node, "Cancelled", TIMEOUT)
    nuke._fake.pump_until(lambda: rig.prompts_left() == [], 5.0)
