"""Issue 12, point 9: Workflow and Output paths with TCL are evaluated as Nuke would.

Studio templates build paths from the script's own path
(``[file dirname [value root.name]]/...``); the node must render to where the path evaluates to,
not to a folder literally called ``[file dirname ...``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import pytest
from fixtures_nuke import WORKFLOW, Rig

from comfy_cluster.host import knobs as K
from comfy_cluster.host.settings import RenderSettingsError, evaluated_path

TEMPLATE_OUT = (
    "[file dirname [value root.name]]/comfy/[file rootname [file tail [value root.name]]].####.png"
)


@pytest.mark.parametrize("gui", [True, False])
def test_tcl_paths_render_where_they_evaluate(
    rig_factory: Callable[..., Rig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gui: bool
) -> None:
    rig = rig_factory({}, gui=gui)
    nuke = rig.nuke
    shot = tmp_path / "shows" / "sh010" / "comp"
    (shot / "wf").mkdir(parents=True)
    shutil.copy(WORKFLOW, shot / "wf" / "invert.json")
    monkeypatch.setenv("CC_WORKFLOWS", str(shot / "wf"))
    node = rig.create_node()
    node[K.WORKFLOW].setValue("[getenv CC_WORKFLOWS]/invert.json")
    node[K.OUTPUT].setValue(TEMPLATE_OUT)
    nuke.scriptSaveAs(str(shot / "sh010_v002.nk"))

    if gui:
        nuke._fake.press(node[K.RENDER])
        rig.wait_status(node, "Done")
    else:
        node[K.RENDER].execute()
    assert rig.status(node).startswith("Done"), rig.status(node)
    for frame in rig.frames:
        assert (shot / "comfy" / f"sh010_v002.{frame:04d}.png").is_file()
    assert not any(p.name.startswith("[") for p in tmp_path.rglob("*"))
    # The node's own Read follows the same evaluated path: downstream sees the frames.
    read = node.node(K.INTERNAL_READ)
    assert read["file"].evaluate() == str(shot / "comfy" / "sh010_v002.####.png")


class _Knob:
    """A knob whose evaluation substitutes the current frame (as some file knobs might)."""

    def __init__(self, raw: str, evaluated: Any) -> None:
        self._raw, self._evaluated = raw, evaluated

    def value(self) -> str:
        return self._raw

    def evaluate(self) -> str:
        if isinstance(self._evaluated, Exception):
            raise self._evaluated
        return self._evaluated


def _node(**knobs: Any) -> Any:
    return SimpleNamespace(knob=knobs.get)


def test_the_frame_token_must_survive_evaluation() -> None:
    raw = "[value root.name]/out.####.png"
    node = _node(cc_output=_Knob(raw, "/shot.nk/out.0001.png"))
    with pytest.raises(RenderSettingsError, match=r"Output \(cc_output\).*replaced the frame"):
        evaluated_path(node, "cc_output", "Output")
    node = _node(cc_output=_Knob(raw, RuntimeError('invalid command name "nope"')))
    with pytest.raises(RenderSettingsError, match="cannot evaluate"):
        evaluated_path(node, "cc_output", "Output")
    plain = _node(cc_output=_Knob(" /a/out.%04d.png ", RuntimeError("never evaluated")))
    assert evaluated_path(plain, "cc_output", "Output") == "/a/out.%04d.png"
