"""tools/mutate.py: the mutants it plants and how it reads pytest's answer.

A mutation score is only worth something when the tool lists plausible bugs, plants them in
the code it listed, and counts a mutant as killed only when a test caught it.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

TOOL = Path(__file__).resolve().parent.parent / "tools" / "mutate.py"


@pytest.fixture(scope="module")
def mutate() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutate_tool", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _mutants(mutate: ModuleType, source: str) -> list[str]:
    path = mutate.PACKAGE / "core" / "example.py"
    found, _ = mutate.find_mutants(path, source)
    return [m.planted() for m in found]


def test_text_concatenation_is_not_swapped_but_arithmetic_is(mutate: ModuleType) -> None:
    source = (
        "def f(name, n, parts):\n"
        "    a = 'x' + name\n"
        "    b = name + f'{n}'\n"
        "    c = ', '.join(parts) + name\n"
        "    d = str(n) + 'px'\n"
        "    e = parts + [n]\n"
        "    g = '-' * n\n"
        "    return n + 1\n"
    )
    planted = _mutants(mutate, source)
    swapped = [p for p in planted if " - " in p or " / " in p]
    assert swapped == [source.replace("return n + 1", "return (n - 1)")]


def test_an_assert_is_left_alone(mutate: ModuleType) -> None:
    """Our asserts narrow types for the checker: a mutant of one could only weaken a check
    that is never false, and would count as a survivor no test can kill."""
    source = "def f(a, b):\n    assert a is not None and b > 1\n    return a\n"
    assert _mutants(mutate, source) == []


def test_a_mutant_is_planted_in_the_text_it_was_listed_from(
    mutate: ModuleType, tmp_path: Path
) -> None:
    """Another run (or an editor) may change the live file meanwhile: the planted text and
    the restore after the run come from the listing, never from the live file."""
    listed = "def f(a):\n    return a < 2\n"
    found, _ = mutate.find_mutants(tmp_path / "m.py", listed)
    (tmp_path / "m.py").write_text("something else entirely\n")
    flipped = [m for m in found if m.what == "Lt -> LtE"]
    assert [m.planted() for m in flipped] == ["def f(a):\n    return a <= 2\n"]
    assert flipped[0].source == listed


@pytest.mark.parametrize(
    ("code", "clean", "killed"),
    [
        (0, 0, False),  # every test passed: survived
        (1, 0, True),  # a test failed
        (2, 0, True),  # collection error the mutant caused (clean tree collects)
        (4, 0, True),  # conftest import error the mutant caused
        (4, 4, False),  # a test id not found without the mutant too: the tool's fault
        (5, 5, False),  # no tests collected, mutant or not
    ],
)
def test_pytest_exit_codes(mutate: ModuleType, code: int, clean: int, killed: bool) -> None:
    mutant = mutate.Mutant(TOOL, 1, 0, 0, "", "what", "")
    verdict = mutate.verdict_for_code(mutant, code, lambda: clean)
    assert verdict.killed is killed, verdict.why


def test_fastest_tests_run_first_and_unknown_last(mutate: ModuleType) -> None:
    test_map = mutate.CoverageMap({}, {"t::slow": 9.0, "t::fast": 0.1, "t::mid": 1.0})
    tests = {"t::slow", "t::new", "t::fast", "t::mid"}
    assert test_map.fastest_first(tests) == ["t::fast", "t::mid", "t::slow", "t::new"]


def test_a_test_that_keeps_killing_a_modules_mutants_moves_up_there_only(
    mutate: ModuleType,
) -> None:
    """The learnt order: with no history it is fastest first; a slower test that killed the
    last mutants of a module while the others passed moves ahead of them in that module, as
    far as its time per kill allows, and does not reorder another module's tests."""
    order = mutate.TestOrder({"t::fast": 0.1, "t::mid": 1.0, "t::e2e": 3.0})
    tests = ["t::e2e", "t::mid", "t::fast"]
    assert order.order("a.py", tests) == ["t::fast", "t::mid", "t::e2e"]
    for _ in range(3):
        ran = order.order("a.py", tests)
        order.record("a.py", ran, "t::e2e")
    # Ahead of the 1 s test that kept passing; the 0.1 s one still costs little to try first.
    assert order.order("a.py", tests) == ["t::fast", "t::e2e", "t::mid"]
    assert order.order("b.py", tests) == ["t::fast", "t::mid", "t::e2e"]
    order.record("b.py", ["t::fast", "t::mid", "t::e2e"], "")  # a survivor ran them all
    assert order.order("b.py", tests) == ["t::fast", "t::mid", "t::e2e"]


def test_a_hung_test_is_given_three_times_its_measured_time_within_bounds(
    mutate: ModuleType,
) -> None:
    durations = {"t::unit": 0.1, "t::e2e": 8.0, "t::slowest": 40.0}
    assert mutate.test_timeout(["t::unit"], durations) == 15.0
    assert mutate.test_timeout(["t::unit", "t::e2e"], durations) == 24.0
    assert mutate.test_timeout(["t::slowest"], durations) == 60.0
    assert mutate.test_timeout(["t::unmeasured"], durations) == 60.0


def test_a_whole_run_is_given_a_minute_plus_three_times_its_tests(mutate: ModuleType) -> None:
    durations = {"t::unit": 1.0, "t::e2e": 9.0, "t::slowest": 100.0}
    assert mutate.run_timeout(["t::unit", "t::e2e"], durations) == 90.0
    assert mutate.run_timeout(["t::e2e", "t::slowest"], durations) == 300.0
    assert mutate.run_timeout(["t::unmeasured"], durations) == 120.0


def test_the_coverage_pass_splits_test_files_into_groups_of_about_equal_size(
    mutate: ModuleType,
) -> None:
    sizes = {"a": 90, "b": 50, "c": 40, "d": 10, "e": 5}
    groups = mutate.split_files(list(sizes), sizes.__getitem__, 2)
    assert sorted(sum(sizes[f] for f in g) for g in groups) == [95, 100]
    assert sorted(f for g in groups for f in g) == sorted(sizes)
    assert mutate.split_files(["a"], sizes.__getitem__, 2) == [["a"]]  # never an empty group


def test_the_first_failing_test_is_read_off_pytests_own_summary(
    mutate: ModuleType, tmp_path: Path
) -> None:
    (tmp_path / "test_x.py").write_text(
        "import pytest\n"
        "def test_ok():\n    pass\n"
        "@pytest.mark.parametrize('n', [1, 2])\n"
        "def test_bad(n):\n    assert n == 1, 'two - is not one'\n"
    )
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "test_x.py"]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True).stdout
    assert mutate.first_failure(out) == "test_x.py::test_bad[2]", out
    assert mutate.first_failure("1 passed in 0.01s\n") == ""


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its parent to reap it does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the warm runner forks")
@pytest.mark.parametrize("warm", [True, False])
def test_the_runner_gives_pytests_answer_and_kills_a_hung_run_with_its_children(
    mutate: ModuleType, tmp_path: Path, warm: bool
) -> None:
    """Each run imports the tests afresh (a changed file is seen), says pass or fail with
    pytest's output, and a run out of time is killed with every process it started."""
    test = tmp_path / "test_x.py"
    test.write_text("def test_it():\n    assert True\n")
    runner = mutate.PytestRunner(tmp_path, sys.executable, warm=warm)
    try:
        assert runner(mutate._pytest_args(["test_x.py"]), 60)[0] == 0
        test.write_text("def test_it():\n    assert False, 'planted'\n")
        code, output = runner(mutate._pytest_args(["test_x.py"]), 60)
        assert code == 1 and mutate.first_failure(output) == "test_x.py::test_it"
        pid_file = tmp_path / "child.pid"
        test.write_text(
            "import subprocess, time\n"
            "def test_it():\n"
            "    child = subprocess.Popen(['sleep', '60'])\n"
            f"    open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
            "    time.sleep(60)\n"
        )
        assert runner(mutate._pytest_args(["test_x.py"]), 3)[0] is None
    finally:
        runner.close()
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while warm and _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = _alive(child)
    if alive:
        os.kill(child, signal.SIGKILL)
    assert not (warm and alive)  # a cold run's time-out kills pytest only (subprocess.run)


def test_a_changed_test_file_replaces_its_own_tests_only(mutate: ModuleType) -> None:
    old = mutate.CoverageMap(
        {"m.py": {1: ["tests/test_a.py::x", "tests/test_b.py::y"], 2: ["tests/test_b.py::y"]}},
        {"tests/test_a.py::x": 1.0, "tests/test_b.py::y": 2.0},
    )
    new = mutate.CoverageMap({"m.py": {2: ["tests/test_b.py::z"]}}, {"tests/test_b.py::z": 0.5})
    merged = mutate._merge(old, new, {"tests/test_b.py"})
    assert merged.lines == {"m.py": {1: ["tests/test_a.py::x"], 2: ["tests/test_b.py::z"]}}
    assert merged.durations == {"tests/test_a.py::x": 1.0, "tests/test_b.py::z": 0.5}
