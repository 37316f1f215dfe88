"""Keep the fake's public surface inside the real API.

``nuke``: every public name of the fake module, and every public member of its public classes,
must exist in the ``types-nuke`` stubs (parsed with ``ast``; class members include those of stub
base classes). ``nukescripts`` has no stubs there, so it is checked against a hand-maintained
list of the names Foundry's own ``nukescripts/panels.py`` defines.
"""

from __future__ import annotations

import ast
import inspect
import os
from importlib import metadata

import pytest

# Names the fake has that the types-nuke 13.2.8.0 stubs lack, each with its reason.
NUKE_ALLOWED_EXTRA: dict[str, str] = {
    "annotations": "artefact of `from __future__ import annotations` in the fake",
}
# Class members the stubs lack.
NUKE_ALLOWED_MEMBERS: dict[str, set[str]] = {}

# nukescripts: Foundry's panels.py / utils.py (no stubs exist for it).
NUKESCRIPTS_NAMES = {
    "PythonPanel",
    "WidgetKnob",
    "registerPanel",
    "unregisterPanel",
    "restorePanel",
    "registerWidgetAsPanel",
    "executeInMainThread",
    "executeInMainThreadWithResult",
    "panels",
    "utils",
    "annotations",  # artefact of `from __future__ import annotations`
}
PYTHON_PANEL_METHODS = {
    "addKnob",
    "removeKnob",
    "knobs",
    "writeKnobs",
    "readKnobs",
    "knobChanged",
    "knobChangedCallback",
    "addCallback",
    "removeCallback",
    "create",
    "show",
    "hide",
    "showModal",
    "showModalDialog",
    "finishModalDialog",
    "addToPane",
    "setMinimumSize",
    "setMaximumSize",
}


def _stub_dir() -> str:
    try:
        dist = metadata.distribution("types-nuke")
    except metadata.PackageNotFoundError:  # pragma: no cover - the test extra installs it
        pytest.skip("types-nuke is not installed")
    return str(dist.locate_file("nuke-stubs"))


def _parse_stubs() -> tuple[set[str], dict[str, set[str]]]:
    names: set[str] = set()
    members: dict[str, set[str]] = {}
    bases: dict[str, list[str]] = {}
    folder = _stub_dir()
    for filename in sorted(os.listdir(folder)):
        if not filename.endswith(".pyi"):
            continue
        with open(os.path.join(folder, filename), encoding="utf-8") as fh:
            tree = ast.parse(fh.read())
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                names.add(node.name)
                own = members.setdefault(node.name, set())
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        own.add(item.name)
                    elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                        own.add(item.target.id)
                bases[node.name] = [b.id for b in node.bases if isinstance(b, ast.Name)]
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names.add(node.name)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
            elif isinstance(node, ast.Assign):
                names.update(t.id for t in node.targets if isinstance(t, ast.Name))
            elif isinstance(node, ast.ImportFrom):
                names.update(a.asname or a.name for a in node.names if a.name != "*")

    def all_members(cls: str, seen: frozenset = frozenset()) -> set[str]:
        out = set(members.get(cls, ()))
        for base in bases.get(cls, ()):
            if base not in seen:
                out |= all_members(base, seen | {cls})
        return out

    return names, {cls: all_members(cls) for cls in members}


def _public(obj: object) -> set[str]:
    return {n for n in dir(obj) if not n.startswith("_")}


def test_stubs_are_parsed():
    names, classes = _parse_stubs()
    assert {"createNode", "executeInMainThread", "pluginAddPath", "Enumeration_Knob"} <= names
    assert "setRange" in classes["Int_Knob"]  # inherited from Array_Knob


def test_fake_nuke_names_exist_in_stubs(fake_nuke):
    names, _ = _parse_stubs()
    extra = _public(fake_nuke) - names - set(NUKE_ALLOWED_EXTRA)
    assert not extra, f"fake nuke defines names real Nuke lacks: {sorted(extra)}"


def test_fake_nuke_class_members_exist_in_stubs(fake_nuke):
    _, classes = _parse_stubs()
    problems = []
    for name in sorted(_public(fake_nuke)):
        cls = getattr(fake_nuke, name)
        if not inspect.isclass(cls):
            continue
        if name not in classes:
            problems.append(f"class {name} is not in the stubs")
            continue
        allowed = classes[name] | NUKE_ALLOWED_MEMBERS.get(name, set())
        extra = _public(cls) - allowed
        if extra:
            problems.append(f"{name}: {sorted(extra)}")
    assert not problems, "fake members missing from the real API:\n" + "\n".join(problems)


def test_fake_nukescripts_surface(fake_nuke):
    import nukescripts

    extra = _public(nukescripts) - NUKESCRIPTS_NAMES
    assert not extra, f"fake nukescripts defines unknown names: {sorted(extra)}"
    panel_extra = _public(nukescripts.PythonPanel) - PYTHON_PANEL_METHODS
    assert not panel_extra, f"PythonPanel members not in Foundry's panels.py: {panel_extra}"
