"""Imports go one way: core <- host <- ui; core is pure Python plus the three runtime dependencies;
and no two modules import each other, directly or round a longer circle.

Every module is parsed with ``ast`` (nothing is imported), so the rule also covers imports inside
functions and ``TYPE_CHECKING`` blocks.
"""

from __future__ import annotations

import ast
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "plugin" / "comfy_cluster"

#: The runtime dependencies (pyproject) by import name: websocket-client imports as ``websocket``.
RUNTIME_DEPS = frozenset({"requests", "websocket", "tenacity"})
QT = frozenset({"PySide2", "PySide6", "PyQt5", "PyQt6", "Qt", "qtpy", "shiboken2", "shiboken6"})
NUKE = frozenset({"nuke", "nukescripts", "hiero", "_nuke"})
LAYERS = ("core", "host", "ui", "sim", "commands", "cli")


def _stdlib_names() -> frozenset[str]:
    names = getattr(sys, "stdlib_module_names", None)
    if names is not None:  # 3.10+
        return frozenset(names)
    # 3.9: list the standard library directory itself (site-packages excluded) plus built-ins.
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    found = set(sys.builtin_module_names)
    for folder in (stdlib, stdlib / "lib-dynload"):
        for entry in folder.iterdir() if folder.is_dir() else ():
            if entry.name in ("site-packages", "dist-packages"):
                continue
            stem = entry.name.split(".", 1)[0]
            if entry.is_dir() or entry.suffix in (".py", ".so", ".pyd"):
                found.add(stem)
    return frozenset(found)


STDLIB = _stdlib_names()


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _layer(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> set[str]:
    package = ("comfy_cluster", *path.relative_to(PACKAGE).parent.parts)
    return _imports_of(path.read_text(encoding="utf-8"), package)


def _imports_of(source: str, package: tuple[str, ...]) -> set[str]:
    """Dotted names ``source`` (in ``package``) imports, relative imports made absolute."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - node.level + 1])
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            names.add(module)
            # "from comfy_cluster import host" imports the sub-package.
            names.update(f"{module}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def _comfy_layer(name: str) -> str | None:
    parts = name.split(".")
    if parts[0] != "comfy_cluster" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in LAYERS else None


def _violations(layer: str, allowed_external: frozenset[str] | None, forbidden: set[str]) -> list:
    found = []
    for path in _modules():
        if _layer(path) != layer:
            continue
        for name in sorted(_imports(path)):
            top = name.split(".", 1)[0]
            sub = _comfy_layer(name)
            if sub is not None and sub in forbidden:
                found.append(f"{path.relative_to(ROOT)}: imports {name} (layer {sub})")
            elif top in NUKE and "nuke" in forbidden:
                found.append(f"{path.relative_to(ROOT)}: imports {name}")
            elif top in QT and "qt" in forbidden:
                found.append(f"{path.relative_to(ROOT)}: imports Qt ({name})")
            elif (
                allowed_external is not None
                and top != "comfy_cluster"
                and top not in allowed_external
                and top not in STDLIB
                and top != "__future__"
            ):
                found.append(f"{path.relative_to(ROOT)}: imports third-party {name}")
    return found


def test_the_package_has_the_layers() -> None:
    assert {_layer(p) for p in _modules()} >= {"core", "host", "ui"}


def test_stdlib_list_is_sane() -> None:
    assert {"threading", "json", "ast", "concurrent", "urllib", "queue"} <= STDLIB
    assert not RUNTIME_DEPS & STDLIB
    assert "pytest" not in STDLIB


def test_core_imports_only_stdlib_and_runtime_deps() -> None:
    forbidden = {"host", "ui", "sim", "commands", "cli", "nuke", "qt"}
    assert _violations("core", RUNTIME_DEPS, forbidden) == []


def test_host_imports_no_qt_and_nothing_above_it() -> None:
    assert _violations("host", None, {"ui", "sim", "commands", "cli", "qt"}) == []


def test_ui_imports_nothing_above_it() -> None:
    assert _violations("ui", None, {"sim", "commands", "cli"}) == []


@pytest.mark.parametrize("layer", ["sim", "commands", "cli"])
def test_nuke_is_imported_only_by_host_and_ui(layer: str) -> None:
    assert _violations(layer, None, {"nuke", "host", "ui"}) == []


def test_the_checker_resolves_relative_and_lazy_imports() -> None:
    """Guard the guard: relative, function-level and from-package imports are all seen."""
    source = "from ..host import dispatch\nfrom . import frames\ndef f():\n    import PySide6\n"
    names = _imports_of(source, ("comfy_cluster", "core"))
    assert {"comfy_cluster.host", "comfy_cluster.core.frames", "PySide6"} <= names
    assert _comfy_layer("comfy_cluster.host.dispatch") == "host"
    assert _imports_of("from comfy_cluster import ui\n", ("comfy_cluster", "host")) >= {
        "comfy_cluster.ui"
    }


# --- import cycles ------------------------------------------------------------------------------
#
# Two modules that import each other cannot be understood, tested or moved apart; a circle is
# a circle even when one side imports inside a function or under ``if TYPE_CHECKING:`` (that only
# hides it from the interpreter, not from the reader). So every import statement counts.


def _module_files(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package at ``package_dir``.

    A package is the module of its ``__init__.py``.
    """
    found = {}
    for path in package_dir.rglob("*.py"):
        if "__pycache__" in path.parts:
            continue
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _import_graph(package_dir: Path) -> dict[str, set[str]]:
    """Module -> the modules of the package it imports (any statement, anywhere in the file).

    ``import a.b.c`` and ``from a.b import c`` reach ``a.b.c`` when that is a module, and also
    run ``a/__init__`` and ``a/b/__init__`` on the way, so each prefix that is a module is an
    edge too. A module's import of itself is not an edge.
    """
    modules = _module_files(package_dir)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = path.relative_to(package_dir.parent).parent.parts
        targets = set()
        for imported in _imports_of(path.read_text(encoding="utf-8"), tuple(package)):
            parts = imported.split(".")
            for end in range(1, len(parts) + 1):
                prefix = ".".join(parts[:end])
                if prefix in modules and prefix != name:
                    targets.add(prefix)
        graph[name] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The strongly connected sets of more than one module (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()
    for root in sorted(graph):
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(sorted(graph[root])))]
        while work:
            node, edges = work[-1]
            child = next(edges, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                members = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    members.add(member)
                    if member == node:
                        break
                if len(members) > 1:
                    found.add(frozenset(members))
    return found


def _describe(cycles: set[frozenset[str]]) -> list[str]:
    return sorted(" <-> ".join(sorted(cycle)) for cycle in cycles)


def test_no_import_cycles() -> None:
    assert _describe(_cycles(_import_graph(PACKAGE))) == []


def _write_package(root: Path, files: dict[str, str]) -> Path:
    for relative, source in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
    return root / "pkg"


def test_the_cycle_finder_catches_type_only_and_function_level_circles(tmp_path: Path) -> None:
    """Guard the guard: a circle hidden under TYPE_CHECKING on one side and inside a function
    on the other is found; one-way imports (absolute, relative, through packages) are not."""
    package = _write_package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import Thing\n"
            ),
            "pkg/b.py": "def later():\n    from . import a\n",
            "pkg/c.py": "import pkg.a\nfrom pkg.sub import e\nfrom .sub.e import value\n",
            "pkg/sub/__init__.py": "",
            "pkg/sub/e.py": "from .. import b\nvalue = 1\n",
        },
    )
    graph = _import_graph(package)
    assert graph["pkg.c"] == {"pkg", "pkg.a", "pkg.sub", "pkg.sub.e"}
    assert graph["pkg.sub.e"] == {"pkg", "pkg.b"}
    assert _cycles(graph) == {frozenset({"pkg.a", "pkg.b"})}


def test_an_import_through_a_package_is_an_edge_to_its_init(tmp_path: Path) -> None:
    package = _write_package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/c.py": "import pkg.sub.e\n",
            "pkg/sub/__init__.py": "def f():\n    from pkg import c\n",
            "pkg/sub/e.py": "",
        },
    )
    assert _cycles(_import_graph(package)) == {frozenset({"pkg.c", "pkg.sub"})}
