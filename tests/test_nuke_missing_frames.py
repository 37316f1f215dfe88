"""Issue 12, point 4: a frame ComfyUI did not write must not silently render black downstream.

The node's ``cc_missing_frames`` (error / black / nearest frame, default error) drives the
internal Read's ``on_error``; only while the node's own job runs does ``error`` read as
``black``, so the viewer shows frames as they land.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
from fixtures_nuke import TIMEOUT, Rig

from comfy_cluster.host import knobs as K


def _read(node: Any) -> Any:
    return node.node(K.INTERNAL_READ)


def _downstream(rig: Rig, node: Any) -> Any:
    nuke = rig.nuke
    with nuke.root():
        write = nuke.nodes.Write(file=str(rig.tmp / "comp" / "comp.####.png"))
    write["create_directories"].setValue(True)
    write.setInput(0, node)
    return write


def test_the_knob_and_its_default(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory({})
    node = rig.create_node()
    assert node[K.MISSING_FRAMES].values() == list(K.MISSING_FRAMES_MODES)
    assert node[K.MISSING_FRAMES].value() == K.MISSING_ERROR
    assert _read(node)["on_error"].value() == "error"
    for mode in (K.MISSING_BLACK, K.MISSING_NEAREST, K.MISSING_ERROR):
        rig.nuke._fake.user_sets(node[K.MISSING_FRAMES], mode)
        assert _read(node)["on_error"].value() == mode


def test_black_while_rendering_error_after(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory({"node_seconds": 0.05})
    nuke = rig.nuke
    node = rig.create_node()
    nuke._fake.press(node[K.RENDER])
    assert _read(node)["on_error"].value() == "black"  # frames are still landing
    rig.wait_status(node, "Done")
    assert _read(node)["on_error"].value() == "error"


@pytest.mark.parametrize("mode", [K.MISSING_ERROR, K.MISSING_BLACK, K.MISSING_NEAREST])
def test_a_downstream_write_with_a_frame_missing(
    rig_factory: Callable[..., Rig], mode: str
) -> None:
    rig = rig_factory({})
    nuke = rig.nuke
    node = rig.create_node()
    nuke._fake.user_sets(node[K.MISSING_FRAMES], mode)
    nuke._fake.press(node[K.RENDER])
    rig.wait_status(node, "Done", TIMEOUT)
    (rig.out / "inv.0003.png").unlink()  # a frame ComfyUI never delivered
    write = _downstream(rig, node)
    if mode == K.MISSING_ERROR:
        with pytest.raises(RuntimeError, match=r"inv\.0003\.png"):
            nuke.execute(write, 1, 6)
        return
    nuke.execute(write, 1, 6)
    kind = "nearest" if mode == K.MISSING_NEAREST else "black"
    assert nuke._fake.substituted() == [(f"{node.fullName()}.{K.INTERNAL_READ}", 3, kind)]
    made = (rig.tmp / "comp" / "comp.0003.png").read_bytes()
    if mode == K.MISSING_NEAREST:
        assert made in {(rig.out / f"inv.000{f}.png").read_bytes() for f in (2, 4)}


def test_a_loaded_script_keeps_the_choice(rig_factory: Callable[..., Rig], tmp_path: Path) -> None:
    rig = rig_factory({})
    nuke = rig.nuke
    node = rig.create_node()
    nuke._fake.user_sets(node[K.MISSING_FRAMES], K.MISSING_NEAREST)
    name = node.name()
    nuke.scriptSaveAs(str(tmp_path / "s.nk"))
    nuke.scriptOpen(str(tmp_path / "s.nk"))
    loaded = nuke.toNode(name)
    assert loaded[K.MISSING_FRAMES].value() == K.MISSING_NEAREST
    assert _read(loaded)["on_error"].value() == "nearest frame"  # the gizmo file says error
