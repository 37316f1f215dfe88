"""plugin/install_deps.py, offline: the pip command per Nuke version, usage errors, the swap.

pip itself never runs here (``--dry-run``, or a stand-in for ``subprocess.call``); .ci/run does
the real installs and imports each set under its own Python.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "plugin" / "install_deps.py"
#: The whole dependency closure of requests + websocket-client + tenacity.
CLOSURE = {
    "requests",
    "urllib3",
    "charset-normalizer",
    "idna",
    "certifi",
    "websocket-client",
    "tenacity",
}


@pytest.fixture()
def install_deps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The script as a module, its plugin folder moved to ``tmp_path/plugin``."""
    spec = importlib.util.spec_from_file_location("install_deps", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "PLUGIN_DIR", tmp_path / "plugin")
    monkeypatch.setattr(module, "DEPS_DIR", tmp_path / "plugin" / "_deps")
    return module


def _option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:3])


@pytest.mark.parametrize(("nuke", "python"), [(14, "3.9"), (15, "3.10"), (16, "3.11")])
def test_pip_command_per_nuke_version(install_deps: Any, nuke: int, python: str) -> None:
    target = Path("/x/plugin/_deps/py39.partial")
    command = install_deps.pip_command(nuke, target, python="py")
    assert command[:4] == ["py", "-m", "pip", "install"]
    assert _option(command, "--target") == str(target)
    assert _option(command, "--python-version") == python
    assert "--only-binary=:all:" in command
    # Pure-Python wheels, so one folder serves Linux, macOS and Windows.
    assert _option(command, "--platform") == "any"
    assert _option(command, "--implementation") == "py"
    assert _option(command, "--abi") == "none"
    pins = dict(arg.split("==") for arg in command if "==" in arg)
    assert set(pins) == CLOSURE, "every package of the closure is pinned"
    assert pins == {name: versions[nuke] for name, versions in install_deps.PINS.items()}


def test_pins_cover_every_nuke_version(install_deps: Any) -> None:
    for versions in install_deps.PINS.values():
        assert set(versions) == set(install_deps.NUKE_PYTHON)


def test_nuke14_stays_on_the_last_releases_for_python39(install_deps: Any) -> None:
    # The first releases that need Python 3.10; a 3.9-blind index would hand them to Nuke 14.
    first_310 = {
        "requests": "2.33",
        "urllib3": "2.7",
        "websocket-client": "1.9.1",
        "tenacity": "9.1.3",
    }
    for name, version in first_310.items():
        assert _version(install_deps.PINS[name][14]) < _version(version), name


def test_folder_per_python(install_deps: Any) -> None:
    names = [install_deps.folder_name(p) for p in install_deps.NUKE_PYTHON.values()]
    assert names == ["py39", "py310", "py311"]


def _script(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the script as a user would, with no site-packages: it needs nothing but the stdlib."""
    return subprocess.run(
        [sys.executable, "-I", "-S", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(cwd),
    )


@pytest.mark.parametrize(("nuke", "folder"), [("14", "py39"), ("15.1v3", "py310"), ("16", "py311")])
def test_dry_run_prints_the_command_and_installs_nothing(
    tmp_path: Path, nuke: str, folder: str
) -> None:
    deps = ROOT / "plugin" / "_deps"
    before = sorted(deps.iterdir()) if deps.is_dir() else []
    proc = _script("--nuke", nuke, "--dry-run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    command, where = proc.stdout.splitlines()
    assert " -m pip install --target " in command
    assert f"{deps / folder}.partial" in command
    assert "--only-binary=:all:" in command
    assert where == f"would install into {deps / folder}"
    assert (sorted(deps.iterdir()) if deps.is_dir() else []) == before


@pytest.mark.parametrize("nuke", ["13", "17", "fifteen", ""])
def test_bad_nuke_version_exits_2(tmp_path: Path, nuke: str) -> None:
    proc = _script("--nuke", nuke, "--dry-run", cwd=tmp_path)
    assert proc.returncode == 2
    assert "is not supported; use 14 (Python 3.9), 15 (Python 3.10), 16 (Python 3.11)" in (
        proc.stderr
    )
    assert proc.stdout == ""


def test_missing_nuke_version_exits_2(tmp_path: Path) -> None:
    proc = _script(cwd=tmp_path)
    assert proc.returncode == 2
    assert "--nuke" in proc.stderr


class _FakePip:
    """Stands in for ``subprocess.call(pip)``: writes ``files`` into --target, exits ``code``."""

    def __init__(self, files: list[str], code: int = 0) -> None:
        self.files, self.code = files, code
        self.commands: list[list[str]] = []

    def __call__(self, command: list[str]) -> int:
        self.commands.append(command)
        target = Path(_option(command, "--target"))
        for name in self.files:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).write_text("")
        return self.code


def _previous_install(install_deps: Any) -> Path:
    final = install_deps.DEPS_DIR / "py39"
    (final / "requests-2.0.dist-info").mkdir(parents=True)
    return final


def test_install_replaces_the_folder_whole(
    install_deps: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    final = _previous_install(install_deps)
    pip = _FakePip(["requests/__init__.py", "requests-2.32.5.dist-info/METADATA", "bin/wsdump"])
    monkeypatch.setattr(install_deps.subprocess, "call", pip)
    assert install_deps.main(["--nuke", "14"]) == 0
    assert _option(pip.commands[0], "--target") == str(final) + ".partial"
    assert sorted(p.name for p in final.iterdir()) == ["requests", "requests-2.32.5.dist-info"]
    assert sorted(p.name for p in final.parent.iterdir()) == ["py39"], "no staging left behind"
    out = capsys.readouterr().out
    assert f"Installed into {final}" in out
    assert f"nuke.pluginAddPath({install_deps.PLUGIN_DIR.parent.as_posix()!r})" in out


@pytest.mark.parametrize(
    ("files", "code"),
    [(["requests/__init__.py"], 1), (["charset_normalizer/md.cpython-39-x86_64-linux-gnu.so"], 0)],
    ids=["pip-fails", "compiled-wheel"],
)
def test_a_failed_install_leaves_the_folder_as_it_was(
    install_deps: Any, monkeypatch: pytest.MonkeyPatch, files: list[str], code: int
) -> None:
    final = _previous_install(install_deps)
    monkeypatch.setattr(install_deps.subprocess, "call", _FakePip(files, code))
    assert install_deps.main(["--nuke", "14"]) == 1
    assert [p.name for p in final.iterdir()] == ["requests-2.0.dist-info"]
    assert sorted(p.name for p in final.parent.iterdir()) == ["py39"]
