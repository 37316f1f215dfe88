"""Draw the picture of the live ``comfy-cluster render`` view that the docs show, from a real run.

Why a script: a picture drawn by hand goes stale the day the view changes. This one starts three
simulated ComfyUI servers (one lacks the workflow's checkpoint, one refuses connections), runs
the real ``comfy-cluster render`` against them in a pseudo-terminal (``pty``) of a fixed size,
feeds everything the command printed to a terminal emulator (``pyte``), and paints the final
screen with Qt offscreen in a monospace font. Only the run's temporary folder is rewritten (to
``/shots/demo``); clocks and durations are masked in the text file, not in the picture.
``tests/test_cli_pictures.py`` runs it again and fails when the screen's text or the picture no
longer match what is committed.

Usage, from the checkout (needs the ``dev`` extra: pyte, aiohttp, PySide6; no display)::

    python tools/cli_pictures.py                  # docs/images/cli-live.png and cli-live.txt
    python tools/cli_pictures.py --columns 80 --out /tmp   # another width, somewhere else
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "images"
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
if str(ROOT / "plugin") not in sys.path:
    sys.path.insert(0, str(ROOT / "plugin"))  # run this checkout's code, not an installed copy

#: The terminal the picture shows: wide enough for the notes, tall enough for bars and summary.
COLUMNS = 120
ROWS = 20
PICTURE = "cli-live"
FRAMES = 12
#: The font the terminal is painted with (DejaVu ships with most Linux images), and its size.
FONT_FAMILY = "DejaVu Sans Mono"
FONT_POINTS = 10
#: The terminal's colours: a dark background like most terminals, light grey text.
BACKGROUND = "#1c1c1c"
FOREGROUND = "#d0d0d0"
#: pyte's colour names -> the RGB a common dark terminal theme gives them.
NAMED = {
    "black": "#1c1c1c",
    "red": "#e0605a",
    "green": "#6cc06c",
    "brown": "#d7b34c",  # pyte calls ANSI yellow "brown"
    "yellow": "#d7b34c",
    "blue": "#5c8ee6",
    "magenta": "#c678dd",
    "cyan": "#56b6c2",
    "white": "#d0d0d0",
    "brightblack": "#5c5c5c",
    "brightred": "#ff7b72",
    "brightgreen": "#8ee68e",
    "brightbrown": "#f0d070",
    "brightblue": "#79a8ff",
    "brightmagenta": "#e29df0",
    "brightcyan": "#7fd7e0",
    "brightwhite": "#ffffff",
}
#: How the run's temporary folder is shown (the one thing of the capture that is rewritten, so
#: the picture does not change with a random folder name).
SHOWN_FOLDER = "/shots/demo"
#: Longest a run may take before the capture gives up.
TIMEOUT = 120.0

#: What differs from run to run and is masked in the screen's text: clocks and durations.
_CLOCK = re.compile(r"\b\d+:\d\d:\d\d\b")
_SECONDS = re.compile(r"\bin \d+(?:\.\d+)? s\b")


# -- the run ---------------------------------------------------------------------------------------


def _workflow() -> dict[str, Any]:
    """ComfyUI's img2img workflow (the test fixture), its checkpoint ``sd15.safetensors``."""
    path = ROOT / "tests" / "fixtures" / "comfyui" / "workflow_img2img_api.json"
    return json.loads(path.read_text())


def _start_sims() -> list[Any]:
    from comfy_cluster.sim.harness import start_sims
    from comfy_cluster.sim.options import SimOptions

    return start_sims(
        3,
        [
            SimOptions(name="gpu-a", node_seconds=0.04),
            SimOptions(name="gpu-b", node_seconds=0.04, models=("sdxl.safetensors",)),
            SimOptions(name="gpu-c", refuse_connections=True),
        ],
    )


def _prepare(folder: Path) -> None:
    """The shot's input frames and the workflow, under ``folder`` (the run's working folder)."""
    from comfy_cluster.sim.harness import make_test_image

    for frame in range(1, FRAMES + 1):
        make_test_image(folder / "plate" / f"plate.{frame:04d}.png", (8, 8), (frame * 9, 80, 120))
    (folder / "img2img.json").write_text(json.dumps(_workflow()))


def _environment(sims: Sequence[Any], folder: Path) -> dict[str, str]:
    servers = [{"name": s.options.name, "ip": "127.0.0.1", "port": s.port} for s in sims]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMFY", "NUKE_COMFYUI"))}
    env.pop("NO_COLOR", None)
    env.update(
        NUKE_COMFYUI_SERVERS=json.dumps(servers),
        COMFY_CLUSTER_CONFIG=str(folder / "user.json"),
        PYTHONPATH=str(ROOT / "plugin"),
        TERM="xterm-256color",
        COLUMNS="",
        LINES="",
    )
    return env


def _command() -> list[str]:
    return [
        sys.executable,
        "-m",
        "comfy_cluster.cli",
        "render",
        "img2img.json",
        "--frames",
        f"1-{FRAMES}",
        "--input",
        "plate/plate.####.png",
        "--output",
        "out/shot.####.png",
    ]


def _run_in_pty(command: Sequence[str], env: dict[str, str], cwd: Path, columns: int) -> bytes:
    """Run ``command`` on a pseudo-terminal ``columns`` wide; everything it wrote, raw."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, columns, 0, 0))
    process = subprocess.Popen(
        command, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd, close_fds=True
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + TIMEOUT
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        os.close(master)
    return b"".join(chunks)


def capture(columns: int = COLUMNS) -> Any:
    """Run the render on fresh sims and return the final ``pyte.Screen``."""
    import pyte

    from comfy_cluster.sim.harness import stop_all

    sims = _start_sims()
    try:
        with tempfile.TemporaryDirectory(prefix="cc-cli-picture-") as tmp:
            folder = Path(tmp)
            _prepare(folder)
            raw = _run_in_pty(_command(), _environment(sims, folder), folder, columns)
            raw = raw.replace(str(folder.resolve()).encode(), SHOWN_FOLDER.encode())
            raw = raw.replace(str(folder).encode(), SHOWN_FOLDER.encode())
    finally:
        stop_all(sims)
    screen = pyte.Screen(columns, ROWS)
    stream = pyte.ByteStream(screen)
    stream.feed(raw.replace(b"\n", b"\r\n") if b"\r\n" not in raw else raw)
    return screen


def screen_lines(screen: Any) -> list[str]:
    """The screen's text, right-trimmed, without the empty rows at the bottom."""
    lines = [line.rstrip() for line in screen.display]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def masked(lines: Sequence[str]) -> list[str]:
    """``lines`` with what differs from run to run (clocks, durations) masked."""
    return [_SECONDS.sub("in N s", _CLOCK.sub("H:MM:SS", line)) for line in lines]


# -- the picture -----------------------------------------------------------------------------------


def _colour(name: str, default: str) -> str:
    if name == "default":
        return default
    if re.fullmatch(r"[0-9a-fA-F]{6}", name):
        return f"#{name}"
    return NAMED.get(name, default)


def draw(screen: Any) -> Any:
    """The screen painted as a terminal would show it, as a ``QImage`` (rows that are empty at
    the bottom left out)."""
    from comfy_cluster.ui.qt import QtCore, QtGui, QtWidgets

    _ = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    font = QtGui.QFont(FONT_FAMILY, FONT_POINTS)
    font.setStyleHint(QtGui.QFont.StyleHint.Monospace)
    bold = QtGui.QFont(font)
    bold.setBold(True)
    metrics = QtGui.QFontMetrics(font)
    cell_w, cell_h = metrics.horizontalAdvance("M"), metrics.lineSpacing()
    rows = max(1, len(screen_lines(screen)))
    pad = 8
    image = QtGui.QImage(
        screen.columns * cell_w + 2 * pad, rows * cell_h + 2 * pad, QtGui.QImage.Format.Format_RGB32
    )
    image.fill(QtGui.QColor(BACKGROUND))
    painter = QtGui.QPainter(image)
    try:
        for y in range(rows):
            line = screen.buffer[y]
            for x in range(screen.columns):
                char = line[x]
                fg = _colour(char.fg, FOREGROUND)
                bg = _colour(char.bg, BACKGROUND)
                if char.reverse:
                    fg, bg = bg, fg
                left, top = pad + x * cell_w, pad + y * cell_h
                if bg != BACKGROUND:
                    painter.fillRect(left, top, cell_w, cell_h, QtGui.QColor(bg))
                if char.data.strip():
                    painter.setFont(bold if char.bold else font)
                    painter.setPen(QtGui.QColor(fg))
                    painter.drawText(
                        QtCore.QRect(left, top, cell_w, cell_h),
                        int(QtCore.Qt.AlignmentFlag.AlignCenter),
                        char.data,
                    )
    finally:
        painter.end()
    return image


def write(out: Path, columns: int = COLUMNS) -> tuple[Path, Path]:
    """Capture, then save ``<PICTURE>.png`` and the masked screen text ``<PICTURE>.txt``."""
    screen = capture(columns)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "" if columns == COLUMNS else f"-{columns}"
    picture, text = out / f"{PICTURE}{suffix}.png", out / f"{PICTURE}{suffix}.txt"
    if not draw(screen).save(str(picture)):
        raise SystemExit(f"could not write {picture}")
    text.write_text("\n".join(masked(screen_lines(screen))) + "\n", encoding="utf-8")
    return picture, text


def main(argv: Sequence[str] = ()) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="folder for the files")
    parser.add_argument("--columns", type=int, default=COLUMNS, help="terminal width")
    args = parser.parse_args(list(argv))
    for path in write(args.out, args.columns):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
