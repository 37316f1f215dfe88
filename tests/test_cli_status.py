"""``comfy-cluster status``: a real subprocess against sims and a port where nothing listens."""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
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


# --- what a person reads (issue 13) --------------------------------------------------------------


def readline_within(proc: subprocess.Popen, seconds: float) -> str:
    """The next line ``proc`` prints, or "" if none comes within ``seconds``."""
    import threading

    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(seconds)
    return got[0] if got else ""


def test_plain_table_cuts_a_long_error_with_an_ellipsis_and_offline_queue_is_a_dash(
    tmp_path: Path,
) -> None:
    servers = [
        {"name": "nobody", "ip": "127.0.0.1", "port": free_port()},
        {"name": "off", "ip": "127.0.0.1", "port": free_port(), "enabled": False},
    ]
    out = io.StringIO()
    args = argparse.Namespace(json=False, watch=False, timeout=0.5, interval=1.0)
    status.run(args, environ=env_for(tmp_path, servers), out=out, err=io.StringIO())
    header, nobody, off = out.getvalue().splitlines()
    error = nobody[header.index("LAST ERROR") :]
    assert error.startswith("GET /system_stats: unreachable") and error.endswith("...")
    assert len(error) <= 80
    assert nobody.split()[2:4] == ["offline", "-"] and off.split()[2:4] == ["disabled", "-"]


def test_watch_json_is_only_json_lines_with_a_timestamp_the_first_within_2_s(
    sim_factory: Any, tmp_path: Path, black_hole: Any
) -> None:
    """One sim and a server that never answers (the first poll of it takes the whole timeout):
    the stream must start anyway, and each line must arrive as it is printed (flushed)."""
    a = sim_factory()
    servers = [
        {"name": "a", "ip": "127.0.0.1", "port": a.port},
        {"name": "hole", "ip": "127.0.0.1", "port": black_hole.port},
    ]
    # What it costs this machine, now, to start the command at all (interpreter and imports):
    # the 2 s promise is about the command's own wait, not about a loaded machine's start-up.
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", "import comfy_cluster.commands.status"], check=True)
    start_up = time.monotonic() - t0
    cmd = [sys.executable, "-m", "comfy_cluster.cli", "status", "--watch", "--json"]
    cmd += ["--interval", "0.3"]
    t0 = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        env=env_for(tmp_path, servers),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = readline_within(proc, 10)
        elapsed = time.monotonic() - t0
        second = readline_within(proc, 10)
    finally:
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=15)
    assert elapsed - start_up < 2.0, f"first line after {elapsed:.2f} s ({start_up:.2f} s start-up)"
    lines = [first, second, *rest.splitlines()]
    objects = [json.loads(line) for line in lines if line.strip()]  # nothing but JSON
    assert len(objects) >= 2
    for obj in objects:
        assert set(obj) == {"timestamp", "servers"}
        assert obj["timestamp"].endswith("Z") and "T" in obj["timestamp"]
        assert [s["name"] for s in obj["servers"]] == ["a", "hole"]
    assert objects[0]["servers"][0]["state"] == "ready"
    assert "Traceback" not in err


def test_watch_in_a_pipe_prints_tables_without_the_quit_hint(
    sim_factory: Any, tmp_path: Path
) -> None:
    a = sim_factory()
    servers = [{"name": "a", "ip": "127.0.0.1", "port": a.port}]
    cmd = [sys.executable, "-m", "comfy_cluster.cli", "status", "--watch", "--interval", "0.2"]
    proc = subprocess.Popen(
        cmd,
        env=env_for(tmp_path, servers),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert readline_within(proc, 10).split()[:3] == ["NAME", "URL", "STATE"]
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "Ctrl-C" not in out + err and "\x1b[" not in out
