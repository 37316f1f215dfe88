"""Imports go one way: core <- host <- ui; core is pure Python plus the three runtime dependencies.

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
