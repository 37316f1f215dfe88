"""``comfy-cluster status [--json] [--watch]``: poll every configured server, show its health.

One poll of the whole cluster takes about one ``--timeout`` however many servers are down (each
server is polled on its own thread). Exit status: 0 if at least one server can take work (ready
or busy), 1 if none can, 2 on a configuration error.

What is printed depends on where it goes, as with the render view:

- a terminal: a table with each state coloured as in the live render view (ready green, busy
  yellow, degraded magenta, offline red, disabled dim); the last error is cut to the terminal
  with an ellipsis. ``--watch`` redraws it in place and says how to quit.
- a pipe: the same columns as plain text (a cut error ends in ``...``); ``--watch`` repeats it.
- ``--json``: one JSON array. ``--watch --json`` is a stream for scripts and log files: only
  JSON, one object per poll and line (``{"timestamp": ..., "servers": [...]}``), each line
  flushed, the first within about a second even when a server does not answer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from typing import Any, Optional, TextIO

from comfy_cluster.commands.common import (
    LIVE_MARGIN,
    CommandIO,
    ExitCode,
    add_command,
    server_command,
)
from comfy_cluster.core.formatting import gib_text
from comfy_cluster.core.health import HealthMonitor, HealthSnapshot, ServerStatus
from comfy_cluster.core.server import ServerConfig

COLUMNS = ("NAME", "URL", "STATE", "QUEUE", "LATENCY", "DEVICE", "VRAM", "LAST ERROR")
#: The plain table cuts the last error here (the terminal table cuts it to the terminal's width).
ERROR_WIDTH = 80
#: ``--watch --json`` prints its first line after at most this long, polled or not.
FIRST_LINE_WAIT = 0.5
#: Said under the ``--watch`` table on a terminal (never in a pipe or in JSON).
QUIT_HINT = "Ctrl-C to quit"

EXAMPLES = """
comfy-cluster status
comfy-cluster status --watch --interval 2
comfy-cluster status --json
comfy-cluster status --watch --json >> cluster-health.jsonl
"""


def register(subparsers: Any) -> None:
    """Add the ``status`` sub-command to the CLI."""
    parser = add_command(
        subparsers,
        "status",
        examples=EXAMPLES,
        help="poll every configured server once and show its health",
        description=(
            "Poll each configured ComfyUI server (in parallel) and show its state, queue, "
            "latency, device, VRAM and last error. Exit status: 0 if a server can take work, "
            "1 if none can, 2 on a configuration error."
        ),
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print JSON instead of a table (with --watch: one object per line per poll)",
    )
    parser.add_argument("--watch", action="store_true", help="keep polling until Ctrl-C")
    parser.add_argument(
        "--timeout", type=float, default=2.0, metavar="S", help="seconds per server poll"
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=1.0,
        metavar="S",
        help="seconds between polls with --watch",
    )
    parser.set_defaults(func=run)


@server_command("status")
def run(args: argparse.Namespace, io: CommandIO, servers: tuple[ServerConfig, ...]) -> int:
    """Poll and print; see the module docstring for exit codes. Main thread."""
    out = io.out
    timeout = max(0.05, float(getattr(args, "timeout", 2.0)))
    interval = max(0.1, float(getattr(args, "interval", 1.0)))
    monitor = HealthMonitor(
        servers, timeout=timeout, interval_busy=interval, interval_idle=interval
    )
    monitor.set_active(True, who="cli")
    watch, as_json = bool(getattr(args, "watch", False)), bool(args.json)
    try:
        monitor.start()
        # Connect and read timeouts are both ``timeout``; allow the websocket greeting too.
        first_poll = timeout * 1.5 + 0.5
        if watch and as_json:
            first_poll = min(first_poll, FIRST_LINE_WAIT)  # a stream starts at once
        monitor.wait_for_poll(first_poll)
        if watch:
            _watch(monitor, as_json, interval, out)
            snapshot = monitor.snapshot()
        else:
            snapshot = monitor.snapshot()
            _print(snapshot, as_json, out)
    finally:
        monitor.close(timeout=0.2)
    return ExitCode.OK if snapshot.usable() else ExitCode.FAILED


def _is_terminal(out: TextIO) -> bool:
    isatty = getattr(out, "isatty", None)
    return bool(isatty and isatty())


def _print(snapshot: HealthSnapshot, as_json: bool, out: TextIO) -> None:
    if as_json:
        json.dump(to_json(snapshot), out, indent=2)
        out.write("\n")
    elif _is_terminal(out) and _has_rich():
        from rich.console import Console

        console = Console(file=out)
        console.print(rich_table(snapshot, console.width))
    else:
        out.write(plain_table(snapshot))
    out.flush()


def _has_rich() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def json_line(snapshot: HealthSnapshot, now: Optional[datetime] = None) -> str:
    """One ``--watch --json`` line: the poll's UTC time (ISO 8601) and every server's row."""
    moment = now or datetime.now(timezone.utc)
    stamp = moment.astimezone(timezone.utc).isoformat(timespec="milliseconds")
    return json.dumps({"timestamp": stamp.replace("+00:00", "Z"), "servers": to_json(snapshot)})


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


_STYLE = {
    "ready": "green",
    "busy": "yellow",
    "degraded": "magenta",
    "offline": "red",
    "disabled": "dim",
}


def cells(status: ServerStatus) -> tuple[str, ...]:
    """The table cells of one server, the last error in full (shared by both tables).

    The queue is only shown for a server that answers and may take work: an offline or
    disabled server's last known queue would be stale, so it shows ``-``.
    """
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
        error,
    )


def clip(text: str, width: int, ellipsis: str = "...") -> str:
    """``text`` cut to ``width`` characters, ending in ``ellipsis`` when anything was cut."""
    if len(text) <= width:
        return text
    return text[: max(0, width - len(ellipsis))] + ellipsis


def plain_table(snapshot: HealthSnapshot) -> str:
    """The table as plain text for pipes and logs; a long last error ends in ``...``."""
    rows = [COLUMNS] + [(*cells(s)[:-1], clip(cells(s)[-1], ERROR_WIDTH)) for s in snapshot]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines) + "\n"


#: On a narrow terminal these columns go first (in this order), so the last error keeps room.
OPTIONAL_COLUMNS = ("DEVICE", "VRAM", "URL", "LATENCY")
#: Room the last error keeps before an optional column is dropped.
ERROR_MIN = 24


def terminal_columns(rows: list[tuple[str, ...]], width: int) -> list[int]:
    """Indexes of the columns to show on a terminal ``width`` wide: all that fit beside
    ``ERROR_MIN`` characters of last error, dropping :data:`OPTIONAL_COLUMNS` in order."""
    error = len(COLUMNS) - 1
    keep = list(range(len(COLUMNS)))
    error_room = min(ERROR_MIN, max(len(row[error]) for row in rows))

    def needed() -> int:
        # Each cell is padded by one space either side; a divider between columns and an edge
        # at each end: widths + 3 per column + 1.
        widths = sum(max(len(row[i]) for row in rows) for i in keep if i != error)
        return widths + error_room + 3 * len(keep) + 1

    for name in OPTIONAL_COLUMNS:
        if needed() <= width:
            break
        keep.remove(COLUMNS.index(name))
    return keep


def rich_table(snapshot: HealthSnapshot, width: int, caption: str = "") -> Any:
    """The table for a terminal ``width`` wide: states coloured; every cell literal text (an
    error may hold brackets, which rich would read as markup); the last error cut to fit, with
    an ellipsis; on a narrow terminal the least needed columns left out."""
    from rich import box
    from rich.table import Column, Table
    from rich.text import Text

    statuses = list(snapshot)
    rows = [cells(status) for status in statuses]
    keep = terminal_columns([COLUMNS, *rows], width)
    error = len(COLUMNS) - 1
    columns = [
        # Only the last error may shrink; its cells stay one line, cut with an ellipsis.
        Column(COLUMNS[i], no_wrap=i != error, overflow="ellipsis")
        for i in keep
    ]
    table = Table(
        *columns,
        title="comfy-cluster status",
        caption=caption or None,
        box=box.SIMPLE_HEAD,
        header_style="bold",
    )
    for status, row in zip(statuses, rows):
        style = _STYLE.get(status.state.value, "")
        texts = []
        for i in keep:
            text = Text(row[i], no_wrap=True, overflow="ellipsis")
            if i in (2, error):  # STATE and LAST ERROR take the state's colour
                text.stylize(style)
            texts.append(text)
        table.add_row(*texts)
    return table


def _watch(monitor: HealthMonitor, as_json: bool, interval: float, out: TextIO) -> None:
    """Poll until Ctrl-C: JSON lines, a live table on a terminal, or repeated plain tables."""
    try:
        if as_json:
            _watch_json(monitor, interval, out)
        elif _is_terminal(out) and _has_rich():
            _watch_live(monitor, interval, out)
        else:
            while True:
                out.write(plain_table(monitor.snapshot()) + "\n")
                out.flush()
                time.sleep(interval)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # ``status --watch --json | head -3``: the reader is done
        _silence(out)


def _watch_json(monitor: HealthMonitor, interval: float, out: TextIO) -> None:
    while True:
        out.write(json_line(monitor.snapshot()) + "\n")
        out.flush()
        time.sleep(interval)


def _watch_live(monitor: HealthMonitor, interval: float, out: TextIO) -> None:
    from rich.console import Console
    from rich.constrain import Constrain
    from rich.live import Live

    console = Console(file=out)

    def draw() -> Any:
        width = max(1, console.width - LIVE_MARGIN)  # room for the echoed ^C
        return Constrain(rich_table(monitor.snapshot(), width, QUIT_HINT), width)

    with Live(draw(), console=console, auto_refresh=False) as live:
        while True:
            time.sleep(interval)
            live.update(draw(), refresh=True)


def _silence(out: TextIO) -> None:
    """After a closed pipe, point stdout at devnull so exiting Python does not complain
    ("Exception ignored ... BrokenPipeError") when it flushes it."""
    if out is sys.stdout:
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
