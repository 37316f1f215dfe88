"""``comfy-cluster sim``: the one-line answer without the sim extra, and a ``--speed`` that acts.

(The simulator served over HTTP is tested in test_sim_cli.py.)
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from comfy_cluster.cli import build_parser
from comfy_cluster.sim.harness import free_port

#: Runs the CLI with a module of the sim extra made unimportable, as on a runtime-only install.
WITHOUT = (
    "import sys; sys.modules[{module!r}] = None; "
    "from comfy_cluster.cli import main; sys.exit(main({argv!r}))"
)


@pytest.mark.parametrize(
    ("module", "package", "command"),
    [("aiohttp", "aiohttp", "sim"), ("PIL", "Pillow", "sim"), ("aiohttp", "aiohttp", "demo")],
)
def test_without_the_sim_extra_one_line_says_how_to_install_it(
    module: str, package: str, command: str, tmp_path
) -> None:
    argv = [command, "--port", str(free_port())] if command == "sim" else [command]
    argv += [] if command == "sim" else ["--out", str(tmp_path)]
    code = WITHOUT.format(module=module, argv=argv)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert f"comfy-cluster {command} needs the sim extra ({package} is not installed)" in line
    assert "pip install -e '.[sim]'" in line


def test_speed_alone_acts_because_nodes_take_time_by_default() -> None:
    args = build_parser().parse_args(["sim", "--speed", "0.5"])
    assert args.node_seconds > 0 and args.speed == 0.5


def test_speed_with_instant_nodes_warns(tmp_path) -> None:
    cmd = [sys.executable, "-m", "comfy_cluster.cli", "sim", "--port", str(free_port())]
    cmd += ["--root", str(tmp_path), "--speed", "0.5", "--node-seconds", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "listening on" in proc.stdout.readline()
    finally:
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0
    assert "warning: --speed 0.5 has no effect with --node-seconds 0" in err


def test_a_bad_speed_is_one_line_not_a_traceback(tmp_path) -> None:
    cmd = [sys.executable, "-m", "comfy_cluster.cli", "sim", "--port", str(free_port())]
    result = subprocess.run(
        [*cmd, "--speed", "0"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "comfy-cluster sim: speed must be > 0, got 0.0"
