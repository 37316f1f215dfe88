"""Mutation testing for the modules that keep frames safe: plant one plausible bug, run its tests.

Why our own script rather than a general tool: our engine is threads and sockets, so each mutant
must run in a fresh interpreter, in a copy of the checkout, with only the tests that reach the
mutated line. That is three small steps:

1. The target modules are read once; everything after works on a private snapshot of the
   checkout holding that text (a live file another run or an editor changes is never re-read).
   ``coverage`` runs the whole suite there once with one context per test (the pytest node id),
   so we know which tests execute each line and how long each test takes.
2. Each target module is parsed; every *plausible* single-point bug is listed (a flipped
   comparison, ``and``/``or`` swapped, a condition negated, a dropped call statement, an integer
   off by one, ``True``/``False`` swapped, ``+``/``-`` swapped on numbers (never on text or
   sequence literals, where it is a TypeError at once), ``min``/``max`` swapped, ``break``
   /``continue`` swapped). Log calls, docstrings, f-string text, ``assert`` statements (type
   narrowing here) and ``TYPE_CHECKING`` blocks are left alone; a line may opt out with
   ``# pragma: no mutate`` (for a mutant that cannot change behaviour), which the report
   counts.
3. Each mutant is written into a copy of the snapshot and its covering tests run, fastest
   first, with ``pytest -x``; a failing test or a time-out kills it. pytest exit codes 2-5
   (collection error, internal error, usage error, nothing collected) kill it only when the
   same tests collect cleanly without the mutant; otherwise it is a tool error and *not* a
   kill. A mutant on a line no test runs survives. Every run puts the copy's ``plugin`` first
   on ``PYTHONPATH`` and checks ``comfy_cluster`` imports from there (not from an editable
   install of another checkout).

Usage (from the checkout, in a venv with the test extras and ``coverage``)::

    python tools/mutate.py                      # every target, 2 workers
    python tools/mutate.py --only engine -j 2   # one group
    python tools/mutate.py --list               # the mutants, without running them
    python tools/mutate.py --only engine --file engine/book.py --coverage-cache cov.json

It prints one line per surviving mutant (file:line, what changed) and a score per module, and
exits 1 when any module scores under ``--min-score`` (default 0.90).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "plugin" / "comfy_cluster"

#: Groups of target modules (globs under plugin/comfy_cluster).
TARGETS: dict[str, tuple[str, ...]] = {
    "engine": ("core/engine/*.py",),
    "transfer": ("core/transfer.py",),
    "workflow": ("core/workflow.py",),
    "frames": ("core/frames.py",),
    "config": ("core/config/*.py",),
}


_COMPARE_SWAP = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}
_BINOP_SWAP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult}
_LOG_NAMES = {"log", "logger", "_log", "_logger", "logging"}


@dataclass(frozen=True)
class Mutant:
    """One planted bug: replace the source span ``[start, end)`` of ``path`` by ``text``."""

    path: Path
    line: int
    start: int
    end: int
    text: str
    what: str
    #: The module's text when the mutants were listed: the mutant is planted in this, never in
    #: the live file (which an editor or another run may have changed since).
    source: str = field(repr=False, compare=False, default="")

    @property
    def relpath(self) -> Path:
        return self.path.relative_to(ROOT)

    @property
    def where(self) -> str:
        return f"{self.relpath}:{self.line}"

    def planted(self) -> str:
        """The module's listing-time text with this mutant in it."""
        return self.source[: self.start] + self.text + self.source[self.end :]


@dataclass(frozen=True)
class Verdict:
    mutant: Mutant
    killed: bool
    why: str  # "failed", "timeout", "no test runs this line", "survived"
    seconds: float = 0.0  # the mutant's pytest run, start-up included
    killer: str = ""  # the test that failed first, when pytest named it


# -- finding mutants ----------------------------------------------------------------------------


def _span(node: ast.AST, lines: list[str], offsets: list[int]) -> tuple[int, int]:
    """Character span of a node in the source (ast columns count UTF-8 bytes)."""

    def char_at(line: int, col: int) -> int:
        text = lines[line - 1]
        return offsets[line - 1] + len(text.encode("utf-8")[:col].decode("utf-8"))

    return char_at(node.lineno, node.col_offset), char_at(node.end_lineno, node.end_col_offset)


class _Finder(ast.NodeVisitor):
    """Lists the plausible single-point mutations of one module."""

    def __init__(self, path: Path, source: str) -> None:
        self.path = path
        self.source = source
        self.lines = source.splitlines(keepends=True)
        self.offsets = [0]
        for line in self.lines:
            self.offsets.append(self.offsets[-1] + len(line))
        self.mutants: list[Mutant] = []
        self.skipped_lines: set[int] = set()

    # helpers
    def _add(self, node: ast.AST, replacement: str, what: str) -> None:
        if "pragma: no mutate" in self.lines[node.lineno - 1]:
            self.skipped_lines.add(node.lineno)
            return
        start, end = _span(node, self.lines, self.offsets)
        mutant = Mutant(self.path, node.lineno, start, end, replacement, what, self.source)
        self.mutants.append(mutant)

    def _text(self, node: ast.AST) -> str:
        start, end = _span(node, self.lines, self.offsets)
        return self.source[start:end]

    # skipped subtrees
    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        return  # message text

    def visit_Assert(self, node: ast.Assert) -> None:
        return  # states a fact for the type checker; a mutant only weakens a check never false

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if isinstance(test, ast.Name) and test.id == "TYPE_CHECKING":
            return
        if not isinstance(test, (ast.UnaryOp, ast.Compare, ast.BoolOp)):
            # Comparisons, and/or and `not` have mutants of their own; a bare test gets negated.
            self._add(test, f"not ({self._text(test)})", "condition negated")
        self.generic_visit(node)

    def visit_Expr(self, node: ast.Expr) -> None:
        value = node.value
        if isinstance(value, ast.Constant):
            return  # docstring
        if isinstance(value, ast.Call):
            func = value.func
            owner = func.value if isinstance(func, ast.Attribute) else None
            if isinstance(owner, ast.Name) and owner.id in _LOG_NAMES:
                return
            if isinstance(func, ast.Name) and func.id == "print":
                return
            self._add(node, "pass", f"call dropped: {self._text(func)}(...)")
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        if node.name in ("__repr__", "__str__"):
            return
        for stmt in node.body:
            self.visit(stmt)
        # decorators, annotations and argument defaults are declarations (tuning), not logic

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for stmt in node.body:
            if not isinstance(stmt, (ast.AnnAssign, ast.Assign)):
                self.visit(stmt)
        # decorators and field declarations run at import, outside any test: not mutated

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)

    def visit_Assign(self, node: ast.Assign) -> None:
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return
        self.generic_visit(node)

    # mutations
    def visit_Compare(self, node: ast.Compare) -> None:
        for index, op in enumerate(node.ops):
            swap = _COMPARE_SWAP.get(type(op))
            if swap is None:
                continue
            new = ast.Compare(
                left=node.left,
                ops=[swap() if i == index else o for i, o in enumerate(node.ops)],
                comparators=node.comparators,
            )
            self._add(node, ast.unparse(new), f"{type(op).__name__} -> {swap.__name__}")
        self.generic_visit(node)

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        other = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        new = ast.BoolOp(op=other, values=node.values)
        what = f"{type(node.op).__name__} -> {type(other).__name__}"
        self._add(node, f"({ast.unparse(new)})", what)
        self.generic_visit(node)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> None:
        if isinstance(node.op, ast.Not):
            self._add(node, f"({self._text(node.operand)})", "not dropped")
        self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        swap = _BINOP_SWAP.get(type(node.op))
        if swap is not None and not _is_string_format(node):
            new = ast.BinOp(left=node.left, op=swap(), right=node.right)
            self._add(node, f"({ast.unparse(new)})", f"{type(node.op).__name__} -> {swap.__name__}")
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        value = node.value
        if isinstance(value, bool):
            self._add(node, repr(not value), f"{value} -> {not value}")
        elif isinstance(value, int):
            self._add(node, repr(value + 1), f"{value} -> {value + 1}")

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Name) and func.id in ("min", "max"):
            other = "max" if func.id == "min" else "min"
            self._add(func, other, f"{func.id} -> {other}")
        self.generic_visit(node)

    def visit_Break(self, node: ast.Break) -> None:
        self._add(node, "continue", "break -> continue")

    def visit_Continue(self, node: ast.Continue) -> None:
        self._add(node, "break", "continue -> break")


#: Calls whose result is text: ``str(x)``, ``", ".join(...)``, ``name.strip()`` and the like.
_TEXT_FUNCTIONS = {"str", "repr", "format", "chr"}
_TEXT_METHODS = {"join", "format", "strip", "lstrip", "rstrip", "lower", "upper", "replace"}


def _is_text(node: ast.AST) -> bool:
    """Whether an expression is visibly text (or a sequence literal): its ``+`` concatenates."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, (str, bytes))
    if isinstance(node, (ast.JoinedStr, ast.Tuple, ast.List)):
        return True
    if isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Name):
            return func.id in _TEXT_FUNCTIONS
        return isinstance(func, ast.Attribute) and func.attr in _TEXT_METHODS
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mod)):
        return _is_text(node.left) or (isinstance(node.op, ast.Add) and _is_text(node.right))
    return False


def _is_string_format(node: ast.BinOp) -> bool:
    """``+`` or ``*`` on text or a sequence literal: swapping it for ``-`` or ``/`` is a
    TypeError at once, not a plausible bug (and ``%`` formatting is never swapped)."""
    if not isinstance(node.op, (ast.Add, ast.Mult)):
        return False
    return _is_text(node.left) or _is_text(node.right)


def find_mutants(path: Path, source: str) -> tuple[list[Mutant], int]:
    """The mutants of one module (its text ``source``), and how many lines opted out with
    ``pragma: no mutate``."""
    finder = _Finder(path, source)
    finder.visit(ast.parse(source))
    return finder.mutants, len(finder.skipped_lines)


def target_files(groups: Sequence[str]) -> dict[str, list[Path]]:
    return {
        group: sorted(p for pattern in TARGETS[group] for p in PACKAGE.glob(pattern))
        for group in groups
    }


# -- a private snapshot of the checkout ----------------------------------------------------------


def make_snapshot(dest: Path, sources: dict[Path, str]) -> None:
    """Copy the checkout to ``dest`` with the target modules' listing-time text: the coverage
    pass and every mutant run see the code the mutants were listed from."""
    ignore = shutil.ignore_patterns(
        ".git", ".venv*", "__pycache__", "*.egg-info", "_deps", ".pytest_cache", ".hypothesis"
    )
    shutil.copytree(ROOT, dest, ignore=ignore)
    for path, text in sources.items():
        (dest / path.relative_to(ROOT)).write_text(text, encoding="utf-8")


def _env(copy: Path, *extra: Path) -> dict[str, str]:
    """The environment of a run in ``copy``: its own package first on the path (an editable
    install of another checkout must not win)."""
    path = os.pathsep.join(str(p) for p in (*extra, copy / "plugin"))
    return dict(os.environ, PYTHONPATH=path, PYTHONDONTWRITEBYTECODE="1")


def check_imports_from(copy: Path, python: str) -> None:
    """Refuse to run when ``comfy_cluster`` in ``copy`` would be imported from elsewhere."""
    code = "import comfy_cluster, sys; sys.stdout.write(comfy_cluster.__file__)"
    proc = subprocess.run(
        [python, "-c", code], cwd=copy, env=_env(copy), capture_output=True, text=True
    )
    where = Path(proc.stdout.strip() or "?").resolve()
    if copy.resolve() not in where.parents:
        raise SystemExit(f"comfy_cluster imports from {where}, not from the copy {copy}")


# -- which tests run which line, and how long each takes ----------------------------------------

_PLUGIN_SOURCE = """
import json
import os

import coverage
import pytest

_durations = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    cov = coverage.Coverage.current()
    if cov is not None:
        cov.switch_context(item.nodeid)
    yield
    if cov is not None:
        cov.switch_context("")


_failed = set()


def pytest_runtest_logreport(report):
    _durations[report.nodeid] = _durations.get(report.nodeid, 0.0) + report.duration
    if report.failed:
        _failed.add(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    with open(os.environ["MUTATE_DURATIONS"], "w") as out:
        json.dump({"durations": _durations, "failed": sorted(_failed)}, out)
"""


@dataclass
class CoverageMap:
    """Which tests run each line (``lines[relative path][line]``) and how long each test takes."""

    lines: dict[str, dict[int, list[str]]]
    durations: dict[str, float]

    def fastest_first(self, tests: set[str]) -> list[str]:
        """Quick tests first: with ``-x`` the run stops at the first failure."""
        return sorted(tests, key=lambda t: (self.durations.get(t, float("inf")), t))


def _digest(*texts: bytes) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(hashlib.sha256(text).digest())
    return digest.hexdigest()


def fingerprints(sources: dict[Path, str]) -> tuple[str, dict[str, str]]:
    """What the coverage map depends on: the target modules and the test helpers (one key),
    and each ``test_*.py`` file (its own key, so a changed test file is re-measured alone)."""
    test_files: dict[str, str] = {}
    shared: list[bytes] = []
    for path in sorted(sources):
        # The code with its line numbers, not the comments: a new ``pragma: no mutate`` keeps
        # the coverage map.
        code = ast.dump(ast.parse(sources[path]), include_attributes=True)
        shared += [str(path.relative_to(ROOT)).encode(), code.encode()]
    for path in sorted((ROOT / "tests").rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts:
            continue
        name = str(path.relative_to(ROOT))
        if path.parent == ROOT / "tests" and path.name.startswith("test_") and path.suffix == ".py":
            test_files[name] = _digest(path.read_bytes())
        else:
            shared += [name.encode(), path.read_bytes()]
    return _digest(*shared), test_files


def split_files(
    files: Sequence[str], weight: Callable[[str], float], parts: int
) -> list[list[str]]:
    """``files`` in up to ``parts`` groups of about equal total ``weight`` (heaviest first,
    each into the lightest group): the coverage pass runs one pytest per group at once."""
    groups: list[list[str]] = [[] for _ in range(max(1, min(parts, len(files))))]
    totals = [0.0] * len(groups)
    for name in sorted(files, key=lambda f: (-weight(f), f)):
        lightest = totals.index(min(totals))
        groups[lightest].append(name)
        totals[lightest] += weight(name)
    return [sorted(group) for group in groups]


def collect_coverage(
    snapshot: Path, workdir: Path, python: str, tests: Sequence[str] = (), parts: int = 1
) -> CoverageMap:
    """Run the suite (or only ``tests``) in ``snapshot`` under coverage, one context per test:
    the test files split in ``parts`` groups (by size), each group's pytest run at once."""
    plugin_dir = workdir / "_mutate_plugin"
    plugin_dir.mkdir(exist_ok=True)
    (plugin_dir / "mutate_contexts.py").write_text(_PLUGIN_SOURCE)
    files = list(tests) or sorted(
        str(p.relative_to(snapshot)) for p in (snapshot / "tests").glob("test_*.py")
    )
    groups = split_files(files, lambda f: (snapshot / f).stat().st_size, parts)
    what = f"{len(tests)} changed test files" if tests else "the suite"
    print(f"collecting per-test coverage ({what}, {len(groups)} at once)...", flush=True)
    runs = [
        _start_coverage(snapshot, workdir / f"part{n}", plugin_dir, python, group)
        for n, group in enumerate(groups)
    ]
    test_map = CoverageMap({}, {})
    for run in runs:
        test_map = _merge(test_map, _finish_coverage(snapshot, *run), set())
    if not test_map.lines:
        raise SystemExit(f"coverage measured nothing under {snapshot}: wrong PYTHONPATH?")
    return test_map


def _start_coverage(
    snapshot: Path, workdir: Path, plugin_dir: Path, python: str, tests: Sequence[str]
) -> tuple[subprocess.Popen, Path, Path]:
    """One pytest under coverage over ``tests``, started (its data files in ``workdir``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    rc = workdir / "coveragerc"
    data = workdir / ".coverage"
    data.unlink(missing_ok=True)
    package = snapshot / "plugin" / "comfy_cluster"
    rc.write_text(
        f"[run]\nsource = {package}\nconcurrency = thread\ndata_file = {data}\nbranch = false\n"
    )
    durations_file = workdir / "durations.json"
    env = dict(_env(snapshot, plugin_dir), MUTATE_DURATIONS=str(durations_file))
    cmd = [python, "-m", "coverage", "run", f"--rcfile={rc}", "-m", "pytest", "-q"]
    cmd += ["-p", "no:cacheprovider", "-p", "mutate_contexts", *tests]
    out = (workdir / "pytest.log").open("w")
    proc = subprocess.Popen(cmd, cwd=snapshot, env=env, stdout=out, stderr=subprocess.STDOUT)
    out.close()
    return proc, data, durations_file


def _finish_coverage(
    snapshot: Path, proc: subprocess.Popen, data: Path, durations_file: Path
) -> CoverageMap:
    """Wait for one coverage run; read which tests ran each line and how long each took."""
    code = proc.wait()
    if code not in (0, 1) or not durations_file.exists():
        sys.stderr.write((data.parent / "pytest.log").read_text()[-6000:])
        raise SystemExit(f"the test suite did not run (pytest exit {code})")
    outcome = json.loads(durations_file.read_text())
    failed = set(outcome["failed"])
    if failed:
        # A test that fails without a mutant cannot tell a mutant apart: it kills nothing.
        names = "\n  ".join(sorted(failed))
        print(f"WARNING: {len(failed)} test(s) failed without a mutant, left out:\n  {names}")
    import coverage  # the tool's own dependency; the plugin never needs it

    cov_data = coverage.CoverageData(basename=str(data))
    cov_data.read()
    lines: dict[str, dict[int, list[str]]] = {}
    for filename in cov_data.measured_files():
        measured = Path(filename).resolve()
        if snapshot.resolve() not in measured.parents:
            continue  # another copy of the package: not what the mutants change
        by_line = cov_data.contexts_by_lineno(filename)
        lines[str(measured.relative_to(snapshot.resolve()))] = {
            line: sorted(c for c in contexts if c and c not in failed)
            for line, contexts in by_line.items()
        }
    durations = {t: d for t, d in outcome["durations"].items() if t not in failed}
    return CoverageMap(lines, durations)


def _merge(old: CoverageMap, new: CoverageMap, replaced: set[str]) -> CoverageMap:
    """``old`` without the tests of the ``replaced`` files, plus ``new``."""

    def kept(test: str) -> bool:
        return test.split("::", 1)[0] not in replaced

    lines: dict[str, dict[int, list[str]]] = {}
    for name in set(old.lines) | set(new.lines):
        by_line: dict[int, set[str]] = {}
        for line, tests in old.lines.get(name, {}).items():
            by_line.setdefault(line, set()).update(t for t in tests if kept(t))
        for line, tests in new.lines.get(name, {}).items():
            by_line.setdefault(line, set()).update(tests)
        lines[name] = {line: sorted(tests) for line, tests in by_line.items()}
    durations = {t: d for t, d in old.durations.items() if kept(t)}
    durations.update(new.durations)
    return CoverageMap(lines, durations)


def load_or_collect(
    cache: Optional[Path],
    sources: dict[Path, str],
    snapshot: Path,
    workdir: Path,
    python: str,
    parts: int = 1,
) -> CoverageMap:
    """The coverage map from ``cache`` when made from the same modules and helpers; test files
    changed since are measured again (alone) and merged in."""
    key, test_files = fingerprints(sources)
    saved = json.loads(cache.read_text()) if cache is not None and cache.exists() else {}
    if saved.get("key") == key:
        lines = {
            f: {int(n): tests for n, tests in by_line.items()}
            for f, by_line in saved["lines"].items()
        }
        test_map = CoverageMap(lines, saved["durations"])
        old_files: dict[str, str] = saved["tests"]
        changed = {
            f for f in set(old_files) | set(test_files) if old_files.get(f) != test_files.get(f)
        }
        present = sorted(f for f in changed if f in test_files)
        print(f"coverage reused from {cache}; {len(changed)} test files changed", flush=True)
        if present:
            test_map = _merge(
                test_map, collect_coverage(snapshot, workdir, python, present, parts), changed
            )
        elif changed:
            test_map = _merge(test_map, CoverageMap({}, {}), changed)
    else:
        test_map = collect_coverage(snapshot, workdir, python, parts=parts)
    if cache is not None:
        row = {
            "key": key,
            "tests": test_files,
            "lines": test_map.lines,
            "durations": test_map.durations,
        }
        partial = cache.with_name(cache.name + ".partial")
        partial.write_text(json.dumps(row))
        os.replace(partial, cache)  # a reader never sees half a file
    return test_map


# -- running mutants -----------------------------------------------------------------------------


def _node_lines(mutant: Mutant) -> range:
    end_line = mutant.line + mutant.text.count("\n")
    original = mutant.source[mutant.start : mutant.end]
    return range(mutant.line, max(end_line, mutant.line + original.count("\n")) + 1)


def tests_for(mutant: Mutant, test_map: CoverageMap) -> list[str]:
    lines = test_map.lines.get(str(mutant.relpath), {})
    tests: set[str] = set()
    imported_only = False
    for line in _node_lines(mutant):
        tests.update(lines.get(line, ()))
        imported_only |= line in lines
    if not tests and imported_only:
        # A module-level line runs at import, before any test: every test of the module counts.
        tests = {test for contexts in lines.values() for test in contexts}
    return test_map.fastest_first(tests)


#: pytest's exit codes: 1 tests failed, 2 interrupted (a collection error among them), 3 internal
#: error, 4 usage error (a test id not found, a conftest that does not import), 5 no tests ran.
_FAILED = 1
_CANNOT_TELL = (2, 3, 4, 5)


def verdict_for_code(mutant: Mutant, code: int, clean_code: Callable[[], int]) -> Verdict:
    """What pytest's exit ``code`` says about the mutant. A failing test kills it; 2-5 kill it
    only when the same tests collect cleanly without the mutant (``clean_code()``): then the
    mutant broke collection or import. When they do not, the tool is at fault (a stale test id,
    say) and the mutant is *not* counted as killed."""
    if code == 0:
        return Verdict(mutant, False, "survived")
    if code == _FAILED:
        return Verdict(mutant, True, "failed")
    if code in _CANNOT_TELL:
        clean = clean_code()
        if clean == 0:
            return Verdict(mutant, True, f"breaks collection (exit {code})")
        return Verdict(mutant, False, f"tool error: pytest exit {code}, {clean} without mutant")
    return Verdict(mutant, True, f"crashed (exit {code})")


#: Plugins a mutant's run does without. Hypothesis's pytest plugin costs about a second at every
#: start-up on our machines (more than most mutants' tests); ``@given`` tests run without it.
_SKIPPED_PLUGINS = ("no:cacheprovider", "no:hypothesispytest")


def _pytest_args(tests: list[str], *extra: str) -> list[str]:
    plugins = [arg for name in _SKIPPED_PLUGINS for arg in ("-p", name)]
    return ["-x", "-q", *plugins, *extra, *tests]


def _pytest(python: str, tests: list[str], *extra: str) -> list[str]:
    return [python, "-m", "pytest", *_pytest_args(tests, *extra)]


class PytestRunner:
    """Runs pytest in one copy of the snapshot: each run in a forked child of a warm process
    (``warm_pytest.py``: the interpreter, pytest and our third-party imports paid once), or with
    ``warm=False`` in a fresh interpreter. Either way our code is imported afresh each run.
    One thread at a time (each worker copy has its own)."""

    def __init__(self, copy: Path, python: str, *, warm: bool = True) -> None:
        self.copy = copy
        self.python = python
        self._out = copy / ".mutate-pytest.out"
        self._server: Optional[subprocess.Popen] = None
        if warm:
            self._server = subprocess.Popen(
                [python, str(Path(__file__).with_name("warm_pytest.py"))],
                cwd=copy,
                env=_env(copy),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )

    def __call__(self, args: list[str], timeout: float) -> tuple[Optional[int], str]:
        """pytest's exit code (None: out of time, killed) and its output."""
        if self._server is None:
            try:
                proc = subprocess.run(
                    [self.python, "-m", "pytest", *args],
                    cwd=self.copy,
                    env=_env(self.copy),
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                )
            except subprocess.TimeoutExpired:
                return None, ""
            return proc.returncode, proc.stdout
        assert self._server.stdin is not None and self._server.stdout is not None
        self._out.unlink(missing_ok=True)  # never an earlier run's output for this one's
        request = {"args": args, "out": str(self._out), "timeout": timeout}
        self._server.stdin.write(json.dumps(request) + "\n")
        self._server.stdin.flush()
        reply = self._server.stdout.readline()
        if not reply:
            raise SystemExit(f"the warm pytest of {self.copy} died")
        output = self._out.read_text(errors="replace") if self._out.exists() else ""
        return json.loads(reply)["code"], output

    def close(self) -> None:
        if self._server is not None and self._server.stdin is not None:
            self._server.stdin.close()
            self._server.wait(10)


def first_failure(output: str) -> str:
    """The test id pytest's short summary names first (``FAILED id - why``), or ``""``."""
    for line in output.splitlines():
        for mark in ("FAILED ", "ERROR "):
            if line.startswith(mark):
                return line[len(mark) :].split(" - ", 1)[0].strip()
    return ""


def test_timeout(tests: list[str], durations: dict[str, float]) -> float:
    """Seconds one test may take before it counts as hung: three times the slowest of
    ``tests`` as measured under coverage (itself slower than a plain run), at least 15 s and
    at most 60 s. A mutant that hangs a 2 s test is killed in 15 s, not 60."""
    slowest = max((durations.get(t, 20.0) for t in tests), default=20.0)
    return min(60.0, max(15.0, 3 * slowest))


def run_timeout(tests: list[str], durations: dict[str, float]) -> float:
    """Seconds a mutant's whole run may take: a minute of start-up and slack plus three times
    its tests' measured time, at most five minutes. A mutant that hangs outside any test (at
    the interpreter's exit, say) costs that, not always five minutes."""
    return min(300.0, 60.0 + 3 * sum(durations.get(t, 20.0) for t in tests))


def run_mutant(
    mutant: Mutant,
    tests: list[str],
    runner: PytestRunner,
    timeout: float,
    per_test: float = 60.0,
) -> Verdict:
    if not tests:
        return Verdict(mutant, False, "no test runs this line")
    target = runner.copy / mutant.relpath
    target.write_text(mutant.planted(), "utf-8")
    started = time.monotonic()
    try:
        code, output = runner(_pytest_args(tests, "--timeout", f"{per_test:g}"), timeout)
    finally:
        target.write_text(mutant.source, "utf-8")
    seconds = time.monotonic() - started
    if code is None:
        return Verdict(mutant, True, "timeout", seconds)

    def clean_code() -> int:
        cmd = _pytest(runner.python, tests, "--collect-only")
        env = _env(runner.copy)
        return subprocess.run(cmd, cwd=runner.copy, env=env, capture_output=True).returncode

    verdict = verdict_for_code(mutant, code, clean_code)
    killer = first_failure(output) if code == _FAILED else ""
    return replace(verdict, seconds=seconds, killer=killer)


class TestOrder:
    """The order of a mutant's tests, learnt from the mutants already run in its module.

    With ``-x`` a mutant costs its tests up to the first that fails, so the tests run in
    order of expected cost per kill: duration / chance of failing. The chance is estimated per
    module as (kills + 1) / (runs + 20): a test nobody ran yet starts at 1 in 20 (so, with no
    history, this is fastest first), one that keeps killing its module's mutants moves up, one
    that passed many of them moves down. Survivors still run every test: only the time to a
    kill changes, never a verdict. Any thread.
    """

    __test__ = False  # not a pytest test class, whatever its name

    PRIOR_RUNS = 20

    def __init__(self, durations: dict[str, float]) -> None:
        self.durations = durations
        self._lock = threading.Lock()
        self._runs: dict[tuple[str, str], int] = {}
        self._kills: dict[tuple[str, str], int] = {}

    def order(self, module: str, tests: list[str]) -> list[str]:
        with self._lock:
            return sorted(tests, key=lambda t: (self._cost(module, t), t))

    def _cost(self, module: str, test: str) -> float:
        chance = (self._kills.get((module, test), 0) + 1) / (
            self._runs.get((module, test), 0) + self.PRIOR_RUNS
        )
        return self.durations.get(test, float("inf")) / chance

    def record(self, module: str, tests: list[str], killer: str) -> None:
        """``tests`` ran in this order; ``killer`` failed (``""``: all of them passed)."""
        ran = tests[: tests.index(killer) + 1] if killer in tests else tests
        with self._lock:
            for test in ran:
                self._runs[(module, test)] = self._runs.get((module, test), 0) + 1
            if killer in tests:
                self._kills[(module, killer)] = self._kills.get((module, killer), 0) + 1


def run_all(
    mutants: list[Mutant],
    test_map: CoverageMap,
    snapshot: Path,
    jobs: int,
    python: str,
    warm: bool = True,
) -> Iterator[Verdict]:
    copies = [snapshot.parent / f"w{i}" for i in range(jobs)]
    for copy in copies:
        shutil.copytree(snapshot, copy)
    check_imports_from(copies[0], python)
    runners = [PytestRunner(copy, python, warm=warm) for copy in copies]
    free = list(runners)

    learnt = TestOrder(test_map.durations)

    def work(mutant: Mutant) -> Verdict:
        module = str(mutant.relpath)
        tests = learnt.order(module, tests_for(mutant, test_map))
        runner = free.pop()
        try:
            per_test = test_timeout(tests, test_map.durations)
            timeout = run_timeout(tests, test_map.durations)
            verdict = run_mutant(mutant, tests, runner, timeout=timeout, per_test=per_test)
        finally:
            free.append(runner)
        # Only a clear answer teaches the order (not a time-out, a crash or an unnamed failure).
        if verdict.why == "survived" or verdict.killer in tests:
            learnt.record(module, tests, verdict.killer)
        return verdict

    try:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            yield from pool.map(work, mutants)
    finally:
        for runner in runners:
            runner.close()


# -- report --------------------------------------------------------------------------------------


def _write_json(path: Path, verdicts: list[Verdict]) -> None:
    rows = [
        {
            "where": v.mutant.where,
            "what": v.mutant.what,
            "killed": v.killed,
            "why": v.why,
            "seconds": round(v.seconds, 2),
            "killer": v.killer,
        }
        for v in verdicts
    ]
    path.write_text(json.dumps(rows, indent=1))


def _table(verdicts: list[Verdict], opted_out: dict[Path, int], min_score: float) -> int:
    """Print the score per module; returns how many score under ``min_score``."""
    failing = 0
    print("\nmodule                                   killed/total  score  opted-out lines")
    for path in sorted({v.mutant.path for v in verdicts}):
        mine = [v for v in verdicts if v.mutant.path == path]
        killed = sum(v.killed for v in mine)
        score = killed / len(mine)
        failing += score < min_score
        name = str(path.relative_to(PACKAGE))
        print(f"{name:40} {killed:6}/{len(mine):<6} {score:6.1%}  {opted_out.get(path, 0)}")
    return failing


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=sorted(TARGETS), help="a group")
    parser.add_argument(
        "--file", action="append", help="only files whose path contains this text (repeatable)"
    )
    parser.add_argument("-j", "--jobs", type=int, default=2, help="parallel workers (default 2)")
    parser.add_argument("--list", action="store_true", help="list the mutants and stop")
    parser.add_argument(
        "--cold",
        dest="warm",
        action="store_false",
        help="start a fresh interpreter for every mutant (default: fork a warm one, POSIX)",
    )
    parser.add_argument("--min-score", type=float, default=0.90, help="default 0.90")
    parser.add_argument("--json", help="also write every verdict to this file (as they come)")
    parser.add_argument(
        "--coverage-cache",
        help="keep the per-test coverage in this file and reuse it while the target modules "
        "and the tests are unchanged",
    )
    parser.add_argument(
        "--again",
        help="only the mutants that survived in this --json file of an earlier run (same "
        "place and change), to check the tests added since",
    )
    args = parser.parse_args(argv)

    groups = args.only or sorted(TARGETS)
    sources: dict[Path, str] = {
        path: path.read_text(encoding="utf-8")
        for group_files in target_files(sorted(TARGETS)).values()
        for path in group_files
    }
    mutants: list[Mutant] = []
    opted_out: dict[Path, int] = {}
    for group_files in target_files(groups).values():
        for path in group_files:
            if args.file and not any(text in str(path) for text in args.file):
                continue
            found, skipped = find_mutants(path, sources[path])
            mutants.extend(found)
            opted_out[path] = skipped
    if args.again:
        earlier = json.loads(Path(args.again).read_text())
        wanted = {(row["where"], row["what"]) for row in earlier if not row["killed"]}
        mutants = [m for m in mutants if (m.where, m.what) in wanted]
    if args.list:
        for m in mutants:
            print(f"{m.where}: {m.what}: {m.text[:60]!r}")
        print(f"{len(mutants)} mutants")
        return 0

    began = time.monotonic()
    cache = Path(args.coverage_cache).resolve() if args.coverage_cache else None
    verdicts: list[Verdict] = []
    with tempfile.TemporaryDirectory(prefix="mutate-") as tmp:
        snapshot = Path(tmp) / "snapshot"
        make_snapshot(snapshot, sources)
        test_map = load_or_collect(
            cache, sources, snapshot, Path(tmp), sys.executable, parts=args.jobs
        )
        print(f"coverage ready in {time.monotonic() - began:.0f} s; {len(mutants)} mutants")
        for done, verdict in enumerate(
            run_all(mutants, test_map, snapshot, args.jobs, sys.executable, args.warm), 1
        ):
            verdicts.append(verdict)
            if not verdict.killed:
                print(f"SURVIVED {verdict.mutant.where}: {verdict.mutant.what} ({verdict.why})")
            if args.json:
                _write_json(Path(args.json), verdicts)
            if done % 25 == 0:
                print(f"... {done}/{len(mutants)} in {time.monotonic() - began:.0f} s", flush=True)

    failing = _table(verdicts, opted_out, args.min_score)
    total_killed = sum(v.killed for v in verdicts)
    print(
        f"ALL {total_killed}/{len(verdicts)} = {total_killed / max(1, len(verdicts)):.1%} "
        f"in {time.monotonic() - began:.0f} s"
    )
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
