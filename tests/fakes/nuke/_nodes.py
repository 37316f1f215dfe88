"""Nodes, groups, gizmos, root, and the node-graph functions of the fake ``nuke`` module."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from typing import Any, Callable

from . import _callbacks
from . import _knobs as K
from ._state import DETACHED, check_main, current, guarded, main_only

INPUTS = 1
HIDDEN_INPUTS = 2
EXPRESSIONS = 4

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class FrameRange:
    """``first-last[xincr]`` or ``FrameRange(first, last, incr=1)``; iterable."""

    def __init__(self, *args: Any) -> None:
        if len(args) == 1 and isinstance(args[0], str):
            m = re.fullmatch(r"\s*(-?\d+)(?:-(-?\d+))?(?:x(\d+))?\s*", args[0])
            if not m:
                raise ValueError(f"invalid frame range {args[0]!r}")
            first = int(m.group(1))
            last = int(m.group(2)) if m.group(2) is not None else first
            incr = int(m.group(3) or 1)
        elif 2 <= len(args) <= 3:
            first, last = int(args[0]), int(args[1])
            incr = int(args[2]) if len(args) == 3 else 1
        else:
            raise TypeError("FrameRange('first-lastxincr') or FrameRange(first, last, incr=1)")
        self._first, self._last, self._incr = first, last, incr

    def first(self) -> int:
        return self._first

    def last(self) -> int:
        return self._last

    def increment(self) -> int:
        return self._incr

    def setFirst(self, n: int) -> None:
        self._first = int(n)

    def setLast(self, n: int) -> None:
        self._last = int(n)

    def setIncrement(self, n: int) -> None:
        self._incr = int(n)

    def minFrame(self) -> int:
        return min(self._first, self._last)

    def maxFrame(self) -> int:
        return max(self._first, self._last)

    def frames(self) -> int:
        return len(self._list())

    def getFrame(self, n: int) -> int:
        return self._list()[n]

    def isInRange(self, n: int) -> int:
        return int(n in self._list())

    def stepFrame(self) -> int:
        return self._incr

    def _list(self) -> list[int]:
        step = abs(self._incr) or 1
        if self._last >= self._first:
            return list(range(self._first, self._last + 1, step))
        return list(range(self._first, self._last - 1, -step))

    def __iter__(self) -> Iterator[int]:
        return iter(self._list())

    def __str__(self) -> str:
        text = f"{self._first}-{self._last}"
        return text + (f"x{self._incr}" if self._incr != 1 else "")

    __repr__ = __str__


class FrameRanges:
    """Several ranges, e.g. ``FrameRanges('1-10 20-30x2')``."""

    def __init__(self, spec: Any = None) -> None:
        self._ranges: list[FrameRange] = []
        if isinstance(spec, str):
            for part in spec.replace(",", " ").split():
                self._ranges.append(FrameRange(part))
        elif spec is not None:
            for item in spec:
                self.add(item)

    def add(self, r: Any) -> None:
        self._ranges.append(r if isinstance(r, FrameRange) else FrameRange(str(r)))

    def clear(self) -> None:
        self._ranges.clear()

    def compact(self) -> None:
        pass

    def size(self) -> int:
        return len(self._ranges)

    def toFrameList(self) -> list[int]:
        return [f for r in self._ranges for f in r]

    def minFrame(self) -> int:
        return min(self.toFrameList())

    def maxFrame(self) -> int:
        return max(self.toFrameList())

    def getRange(self, i: int = 0) -> FrameRange:
        return self._ranges[i]

    def __iter__(self) -> Iterator[FrameRange]:
        return iter(self._ranges)


def _alive(node: Node) -> bool:
    return not node._deleted


@guarded(_alive)
class Node:
    """A node. Build with ``nuke.createNode`` / ``nuke.nodes.<Class>``; after ``nuke.delete``
    every method raises ``ValueError("A PythonObject is not attached to a node")``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("use nuke.createNode() or nuke.nodes.<Class>() to make nodes")

    # -- private construction -------------------------------------------------------------
    def _setup(self, cls: str, parent: Group | None, max_inputs: int) -> None:
        self._cls = cls
        self._knobs: dict[str, K.Knob] = {}
        self._builtin: set[str] = set()
        self._user: list[str] = []
        self._inputs: list[Node | None] = []
        self._max_inputs = max_inputs
        self._parent = parent
        self._deleted = False
        self._selected = False
        self._panel_shown = False
        self._name = ""

    def _class_name(self) -> str:
        return self._cls

    def _builtin_knob(self, knob: K.Knob) -> K.Knob:
        knob._node = self
        self._knobs[knob.name()] = knob
        self._builtin.add(knob.name())
        return knob

    def _siblings(self) -> list[Node]:
        return self._parent._children if self._parent is not None else []

    # -- identity -------------------------------------------------------------------------
    def Class(self) -> str:
        return self._cls

    def name(self) -> str:
        return self._name

    def setName(self, name: str, uncollide: bool = True, updateExpressions: bool = False) -> None:
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ValueError(f"invalid node name {name!r}")
        if name == self._name:
            return
        taken = {n._name for n in self._siblings() if n is not self}
        if name in taken:
            if not uncollide:
                raise ValueError(f"a node called {name!r} already exists")
            name = _unique(name.rstrip("0123456789") or name, taken)
        self._name = name

    def fullName(self) -> str:
        parent = self._parent
        if parent is None or parent is current().root:
            return self._name
        return f"{parent.fullName()}.{self._name}"

    def parent(self) -> Group | None:
        return self._parent

    def rootNode(self) -> Group:
        return current().root

    # -- knobs ----------------------------------------------------------------------------
    def knob(self, p: str | int, follow_link: bool = True) -> K.Knob | None:
        if isinstance(p, int):
            items = list(self._knobs.values())
            return items[p] if 0 <= p < len(items) else None
        return self._knobs.get(p)

    def knobs(self) -> dict[str, K.Knob]:
        return dict(self._knobs)

    def allKnobs(self) -> list[K.Knob]:
        return list(self._knobs.values())

    def numKnobs(self) -> int:
        return len(self._knobs)

    def getNumKnobs(self) -> int:
        return len(self._knobs)

    def addKnob(self, knob: K.Knob) -> None:
        if not isinstance(knob, K.Knob):
            raise TypeError(f"addKnob() expects a knob, not {type(knob).__name__}")
        if knob._node is not None:
            raise ValueError(f"knob {knob.name()!r} already belongs to a node")
        if knob.name() and knob.name() in self._knobs:
            # [verify] real Nuke's behaviour; the fake refuses so duplicates show up in tests.
            raise ValueError(f"{self._name} already has a knob named {knob.name()!r}")
        knob._node = self
        key = knob.name() or f"__unnamed_{len(self._knobs)}"
        self._knobs[key] = knob
        self._user.append(key)

    def removeKnob(self, knob: K.Knob) -> None:
        for key, value in list(self._knobs.items()):
            if value is knob:
                if key in self._builtin:
                    raise ValueError(f"cannot remove the built-in knob {key!r}")
                del self._knobs[key]
                self._user.remove(key)
                knob._node = None
                return
        raise ValueError(f"knob {knob.name()!r} is not on {self._name}")

    def __getitem__(self, name: str) -> K.Knob:
        knob = self._knobs.get(name)
        if knob is None:
            raise NameError(f"knob {name} does not exist")
        return knob

    def __len__(self) -> int:
        return len(self._knobs)

    # -- graph ----------------------------------------------------------------------------
    def input(self, index: int) -> Node | None:
        return self._inputs[index] if 0 <= index < len(self._inputs) else None

    def inputs(self) -> int:
        return len(self._inputs)

    def maxInputs(self) -> int:
        return self._max_inputs

    def maximumInputs(self) -> int:
        return self._max_inputs

    def minInputs(self) -> int:
        return 0

    def minimumInputs(self) -> int:
        return 0

    def optionalInput(self) -> int:
        return -1

    def canSetInput(self, i: int, node: Node | None) -> bool:
        return 0 <= i < self._max_inputs and (node is None or not node._deleted)

    def setInput(self, i: int, node: Node | None) -> bool:
        if node is not None and (not isinstance(node, Node) or node._deleted):
            raise ValueError(DETACHED)
        if not 0 <= i < self._max_inputs:
            return False
        if node is not None and node._parent is not self._parent:
            return False
        while len(self._inputs) <= i:
            self._inputs.append(None)
        self._inputs[i] = node
        while self._inputs and self._inputs[-1] is None:
            self._inputs.pop()
        return True

    def connectInput(self, i: int, node: Node | None) -> bool:
        return self.setInput(i, node)

    def dependencies(self, what: int = INPUTS | HIDDEN_INPUTS | EXPRESSIONS) -> list[Node]:
        out: list[Node] = []
        if what & (INPUTS | HIDDEN_INPUTS):
            out.extend(n for n in self._inputs if n is not None and n not in out)
        return out

    def dependent(
        self, what: int = INPUTS | HIDDEN_INPUTS | EXPRESSIONS, forceEvaluate: bool = True
    ):
        return [n for n in self._siblings() if self in n._inputs]

    # -- frames ---------------------------------------------------------------------------
    def firstFrame(self) -> int:
        return self._frame_range()[0]

    def lastFrame(self) -> int:
        return self._frame_range()[1]

    def frameRange(self) -> FrameRange:
        first, last = self._frame_range()
        return FrameRange(first, last)

    def _frame_range(self) -> tuple[int, int]:
        if self._cls == "Read":
            return int(self._knobs["first"].value()), int(self._knobs["last"].value())
        if self._cls == "Write" and self._knobs["use_limit"].value():
            return int(self._knobs["first"].value()), int(self._knobs["last"].value())
        upstream = self._inputs[0] if self._inputs else None
        if upstream is not None:
            return upstream._frame_range()
        root = current().root
        return int(root["first_frame"].value()), int(root["last_frame"].value())

    # -- selection, position, panel -------------------------------------------------------
    def isSelected(self) -> bool:
        return self._selected

    def setSelected(self, selected: bool) -> None:
        self._selected = bool(selected)

    def selectOnly(self) -> None:
        for n in self._siblings():
            n._selected = False
        self._selected = True

    def xpos(self) -> int:
        return self._knobs["xpos"].value()

    def ypos(self) -> int:
        return self._knobs["ypos"].value()

    def setXpos(self, x: int) -> None:
        self._knobs["xpos"].setValue(int(x))

    def setYpos(self, y: int) -> None:
        self._knobs["ypos"].setValue(int(y))

    def setXYpos(self, x: int, y: int) -> None:
        self.setXpos(x)
        self.setYpos(y)

    def showControlPanel(self, forceFloat: bool = False) -> None:
        self._panel_shown = True
        _callbacks.run("knobChanged", self, self._knobs.get("showPanel"))

    def hideControlPanel(self) -> None:
        self._panel_shown = False

    def shown(self) -> bool:
        return self._panel_shown

    def error(self) -> bool:
        return False

    def hasError(self) -> bool:
        return False

    def writeKnobs(self, flags: int = 0) -> str:
        from . import _script

        return _script.knob_lines(self)

    def readKnobs(self, s: str) -> None:
        from . import _script

        _script.apply_knob_text(self, s)

    def __repr__(self) -> str:
        state = " (deleted)" if self._deleted else ""
        return f"<{self._cls} {self._name}{state}>"

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)


@guarded(_alive)
class Group(Node):
    """A node holding other nodes; ``begin()``/``end()`` or ``with group:`` to build inside."""

    def _setup(self, cls: str, parent: Group | None, max_inputs: int) -> None:
        super()._setup(cls, parent, max_inputs)
        self._children: list[Node] = []

    def _child(self, name: str) -> Node | None:
        for n in self._children:
            if n._name == name:
                return n
        return None

    def _refresh_inputs(self) -> None:
        count = sum(1 for n in self._children if n._cls == "Input")
        if self is not current().root:
            self._max_inputs = count

    def begin(self) -> Group:
        current().group_stack.append(self)
        return self

    def end(self) -> None:
        stack = current().group_stack
        if stack and stack[-1] is self:
            stack.pop()

    def __enter__(self) -> Group:
        return self.begin()

    def __exit__(self, *exc: Any) -> None:
        self.end()

    def node(self, s: str) -> Node | None:
        return _lookup(self, s)

    def nodes(self) -> list[Node]:
        return list(self._children)

    def numNodes(self) -> int:
        return len(self._children)

    def selectedNode(self) -> Node | None:
        selected = [n for n in self._children if n._selected]
        return selected[-1] if selected else None

    def selectedNodes(self) -> list[Node]:
        return [n for n in self._children if n._selected]

    def output(self) -> Node | None:
        for n in self._children:
            if n._cls == "Output":
                return n
        return None


@guarded(_alive)
class Gizmo(Group):
    """A node built from ``<Class>.gizmo`` on the plugin path."""

    def _setup(self, cls: str, parent: Group | None, max_inputs: int) -> None:
        super()._setup(cls, parent, max_inputs)
        self._file = ""

    def command(self) -> str:
        return self._cls

    def filename(self) -> str:
        return self._file

    def makeGroup(self) -> Group:
        from . import _script

        return _script.gizmo_as_group(self)


@guarded(_alive)
class Root(Group):
    """The script root: ``first_frame``/``last_frame``/``fps`` knobs (Double, so they read back
    as floats like in Nuke); ``firstFrame()``/``lastFrame()`` return ints."""

    def firstFrame(self) -> int:
        return int(self._knobs["first_frame"].value())

    def lastFrame(self) -> int:
        return int(self._knobs["last_frame"].value())

    def fps(self) -> int:
        return int(self._knobs["fps"].value())

    def realFps(self) -> float:
        return float(self._knobs["fps"].value())

    def modified(self) -> bool:
        return current().modified

    def setModified(self, modified: bool) -> None:
        current().modified = bool(modified)

    def setFrame(self, frame: int) -> None:
        current().frame = int(frame)


@guarded()
class PanelNode:
    """The hidden node a ``nukescripts.PythonPanel`` keeps its knobs on."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._knobs: dict[str, K.Knob] = {}
        self._deleted = False
        self._name = "PanelNode"

    def _class_name(self) -> str:
        return "PanelNode"

    def addKnob(self, knob: K.Knob) -> None:
        if knob._node is not None:
            raise ValueError(f"knob {knob.name()!r} already belongs to a node")
        knob._node = self
        self._knobs[knob.name() or f"__unnamed_{len(self._knobs)}"] = knob

    def removeKnob(self, knob: K.Knob) -> None:
        for key, value in list(self._knobs.items()):
            if value is knob:
                del self._knobs[key]
                knob._node = None
                return
        raise ValueError(f"knob {knob.name()!r} is not on this panel")

    def knobs(self) -> dict[str, K.Knob]:
        return {k: v for k, v in self._knobs.items() if not k.startswith("__unnamed_")}

    def writeKnobs(self, flags: int = 0) -> str:
        from . import _script

        return _script.knob_lines(self)

    def readKnobs(self, s: str) -> None:
        from . import _script

        _script.apply_knob_text(self, s)

    def createWidget(self, *args: Any, **kwargs: Any) -> None:
        for knob in self._knobs.values():
            if isinstance(knob, K.PyCustom_Knob):
                obj = knob.getObject()
                if obj is not None and hasattr(obj, "makeUI"):
                    obj.makeUI()


# Built-in class catalogue: class -> (python class, max inputs, extra knob builder)
def _read_knobs(n: Node) -> None:
    add = n._builtin_knob
    add(K.File_Knob("file"))
    add(K.String_Knob("format", "format", "HD_1080 1920 1080 0 0 1920 1080 1"))
    for name in ("first", "last", "origfirst", "origlast"):
        knob = add(K.Int_Knob(name))
        knob.setValue(1)
    add(
        K.Enumeration_Knob(
            "on_error", "missing frames", ["error", "black", "checkerboard", "nearest frame"]
        )
    )
    add(K.String_Knob("colorspace", "colorspace", "default"))
    add(K.Boolean_Knob("raw", "raw data"))
    add(_ReloadKnob("reload", "Reload", ""))


def _write_knobs(n: Node) -> None:
    add = n._builtin_knob
    add(K.String_Knob("channels", "channels", "rgb"))
    add(K.File_Knob("file"))
    add(K.Enumeration_Knob("file_type", "file type", ["", "exr", "jpeg", "png", "tiff", "dpx"]))
    add(K.String_Knob("colorspace", "colorspace", "default"))
    add(K.Boolean_Knob("raw", "raw data"))
    add(K.Boolean_Knob("create_directories", "create directories"))
    add(K.Boolean_Knob("use_limit", "limit to range"))
    for name in ("first", "last"):
        add(K.Int_Knob(name)).setValue(1)
    add(K.Int_Knob("render_order", "render order")).setValue(1)
    # The Python tab: code nuke.execute runs around the render (studios set these with
    # nuke.knobDefault("Write.beforeRender", ...)).
    for name in WRITE_RENDER_KNOBS:
        add(K.PythonKnob(name, name, ""))


#: The Write's own render callback knobs, in the order nuke.execute runs them.
WRITE_RENDER_KNOBS = ("beforeRender", "beforeFrameRender", "afterFrameRender", "afterRender")


@guarded(K._alive)
class _ReloadKnob(K.PyScript_Knob):
    """The Read's Reload button: makes the Read look at its files again (recorded in
    ``nuke._fake.reloads()``)."""

    def Class(self) -> str:
        return "PyScript_Knob"

    def execute(self) -> None:
        node = self._node
        current().reloads.append(node.fullName() if node is not None else "")


def _input_knobs(n: Node) -> None:
    n._builtin_knob(K.Int_Knob("number"))


def _switch_knobs(n: Node) -> None:
    n._builtin_knob(K.Int_Knob("which"))


def _none(n: Node) -> None:
    pass


_PASS = ("NoOp", "Dot", "Grade", "Blur", "ColorCorrect", "Reformat", "Crop", "Transform",
         "Shuffle", "Shuffle2", "Output", "Viewer")  # fmt: skip
CLASSES: dict[str, tuple[type, int, Callable[[Node], None]]] = {
    "Read": (Node, 0, _read_knobs),
    "Write": (Node, 1, _write_knobs),
    "Group": (Group, 0, _none),
    "Input": (Node, 0, _input_knobs),
    "Merge2": (Node, 2, _none),
    "Switch": (Node, 2, _switch_knobs),
    "Constant": (Node, 0, _none),
    "CheckerBoard2": (Node, 0, _none),
    "BackdropNode": (Node, 0, _none),
    "StickyNote": (Node, 0, _none),
    **{name: (Node, 1, _none) for name in _PASS},
}


def _unique(base: str, taken: set[str]) -> str:
    i = 1
    while f"{base}{i}" in taken:
        i += 1
    return f"{base}{i}"


def _common_knobs(n: Node) -> None:
    add = n._builtin_knob
    add(_NameKnob("name", "name", ""))
    add(K.Multiline_Eval_String_Knob("label", "label", ""))
    add(K.ColorChip_Knob("tile_color", "tile color"))
    add(K.Boolean_Knob("selected", "selected")).setFlag(K.INVISIBLE)
    for name in ("xpos", "ypos"):
        add(K.Int_Knob(name)).setFlag(K.INVISIBLE)
    add(K.Disable_Knob("disable", "disable"))
    for name in ("onCreate", "onDestroy", "knobChanged", "updateUI"):
        add(K.PythonKnob(name, name, "")).setFlag(K.INVISIBLE)


@K.notify_on_set
@guarded(K._alive)
class _NameKnob(K.String_Knob):
    """The ``name`` knob mirrors ``node.name()``."""

    def Class(self) -> str:
        return "String_Knob"

    def value(self, oc: Any = None) -> str:
        return self._node.name() if self._node is not None else self._value

    def getValue(self, *args: Any) -> str:
        return self.value()

    def getText(self, oc: Any = None) -> str:
        return self.value()

    def setValue(self, val: Any, view: Any = None) -> None:
        if self._node is None:
            K.String_Knob.setValue(self, val)
        else:
            self._node.setName(val)

    def _script_value(self) -> str | None:
        return self.value()

    def _load_value(self, text: str) -> None:
        self.setValue(str(text))


@K.notify_on_set
@guarded(K._alive)
class _RootNameKnob(_NameKnob):
    """The root's ``name`` knob is the script's path ("" while untitled): ``[value root.name]``
    is how studio path templates find the script."""

    def value(self, oc: Any = None) -> str:
        return current().script_name

    def setValue(self, val: Any, view: Any = None) -> None:
        if not isinstance(val, str):
            raise TypeError(f"String_Knob.setValue() expects a str, not {type(val).__name__}")
        current().script_name = val


def make_root() -> Root:
    root = object.__new__(Root)
    root._setup("Root", None, 0)
    root._name = "root"
    add = root._builtin_knob
    add(_RootNameKnob("name", "name", ""))
    add(K.Double_Knob("first_frame", "frame range")).setValue(1)
    add(K.Double_Knob("last_frame", "")).setValue(100)
    add(K.Double_Knob("fps", "fps")).setValue(24)
    add(K.String_Knob("format", "full size format", "HD_1080 1920 1080 0 0 1920 1080 1"))
    add(K.String_Knob("project_directory", "project directory", ""))
    add(K.ColorChip_Knob("tile_color", "tile color"))
    for name in ("onScriptLoad", "onScriptSave", "onScriptClose"):
        add(K.PythonKnob(name, name, "")).setFlag(K.INVISIBLE)
    return root


def gizmo_file(cls: str) -> str | None:
    for folder in current().plugin_path:
        path = os.path.join(folder, cls + ".gizmo")
        if os.path.isfile(path):
            return path
    return None


def known_class(cls: str) -> bool:
    return cls in CLASSES or gizmo_file(cls) is not None


def context_group() -> Group:
    stack = current().group_stack
    return stack[-1] if stack else current().root


def instantiate(cls: str, group: Group | None = None, *, run_callbacks: bool = True) -> Node:
    """Build a node of class ``cls`` in ``group`` (no onCreate; the caller runs it)."""
    group = group or context_group()
    if group._deleted:
        raise ValueError(DETACHED)
    if cls in CLASSES:
        pycls, max_inputs, builder = CLASSES[cls]
        node = object.__new__(pycls)
        node._setup(cls, group, max_inputs)
        _common_knobs(node)
        builder(node)
        _apply_knob_defaults(node)
        path = None
    else:
        path = gizmo_file(cls)
        if path is None:
            raise RuntimeError(f"{cls}: Unknown command")
        node = object.__new__(Gizmo)
        node._setup(cls, group, 0)
        node._file = path
        _common_knobs(node)
    node._name = _unique(cls, {n._name for n in group._children})
    group._children.append(node)
    if path is not None:
        from . import _script

        _script.load_gizmo(node, path, run_callbacks=run_callbacks)
    if cls == "Input":
        node._knobs["number"].setValue(sum(1 for n in group._children if n._cls == "Input") - 1)
        group._refresh_inputs()
    return node


def _apply_knob_defaults(node: Node) -> None:
    """``nuke.knobDefault("Class.knob", value)``: every new node of the class starts with it."""
    prefix = node._cls + "."
    for key, value in current().knob_defaults.items():
        if key.startswith(prefix):
            knob = node._knobs.get(key[len(prefix) :])
            if isinstance(knob, K.Script_Knob):
                knob._init_value(value)
            elif knob is not None:
                knob._load_value(value)


def record_undo(what: str) -> None:
    """Add an undo entry (node created or deleted from Python) unless undo is disabled."""
    session = current()
    if not session.undo_disabled:
        session.undo_log.append(what)


def button_group(node: Any) -> Group | None:
    """The group a Python button on ``node`` runs in: the node itself when it is a Group or a
    gizmo, else the group holding it (None for panel nodes and the root)."""
    if isinstance(node, Group) and not isinstance(node, Root):
        return node
    return getattr(node, "_parent", None)


@contextlib.contextmanager
def running_in(group: Group | None) -> Iterator[None]:
    """Make ``group`` the current context while the block runs (what Nuke does around a
    button's code); the context is restored even if the code left a ``begin()`` open."""
    stack = current().group_stack
    depth = len(stack)
    if group is not None:
        stack.append(group)
    try:
        yield
    finally:
        del stack[depth:]


def run_on_create(node: Node, user: bool) -> None:
    _callbacks.run_node_knob(node, "onCreate")
    _callbacks.run("onCreate", node)
    if user:
        _callbacks.run("onUserCreate", node)


@main_only
def createNode(node: str, knobs: str = "", inpanel: bool = True) -> Node:
    """Create a node in the current group, connected to the selected node; runs onCreate then
    onUserCreate."""
    from . import _script

    group = context_group()
    selected = [n for n in group._children if n._selected]
    new = instantiate(node, group)
    if knobs:
        _script.apply_knob_text(new, knobs)
    if selected and new._max_inputs > 0:
        new.setInput(0, selected[-1])
    for n in group._children:
        n._selected = False
    new._selected = True
    record_undo(f"create {new.fullName()}")
    run_on_create(new, user=True)
    return new


class NodeConstructor:
    """``nuke.nodes.<Class>(**knobs, inputs=[...])``: runs onCreate, not onUserCreate."""

    def __init__(self, cls: str) -> None:
        self._cls = cls

    def __call__(self, *args: Any, **kwargs: Any) -> Node:
        check_main(f"nuke.nodes.{self._cls}()")
        inputs = kwargs.pop("inputs", None)
        node = instantiate(self._cls)
        for key, value in kwargs.items():
            knob = node.knob(key)
            if knob is None:
                raise NameError(f"knob {key} does not exist")
            knob.setValue(value)
        for i, upstream in enumerate(inputs or ()):
            node.setInput(i, upstream)
        record_undo(f"create {node.fullName()}")
        run_on_create(node, user=False)
        return node


class Nodes:
    """``nuke.nodes``: attribute access resolves *known* classes and gizmos on the plugin path
    only; anything else raises AttributeError (as the real module does for unknown classes)."""

    def __getattr__(self, item: str) -> NodeConstructor:
        if item.startswith("_") or not known_class(item):
            raise AttributeError(f"nuke.nodes has no node class {item!r}")
        return NodeConstructor(item)


def _lookup(group: Group, path: str) -> Node | None:
    parts = path.split(".")
    if parts[0] == "root":
        group = current().root
        parts = parts[1:]
        if not parts:
            return group
    node: Node | None = group
    for part in parts:
        if not isinstance(node, Group):
            return None
        node = node._child(part)
        if node is None:
            return None
    return node


@main_only
def toNode(s: str) -> Node | None:
    return _lookup(context_group(), s)


@main_only
def exists(s: str) -> bool:
    return _lookup(context_group(), s) is not None


def _walk(group: Group, recurse: bool) -> Iterator[Node]:
    for n in group._children:
        yield n
        if recurse and isinstance(n, Group):
            yield from _walk(n, True)


@main_only
def allNodes(filter: str | None = None, group: Group | None = None, recurseGroups: bool = False):
    if isinstance(filter, Group):
        filter, group = None, filter
    nodes = _walk(group or context_group(), recurseGroups)
    return [n for n in nodes if filter is None or n._cls == filter]


@main_only
def selectedNodes(filter: str | None = None) -> list[Node]:
    return [n for n in context_group()._children if n._selected and filter in (None, n._cls)]


@main_only
def selectedNode() -> Node:
    nodes = [n for n in context_group()._children if n._selected]
    if not nodes:
        raise ValueError("No node selected")
    return nodes[-1]


@main_only
def selectAll() -> None:
    for n in context_group()._children:
        n._selected = True


@main_only
def delete(n: Node | None) -> None:
    """Delete ``n`` (runs onDestroy first); the Python object is then detached."""
    if n is None:
        return
    if n._deleted:
        raise ValueError(DETACHED)
    _callbacks.run_node_knob(n, "onDestroy")
    _callbacks.run("onDestroy", n)
    record_undo(f"delete {n.fullName()}")
    _detach(n)


def _detach(n: Node) -> None:
    if isinstance(n, Group):
        for child in list(n._children):
            _detach(child)
    parent = n._parent
    if parent is not None:
        for other in parent._children:
            if n in other._inputs:
                other._inputs = [None if x is n else x for x in other._inputs]
                while other._inputs and other._inputs[-1] is None:
                    other._inputs.pop()
        parent._children.remove(n)
        if n._cls == "Input" and isinstance(parent, Group):
            parent._refresh_inputs()
    stack = current().group_stack
    stack[:] = [g for g in stack if g is not n]
    n._deleted = True


@main_only
def root() -> Root:
    return current().root


@main_only
def thisNode() -> Any:
    stack = current().this_stack
    return stack[-1][0] if stack and stack[-1][0] is not None else current().root


@main_only
def thisKnob() -> Any:
    stack = current().this_stack
    return stack[-1][1] if stack else None


@main_only
def thisGroup() -> Group:
    return context_group()


@main_only
def thisParent() -> Group | None:
    node = thisNode()
    return getattr(node, "_parent", None)


@main_only
def thisRoot() -> Root:
    return current().root


@main_only
def thisClass() -> str:
    return _callbacks.class_of(thisNode())


@main_only
def endGroup() -> None:
    stack = current().group_stack
    if stack:
        stack.pop()


@main_only
def frame(f: int | None = None) -> int:
    if f is not None:
        current().frame = int(f)
    return current().frame


@main_only
def dependencies(nodes: Any, what: int = INPUTS | HIDDEN_INPUTS | EXPRESSIONS) -> list[Node]:
    if isinstance(nodes, Node):
        nodes = [nodes]
    out: list[Node] = []
    for node in nodes:
        for dep in node.dependencies(what):
            if dep not in out:
                out.append(dep)
    return out
