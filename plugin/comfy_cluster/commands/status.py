"""``comfy-cluster status [--json] [--watch]``: poll every configured server, show its health.

One poll of the whole cluster takes about one ``--timeout`` however many servers are down (each
server is polled on its own thread). ``--watch`` keeps polling and redraws the table in place
(rich Live; plain text if rich is missing) until Ctrl-C. Exit status: 0 if at least one server can
take work (ready or busy), 1 if none can, 2 on a configuration error.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping
from typing import Any, Optional, TextIO

from comfy_cluster.commands.common import ExitCode
from comfy_cluster.core.formatting import gib_text
from comfy_cluster.core.health import HealthMonitor, HealthSnapshot, ServerStatus

COLUMNS = ("NAME", "URL", "STATE", "QUEUE", "LATENCY", "DEVICE", "VRAM", "LAST ERROR")


def register(subparsers: Any) -> None:
    """Add the ``status`` sub-command to the CLI."""
    parser = subparsers.add_parser(
        "status",
        help="poll every configured server once and show its health",
        description=(
            "Poll each configured ComfyUI server (in parallel) and show its state, queue, "
            "latency, device, VRAM and last error."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--watch", action="store_true", help="keep polling; redraw in place")
    parser.add_argument(
        "--timeout", type=float, default=2.0, help="seconds per server poll (default 2)"
    )
    parser.add_argument(
        "--interval", type=float, default=1.0, help="seconds between polls with --watch"
    )
    parser.set_defaults(func=run)


def run(
    args: argparse.Namespace,
    environ: Optional[Mapping[str, str]] = None,
    out: Optional[TextIO] = None,
    err: Optional[TextIO] = None,
) -> int:
    """Poll and print; see the module docstring for exit codes. Main thread."""
    from comfy_cluster.commands.common import io_for, load_servers_or_report

    io = io_for(environ, out, err)
    out, err = io.out, io.err
    servers = load_servers_or_report("status", io)
    if servers is None:
        return ExitCode.USAGE
    timeout = max(0.05, float(getattr(args, "timeout", 2.0)))
    interval = max(0.1, float(getattr(args, "interval", 1.0)))
    monitor = HealthMonitor(
        servers, timeout=timeout, interval_busy=interval, interval_idle=interval
    )
    monitor.set_active(True, who="cli")
    try:
        monitor.start()
        # Connect and read timeouts are both ``timeout``; allow the websocket greeting too.
        monitor.wait_for_poll(timeout * 1.5 + 0.5)
        if getattr(args, "watch", False):
            _watch(monitor, args, out)
            snapshot = monitor.snapshot()
        else:
            snapshot = monitor.snapshot()
            _print(snapshot, bool(args.json), out)
    finally:
        monitor.close(timeout=0.2)
    return ExitCode.OK if snapshot.usable() else ExitCode.FAILED


def _print(snapshot: HealthSnapshot, as_json: bool, out: TextIO) -> None:
    if as_json:
        json.dump(to_json(snapshot), out, indent=2)
        out.write("\n")
    else:
        out.write(plain_table(snapshot))
    out.flush()


def to_json(snapshot: HealthSnapshot) -> list[dict[str, Any]]:
    """One object per server; ``since``/``checked_at`` as ages in seconds (clock-independent)."""
    rows = []
    for status in snapshot:
        row = status.to_dict()
        row["since_seconds"] = round(max(0.0, snapshot.taken_at - status.since), 3)
        row["checked_seconds_ago"] = (
            None
            if status.checked_at is None
            else round(max(0.0, snapshot.taken_at - status.checked_at), 3)
        )
        del row["since"], row["checked_at"]
        rows.append(row)
    return rows


def cells(status: ServerStatus) -> tuple[str, ...]:
    """The table cells of one server (shared by the plain and rich tables)."""
    queue = f"{status.queue_running}+{status.queue_pending}" if status.usable else "-"
    latency = "-" if status.latency_ms is None else f"{status.latency_ms:.0f} ms"
    vram = "-" if status.vram_total is None else gib_text(status.vram_free, status.vram_total)
    error = status.last_error or status.reason or ""
    return (
        status.name,
        status.url,
        status.state.value,
        queue,
        latency,
        status.device or "-",
        vram,
        error[:80],
    )


def plain_table(snapshot: HealthSnapshot) -> str:
    rows = [COLUMNS] + [cells(s) for s in snapshot]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines) + "\n"


_STYLE = {
    "ready": "green",
    "busy": "yellow",
    "degraded": "magenta",
    "offline": "red",
    "disabled": "dim",
}


def _rich_table(snapshot: HealthSnapshot) -> Any:
    from rich.table import Table

    table = Table(title="comfy-cluster status", expand=False)
    for column in COLUMNS:
        table.add_column(column)
    for status in snapshot:
        row = list(cells(status))
        style = _STYLE.get(row[2], "")
        row[2] = f"[{style}]{row[2]}[/]" if style else row[2]
        table.add_row(*row)
    return table


def _watch(monitor: HealthMonitor, args: argparse.Namespace, out: TextIO) -> None:
    as_json = bool(args.json)
    interval = max(0.1, float(getattr(args, "interval", 1.0)))
    try:
        try:
            if as_json:
                raise ImportError  # JSON lines: no live table
            from rich.console import Console
            from rich.live import Live
        except ImportError:
            while True:
                _print(monitor.snapshot(), as_json, out)
                if not as_json:
                    out.write("\n")
                time.sleep(interval)
        else:
            console = Console(file=out)
            with Live(_rich_table(monitor.snapshot()), console=console, auto_refresh=False) as live:
                while True:
                    time.sleep(interval)
                    live.update(_rich_table(monitor.snapshot()), refresh=True)
    except KeyboardInterrupt:
        pass
