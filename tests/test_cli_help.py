"""``comfy-cluster --version`` and ``--help``: examples for every command, defaults shown."""

from __future__ import annotations

import subprocess
import sys

import pytest

from comfy_cluster import __version__
from comfy_cluster.cli import COMMANDS, main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith(f"comfy-cluster {__version__} (Python ")


def help_of(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    return capsys.readouterr().out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_examples(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    text = help_of(command, capsys)
    examples = text[text.index("\nexamples:\n") + len("\nexamples:\n") :].splitlines()
    assert len(examples) >= 2
    assert all(line.startswith(f"  comfy-cluster {command}") for line in examples[:2]), examples
    assert "(default: None)" not in text and "(default: False)" not in text


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        ("status", ["--interval S  seconds between polls with --watch (default: 1.0)"]),
        ("status", ["--timeout S   seconds per server poll (default: 2.0)"]),
        ("render", ["(default: fastest)", "(default: frame)", "(default: 0)"]),
        ("sim", ["(default: 8188)", "(default: 1.0)"]),
        ("demo", ["(default: 24)", "(default: comfy_cluster_demo)"]),
    ],
)
def test_defaults_are_shown(command: str, shown: list, capsys: pytest.CaptureFixture[str]) -> None:
    text = " ".join(help_of(command, capsys).split())  # wrapping may move a word to a new line
    for words in shown:
        assert " ".join(words.split()) in text


def test_top_level_help_points_to_the_commands() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "comfy_cluster.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "--version" in result.stdout and "COMMAND --help" in result.stdout
