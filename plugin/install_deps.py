#!/usr/bin/env python3
"""Install comfy_cluster's runtime dependencies for one Nuke version into ``plugin/_deps/pyXY``.

Why a script: Nuke runs its own Python (14: 3.9, 15: 3.10, 16: 3.11), usually without pip, and a
studio shares one checkout between Nuke versions and operating systems. So any Python 3.9+ runs
this, pip is asked for the wheels *of that Nuke's Python* (``--python-version``) and for
pure-Python wheels only (``--platform any``, ``--only-binary=:all:``), and each Nuke version gets
its own folder, which ``init.py`` appends to ``sys.path`` in the Python it matches.

Exact releases are pinned per Nuke version (``PINS``): pip cannot be trusted to honour
Requires-Python when cross-installing, because an index that omits it (a mirror, a find-links
folder) makes pip pick e.g. requests 2.34 and urllib3 2.8 for Python 3.9, which fail at import.
Every set in the table is installed and imported under its own Python by ``.ci/run``.

Usage::

    python install_deps.py --nuke 14|15|16 [--dry-run]

Standard library only: it runs before (and without) the dependencies it installs.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

#: Nuke major version -> the Python it embeds.
NUKE_PYTHON: dict[int, tuple[int, int]] = {14: (3, 9), 15: (3, 10), 16: (3, 11)}

#: The newest releases that declare support for, and import and work on, each Nuke's Python
#: (checked 2026-11 with .ci/run). To bump one: edit the table, run .ci/run. Why each differs:
#: - requests 2.33+, urllib3 2.7+, websocket-client 1.9.1+, tenacity 9.1.3+ require Python 3.10
#:   (urllib3 2.7 fails at import on 3.9 with ``X | Y`` annotations, tenacity 9.1.3 with
#:   ``typing.ParamSpec``), so Nuke 14 stays on the last 3.9 releases.
#: - charset-normalizer also ships compiled (mypyc) wheels per OS; ``--platform any`` makes pip
#:   take its ``py3-none-any`` wheel, so one folder serves Linux, macOS and Windows.
#: - idna and certifi have one release for all three.
# fmt: off
PINS: dict[str, dict[int, str]] = {
    # package             Nuke 14 (Python 3.9)    Nuke 15 (Python 3.10)   Nuke 16 (Python 3.11)
    "requests":           {14: "2.32.5",           15: "2.34.2",           16: "2.34.2"},
    "urllib3":            {14: "2.6.3",            15: "2.8.0",            16: "2.8.0"},
    "charset-normalizer": {14: "3.5.3",            15: "3.5.3",            16: "3.5.3"},
    "idna":               {14: "3.20",             15: "3.20",             16: "3.20"},
    "certifi":            {14: "2026.10.19.post1", 15: "2026.10.19.post1", 16: "2026.10.19.post1"},
    "websocket-client":   {14: "1.9.0",            15: "1.9.2",            16: "1.9.2"},
    "tenacity":           {14: "9.1.2",            15: "9.2.1",            16: "9.2.1"},
}
# fmt: on

#: Suffixes of compiled extensions: none may land in a folder shared between operating systems.
BINARY_SUFFIXES = (".so", ".pyd", ".dylib", ".dll")

PLUGIN_DIR = Path(__file__).resolve().parent
DEPS_DIR = PLUGIN_DIR / "_deps"


def folder_name(python: tuple[int, int]) -> str:
    """``py39`` for Python 3.9: the folder init.py looks for in the running Python."""
    return f"py{python[0]}{python[1]}"


def requirements(nuke: int) -> list[str]:
    """The pinned requirement strings for one Nuke version, in table order."""
    return [f"{name}=={versions[nuke]}" for name, versions in PINS.items()]


def pip_command(nuke: int, target: Path, python: str | None = None) -> list[str]:
    """The pip command installing Nuke ``nuke``'s set into ``target`` (run by ``python``)."""
    major, minor = NUKE_PYTHON[nuke]
    return [
        python or sys.executable,
        "-m",
        "pip",
        "install",
        "--target",
        str(target),
        "--python-version",
        f"{major}.{minor}",
        # Pure-Python wheels only: the same folder is read by Linux, macOS and Windows.
        "--implementation",
        "py",
        "--abi",
        "none",
        "--platform",
        "any",
        "--only-binary=:all:",
        "--no-input",
        *requirements(nuke),
    ]


def nuke_init_line(checkout: Path) -> str:
    """The line for Nuke's own init.py (forward slashes work on Windows too)."""
    return f"nuke.pluginAddPath({checkout.as_posix()!r})"


def binaries(folder: Path) -> list[Path]:
    """Compiled files in ``folder``: there must be none."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in BINARY_SUFFIXES)


def _replace(staging: Path, final: Path) -> None:
    """Swap a finished install into place, so a failed one never leaves a half-filled folder."""
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    shutil.rmtree(old, ignore_errors=True)


def _parse_nuke(value: str) -> int:
    """``14``, ``14.1`` or ``14.1v3`` -> 14; anything else or unsupported is a usage error."""
    head = value.strip().split(".", 1)[0].split("v", 1)[0]
    supported = ", ".join(f"{n} (Python {p[0]}.{p[1]})" for n, p in NUKE_PYTHON.items())
    if not head.isdigit() or int(head) not in NUKE_PYTHON:
        raise argparse.ArgumentTypeError(f"Nuke {value!r} is not supported; use {supported}")
    return int(head)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="install_deps.py",
        description="Install requests, websocket-client and tenacity for one Nuke version into "
        f"{DEPS_DIR}/pyXY (pure-Python wheels of that Nuke's Python).",
    )
    parser.add_argument(
        "--nuke",
        required=True,
        type=_parse_nuke,
        metavar="14|15|16",
        help="the Nuke major version the dependencies are for",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the pip command and install nothing"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Install (or with ``--dry-run`` print) one Nuke's set; 0 ok, 1 install failed, 2 usage."""
    args = _parser().parse_args(argv)
    nuke: int = args.nuke
    python = NUKE_PYTHON[nuke]
    final = DEPS_DIR / folder_name(python)
    staging = DEPS_DIR / (final.name + ".partial")
    command = pip_command(nuke, staging)
    if args.dry_run:
        print(subprocess.list2cmdline(command) if os.name == "nt" else shlex.join(command))
        print(f"would install into {final}")
        return 0
    if importlib.util.find_spec("pip") is None:
        print(
            f"error: {sys.executable} has no pip; run this script with another Python 3.9+ "
            f"or install pip first ({sys.executable} -m ensurepip)",
            file=sys.stderr,
        )
        return 1

    print(f"Installing for Nuke {nuke} (Python {python[0]}.{python[1]}):", " ".join(command[4:]))
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    code = subprocess.call(command)
    if code != 0:
        shutil.rmtree(staging, ignore_errors=True)
        print(f"error: pip failed (exit {code}); {final} was left as it was", file=sys.stderr)
        return 1
    # Console scripts (websocket-client's wsdump) point at this Python, not Nuke's: not needed.
    shutil.rmtree(staging / "bin", ignore_errors=True)
    shutil.rmtree(staging / "Scripts", ignore_errors=True)
    compiled = binaries(staging)
    if compiled:
        shutil.rmtree(staging, ignore_errors=True)
        names = ", ".join(p.name for p in compiled[:5])
        print(
            f"error: pip installed compiled files ({names}); {final} left as it was",
            file=sys.stderr,
        )
        return 1
    _replace(staging, final)

    print(f"\nInstalled into {final}")
    print("Add this line to Nuke's init.py (~/.nuke/init.py, %USERPROFILE%\\.nuke\\init.py):")
    print(f"    {nuke_init_line(PLUGIN_DIR.parent)}")
    print(f"or add {PLUGIN_DIR.parent} to NUKE_PATH.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
