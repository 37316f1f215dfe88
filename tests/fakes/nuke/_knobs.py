"""Knob classes with Nuke's value semantics (see docs/testing-nuke.md)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Callable

from . import _expr
from ._state import current, guarded

# Knob flag values as Nuke 15 defines them (nuke.DISABLED, nuke.NO_ANIMATION, ...).
DISABLED = 128
NO_ANIMATION = 256
DO_NOT_WRITE = 512
INVISIBLE = 1024
STARTLINE = 4096
ENDLINE = 8192
NO_UNDO = 524288
ALWAYS_SAVE = 1048576
SAVE_MENU = 33554432
READ_ONLY = 268435456
TABBEGINGROUP = 1
TABENDGROUP = -1
TABBEGINCLOSEDGROUP = 2

FLAGS = {
    "DISABLED": DISABLED,
    "NO_ANIMATION": NO_ANIMATION,
    "DO_NOT_WRITE": DO_NOT_WRITE,
    "INVISIBLE": INVISIBLE,
    "STARTLINE": STARTLINE,
    "ENDLINE": ENDLINE,
    "NO_UNDO": NO_UNDO,
    "ALWAYS_SAVE": ALWAYS_SAVE,
    "SAVE_MENU": SAVE_MENU,
    "READ_ONLY": READ_ONLY,
}


def _alive(knob: Knob) -> bool:
    node = knob._node
    return node is None or not node._deleted


@guarded(_alive)
class Knob:
    """Base knob: name, label, tooltip, flags, expressions."""

    def __init__(self, name: str, label: str | None = None, *args: Any) -> None:
        if not isinstance(name, str):
            raise TypeError(f"knob name must be a str, not {type(name).__name__}")
        self._name = name
        self._label = name if label is None else str(label)
        self._tooltip = ""
        self._flags = 0
        self._node: Any = None
        self._exprs: dict[int, str] = {}
        self._init_value(*args)

    # -- subclass hooks (private) ---------------------------------------------------------
    def _init_value(self, *args: Any) -> None:
        self._value: Any = None

    def _script_value(self) -> str | None:
        """The value as written to a script, or None if this knob stores no value."""
        return None

    def _load_value(self, text: str) -> None:
        pass

    # -- public API -----------------------------------------------------------------------
    def Class(self) -> str:
        return type(self).__name__

    def name(self) -> str:
        return self._name

    def setName(self, name: str) -> None:
        node = self._node
        if node is not None:
            node._knobs = {(name if k == self._name else k): v for k, v in node._knobs.items()}
        self._name = name

    def label(self) -> str:
        return self._label

    def setLabel(self, label: str) -> None:
        self._label = str(label)

    def tooltip(self) -> str:
        return self._tooltip

    def setTooltip(self, tooltip: str) -> None:
        self._tooltip = str(tooltip)

    def setFlag(self, flag: int) -> None:
        self._flags |= int(flag)

    def clearFlag(self, flag: int) -> None:
        self._flags &= ~int(flag)

    def getFlag(self, flag: int) -> bool:
        return bool(self._flags & int(flag))

    def enabled(self) -> bool:
        return not self._flags & DISABLED

    def setEnabled(self, enabled: bool) -> None:
        if enabled:
            self._flags &= ~DISABLED
        else:
            self._flags |= DISABLED

    def visible(self) -> bool:
        return not self._flags & INVISIBLE

    def setVisible(self, visible: bool) -> None:
        if visible:
            self._flags &= ~INVISIBLE
        else:
            self._flags |= INVISIBLE

    def node(self) -> Any:
        return self._node

    def fullyQualifiedName(self, channel: int = -1) -> str:
        node = self._node
        return self._name if node is None else f"{node.fullName()}.{self._name}"

    def value(self, *args: Any) -> Any:
        return self._value

    def getValue(self, *args: Any) -> Any:
        return self.value()

    def setValue(self, val: Any, *args: Any) -> bool:
        self._value = val
        return True

    def setExpression(self, expression: str, index: int = 0, view: Any = None) -> bool:
        self._exprs[int(index) if index >= 0 else 0] = str(expression)
        return True

    def hasExpression(self, index: int = -1) -> bool:
        if index < 0:
            return bool(self._exprs)
        return index in self._exprs

    def clearAnimated(self, channel: int = -1) -> bool:
        self._exprs.clear()
        return True

    def isAnimated(self, channel: int = -1) -> bool:
        return bool(self._exprs)

    def toScript(self, quote: bool = False, context: Any = None) -> str:
        text = self._script_value()
        return "" if text is None else text

    def fromScript(self, script: str) -> None:
        self._load_value(str(script))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._name!r}>"


@guarded(_alive)
class String_Knob(Knob):
    """``value()``/``getText()`` return the raw text; EvalString's ``evaluate()`` expands TCL."""

    def _init_value(self, text: Any = "", *args: Any) -> None:
        self._value = "" if text is None else str(text)

    def _script_value(self) -> str | None:
        return self._value

    def _load_value(self, text: str) -> None:
        self._value = text

    def value(self, oc: Any = None) -> str:
        return self._value

    def getValue(self, *args: Any) -> str:
        return self._value

    def getText(self, oc: Any = None) -> str:
        return self._value

    def setValue(self, val: Any, view: Any = None) -> None:  # type: ignore[override]
        if not isinstance(val, str):
            raise TypeError(f"{self.Class()}.setValue() expects a str, not {type(val).__name__}")
        self._value = val

    def setText(self, text: str) -> None:
        self.setValue(text)


@guarded(_alive)
class EvalString_Knob(String_Knob):
    def evaluate(self, *args: Any) -> str:
        return _expr.expand(self._value, self)


@guarded(_alive)
class Multiline_Eval_String_Knob(EvalString_Knob):
    pass


@guarded(_alive)
class File_Knob(EvalString_Knob):
    """A path. ``value()`` is the raw text; ``evaluate()``/``getEvaluatedValue()`` expand TCL."""

    def _init_value(self, *args: Any) -> None:
        self._value = ""

    def getEvaluatedValue(self, *args: Any) -> str:
        return self.evaluate()

    def fromUserText(self, text: str) -> None:
        self.setValue(text)


@guarded(_alive)
class PythonKnob(String_Knob):
    """Holds Python code (the node's ``knobChanged``/``onCreate``/... knobs)."""


@guarded(_alive)
class Text_Knob(Knob):
    """Display-only text (a divider when empty)."""

    def _init_value(self, text: Any = "", *args: Any) -> None:
        self._value = "" if text is None else str(text)

    def _script_value(self) -> str | None:
        return self._value

    def _load_value(self, text: str) -> None:
        self._value = text

    def value(self, *args: Any) -> str:
        return self._value

    def setValue(self, val: Any, *args: Any) -> None:  # type: ignore[override]
        self._value = str(val)


@guarded(_alive)
class Tab_Knob(Knob):
    """A tab, or with TABBEGINGROUP/TABENDGROUP/TABBEGINCLOSEDGROUP a collapsible group."""

    def _init_value(self, flags: int = 0, *args: Any) -> None:
        self._value = None
        self._group = int(flags)

    def value(self, *args: Any) -> Any:
        return None

    def setValue(self, val: Any, *args: Any) -> None:  # type: ignore[override]
        raise TypeError("Tab_Knob holds no value")


@guarded(_alive)
class BeginTabGroup_Knob(Knob):
    def __init__(self, name: str = "", label: str | None = None, *args: Any) -> None:
        super().__init__(name, label, *args)


@guarded(_alive)
class EndTabGroup_Knob(Knob):
    def __init__(self, name: str = "", label: str | None = None, *args: Any) -> None:
        super().__init__(name, label, *args)


@guarded(_alive)
class Script_Knob(String_Knob):
    """A button. ``execute()`` runs the command (Python for PyScript_Knob) in the session's
    ``__main__``-like namespace with ``thisNode()``/``thisKnob()`` set."""

    def _init_value(self, command: Any = "", *args: Any) -> None:
        if command is None:
            command = ""
        if not isinstance(command, str):
            raise TypeError(f"{type(self).__name__} command must be a str (Nuke stores code text)")
        self._value = command

    def command(self) -> str:
        return self._value

    def setCommand(self, cmd: str) -> None:
        self._init_value(cmd)

    def setValue(self, cmd: Any, view: Any = None) -> None:  # type: ignore[override]
        self._init_value(cmd)

    def value(self, oc: Any = None) -> str:
        return self._value

    def execute(self) -> None:
        """Run the command. Like Nuke, a button on a Group or gizmo runs *inside* that group
        (``thisGroup()``, ``toNode`` and ``nodes.X()`` resolve there); any other node's button
        runs in the node's parent group."""
        from . import _callbacks, _nodes

        code = self._value
        if not code.strip():
            return
        with (
            _callbacks.this_context(self._node, self),
            _nodes.running_in(_nodes.button_group(self._node)),
        ):
            exec(compile(code, f"<knob {self._name}>", "exec"), current().namespace)


@guarded(_alive)
class PyScript_Knob(Script_Knob):
    pass


@guarded(_alive)
class PyCustom_Knob(Script_Knob):
    """Hosts an object built from a Python *expression*; the object's ``makeUI()`` returns the
    widget. ``getObject()`` evaluates the expression once (in the ``__main__``-like namespace)."""

    def _init_value(self, command: Any = "", *args: Any) -> None:
        super()._init_value(command)
        self._object: Any = None
        self._built = False

    def getObject(self, *args: Any) -> Any:
        if not self._built:
            self._object = eval(self._value, current().namespace)
            self._built = True
        return self._object


@guarded(_alive)
class Array_Knob(Knob):
    """Numeric knob with ``n`` channels. Values are coerced by ``_coerce``."""

    _dims = 1

    def _coerce(self, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{type(self).__name__}.setValue() expects a number, not {value!r}")
        return float(value)

    def _init_value(self, *args: Any) -> None:
        self._values = [self._coerce(0)] * self._dims
        self._default = list(self._values)
        self._range: tuple[float, float] = (0.0, 1.0)

    def _get(self, index: int) -> Any:
        expr = self._exprs.get(index)
        if expr is not None:
            return self._coerce(_expr.evaluate(expr, self))
        return self._values[index]

    def _script_value(self) -> str | None:
        parts = []
        for i in range(self._dims):
            expr = self._exprs.get(i)
            parts.append("{" + expr + "}" if expr is not None else _fmt(self._values[i]))
        if self._dims == 1 and 0 not in self._exprs:
            return parts[0]
        return "{" + " ".join(parts) + "}"

    def _load_value(self, text: str) -> None:
        from ._tcl import split_words

        words = split_words(text)
        if len(words) == 1:
            words = words * self._dims
        for i, word in enumerate(words[: self._dims]):
            if word.braced:
                self._exprs[i] = str(word)
            else:
                self._exprs.pop(i, None)
                self._values[i] = self._parse(word)

    def _parse(self, word: str) -> Any:
        return self._coerce(float(word))

    def value(self, index: int = 0, *args: Any) -> Any:
        return self._get(int(index))

    def getValue(self, index: int = 0, *args: Any) -> Any:
        return self._get(int(index))

    def setValue(self, value: Any, index: int = -1, *args: Any) -> bool:  # type: ignore[override]
        if isinstance(value, (list, tuple)):
            if len(value) != self._dims:
                raise ValueError(f"{self._name}: expected {self._dims} values, got {len(value)}")
            self._values = [self._coerce(v) for v in value]
            self._exprs.clear()
            return True
        coerced = self._coerce(value)
        targets = range(self._dims) if index < 0 else [int(index)]
        for i in targets:
            self._values[i] = coerced
            self._exprs.pop(i, None)
        return True

    def setRange(self, minimum: float, maximum: float) -> None:
        self._range = (float(minimum), float(maximum))

    def min(self) -> float:
        return self._range[0]

    def max(self) -> float:
        return self._range[1]

    def minimum(self) -> float:
        return self._range[0]

    def maximum(self) -> float:
        return self._range[1]

    def dimensions(self) -> int:
        return self._dims

    def arraySize(self) -> int:
        return self._dims

    def defaultValue(self, index: int = 0) -> Any:
        return self._default[index]

    def setDefaultValue(self, values: Sequence[Any]) -> None:
        self._default = [self._coerce(v) for v in values]

    def notDefault(self) -> bool:
        return bool(self._exprs) or self._values != self._default


@guarded(_alive)
class Double_Knob(Array_Knob):
    pass


@guarded(_alive)
class XY_Knob(Array_Knob):
    _dims = 2

    def x(self, oc: Any = None) -> float:
        return self._get(0)

    def y(self, oc: Any = None) -> float:
        return self._get(1)


@guarded(_alive)
class Int_Knob(Array_Knob):
    def _coerce(self, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"Int_Knob.setValue() expects a number, not {value!r}")
        return int(value)

    def _parse(self, word: str) -> Any:
        try:
            return int(word, 0)
        except ValueError:
            return int(float(word))

    def value(self) -> int:  # type: ignore[override]
        return self._get(0)

    def setValue(self, val: Any) -> bool:  # type: ignore[override]
        return Array_Knob.setValue(self, val)


@guarded(_alive)
class Boolean_Knob(Array_Knob):
    def _init_value(self, value: Any = False, *args: Any) -> None:
        super()._init_value()
        self._values = [bool(value)]
        self._default = [False]

    def _coerce(self, value: Any) -> Any:
        if not isinstance(value, (bool, int, float)):
            raise TypeError(f"Boolean_Knob.setValue() expects a bool, not {value!r}")
        return bool(value)

    def _parse(self, word: str) -> Any:
        return word.lower() in ("true", "1", "yes", "on")

    def _script_value(self) -> str | None:
        if 0 in self._exprs:
            return "{{" + self._exprs[0] + "}}"
        return "true" if self._values[0] else "false"

    def value(self) -> bool:  # type: ignore[override]
        return bool(self._get(0))

    def setValue(self, b: Any) -> bool:  # type: ignore[override]
        return Array_Knob.setValue(self, b)


@guarded(_alive)
class Disable_Knob(Boolean_Knob):
    pass


@guarded(_alive)
class Unsigned_Knob(Int_Knob):
    pass


@guarded(_alive)
class ColorChip_Knob(Unsigned_Knob):
    """``tile_color`` and friends: 0xRRGGBBAA as an int (0 = default colour)."""

    def _script_value(self) -> str | None:
        return hex(self._values[0]) if self._values[0] else "0"


@guarded(_alive)
class Enumeration_Knob(Unsigned_Knob):
    """``value()`` is the item string; ``getValue()`` the index as a float; ``setValue`` takes an
    item or an index and raises ValueError for an unknown item or index [verify]."""

    def __init__(self, name: str, label: str | None = None, items: Sequence[str] = (), *a: Any):
        super().__init__(name, label, items)

    def _init_value(self, items: Sequence[str] = (), *args: Any) -> None:
        super()._init_value()
        if isinstance(items, str):
            raise TypeError("Enumeration_Knob items must be a list of str")
        self._items = [str(i) for i in items]

    def _script_value(self) -> str | None:
        from ._tcl import quote

        return quote(self.value())

    def _load_value(self, text: str) -> None:
        if text in self._items:
            self._values[0] = self._items.index(text)
        elif text.isdigit() and int(text) < len(self._items):
            self._values[0] = int(text)
        else:
            current().load_warnings.append(f"{self.fullyQualifiedName()}: unknown item {text!r}")

    def value(self) -> str:  # type: ignore[override]
        if not self._items:
            return ""
        return self._items[min(self._get(0), len(self._items) - 1)]

    def getValue(self, *args: Any) -> float:
        return float(self._get(0))

    def setValue(self, *args: Any) -> bool:  # type: ignore[override]
        if len(args) != 1:
            raise TypeError("Enumeration_Knob.setValue() takes one item or index")
        val = args[0]
        if isinstance(val, str):
            if val not in self._items:
                raise ValueError(f"{self._name}: {val!r} is not one of {self._items}")
            self._values[0] = self._items.index(val)
        elif isinstance(val, (int, float)) and not isinstance(val, bool):
            if not 0 <= int(val) < len(self._items):
                raise ValueError(f"{self._name}: index {val} out of range")
            self._values[0] = int(val)
        else:
            raise TypeError(f"Enumeration_Knob.setValue() expects str or int, not {val!r}")
        self._exprs.clear()
        return True

    def values(self) -> list[str]:
        return list(self._items)

    def setValues(self, items: Sequence[str]) -> None:
        if isinstance(items, str):
            raise TypeError("Enumeration_Knob.setValues() expects a list of str")
        self._items = [str(i) for i in items]
        # Nuke keeps the index, not the item string.
        self._values[0] = min(self._values[0], max(len(self._items) - 1, 0))

    def numValues(self) -> int:
        return len(self._items)

    def enumName(self, n: int) -> str:
        return self._items[int(n)]


def _fmt(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# Nuke user-knob type ids (KnobType) that the fake can read and write.
USER_KNOB_TYPES: dict[int, type] = {
    1: String_Knob,
    2: File_Knob,
    3: Int_Knob,
    4: Enumeration_Knob,
    6: Boolean_Knob,
    7: Double_Knob,
    12: XY_Knob,
    20: Tab_Knob,
    22: PyScript_Knob,
    26: Text_Knob,
    32: Script_Knob,
    40: ColorChip_Knob,
    43: Multiline_Eval_String_Knob,
    52: PythonKnob,
}
TYPE_IDS: dict[type, int] = {cls: tid for tid, cls in USER_KNOB_TYPES.items()}


# -- knobChanged on programmatic changes -------------------------------------------------------
def _notifying(set_value: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a ``setValue`` so that, when the session asks for it
    (``nuke._fake.set_knob_changed(on_set=True)``), a programmatic change fires knobChanged
    like a user edit. Only the outermost call notifies (subclasses call their base's setValue)."""

    @functools.wraps(set_value)
    def setValue(self: Knob, *args: Any, **kwargs: Any) -> Any:
        session = current()
        session.set_depth += 1
        try:
            result = set_value(self, *args, **kwargs)
        finally:
            session.set_depth -= 1
        if session.set_depth == 0 and session.knob_changed_on_set and self._node is not None:
            from . import _callbacks

            _callbacks.fire_knob_changed(self)
        return result

    setValue._notifies = True  # type: ignore[attr-defined]
    return setValue


def notify_on_set(cls: type) -> type:
    """Class decorator: the class's own ``setValue`` (if any) may fire knobChanged."""
    set_value = vars(cls).get("setValue")
    if set_value is not None and not getattr(set_value, "_notifies", False):
        cls.setValue = _notifying(set_value)  # type: ignore[attr-defined]
    return cls


for _cls in list(globals().values()):
    if isinstance(_cls, type) and issubclass(_cls, Knob):
        notify_on_set(_cls)
