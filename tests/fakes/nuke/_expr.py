"""Knob expressions and the TCL subset the fake understands.

Supported (anything else raises ValueError naming the unsupported part):

* TCL substitutions inside strings (``File_Knob.evaluate()``, Write rendering, expressions):
  ``[value REF]`` (the referenced knob's ``value()`` as text; ``[value root.name]`` is the
  script's path), ``[frame]``, ``[python EXPR]`` / ``[python {EXPR}]`` (a Python expression
  with ``nuke`` in scope), ``[file dirname|tail|rootname|extension PATH]``,
  ``[file join A B ...]`` and ``[getenv NAME]``, innermost brackets first. ``####``/``%04d``
  are left alone (frame numbers are substituted by the Read or Write that uses the path).
* Numeric expressions (``knob.setExpression``): Python-syntax arithmetic (``+ - * / // % **``,
  comparisons, ``and``/``or``/``not``, ``a if c else b``), numbers, ``frame``/``t``, ``pi``,
  calls to ``abs min max int float round floor ceil``, and knob references.
* References ``REF``: ``knob`` (same node), ``this.knob``, ``parent.knob`` (the group that
  contains the node, e.g. a gizmo from inside it), ``root.knob``, ``Node.knob`` and
  ``Group.Node.knob`` (siblings in the same group). Enumerations read as their index, booleans
  as 0/1, in numeric expressions.
"""

from __future__ import annotations

import ast
import math
import operator
import os
import re
import sys
from typing import Any

_BRACKET = re.compile(r"\[([^\[\]]*)\]")
_FUNCS = {
    "abs": abs,
    "min": min,
    "max": max,
    "int": int,
    "float": float,
    "round": round,
    "floor": math.floor,
    "ceil": math.ceil,
}
_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_CMPOPS = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}


def resolve_knob(ref: str, knob: Any) -> Any:
    """Return the knob that ``ref`` names, seen from ``knob`` (see module docstring)."""
    from . import _state

    parts = ref.split(".")
    node = knob.node()
    if node is None:
        raise ValueError(f"fake nuke: cannot resolve {ref!r}: knob {knob.name()!r} has no node")
    root = _state.current().root
    group = getattr(node, "_parent", None) or root
    head = parts[0]
    if len(parts) == 1:
        target = node
    elif head == "this":
        target = node
        parts = parts[1:]
    elif head == "parent":
        target = group
        parts = parts[1:]
    elif head == "root":
        target = root
        parts = parts[1:]
    else:
        target = group
    while len(parts) > 1:
        child = target._child(parts[0]) if hasattr(target, "_child") else None
        if child is None:
            raise ValueError(f"fake nuke: cannot resolve {ref!r}: no node {parts[0]!r}")
        target = child
        parts = parts[1:]
    found = target._knobs.get(parts[0])
    if found is None:
        raise ValueError(f"fake nuke: cannot resolve {ref!r}: no knob {parts[0]!r}")
    return found


def expand(text: str, knob: Any) -> str:
    """Apply the TCL bracket substitutions to ``text`` (innermost first)."""
    from . import _state

    def sub(match: re.Match) -> str:
        cmd = match.group(1).strip()
        word, _, arg = cmd.partition(" ")
        arg = arg.strip()
        if word == "value" and arg:
            return str(resolve_knob(arg, knob).value())
        if word == "frame" and not arg:
            return str(_state.current().frame)
        if word == "file" and arg:
            return _file_command(arg, cmd)
        if word == "getenv" and arg:
            return os.environ.get(arg, "")
        if word == "python" and arg:
            if arg.startswith("{") and arg.endswith("}"):
                arg = arg[1:-1]
            ns = dict(_state.current().namespace)
            ns["nuke"] = sys.modules[__package__]
            return str(eval(arg, ns))
        raise ValueError(f"fake nuke: unsupported TCL command [{cmd}]")

    previous = None
    while previous != text:
        previous = text
        text = _BRACKET.sub(sub, text)
    return text


def _file_command(arg: str, cmd: str) -> str:
    """TCL's ``file`` subcommands that path templates use."""
    sub, _, path = arg.partition(" ")
    path = path.strip()
    if sub == "dirname" and path:
        return os.path.dirname(path) or "."
    if sub == "tail" and path:
        return os.path.basename(path)
    if sub == "rootname" and path:
        return os.path.splitext(path)[0]
    if sub == "extension" and path:
        return os.path.splitext(path)[1]
    if sub == "join" and path:
        return os.path.join(*path.split())
    raise ValueError(f"fake nuke: unsupported TCL command [{cmd}]")


def evaluate(expression: str, knob: Any) -> float:
    """Evaluate a numeric knob expression (see module docstring)."""
    source = expand(expression, knob).strip()
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"fake nuke: unsupported expression {expression!r}") from exc
    return _eval(tree.body, knob, expression)


def _numeric(k: Any) -> float:
    cls = type(k).__name__
    if cls == "Enumeration_Knob":
        return float(k.getValue())
    value = k.value()
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return value
    return float(value)


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def _eval(node: ast.AST, knob: Any, src: str) -> Any:
    from . import _state

    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        return _BINOPS[type(node.op)](_eval(node.left, knob, src), _eval(node.right, knob, src))
    if isinstance(node, ast.UnaryOp):
        value = _eval(node.operand, knob, src)
        if isinstance(node.op, ast.USub):
            return -value
        if isinstance(node.op, ast.UAdd):
            return value
        if isinstance(node.op, ast.Not):
            return 0 if value else 1
    if isinstance(node, ast.Compare) and all(type(op) in _CMPOPS for op in node.ops):
        left = _eval(node.left, knob, src)
        for op, comp in zip(node.ops, node.comparators):
            right = _eval(comp, knob, src)
            if not _CMPOPS[type(op)](left, right):
                return 0
            left = right
        return 1
    if isinstance(node, ast.BoolOp):
        values = [_eval(v, knob, src) for v in node.values]
        if isinstance(node.op, ast.And):
            return 1 if all(values) else 0
        return 1 if any(values) else 0
    if isinstance(node, ast.IfExp):
        cond = _eval(node.test, knob, src)
        return _eval(node.body if cond else node.orelse, knob, src)
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCS
        and not node.keywords
    ):
        return _FUNCS[node.func.id](*(_eval(a, knob, src) for a in node.args))
    dotted = _dotted(node)
    if dotted is not None:
        if dotted in ("frame", "t"):
            return _state.current().frame
        if dotted == "pi":
            return math.pi
        if dotted in ("true", "True"):
            return 1
        if dotted in ("false", "False"):
            return 0
        return _numeric(resolve_knob(dotted, knob))
    raise ValueError(f"fake nuke: unsupported expression {src!r} (at {ast.dump(node)})")
