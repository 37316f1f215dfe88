"""Tests of the fake nuke/nukescripts packages themselves (tests/fakes)."""

from __future__ import annotations

import os
import threading
from typing import Any, Callable

import pytest

GIZMO = "CCFakeRender"


def in_worker(fn: Callable[[], Any]) -> BaseException | Any:
    """Run ``fn`` on a worker thread; return its exception or result."""
    box: list[Any] = []

    def run() -> None:
        try:
            box.append(fn())
        except BaseException as exc:
            box.append(exc)

    t = threading.Thread(target=run, name="worker")
    t.start()
    t.join(5)
    return box[0]


# -- threading -------------------------------------------------------------------------------
def test_worker_touching_a_knob_raises(fake_nuke):
    node = fake_nuke.nodes.NoOp()
    knob = node["label"]
    result = in_worker(lambda: knob.setValue("x"))
    assert isinstance(result, fake_nuke._fake.FakeThreadViolation)
    assert isinstance(result, RuntimeError)
    assert "off the main thread" in str(result)
    for call in (
        node.name,
        lambda: fake_nuke.toNode("NoOp1"),
        lambda: fake_nuke.createNode("NoOp"),
    ):
        assert isinstance(in_worker(call), RuntimeError)


def test_menus_and_panels_are_main_thread_only(fake_nuke):
    import nukescripts

    assert isinstance(in_worker(lambda: fake_nuke.menu("Nuke")), RuntimeError)
    assert isinstance(in_worker(lambda: nukescripts.PythonPanel("x")), RuntimeError)


def test_execute_in_main_thread_runs_only_on_pump(fake_nuke):
    node = fake_nuke.nodes.NoOp()
    set_label = node["label"].setValue  # looked up on the main thread; the worker only posts
    assert in_worker(lambda: fake_nuke.executeInMainThread(set_label, args=("done",))) is None
    assert node["label"].value() == ""
    assert fake_nuke._fake.pump() == 1
    assert node["label"].value() == "done"
    assert fake_nuke._fake.pump() == 0


def test_non_tuple_args_are_wrapped_as_one_argument(fake_nuke):
    seen = []
    fake_nuke.executeInMainThread(lambda *a: seen.append(a), args=[1, 2])
    fake_nuke._fake.pump()
    assert seen == [([1, 2],)]


def test_with_result_blocks_until_pumped_and_refuses_main_thread(fake_nuke):
    with pytest.raises(RuntimeError, match="main thread"):
        fake_nuke.executeInMainThreadWithResult(lambda: 1)
    box = []
    t = threading.Thread(
        target=lambda: box.append(fake_nuke.executeInMainThreadWithResult(lambda x: x * 2, (21,)))
    )
    t.start()
    fake_nuke._fake.pump_until(lambda: bool(box), timeout=5)
    t.join(5)
    assert box == [42]


def test_with_result_swallows_exceptions(fake_nuke):
    def boom() -> None:
        raise KeyError("x")

    box = []
    t = threading.Thread(target=lambda: box.append(fake_nuke.executeInMainThreadWithResult(boom)))
    t.start()
    fake_nuke._fake.pump_until(lambda: bool(box), timeout=5)
    t.join(5)
    assert box == [None]
    assert isinstance(fake_nuke._fake.swallowed()[0], KeyError)


def test_pumped_exceptions_are_recorded(fake_nuke):
    fake_nuke.executeInMainThread(lambda: 1 / 0)
    fake_nuke._fake.pump()
    assert [type(e) for e in fake_nuke._fake.take_errors()] == [ZeroDivisionError]


def test_terminal_mode_never_runs_queued_calls(fake_nuke):
    fake_nuke._fake.set_gui(False)
    assert fake_nuke.GUI is False and fake_nuke.env["gui"] is False
    fake_nuke.executeInMainThread(print, ("never",))
    assert fake_nuke._fake.pump() == 0
    assert len(fake_nuke._fake.dropped()) == 1
    with pytest.raises(RuntimeError, match="terminal mode"):
        fake_nuke.menu("Nuke")


def test_progress_task_is_usable_from_workers_and_cancellable(fake_nuke):
    tasks = [fake_nuke.ProgressTask("Rendering")]
    assert isinstance(in_worker(lambda: fake_nuke.ProgressTask("x")), RuntimeError)

    def report() -> None:
        tasks[0].setProgress(50)
        tasks[0].setMessage("half")

    in_worker(report)
    (record,) = fake_nuke._fake.progress_tasks()
    assert record.progress == [50] and record.messages == ["half"]
    assert in_worker(tasks[0].isCancelled) is False
    fake_nuke._fake.cancel_progress()
    assert in_worker(tasks[0].isCancelled) is True
    tasks.clear()  # Nuke closes the task when the object is released
    assert record.closed


# -- knob value semantics --------------------------------------------------------------------
def test_enumeration_semantics(fake_nuke):
    knob = fake_nuke.Enumeration_Knob("srv", "Server", ["a", "b", "c"])
    assert knob.value() == "a" and knob.getValue() == 0.0
    knob.setValue("c")
    assert knob.value() == "c" and knob.getValue() == 2.0
    knob.setValue(1)
    assert knob.value() == "b"
    with pytest.raises(ValueError):
        knob.setValue("zzz")
    knob.setValues(["x", "y"])
    assert knob.values() == ["x", "y"] and knob.numValues() == 2 and knob.value() == "y"
    assert knob.enumName(0) == "x"


def test_numeric_string_and_bool_knobs(fake_nuke):
    i = fake_nuke.Int_Knob("n")
    i.setValue(3.7)
    assert i.value() == 3 and isinstance(i.value(), int)
    with pytest.raises(TypeError):
        i.setValue("3")
    d = fake_nuke.Double_Knob("d")
    d.setRange(0, 100)
    d.setValue(5)
    assert d.value() == 5.0 and isinstance(d.value(), float) and d.max() == 100
    b = fake_nuke.Boolean_Knob("b", "B", True)
    assert b.value() is True
    s = fake_nuke.String_Knob("s", "S", "hi")
    assert s.value() == "hi" and s.getText() == "hi"
    with pytest.raises(TypeError):
        s.setValue(3)
    t = fake_nuke.Text_Knob("t", "T", "status")
    assert t.value() == "status"
    xy = fake_nuke.XY_Knob("xy")
    xy.setValue([1, 2])
    assert (xy.x(), xy.y(), xy.value(1)) == (1.0, 2.0, 2.0)


def test_flags(fake_nuke):
    k = fake_nuke.String_Knob("s")
    k.setFlag(fake_nuke.INVISIBLE)
    assert not k.visible() and k.getFlag(fake_nuke.INVISIBLE)
    k.setEnabled(False)
    assert k.getFlag(fake_nuke.DISABLED) and not k.enabled()
    k.clearFlag(fake_nuke.INVISIBLE)
    assert k.visible()
    assert (fake_nuke.STARTLINE, fake_nuke.DO_NOT_WRITE) == (4096, 512)


def test_expressions_and_tcl(fake_nuke):
    group = fake_nuke.nodes.Group()
    group.addKnob(fake_nuke.File_Knob("cc_output"))
    group.addKnob(fake_nuke.Int_Knob("cc_n"))
    group["cc_output"].setValue("/tmp/o.####.png")
    group["cc_n"].setValue(4)
    with group:
        write = fake_nuke.createNode("Write")
        write["file"].setValue("[value parent.cc_output]")
        write["first"].setExpression("parent.cc_n * 2 + 1")
    assert write["file"].value() == "[value parent.cc_output]"
    assert write["file"].evaluate() == "/tmp/o.####.png"
    assert write["first"].value() == 9 and write["first"].hasExpression()
    write["file"].setValue("[exec rm]")
    with pytest.raises(ValueError, match="unsupported TCL"):
        write["file"].evaluate()


def test_pyscript_knob_runs_with_this_node(fake_nuke):
    node = fake_nuke.nodes.NoOp()
    button = fake_nuke.PyScript_Knob(
        "go", "Go", "nuke.thisNode()['label'].setValue(nuke.thisKnob().name())"
    )
    node.addKnob(button)
    fake_nuke._fake.press(button)
    assert node["label"].value() == "go"
    with pytest.raises(TypeError):
        fake_nuke.PyScript_Knob("bad", "Bad", print)


# -- nodes -----------------------------------------------------------------------------------
def test_nodes_names_inputs_and_lookup(fake_nuke):
    read = fake_nuke.nodes.Read(file="/a.####.png", first=5, last=9)
    assert read.name() == "Read1" and read.Class() == "Read"
    assert (read.firstFrame(), read.lastFrame()) == (5, 9)
    read.setSelected(True)
    grade = fake_nuke.createNode("Grade")  # connects to the selected node, like Nuke
    assert grade.input(0) is read and grade.isSelected() and not read.isSelected()
    other = fake_nuke.nodes.Grade()
    other.setName("Grade1")
    assert other.name() == "Grade2"
    assert fake_nuke.toNode("Grade1") is grade and fake_nuke.toNode("nope") is None
    assert grade.dependencies() == [read] and read.dependent() == [grade]
    assert grade.knob("missing") is None
    with pytest.raises(NameError):
        grade["missing"]
    assert {n.name() for n in fake_nuke.allNodes("Grade")} == {"Grade1", "Grade2"}
    with pytest.raises(RuntimeError, match="Unknown command"):
        fake_nuke.createNode("NoSuchClass")
    with pytest.raises(AttributeError):
        fake_nuke.nodes.NoSuchClass  # noqa: B018


def test_root_frame_range_reads_as_float(fake_nuke):
    root = fake_nuke.root()
    root["first_frame"].setValue(1001)
    root["last_frame"].setValue(1010)
    assert root["first_frame"].value() == 1001.0 and isinstance(root["first_frame"].value(), float)
    assert (root.firstFrame(), root.lastFrame(), root.fps()) == (1001, 1010, 24)
    assert fake_nuke.nodes.NoOp().frameRange().first() == 1001


def test_deleted_node_raises_value_error(fake_nuke):
    destroyed = []
    fake_nuke.addOnDestroy(lambda: destroyed.append(fake_nuke.thisNode().name()))
    node = fake_nuke.nodes.NoOp()
    knob = node["label"]
    fake_nuke.delete(node)
    assert destroyed == ["NoOp1"]
    for call in (node.name, lambda: node["label"], knob.value, lambda: fake_nuke.delete(node)):
        with pytest.raises(ValueError, match="A PythonObject is not attached to a node"):
            call()
    assert fake_nuke.toNode("NoOp1") is None


def test_callbacks_filter_order_and_dedup(fake_nuke):
    calls = []

    def on_any() -> None:
        calls.append(("*", fake_nuke.thisNode().Class()))

    def on_write(tag: str) -> None:
        calls.append((tag, fake_nuke.thisNode().Class()))

    fake_nuke.addOnCreate(on_any)
    fake_nuke.addOnCreate(on_any)
    fake_nuke.addOnCreate(on_write, args=("w",), nodeClass="Write")
    fake_nuke.addOnUserCreate(on_write, args="u")  # not a tuple: one argument
    fake_nuke.nodes.Write()
    assert calls == [("w", "Write"), ("*", "Write")]
    calls.clear()
    fake_nuke.createNode("Read")
    assert calls == [("*", "Read"), ("u", "Read")]
    fake_nuke.removeOnCreate(on_any)
    calls.clear()
    fake_nuke.nodes.Read()
    assert calls == []


def test_knob_changed_with_node_filter_and_user_sets(fake_nuke):
    a, b = fake_nuke.nodes.NoOp(), fake_nuke.nodes.NoOp()
    seen = []
    fake_nuke.addKnobChanged(
        lambda: seen.append((fake_nuke.thisNode().name(), fake_nuke.thisKnob().name())), node=a
    )
    fake_nuke._fake.user_sets(b["label"], "x")
    fake_nuke._fake.user_sets(a["label"], "y")
    fake_nuke._fake.open_panel(a)
    assert seen == [("NoOp1", "label"), ("NoOp1", "showPanel")]


def test_callback_exceptions_are_recorded_not_raised(fake_nuke):
    fake_nuke.addOnCreate(lambda: 1 / 0)
    node = fake_nuke.nodes.NoOp()
    assert node.name() == "NoOp1"
    assert [type(e) for e in fake_nuke._fake.take_errors()] == [ZeroDivisionError]


# -- gizmos ----------------------------------------------------------------------------------
def test_gizmo_knobs_come_from_the_file(fake_nuke, fake_gizmo_dir):
    fake_nuke.pluginAddPath(fake_gizmo_dir)
    assert fake_nuke.pluginPath()[0] == fake_gizmo_dir
    node = fake_nuke.createNode(GIZMO)
    assert isinstance(node, fake_nuke.Gizmo) and node.Class() == GIZMO
    assert node.filename() == os.path.join(fake_gizmo_dir, GIZMO + ".gizmo")
    assert node["cc_mode"].values() == ["frame", "batch"] and node["cc_mode"].value() == "batch"
    assert node["cc_chunk_size"].value() == 8 and node["cc_chunk_size"].max() == 50
    assert node["cc_progress"].value() == 16.0 and not node["cc_progress"].enabled()
    assert not node["cc_state"].visible() and node["cc_state"].value() == '{"jobs": []}'
    assert node["cc_workflow"].Class() == "File_Knob"
    assert node["cc_workflow"].tooltip() == "API-format workflow JSON"
    assert node["cc_resume"].getFlag(fake_nuke.STARTLINE)
    assert node["comfy"].Class() == "Tab_Knob" and node["comfy"].label() == "Comfy Cluster"
    assert node.knob("cc_renamed") is None
    fake_nuke._fake.press(node["cc_render"])
    assert node["cc_status"].value() == "pressed"
    assert [n.Class() for n in node.nodes()] == ["Input", "Grade", "Output"]
    assert node.maxInputs() == 1
    assert fake_nuke._fake.load_warnings() == []


def test_gizmo_parse_errors_name_the_problem(fake_nuke, tmp_path):
    (tmp_path / "Bad.gizmo").write_text("Gizmo {\n addUserKnob {99 x l X}\n}\nend_group\n")
    fake_nuke.pluginAddPath(str(tmp_path))
    with pytest.raises(ValueError, match="knob type 99"):
        fake_nuke.createNode("Bad")


# -- scripts ---------------------------------------------------------------------------------
def test_save_and_load_roundtrip_reruns_on_create(fake_nuke, fake_gizmo_dir, tmp_path):
    fake_nuke.pluginAddPath(fake_gizmo_dir)
    created = []

    def ensure_server_knob() -> None:
        node = fake_nuke.thisNode()
        created.append(node.name())
        if "cc_server" not in node.knobs():
            node.addKnob(fake_nuke.Enumeration_Knob("cc_server", "Server", ["local"]))

    fake_nuke.addOnCreate(ensure_server_knob, nodeClass=GIZMO)
    loaded = []
    fake_nuke.addOnScriptLoad(lambda: loaded.append(True))
    fake_nuke.root()["first_frame"].setValue(1001)
    read = fake_nuke.nodes.Read(file="/in/a.%04d.exr")
    node = fake_nuke.nodes.CCFakeRender(inputs=[read])
    node["cc_server"].setValues(["gpu1", "gpu2", "gpu3"])
    node["cc_server"].setValue("gpu2")
    node["cc_chunk_size"].setValue(3)
    note = fake_nuke.Multiline_Eval_String_Knob("cc_note", "Note", 'a "quoted"\n[value x] $y')
    node.addKnob(note)
    path = str(tmp_path / "shot.nk")
    fake_nuke.scriptSaveAs(path)
    fake_nuke.scriptClear()
    assert fake_nuke.allNodes() == [] and fake_nuke.root()["first_frame"].value() == 1.0
    created.clear()
    fake_nuke.scriptOpen(path)
    assert created == ["CCFakeRender1"] and loaded == [True]
    again = fake_nuke.toNode("CCFakeRender1")
    assert again["cc_server"].values() == ["gpu1", "gpu2", "gpu3"]
    assert again["cc_server"].value() == "gpu2"
    assert again["cc_chunk_size"].value() == 3
    assert again["cc_note"].value() == 'a "quoted"\n[value x] $y'
    assert again.input(0) is fake_nuke.toNode("Read1")
    assert fake_nuke.toNode("Read1")["file"].value() == "/in/a.%04d.exr"
    assert fake_nuke.root()["first_frame"].value() == 1001.0
    assert fake_nuke.scriptName() == path


def test_copy_paste_runs_on_create(fake_nuke):
    seen = []
    fake_nuke.addOnCreate(lambda: seen.append(fake_nuke.thisNode().name()), nodeClass="Grade")
    grade = fake_nuke.nodes.Grade()
    grade.addKnob(fake_nuke.String_Knob("cc_tag", "Tag", "t1"))
    grade.setSelected(True)
    fake_nuke.nodeCopy("%clipboard%")
    pasted = fake_nuke.nodePaste("%clipboard%")
    assert seen == ["Grade1", "Grade2"]
    assert pasted.name() == "Grade2" and pasted["cc_tag"].value() == "t1"


def test_groups_save_with_children(fake_nuke, tmp_path):
    group = fake_nuke.nodes.Group()
    with group:
        inp = fake_nuke.nodes.Input()
        fake_nuke.nodes.Output(inputs=[fake_nuke.nodes.Blur(inputs=[inp])])
    group.setInput(0, fake_nuke.nodes.Read())
    path = str(tmp_path / "g.nk")
    fake_nuke.scriptSaveAs(path)
    fake_nuke.scriptOpen(path)
    loaded = fake_nuke.toNode("Group1")
    assert [n.Class() for n in loaded.nodes()] == ["Input", "Blur", "Output"]
    assert fake_nuke.toNode("Group1.Output1").input(0) is fake_nuke.toNode("Group1.Blur1")
    assert loaded.input(0) is fake_nuke.toNode("Read1")


# -- rendering -------------------------------------------------------------------------------
def test_write_copies_real_frames_through_gizmo(fake_nuke, fake_gizmo_dir, tmp_path):
    fake_nuke.pluginAddPath(fake_gizmo_dir)
    src = tmp_path / "in"
    src.mkdir()
    for f in (1, 2, 3):
        (src / f"plate.{f:04d}.png").write_bytes(b"PNG%d" % f)
    read = fake_nuke.nodes.Read(file=str(src / "plate.####.png"), first=1, last=3)
    giz = fake_nuke.nodes.CCFakeRender(inputs=[read])
    write = fake_nuke.nodes.Write(inputs=[giz], file=str(tmp_path / "out" / "r.%04d.png"))
    with pytest.raises(RuntimeError, match="No such file or directory"):
        fake_nuke.execute(write, 1, 1)
    write["create_directories"].setValue(True)
    fake_nuke.execute("Write1", 1, 3)
    assert (tmp_path / "out" / "r.0002.png").read_bytes() == b"PNG2"
    assert [f for _, f, _ in fake_nuke._fake.rendered()] == [1, 2, 3]
    fake_nuke.execute(write, 5, 5)  # outside the Read's range: held at the last frame
    assert (tmp_path / "out" / "r.0005.png").read_bytes() == b"PNG3"


def test_write_without_read_upstream_fails(fake_nuke):
    write = fake_nuke.nodes.Write(inputs=[fake_nuke.nodes.Constant()], file="/tmp/x.png")
    with pytest.raises(RuntimeError, match="no Read"):
        fake_nuke.execute(write, 1, 1)


# -- menus, prompts, panels ------------------------------------------------------------------
def test_menus(fake_nuke):
    hits = []
    menu = fake_nuke.menu("Nuke").addMenu("Comfy Cluster")
    item = menu.addCommand("Render/Submit", lambda: hits.append(1), "ctrl+r", icon="cc.png")
    assert fake_nuke.menu("Nuke").findItem("Comfy Cluster/Render/Submit") is item
    assert item.shortcut() == "ctrl+r" and item.icon() == "cc.png"
    item.invoke()
    fake_nuke._fake.invoke("Nuke", "Comfy Cluster/Render/Submit")
    assert hits == [1, 1]
    assert [i.name() for i in menu.items()] == ["Render"]
    menu.removeItem("Render/Submit")
    assert menu.findItem("Render/Submit") is None
    assert fake_nuke.menu("Bogus") is None
    assert fake_nuke.toolbar("Nodes") is fake_nuke.menu("Nodes")


def test_prompts_are_scripted(fake_nuke):
    fake_nuke.message("hello")
    fake_nuke.tprint("to", "terminal")
    assert fake_nuke._fake.messages() == ["hello"] and fake_nuke._fake.tprints() == ["to terminal"]
    with pytest.raises(RuntimeError, match="no answer"):
        fake_nuke.ask("Sure?")
    fake_nuke._fake.queue_answer(True, False)
    assert fake_nuke.ask("a") is True and fake_nuke.ask("b") is False


def test_python_panel_modal_and_tabs(fake_nuke):
    import nukescripts

    changed = []

    class Dialog(nukescripts.PythonPanel):
        def __init__(self) -> None:
            super().__init__("Submit", "com.example.submit")
            self.frames = fake_nuke.String_Knob("frames", "Frames", "1-10")
            self.addKnob(fake_nuke.Tab_Knob("main", "Main"))
            self.addKnob(self.frames)

        def knobChanged(self, knob: Any) -> None:
            changed.append(knob.name())

    dialog = Dialog()
    assert "frames" in dialog.knobs()
    fake_nuke._fake.queue_modal_result(True)
    assert dialog.showModalDialog() is True
    assert {"OK", "Cancel"} <= set(dialog.knobs())
    dialog.show()
    fake_nuke._fake.user_sets(dialog.frames, "1-5")
    assert changed == ["frames"]


def test_register_widget_as_panel_and_restore(fake_nuke):
    import nukescripts

    built = []

    class StatusWidget:
        def __init__(self) -> None:
            built.append(self)

    fake_nuke._fake.main_namespace()["StatusWidget"] = StatusWidget
    nukescripts.registerWidgetAsPanel("StatusWidget", "Comfy Status", "com.example.status")
    fake_nuke._fake.invoke("Pane", "Comfy Status")
    assert len(built) == 1
    panel = nukescripts.restorePanel("com.example.status")
    assert len(built) == 2 and panel.customKnob.getObject().widget is built[1]
    assert nukescripts.restorePanel("com.example.unknown") is None
    with pytest.raises(RuntimeError, match="pane"):
        nukescripts.PythonPanel("x", "y").addToPane()
    assert fake_nuke.getPaneFor("Properties.1") is not None

    nukescripts.registerWidgetAsPanel("not_importable.Widget", "Broken", "com.example.broken")
    with pytest.raises(NameError):
        nukescripts.restorePanel("com.example.broken")


def test_reset_clears_everything(fake_nuke, fake_gizmo_dir):
    import nukescripts

    fake_nuke.pluginAddPath(fake_gizmo_dir)
    fake_nuke.addOnCreate(print)
    fake_nuke.menu("Nuke").addCommand("x", print)
    nukescripts.registerPanel("id", print)
    fake_nuke.nodes.NoOp()
    fake_nuke._fake.reset()
    assert fake_nuke.allNodes() == [] and fake_nuke.pluginPath() == []
    assert fake_nuke.menu("Nuke").items() == []
    assert fake_nuke._fake.session().callbacks == {} and fake_nuke._fake.session().panels == {}
