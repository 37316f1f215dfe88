"""What the fake learned for issue 12: button contexts, knobChanged on programmatic changes,
missing frames and Reload on Reads, TCL paths, undo, knob defaults and execution records."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

# -- buttons run inside their group --------------------------------------------------------------


def _button(node: Any, code: str) -> Any:
    """Add a Python button running ``code`` to ``node``."""
    import nuke

    button = nuke.PyScript_Knob("go", "Go", code)
    node.addKnob(button)
    return button


def test_a_button_on_a_group_runs_inside_it(fake_nuke: Any) -> None:
    nuke = fake_nuke
    group = nuke.nodes.Group(name="Holder")
    with group:
        inner = nuke.nodes.NoOp(name="Inner")
    nuke.nodes.NoOp(name="Outer")
    seen: dict[str, Any] = {}
    nuke._fake.main_namespace()["seen"] = seen
    button = _button(
        group,
        "seen['group'] = nuke.thisGroup()\n"
        "seen['inner'] = nuke.toNode('Inner')\n"
        "seen['outer'] = nuke.toNode('Outer')\n"
        "seen['made'] = nuke.nodes.Dot()\n"
        "with nuke.root():\n"
        "    seen['outer_from_root'] = nuke.toNode('Outer')\n",
    )
    nuke._fake.press(button)
    assert seen["group"] is group
    assert seen["inner"] is inner
    assert seen["outer"] is None  # names resolve inside the group
    assert seen["made"].parent() is group  # and nodes are made there
    assert seen["outer_from_root"] is not None
    assert nuke.thisGroup() is nuke.root()  # the context is back afterwards


def test_a_button_on_a_plain_node_runs_in_its_parent_group(fake_nuke: Any) -> None:
    nuke = fake_nuke
    group = nuke.nodes.Group(name="Holder")
    with group:
        plain = nuke.nodes.NoOp(name="Plain")
    seen: dict[str, Any] = {}
    nuke._fake.main_namespace()["seen"] = seen
    button = _button(plain, "seen['group'] = nuke.thisGroup(); seen['me'] = nuke.toNode('Plain')")
    button.execute()
    assert seen == {"group": group, "me": plain}


def test_a_button_that_raises_or_leaves_a_group_open_restores_the_context(fake_nuke: Any) -> None:
    nuke = fake_nuke
    group = nuke.nodes.Group(name="Holder")
    with group:
        other = nuke.nodes.Group(name="Other")
    button = _button(group, "nuke.toNode('Other').begin()\nraise RuntimeError('boom')")
    with pytest.raises(RuntimeError):
        button.execute()
    assert nuke.thisGroup() is nuke.root()
    assert other.parent() is group


def test_gizmo_buttons_run_inside_the_gizmo(fake_nuke: Any, fake_gizmo_dir: str) -> None:
    nuke = fake_nuke
    nuke.pluginAddPath(fake_gizmo_dir)
    gizmo = nuke.createNode("CCFakeRender")
    seen: dict[str, Any] = {}
    nuke._fake.main_namespace()["seen"] = seen
    button = _button(gizmo, "seen['group'] = nuke.thisGroup(); seen['node'] = nuke.thisNode()")
    button.execute()
    assert seen == {"group": gizmo, "node": gizmo}


# -- knobChanged on programmatic changes ---------------------------------------------------------


@pytest.mark.parametrize("on_set", [False, True])
def test_knob_changed_on_set_switch(fake_nuke: Any, on_set: bool) -> None:
    nuke = fake_nuke
    nuke._fake.set_knob_changed(on_set=on_set)
    node = nuke.nodes.Grade(name="G")
    node.addKnob(nuke.String_Knob("note", "note"))
    node.addKnob(nuke.Int_Knob("count", "count"))
    heard: list[str] = []
    nuke.addKnobChanged(lambda: heard.append(nuke.thisKnob().name()), nodeClass="Grade")

    node["note"].setValue("a")
    node["count"].setValue(3)  # Int_Knob.setValue calls its base: still one notification
    assert heard == (["note", "count"] if on_set else [])

    heard.clear()
    nuke._fake.user_sets(node["note"], "b")  # a user edit: exactly one, in both Nukes
    assert heard == ["note"]

    heard.clear()
    loose = nuke.String_Knob("loose", "loose")
    loose.setValue("x")  # not on a node: nothing to tell
    assert heard == []


def test_knob_changed_on_set_nests_like_nuke(fake_nuke: Any) -> None:
    """A callback that sets another knob is told about that one too (not about itself twice)."""
    nuke = fake_nuke
    nuke._fake.set_knob_changed(on_set=True)
    node = nuke.nodes.NoOp(name="N")
    node.addKnob(nuke.String_Knob("a", "a"))
    node.addKnob(nuke.String_Knob("b", "b"))
    heard: list[str] = []

    def changed() -> None:
        name = nuke.thisKnob().name()
        heard.append(name)
        if name == "a":
            nuke.thisNode()["b"].setValue("from a")

    nuke.addKnobChanged(changed, nodeClass="NoOp")
    node["a"].setValue("x")
    assert heard == ["a", "b"]


# -- Reads: missing frames and Reload ------------------------------------------------------------


def _frames(folder: Path, frames: Any) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    for frame in frames:
        (folder / f"src.{frame:04d}.png").write_bytes(f"frame {frame}".encode())
    return str(folder / "src.####.png")


@pytest.mark.parametrize("mode", ["error", "black", "checkerboard", "nearest frame"])
def test_read_on_error_decides_what_a_missing_frame_renders(
    fake_nuke: Any, tmp_path: Path, mode: str
) -> None:
    nuke = fake_nuke
    read = nuke.nodes.Read(file=_frames(tmp_path / "src", [1, 2, 4]))
    read["last"].setValue(4)
    read["on_error"].setValue(mode)
    write = nuke.nodes.Write(file=str(tmp_path / "out.####.png"))
    write.setInput(0, read)
    if mode == "error":
        with pytest.raises(RuntimeError, match="No such file"):
            nuke.execute(write, 1, 4)
        return
    nuke.execute(write, 1, 4)
    made = (tmp_path / "out.0003.png").read_bytes()
    if mode == "nearest frame":
        assert made in (b"frame 2", b"frame 4")
        assert nuke._fake.substituted() == [(read.fullName(), 3, "nearest")]
    else:
        assert made.startswith(b"\x89PNG")
        assert nuke._fake.substituted() == [(read.fullName(), 3, mode)]
    assert (tmp_path / "out.0004.png").read_bytes() == b"frame 4"


def test_read_reload_is_recorded(fake_nuke: Any) -> None:
    nuke = fake_nuke
    read = nuke.nodes.Read(name="R")
    assert read["reload"].Class() == "PyScript_Knob"
    read["reload"].execute()
    assert nuke._fake.reloads() == ["R"]


# -- TCL in paths --------------------------------------------------------------------------------


def test_root_name_is_the_script_path_and_tcl_file_commands(
    fake_nuke: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nuke = fake_nuke
    assert nuke.root()["name"].value() == ""  # untitled
    script = tmp_path / "sh010" / "comp" / "sh010_v003.nk"
    script.parent.mkdir(parents=True)
    nuke.scriptSaveAs(str(script))
    assert nuke.root()["name"].value() == str(script)
    assert nuke.root().name() == "root"  # the node keeps its name; only the knob is the path
    monkeypatch.setenv("CC_SHOW", "/shows/x")
    node = nuke.nodes.NoOp()
    knob = nuke.File_Knob("path", "path")
    node.addKnob(knob)
    knob.setValue(
        "[file dirname [value root.name]]/comfy/"
        "[file rootname [file tail [value root.name]]].####.png"
    )
    assert knob.evaluate() == str(script.parent / "comfy" / "sh010_v003.####.png")
    assert knob.value().startswith("[file dirname")  # value() stays raw
    knob.setValue("[getenv CC_SHOW]/[file extension [value root.name]]")
    assert knob.evaluate() == "/shows/x/.nk"
    knob.setValue("[file nonsense x]")
    with pytest.raises(ValueError, match="unsupported TCL"):
        knob.evaluate()


# -- undo, knob defaults, executions -------------------------------------------------------------


def test_undo_records_python_creates_and_deletes_unless_disabled(fake_nuke: Any) -> None:
    nuke = fake_nuke
    first = nuke.nodes.Write()
    nuke.delete(first)
    assert nuke._fake.undo_log() == ["create Write1", "delete Write1"]
    nuke.Undo.disable()
    assert nuke.Undo.disabled()
    quiet = nuke.nodes.Write()
    nuke.delete(quiet)
    nuke.Undo.enable()
    assert not nuke.Undo.disabled()
    assert nuke.Undo.undoSize() == 2


def test_knob_defaults_and_write_render_callback_knobs(fake_nuke: Any, tmp_path: Path) -> None:
    nuke = fake_nuke
    calls: list[str] = []
    nuke._fake.main_namespace()["calls"] = calls
    nuke.knobDefault("Write.afterRender", "calls.append('after ' + nuke.thisNode().name())")
    assert nuke.knobDefault("Write.afterRender").startswith("calls.append")
    assert nuke.knobDefault("Write.beforeRender") is None
    read = nuke.nodes.Read(file=_frames(tmp_path / "src", [1]))
    write = nuke.nodes.Write(file=str(tmp_path / "o.####.png"))
    write.setInput(0, read)
    nuke.addBeforeRender(lambda: calls.append("global before"))
    nuke.execute(write, 1, 1)
    assert calls == ["global before", "after Write1"]
    assert nuke._fake.executions() == [("Write1", (1,), True)]
    nuke._fake.set_gui(False)
    nuke.execute(write, 1, 1)
    assert nuke._fake.executions()[-1] == ("Write1", (1,), False)


def test_reset_forgets_the_new_records(fake_nuke: Any) -> None:
    nuke = fake_nuke
    nuke._fake.set_knob_changed(on_set=True)
    nuke.knobDefault("Write.channels", "rgba")
    nuke.nodes.Write()
    nuke._fake.reset()
    assert nuke._fake.undo_log() == [] and nuke._fake.executions() == []
    assert nuke.knobDefault("Write.channels") is None
    assert not nuke._fake.session().knob_changed_on_set
    assert os.path.basename(nuke.nodes.Write()["file"].value()) == ""


def test_a_node_downstream_of_a_group_reconnects_after_load(fake_nuke: Any, tmp_path: Path) -> None:
    nuke = fake_nuke
    holder = nuke.nodes.Group(name="Shot")
    with holder:
        nuke.nodes.Output().setInput(0, nuke.nodes.Input())
    nuke.nodes.Write(name="Comp").setInput(0, holder)
    nuke.scriptSaveAs(str(tmp_path / "g.nk"))
    nuke.scriptOpen(str(tmp_path / "g.nk"))
    assert nuke.toNode("Comp").input(0) is nuke.toNode("Shot")
