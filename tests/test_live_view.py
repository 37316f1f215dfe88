"""What a person sees in a terminal: the CLI run in a pseudo-terminal, its screen read by pyte.

Each test starts ``comfy-cluster`` under :func:`pty.fork` with a window of a given size, feeds
everything it writes to a pyte screen (a VT100 emulator, so cursor moves and redraws land as a
terminal would draw them) and asserts on the screen: the rows, their width, their colours.

- the render view at 80 and 120 columns while one server dies mid-job: the bars stay, the note
  is cut with an ellipsis, every row fits (with room for the ``^C`` echo), and Ctrl-C then says
  how many frames are done and the exact command that finishes the job;
- a node error text holding ``[/x]`` (rich markup) is shown literally and the render ends with
  its normal summary, not a ``MarkupError`` traceback;
- ``status`` colours each state and cuts a long error with an ellipsis; ``--watch`` says how to
  quit and leaves no stale line behind after Ctrl-C.
"""

from __future__ import annotations

import json
import os
import select
import shlex
import struct
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
from workflows import invert_workflow

from comfy_cluster.sim.harness import free_port, make_test_image

pyte = pytest.importorskip("pyte")
pty = pytest.importorskip("pty")
termios = pytest.importorskip("termios")
fcntl = pytest.importorskip("fcntl")

ROWS = 30
BAR = "━"
#: Columns a live display must leave free for the ``^C`` the terminal echoes (LIVE_MARGIN).
ECHO_ROOM = 2


class Terminal:
    """``comfy-cluster ARGV`` in a pseudo-terminal ``columns`` wide, drawn on a pyte screen."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], columns: int) -> None:
        self.columns = columns
        self.screen = pyte.Screen(columns, ROWS)
        self._stream = pyte.ByteStream(self.screen)
        self.raw = b""
        self.status: Optional[int] = None
        pid, fd = pty.fork()
        if pid == 0:  # the child: the CLI, with the pty as its controlling terminal
            try:
                os.execvpe(sys.executable, [sys.executable, "-m", "comfy_cluster.cli", *argv], env)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, columns, 0, 0))

    @property
    def lines(self) -> list[str]:
        """The screen's lines, trailing blanks removed, empty lines left out."""
        return [line.rstrip() for line in self.screen.display if line.strip()]

    def _read(self, timeout: float) -> bool:
        """Feed what arrives within ``timeout``; False once the program closed the terminal."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # EIO: the child exited and the pty is closed
            return False
        if not data:
            return False
        self.raw += data
        self._stream.feed(data)
        return True

    def wait_for(self, predicate: Callable[[list[str]], bool], timeout: float) -> list[str]:
        """Read until ``predicate(lines)`` holds; the lines at that moment."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.lines):
                return self.lines
            if not self._read(0.1):
                break
        if predicate(self.lines):
            return self.lines
        raise AssertionError("not on screen in time:\n" + "\n".join(self.lines))

    def ctrl_c(self) -> None:
        """Type Ctrl-C: the terminal sends SIGINT to the program (and echoes ``^C``)."""
        os.write(self.fd, b"\x03")

    def finish(self, timeout: float = 60.0) -> int:
        """Read to the end; the exit status."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._read(0.2):
            pass
        _pid, status = os.waitpid(self.pid, 0)
        self.status = os.waitstatus_to_exitcode(status)
        os.close(self.fd)
        return self.status

    def kill(self) -> None:
        if self.status is None:
            try:
                os.kill(self.pid, 9)
                os.waitpid(self.pid, 0)
            except OSError:
                pass
            os.close(self.fd)

    def colour_of(self, word: str) -> str:
        """The foreground colour of the first cell of ``word`` on screen."""
        for y, line in enumerate(self.screen.display):
            x = line.find(word)
            if x >= 0:
                x += len(word) - len(word.lstrip())
                return self.screen.buffer[y][x].fg
        raise AssertionError(f"{word!r} not on screen")

    def joined_from(self, start: str) -> str:
        """The text from the line starting with ``start`` to the end, wrapped lines rejoined."""
        display = self.screen.display
        first = next(i for i, line in enumerate(display) if line.startswith(start))
        return "".join(display[first:]).rstrip()


@pytest.fixture
def terminals() -> Any:
    started: list[Terminal] = []

    def start(argv: Sequence[str], env: dict[str, str], columns: int) -> Terminal:
        term = Terminal(argv, env, columns)
        started.append(term)
        return term

    yield start
    for term in started:
        term.kill()


def cli_env(tmp_path: Path, servers: list[dict[str, Any]]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUKE_COMFYUI", "COLUMNS"))}
    env.update(
        NUKE_COMFYUI_SERVERS=json.dumps(servers),
        COMFY_CLUSTER_CONFIG=str(tmp_path / "user.json"),
        TERM="xterm-256color",
    )
    env.pop("NO_COLOR", None)
    env.pop("LINES", None)
    return env


def shot(tmp_path: Path, frames: int, workflow: Optional[dict] = None) -> dict[str, str]:
    for f in range(1, frames + 1):
        make_test_image(tmp_path / "in" / f"in.{f:04d}.png", (8, 8), (200, 100, 50))
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(workflow or invert_workflow()))
    return {
        "workflow": str(path),
        "input": str(tmp_path / "in" / "in.####.png"),
        # A space in the path: the resume command must quote it.
        "output": str(tmp_path / "out dir" / "o.####.png"),
    }


@pytest.mark.slow
@pytest.mark.parametrize("columns", [80, 120])
def test_render_view_keeps_its_bars_when_a_server_dies_and_ctrl_c_says_how_to_finish(
    columns: int, tmp_path: Path, sim_factory: Any, terminals: Any
) -> None:
    worker = sim_factory(name="a", node_seconds=0.1)
    dying = sim_factory(name="b", node_seconds=0.1, die_after_prompts=1)
    files = shot(tmp_path, 60)
    servers = [
        {"name": "fast-a", "ip": "127.0.0.1", "port": worker.port},
        {"name": "fast-b", "ip": "127.0.0.1", "port": dying.port},
    ]
    argv = [
        "render",
        files["workflow"],
        "--frames",
        "1-60",
        "--output",
        files["output"],
        "--input",
        files["input"],
        "--overwrite",
    ]
    term = terminals(argv, cli_env(tmp_path, servers), columns)

    # fast-b dies on its first prompt; after three failed probes it leaves the job with a
    # message far longer than the row ("unreachable (3 failures); last: fast-b: GET ...").
    lines = term.wait_for(lambda ls: any("out: " in line for line in ls), timeout=45)
    rows = {line.split()[0]: line for line in lines if line.split()[0] in ("all", "fast-a")}
    out_row = next(line for line in lines if "out: " in line)
    assert out_row.startswith("fast-b "), lines  # the name is whole, not "fast-…"
    assert BAR in out_row and BAR in rows["all"] and BAR in rows["fast-a"], lines
    assert "/60" in out_row and "out: unreachable" in out_row
    assert out_row.endswith("…"), out_row  # the note is cut, with an ellipsis
    assert all(len(line) <= columns - ECHO_ROOM for line in lines), lines

    term.ctrl_c()
    assert term.finish() == 130
    final = term.lines
    # Redrawn in place after the echoed ^C: no stale copy of the first row above it.
    assert sum(line.startswith("all frames") for line in final) == 1, final
    done_line = next(line for line in final if line.startswith("interrupted: job cancelled;"))
    done, total = done_line.split("; ")[1].split(" frame(s)")[0].split(" of ")
    assert 0 < int(done) < int(total) == 60
    command = term.joined_from("to finish the job: ")[len("to finish the job: ") :]
    expected = [arg if arg != "--overwrite" else "--resume" for arg in argv]
    assert shlex.split(command) == ["comfy-cluster", *expected]
    assert "Traceback" not in term.raw.decode(errors="replace")


def test_markup_in_a_failure_is_shown_literally_and_the_summary_follows(
    tmp_path: Path, sim_factory: Any, terminals: Any
) -> None:
    """A node id ``[/x]`` reads as a closing rich tag: it used to end the render with a
    ``MarkupError`` traceback, exit 1 and no summary."""
    workflow = invert_workflow()
    workflow["[/x]"] = workflow.pop("2")
    workflow["3"]["inputs"]["images"] = ["[/x]", 0]
    failing = sim_factory(name="a", fail_node="[/x]")
    files = shot(tmp_path, 4, workflow)
    servers = [{"name": "a", "ip": "127.0.0.1", "port": failing.port}]
    argv = ["render", files["workflow"], "--frames", "1-4", "--output", files["output"]]
    argv += ["--input", files["input"]]
    term = terminals(argv, cli_env(tmp_path, servers), 120)
    assert term.finish() == 1
    text = term.raw.decode(errors="replace")
    assert "Traceback" not in text and "MarkupError" not in text
    lines = term.lines
    assert any(line.startswith("failed: 0 frame(s) written of 4") for line in lines), lines
    assert any(line.startswith("  missing: 4 frame(s): 1-4") for line in lines), lines
    row = next(line for line in lines if line.startswith("a "))
    assert "out: failed 3 chunks; last: node [/x] (ImageInvert)" in row and BAR in row


def test_status_colours_states_and_cuts_a_long_error_with_an_ellipsis(
    tmp_path: Path, sim_factory: Any, terminals: Any
) -> None:
    ready = sim_factory(name="a")
    servers = [
        {"name": "a", "ip": "127.0.0.1", "port": ready.port},
        {"name": "nobody", "ip": "127.0.0.1", "port": free_port()},
        {"name": "off", "ip": "127.0.0.1", "port": free_port(), "enabled": False},
    ]
    term = terminals(["status", "--timeout", "1"], cli_env(tmp_path, servers), 80)
    assert term.finish() == 0
    lines = term.lines
    assert all(len(line) <= 80 for line in lines), lines
    assert term.colour_of(" ready ") == "green" and term.colour_of(" offline ") == "red"
    row = {line.split()[0]: line.split() for line in lines if line.split()[0] in ("nobody", "off")}
    assert row["nobody"][1:3] == ["offline", "-"] and row["off"][1:3] == ["disabled", "-"]
    offline = next(line for line in lines if line.lstrip().startswith("nobody"))
    assert "unreachable" in offline and offline.endswith("…"), offline


def test_status_watch_says_how_to_quit_and_quits_cleanly(
    tmp_path: Path, sim_factory: Any, terminals: Any
) -> None:
    ready = sim_factory(name="a")
    servers = [{"name": "a", "ip": "127.0.0.1", "port": ready.port}]
    argv = ["status", "--watch", "--interval", "0.2"]
    term = terminals(argv, cli_env(tmp_path, servers), 100)
    lines = term.wait_for(lambda ls: any("Ctrl-C to quit" in line for line in ls), timeout=20)
    assert all(len(line) <= 100 - ECHO_ROOM for line in lines), lines
    time.sleep(0.5)  # a redraw or two
    term.ctrl_c()
    assert term.finish() == 0
    final = term.lines
    assert sum("comfy-cluster status" in line for line in final) == 1, final
    assert "Traceback" not in term.raw.decode(errors="replace")
