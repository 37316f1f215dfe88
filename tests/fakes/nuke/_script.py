"""Reading and writing scripts and gizmos in (a subset of) Nuke's ``.nk`` TCL syntax.

Node blocks: ``Class { knob value ... }``; user knobs: ``addUserKnob {<type-id> <name> [l label]
[t tooltip] [M {items}] [T text-or-command] [R min max] [n tabgroup] [+FLAG|-FLAG ...]}``;
wiring with Nuke's stack (``inputs N``, ``push $var``, ``push 0``, ``set var [stack 0]``);
groups end with ``end_group``. Type ids: see ``_knobs.USER_KNOB_TYPES``; the fake also writes
``fake:<KnobClass>`` for knob classes without a pinned id (never in a real file).
"""

from __future__ import annotations

from typing import Any

from . import _callbacks, _nodes
from . import _knobs as K
from ._state import current
from ._tcl import TclError, Word, parse, quote, split_words

_NO_VALUE = (K.Tab_Knob, K.Text_Knob, K.BeginTabGroup_Knob, K.EndTabGroup_Knob, K.Script_Knob)
_IGNORED_STATEMENTS = ("version", "define_window_layout_xml", "cut_paste_input", "clone")


class GizmoParseError(ValueError):
    """A .gizmo or script file uses syntax or knob types the fake does not understand."""


# -- user knob specs ---------------------------------------------------------------------------
def make_user_knob(spec: str, where: str) -> K.Knob:
    """Build a knob from the inside of ``addUserKnob {...}``."""
    words = split_words(spec)
    if len(words) < 2:
        raise GizmoParseError(f"{where}: addUserKnob needs a type id and a name: {{{spec}}}")
    type_word, name = words[0], str(words[1])
    if type_word.startswith("fake:"):
        cls = getattr(K, type_word[5:], None)
        if not (isinstance(cls, type) and issubclass(cls, K.Knob)):
            raise GizmoParseError(f"{where}: unknown fake knob class {type_word}")
    else:
        try:
            cls = K.USER_KNOB_TYPES[int(type_word)]
        except (ValueError, KeyError):
            raise GizmoParseError(
                f"{where}: knob type {type_word} for {name!r} is not supported by the fake "
                f"(supported: {sorted(K.USER_KNOB_TYPES)})"
            ) from None
    label: str | None = None
    tooltip = ""
    items: list[str] = []
    text: str | None = None
    rng: tuple[float, float] | None = None
    group = 0
    set_flags = 0
    clear_flags = 0
    i = 2
    while i < len(words):
        word = words[i]
        if word in ("l", "t", "T", "M", "n") and i + 1 < len(words):
            arg = words[i + 1]
            if word == "l":
                label = str(arg)
            elif word == "t":
                tooltip = str(arg)
            elif word == "T":
                text = str(arg)
            elif word == "M":
                items = [str(w) for w in split_words(arg)]
            else:
                group = int(arg)
            i += 2
        elif word == "R" and i + 2 < len(words):
            rng = (float(words[i + 1]), float(words[i + 2]))
            i += 3
        elif word[:1] in "+-" and word[1:] in K.FLAGS:
            if word[0] == "+":
                set_flags |= K.FLAGS[word[1:]]
            else:
                clear_flags |= K.FLAGS[word[1:]]
            i += 1
        else:
            raise GizmoParseError(
                f"{where}: unsupported token {str(word)!r} in addUserKnob {{{spec}}}"
            )
    if cls is K.Enumeration_Knob:
        knob: K.Knob = K.Enumeration_Knob(name, label, items)
    elif cls is K.Tab_Knob:
        knob = K.Tab_Knob(name, label, group)
    elif issubclass(cls, (K.Script_Knob, K.String_Knob, K.Text_Knob)):
        knob = cls(name, label, text or "")
    else:
        knob = cls(name, label)
    if rng is not None and isinstance(knob, K.Array_Knob):
        knob.setRange(*rng)
    knob.setTooltip(tooltip)
    knob._flags = (knob._flags | set_flags) & ~clear_flags
    return knob


def user_knob_spec(knob: K.Knob) -> str:
    cls = type(knob)
    tid = K.TYPE_IDS.get(cls)
    parts = [
        str(tid) if tid is not None else f"fake:{cls.__name__}",
        quote(knob.name()) if knob.name() else '""',
    ]
    if knob.label() != knob.name():
        parts += ["l", quote(knob.label()) if knob.label() else '""']
    if knob.tooltip():
        parts += ["t", quote(knob.tooltip())]
    if isinstance(knob, K.Enumeration_Knob):
        parts += ["M", "{" + " ".join(quote(i) if i else '""' for i in knob.values()) + "}"]
    if isinstance(knob, K.Tab_Knob) and knob._group:
        parts += ["n", str(knob._group)]
    if isinstance(knob, (K.Script_Knob, K.Text_Knob)) and knob.value():
        parts += ["T", quote(knob.value())]
    numeric = isinstance(knob, (K.Int_Knob, K.Double_Knob)) and not isinstance(knob, K.Boolean_Knob)
    if numeric and knob._range != (0.0, 1.0):
        parts += ["R", K._fmt(knob._range[0]), K._fmt(knob._range[1])]
    for flag_name, bit in K.FLAGS.items():
        if knob._flags & bit:
            parts.append("+" + flag_name)
    return "{" + " ".join(parts) + "}"


# -- knob values -------------------------------------------------------------------------------
def knob_lines(node: Any) -> str:
    """The knob section of a node block: user knob definitions and values, one per line."""
    lines: list[str] = []
    builtin = getattr(node, "_builtin", set())
    user = set(getattr(node, "_user", node._knobs.keys()))
    for key, knob in node._knobs.items():
        if key == "name" and key in builtin:
            continue
        if key in user:
            lines.append(f"addUserKnob {user_knob_spec(knob)}")
        if isinstance(knob, _NO_VALUE) or knob._flags & K.DO_NOT_WRITE:
            continue
        text = knob._script_value()
        if text is None:
            continue
        if isinstance(knob, K.String_Knob) and not isinstance(knob, _nodes._NameKnob):
            text = quote(text) if text else '""'
        if key in builtin and text in ("", '""'):
            continue
        lines.append(f"{quote(key)} {text}")
    return "\n".join(lines)


def apply_knob_text(node: Any, text: str, where: str = "<knobs>") -> int | None:
    """Apply ``knob value``/``addUserKnob`` statements to ``node``; returns ``inputs`` if set."""
    try:
        statements = parse(text)
    except TclError as exc:
        raise GizmoParseError(f"{where}: {exc}") from exc
    return _apply_statements(node, statements, where, user=True)


def _apply_statements(
    node: Any, statements: list[list[Word]], where: str, user: bool
) -> int | None:
    inputs: int | None = None
    pairs: list[list[Word]] = []
    # createNode("X", "a 1 b 2") puts several pairs on one line: flatten those.
    for st in statements:
        if st[0] == "addUserKnob" or len(st) == 2:
            pairs.append(st)
        elif len(st) % 2 == 0:
            pairs.extend(st[i : i + 2] for i in range(0, len(st), 2))
        else:
            raise GizmoParseError(f"{where}: cannot read statement {' '.join(st)!r}")
    for st in pairs:
        key = str(st[0])
        if key == "addUserKnob":
            knob = make_user_knob(st[1], where)
            if knob.name() in node._knobs:
                raise GizmoParseError(f"{where}: knob {knob.name()!r} declared twice")
            knob._node = node
            node._knobs[knob.name() or f"__unnamed_{len(node._knobs)}"] = knob
            if user and hasattr(node, "_user"):
                node._user.append(knob.name() or f"__unnamed_{len(node._knobs) - 1}")
            elif hasattr(node, "_builtin"):
                node._builtin.add(knob.name())
            continue
        if key == "inputs":
            inputs = int(st[1])
            continue
        if key == "name" and hasattr(node, "setName"):
            node.setName(str(st[1]))
            continue
        knob = node._knobs.get(key)
        if knob is None:
            current().load_warnings.append(
                f"{where}: no knob {key!r} on {getattr(node, '_name', '?')}"
            )
            continue
        if isinstance(knob, K.Script_Knob):
            knob._init_value(str(st[1]))
        else:
            knob._load_value(st[1])
    return inputs


# -- node streams (scripts, gizmo bodies) ------------------------------------------------------
class _Loader:
    def __init__(self, where: str, run_callbacks: bool) -> None:
        self.where = where
        self.run_callbacks = run_callbacks
        self.created: list[Any] = []
        self.vars: dict[str, Any] = {}
        self.pending: dict[int, list[Any]] = {}

    def run(self, statements: list[list[Word]], group: Any, first_block_node: Any = None) -> None:
        stack: list[Any] = []
        groups: list[tuple[Any, list[Any]]] = []
        gizmo_open = False
        opened: Any = None  # a Group whose block just ended: its own stack is still empty
        for st in statements:
            head = str(st[0])
            if head in _IGNORED_STATEMENTS:
                continue
            just_opened, opened = opened, None
            if head == "push" and len(st) == 2:
                stack.append(None if st[1] == "0" else self._var(st[1]))
            elif head == "set" and len(st) == 3:
                # ``set N [stack 0]`` right after a Group's block names the group itself.
                self.vars[str(st[1])] = stack[-1] if stack else just_opened
            elif head == "end_group":
                if not groups:
                    if gizmo_open:
                        gizmo_open = False
                        continue
                    raise GizmoParseError(f"{self.where}: end_group without a group")
                finished = group
                group, stack = groups.pop()
                finished._refresh_inputs()
                _wire(finished, self.pending.pop(id(finished), []))
            elif len(st) == 2 and st[1].braced:
                body = parse(st[1])
                if first_block_node is not None:
                    node = first_block_node
                    first_block_node = None
                    _apply_statements(node, body, self.where, user=False)
                    group, stack, gizmo_open = node, [], True
                    continue
                if head == "Root":
                    _apply_statements(current().root, body, self.where, user=False)
                    continue
                node = _nodes.instantiate(head, group, run_callbacks=self.run_callbacks)
                inputs = _apply_statements(node, body, self.where, user=True)
                if inputs is None:
                    inputs = 1 if node._max_inputs > 0 and stack else 0
                wired = [stack.pop() if stack else None for _ in range(inputs)]
                self.created.append(node)
                stack.append(node)
                if type(node) is _nodes.Group:
                    # A group's inputs exist once its Input nodes do: wire at end_group.
                    self.pending[id(node)] = wired
                    groups.append((group, stack))
                    group, stack = node, []
                    opened = node
                else:
                    _wire(node, wired)
                if self.run_callbacks:
                    _nodes.run_on_create(node, user=False)
            else:
                current().load_warnings.append(f"{self.where}: ignored {' '.join(st)!r}")

    def _var(self, word: str) -> Any:
        name = word[1:] if word.startswith("$") else word
        if name not in self.vars:
            raise GizmoParseError(f"{self.where}: push of unknown variable {word}")
        return self.vars[name]


def _wire(node: Any, wired: list[Any]) -> None:
    for i, upstream in enumerate(wired):
        if upstream is not None:
            node.setInput(i, upstream)


def load_gizmo(node: Any, path: str, run_callbacks: bool) -> None:
    """Give a Gizmo node its knobs and internal nodes from ``path``."""
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    try:
        statements = parse(text)
    except TclError as exc:
        raise GizmoParseError(f"{path}: {exc}") from exc
    blocks = [st for st in statements if len(st) == 2 and st[1].braced]
    if not blocks or str(blocks[0][0]) not in ("Gizmo", "Group"):
        raise GizmoParseError(f"{path}: a gizmo file must start with a Gizmo {{...}} block")
    _Loader(path, run_callbacks).run(statements, node._parent, first_block_node=node)
    node._refresh_inputs()


def gizmo_as_group(gizmo: Any) -> Any:
    """``Gizmo.makeGroup()``: a Group with the gizmo's knobs (as user knobs) and a copy of its
    internal nodes, wired to the same inputs."""
    group = _nodes.instantiate("Group", gizmo._parent)
    lines = []
    for key in _gizmo_user(gizmo):
        knob = gizmo._knobs[key]
        lines.append(f"addUserKnob {user_knob_spec(knob)}")
        text = knob._script_value()
        if text is not None and not isinstance(knob, _NO_VALUE):
            lines.append(f"{quote(key)} {quote(text) if isinstance(knob, K.String_Knob) else text}")
    apply_knob_text(group, "\n".join(lines), "<makeGroup>")
    load_text(write_nodes(list(gizmo._children)), group, "<makeGroup>")
    group._refresh_inputs()
    for i, upstream in enumerate(gizmo._inputs):
        if upstream is not None:
            group.setInput(i, upstream)
    _nodes.run_on_create(group, user=False)
    return group


def write_nodes(nodes: list[Any]) -> str:
    """Serialise ``nodes`` (and the children of plain groups) in stack order."""
    out: list[str] = []
    names: dict[int, str] = {}
    session = current()

    def var_for(node: Any) -> str:
        if id(node) not in names:
            session.var_counter += 1
            names[id(node)] = f"N{session.var_counter}"
        return names[id(node)]

    def emit(node: Any, indent: str, done: set[int], members: set[int]) -> None:
        if id(node) in done:
            return
        done.add(id(node))
        for upstream in node._inputs:
            if upstream is not None and id(upstream) in members:
                emit(upstream, indent, done, members)
        inputs = [i if i is not None and id(i) in members else None for i in node._inputs]
        while inputs and inputs[-1] is None:
            inputs.pop()
        for upstream in reversed(inputs):
            out.append(f"{indent}push " + ("0" if upstream is None else "$" + var_for(upstream)))
        out.append(f"{indent}{node._cls} {{")
        out.append(f"{indent} inputs {len(inputs)}")
        for line in knob_lines(node).splitlines():
            out.append(f"{indent} {line}")
        out.append(f"{indent} name {node._name}")
        out.append(f"{indent}}}")
        out.append(f"{indent}set {var_for(node)} [stack 0]")
        if type(node) is _nodes.Group:
            children = list(node._children)
            child_ids = {id(c) for c in children}
            child_done: set[int] = set()
            for child in children:
                emit(child, indent + " ", child_done, child_ids)
            out.append(f"{indent}end_group")

    members = {id(n) for n in nodes}
    done: set[int] = set()
    for node in nodes:
        emit(node, "", done, members)
    return "\n".join(out) + "\n"


def _gizmo_user(node: Any) -> list[str]:
    common = {"name", "label", "tile_color", "selected", "xpos", "ypos", "disable"}
    common |= {"onCreate", "onDestroy", "knobChanged", "updateUI"}
    return [k for k in node._knobs if k not in common]


def script_text() -> str:
    root = current().root
    lines = ["version 15.0 v1 (comfy_cluster fake)", "Root {"]
    lines += [f" {line}" for line in knob_lines(root).splitlines()]
    lines.append("}")
    return "\n".join(lines) + "\n" + write_nodes(list(root._children))


def load_text(text: str, group: Any, where: str) -> list[Any]:
    """Create the nodes in ``text`` inside ``group``, running onCreate for each (as Nuke does
    on script load and paste); returns the created top-level and child nodes in order."""
    try:
        statements = parse(text)
    except TclError as exc:
        raise GizmoParseError(f"{where}: {exc}") from exc
    loader = _Loader(where, run_callbacks=True)
    loader.run(statements, group)
    return loader.created


def run_script_callbacks(kind: str) -> None:
    root = current().root
    _callbacks.run_node_knob(root, kind)
    _callbacks.run(kind, root)
