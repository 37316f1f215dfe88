"""Mutation testing for the modules that keep frames safe: plant one plausible bug, run its tests.

Why our own script rather than a general tool: our engine is threads and sockets, so each mutant
must run in a fresh interpreter, in a copy of the checkout, with only the tests that reach the
mutated line. That is three small steps:

1. ``coverage`` runs the whole suite once with one context per test (the pytest node id), so we
   know which tests execute each line of the target modules.
2. Each target module is parsed; every *plausible* single-point bug is listed (a flipped
   comparison, ``and``/``or`` swapped, a condition negated, a dropped call statement, an integer
   off by one, ``True``/``False`` swapped, ``+``/``-`` swapped, ``min``/``max`` swapped, ``break``
   /``continue`` swapped). Log calls, docstrings, f-string text and ``TYPE_CHECKING`` blocks are
   left alone; a line may opt out with ``# pragma: no mutate`` (for a mutant that cannot change
   behaviour), which the report counts.
3. Each mutant is written into a private copy of the checkout and its covering tests run with
   ``pytest -x``; a failure or a time-out kills it. A mutant on a line no test runs survives.

Usage (from the checkout, in a venv with the test extras and ``coverage``)::

    python tools/mutate.py                      # every target, 2 workers
    python tools/mutate.py --only engine -j 2   # one group
    python tools/mutate.py --list               # the mutants, without running them

It prints one line per surviving mutant (file:line, what changed) and a score per module, and
exits 1 when any module scores under ``--min-score`` (default 0.90).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

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

_PLUGIN_SOURCE = """
import coverage
import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    cov = coverage.Coverage.current()
    if cov is not None:
        cov.switch_context(item.nodeid)
    yield
    if cov is not None:
        cov.switch_context("")
"""

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

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


@dataclass(frozen=True)
class Verdict:
    mutant: Mutant
    killed: bool
    why: str  # "failed", "timeout", "no test runs this line", "survived"


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
        self.mutants.append(Mutant(self.path, node.lineno, start, end, replacement, what))

    def _text(self, node: ast.AST) -> str:
        start, end = _span(node, self.lines, self.offsets)
        return self.source[start:end]

    # skipped subtrees
    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        return  # message text

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


def _is_string_format(node: ast.BinOp) -> bool:
    return isinstance(node.left, (ast.Constant, ast.JoinedStr)) and isinstance(
        getattr(node.left, "value", None), str
    )


def find_mutants(path: Path) -> tuple[list[Mutant], int]:
    """The mutants of one module, and how many lines opted out with ``pragma: no mutate``."""
    source = path.read_text(encoding="utf-8")
    finder = _Finder(path, source)
    finder.visit(ast.parse(source))
    return finder.mutants, len(finder.skipped_lines)


def target_files(groups: Sequence[str]) -> dict[str, list[Path]]:
    return {
        group: sorted(p for pattern in TARGETS[group] for p in PACKAGE.glob(pattern))
        for group in groups
    }


# -- which tests run which line ------------------------------------------------------------------


def collect_coverage(workdir: Path, python: str) -> dict[str, dict[int, list[str]]]:
    """Run the suite once under coverage; map file -> line -> node ids of tests that run it."""
    plugin_dir = workdir / "_mutate_plugin"
    plugin_dir.mkdir(exist_ok=True)
    (plugin_dir / "mutate_contexts.py").write_text(_PLUGIN_SOURCE)
    rc = workdir / "coveragerc"
    data = workdir / ".coverage"
    rc.write_text(
        f"[run]\nsource = {PACKAGE}\nconcurrency = thread\ndata_file = {data}\nbranch = false\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(plugin_dir), str(ROOT / "plugin")]))
    cmd = [python, "-m", "coverage", "run", f"--rcfile={rc}", "-m", "pytest", "-q", "-x"]
    cmd += ["-p", "no:cacheprovider", "-p", "mutate_contexts"]
    print("collecting per-test coverage (one run of the suite)...", flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit("the test suite fails before any mutation: fix it first")
    import coverage  # the tool's own dependency; the plugin never needs it

    cov_data = coverage.CoverageData(basename=str(data))
    cov_data.read()
    result: dict[str, dict[int, list[str]]] = {}
    for filename in cov_data.measured_files():
        by_line = cov_data.contexts_by_lineno(filename)
        result[str(Path(filename).resolve())] = {
            line: sorted(c for c in contexts if c) for line, contexts in by_line.items()
        }
    return result


# -- running mutants -----------------------------------------------------------------------------


def _copy_checkout(dest: Path) -> None:
    ignore = shutil.ignore_patterns(
        ".git", ".venv*", "__pycache__", "*.egg-info", "_deps", ".pytest_cache", ".hypothesis"
    )
    shutil.copytree(ROOT, dest, ignore=ignore)


def _node_lines(mutant: Mutant) -> range:
    end_line = mutant.line + mutant.text.count("\n")
    original = mutant.path.read_text(encoding="utf-8")[mutant.start : mutant.end]
    return range(mutant.line, max(end_line, mutant.line + original.count("\n")) + 1)


def tests_for(mutant: Mutant, coverage_map: dict[str, dict[int, list[str]]]) -> list[str]:
    lines = coverage_map.get(str(mutant.path.resolve()), {})
    tests: set[str] = set()
    imported_only = False
    for line in _node_lines(mutant):
        tests.update(lines.get(line, ()))
        imported_only |= line in lines
    if not tests and imported_only:
        # A module-level line runs at import, before any test: every test of the module counts.
        tests = {test for contexts in lines.values() for test in contexts}
    return sorted(tests)


def run_mutant(
    mutant: Mutant, tests: list[str], copy: Path, python: str, timeout: float
) -> Verdict:
    if not tests:
        return Verdict(mutant, False, "no test runs this line")
    target = copy / mutant.path.relative_to(ROOT)
    original = mutant.path.read_text(encoding="utf-8")
    target.write_text(original[: mutant.start] + mutant.text + original[mutant.end :], "utf-8")
    env = dict(os.environ, PYTHONPATH=str(copy / "plugin"), PYTHONDONTWRITEBYTECODE="1")
    cmd = [python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--timeout", "60"]
    try:
        proc = subprocess.run(
            cmd + tests, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout
        )
        code = proc.returncode
    except subprocess.TimeoutExpired:
        return Verdict(mutant, True, "timeout")
    finally:
        target.write_text(original, "utf-8")
    if code in (1, 2, 3):
        return Verdict(mutant, True, "failed")
    if code == 5:
        return Verdict(mutant, False, "no tests collected (stale coverage?)")
    return Verdict(mutant, False, "survived")


def run_all(
    mutants: list[Mutant], coverage_map: dict[str, dict[int, list[str]]], jobs: int, python: str
) -> Iterator[Verdict]:
    with tempfile.TemporaryDirectory(prefix="mutate-") as tmp:
        copies = [Path(tmp) / f"w{i}" for i in range(jobs)]
        for copy in copies:
            _copy_checkout(copy)
        free = list(copies)

        def work(mutant: Mutant) -> Verdict:
            copy = free.pop()
            try:
                tests = tests_for(mutant, coverage_map)
                return run_mutant(mutant, tests, copy, python, timeout=300)
            finally:
                free.append(copy)

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            yield from pool.map(work, mutants)


# -- report --------------------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=sorted(TARGETS), help="a group")
    parser.add_argument("--file", help="only mutants in files whose path contains this text")
    parser.add_argument("-j", "--jobs", type=int, default=2, help="parallel workers (default 2)")
    parser.add_argument("--list", action="store_true", help="list the mutants and stop")
    parser.add_argument("--min-score", type=float, default=0.90, help="default 0.90")
    parser.add_argument("--json", help="also write every verdict to this file")
    args = parser.parse_args(argv)

    groups = args.only or sorted(TARGETS)
    files = target_files(groups)
    mutants: list[Mutant] = []
    opted_out: dict[Path, int] = {}
    for group_files in files.values():
        for path in group_files:
            if args.file and args.file not in str(path):
                continue
            found, skipped = find_mutants(path)
            mutants.extend(found)
            opted_out[path] = skipped
    if args.list:
        for m in mutants:
            print(f"{m.where}: {m.what}: {m.text[:60]!r}")
        print(f"{len(mutants)} mutants")
        return 0

    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mutate-cov-") as tmp:
        coverage_map = collect_coverage(Path(tmp), sys.executable)
    print(f"coverage collected in {time.monotonic() - began:.0f} s; {len(mutants)} mutants")
    verdicts: list[Verdict] = []
    for done, verdict in enumerate(run_all(mutants, coverage_map, args.jobs, sys.executable), 1):
        verdicts.append(verdict)
        if not verdict.killed:
            print(f"SURVIVED {verdict.mutant.where}: {verdict.mutant.what} ({verdict.why})")
        if done % 25 == 0:
            print(f"... {done}/{len(mutants)} in {time.monotonic() - began:.0f} s", flush=True)

    failing = 0
    print("\nmodule                                   killed/total  score  opted-out lines")
    for path in sorted({v.mutant.path for v in verdicts}):
        mine = [v for v in verdicts if v.mutant.path == path]
        killed = sum(v.killed for v in mine)
        score = killed / len(mine)
        failing += score < args.min_score
        name = str(path.relative_to(PACKAGE))
        print(f"{name:40} {killed:6}/{len(mine):<6} {score:6.1%}  {opted_out.get(path, 0)}")
    total_killed = sum(v.killed for v in verdicts)
    print(
        f"ALL {total_killed}/{len(verdicts)} = {total_killed / max(1, len(verdicts)):.1%} "
        f"in {time.monotonic() - began:.0f} s"
    )
    if args.json:
        rows = [
            {"where": v.mutant.where, "what": v.mutant.what, "killed": v.killed, "why": v.why}
            for v in verdicts
        ]
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
