"""``comfy-cluster status``: a real subprocess against sims and a port where nothing listens."""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from comfy_cluster.commands import status
from comfy_cluster.sim.harness import free_port

TIMEOUT = 1.0


def env_for(tmp_path: Path, servers: list[dict[str, Any]]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUKE_COMFYUI")}
    env["NUKE_COMFYUI_SERVERS"] = json.dumps(servers)
    env["COMFY_CLUSTER_CONFIG"] = str(tmp_path / "servers.json")
    return env


def test_status_json_reports_ready_ready_offline(sim_factory: Any, tmp_path: Path) -> None:
    a, b = sim_factory(), sim_factory()
    servers = [
        {"name": "a", "ip": "127.0.0.1", "port": a.port},
        {"name": "b", "ip": "127.0.0.1", "port": b.port},
        {"name": "nobody", "ip": "127.0.0.1", "port": free_port()},
    ]
    cmd = [sys.executable, "-m", "comfy_cluster.cli", "status", "--json", "--timeout", str(TIMEOUT)]
    t0 = time.monotonic()
    proc = subprocess.run(
        cmd, env=env_for(tmp_path, servers), capture_output=True, text=True, timeout=30
    )
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [(r["name"], r["state"]) for r in rows] == [
        ("a", "ready"),
        ("b", "ready"),
        ("nobody", "offline"),
    ]
    assert rows[2]["last_error"] and rows[2]["error_kind"] == "ServerUnreachable"
    assert rows[0]["comfyui_version"] and rows[0]["device"]
    assert elapsed < TIMEOUT + 5.0  # interpreter start-up included


def test_status_in_process_takes_one_poll_timeout(
    sim_factory: Any, tmp_path: Path, black_hole: Any
) -> None:
    a = sim_factory()
    servers = [
        {"name": "a", "ip": "127.0.0.1", "port": a.port},
        {"name": "nobody", "ip": "127.0.0.1", "port": free_port()},
        {"name": "hole", "ip": "127.0.0.1", "port": black_hole.port},
    ]
    out, err = io.StringIO(), io.StringIO()
    args = argparse.Namespace(json=False, watch=False, timeout=0.5, interval=1.0)
    t0 = time.monotonic()
    code = status.run(args, environ=env_for(tmp_path, servers), out=out, err=err)
    elapsed = time.monotonic() - t0
    assert code == 0, err.getvalue()
    lines = out.getvalue().splitlines()
    assert lines[0].split()[:3] == ["NAME", "URL", "STATE"]
    assert [line.split()[2] for line in lines[1:]] == ["ready", "offline", "offline"]
    assert "timed out" in lines[3]
    assert elapsed < 0.5 * 1.2 + 0.3, f"{elapsed:.2f}s"


def test_status_config_error_exits_2(tmp_path: Path) -> None:
    env = env_for(tmp_path, [])
    env["NUKE_COMFYUI_SERVERS"] = "[not json"
    out, err = io.StringIO(), io.StringIO()
    args = argparse.Namespace(json=True, watch=False, timeout=0.5, interval=1.0)
    assert status.run(args, environ=env, out=out, err=err) == 2
    assert "configuration error" in err.getvalue() and out.getvalue() == ""


def test_status_exit_1_when_nothing_is_usable(tmp_path: Path) -> None:
    servers = [{"name": "nobody", "ip": "127.0.0.1", "port": free_port()}]
    out = io.StringIO()
    args = argparse.Namespace(json=True, watch=False, timeout=0.5, interval=1.0)
    assert status.run(args, environ=env_for(tmp_path, servers), out=out, err=io.StringIO()) == 1
    assert json.loads(out.getvalue())[0]["state"] == "offline"


def test_registered_in_the_cli() -> None:
    from comfy_cluster.cli import build_parser

    args = build_parser().parse_args(["status", "--json", "--watch", "--timeout", "0.3"])
    assert args.json and args.watch and args.timeout == 0.3 and args.func is status.run
