"""``comfy-cluster render``'s exit codes when servers are bad (issue 11): junk downloads, a
wrong token, a workflow every server rejects, Ctrl-C with a frozen server.

Sims on 127.0.0.1 (tests/fixtures_sim.py) run the real client; the frozen server is an
in-process fake whose calls block (as a SIGSTOPped process), wrapped from tests/fake_comfy.py.
"""

from __future__ import annotations

import argparse
import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fake_comfy import FakeCluster, FakeServer
from test_engine_giveup import Freezer, WrappedClient
from workflows import generated_workflow, invert_workflow

from comfy_cluster.commands import render
from comfy_cluster.commands.progress import make_view
from comfy_cluster.core.retry import retry_transient
from comfy_cluster.core.server import ServerConfig
from comfy_cluster.sim.harness import make_test_image

COLOR = (200, 100, 50)


def parse(argv: list[str]) -> argparse.Namespace:
    from comfy_cluster.cli import build_parser

    return build_parser().parse_args(argv)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Any]:
    for f in range(1, 5):
        make_test_image(tmp_path / "in" / f"in.{f:04d}.png", (8, 8), COLOR)
    invert = tmp_path / "invert.json"
    invert.write_text(json.dumps(invert_workflow()))
    generated = tmp_path / "generated.json"
    generated.write_text(json.dumps(generated_workflow()))
    return {
        "invert": str(invert),
        "generated": str(generated),
        "input": str(tmp_path / "in" / "in.####.png"),
        "output": str(tmp_path / "out" / "o.####.png"),
        "out_dir": tmp_path / "out",
    }


def render_job(files: dict[str, Any], *extra: str, workflow: str = "invert") -> Any:
    argv = ["render", files[workflow], "--frames", "1-4", "--output", files["output"]]
    if workflow == "invert":
        argv += ["--input", files["input"]]
    return render.build_job(parse([*argv, *extra]))


def execute(job: Any, servers: list[ServerConfig], **kw: Any) -> tuple[int, str, float]:
    out, err = io.StringIO(), io.StringIO()
    started = time.monotonic()
    code = render.execute(job, servers, make_view(out, json_lines=False, tty=False), err=err, **kw)
    return code, out.getvalue() + err.getvalue(), time.monotonic() - started


def config(name: str, sim: Any, **kw: Any) -> ServerConfig:
    return ServerConfig(name=name, host="127.0.0.1", port=sim.port, **kw)


def test_junk_from_one_server_still_renders_every_frame(
    files: dict[str, Any], sim_factory: Any
) -> None:
    good, bad = sim_factory(node_seconds=0.01), sim_factory(node_seconds=0.01, view_fault="html")
    code, text, _ = execute(render_job(files), [config("bad", bad), config("good", good)])
    assert code == 0, text
    assert "bad" in text and "junk" in text  # it left the job, with the reason


def test_junk_from_every_server_exits_1_at_once(files: dict[str, Any], sim_factory: Any) -> None:
    a = sim_factory(node_seconds=0.01, view_fault="html")
    b = sim_factory(node_seconds=0.01, view_fault="empty")
    job = render_job(files)
    code, text, seconds = execute(
        job, [config("a", a), config("b", b)], scheduler_options={"no_server_timeout": 30.0}
    )
    assert code == 1, text
    assert seconds < 15
    assert not files["out_dir"].exists() or not list(files["out_dir"].glob("o.*"))


def test_a_wrong_token_exits_1_at_once_saying_what_to_check(
    files: dict[str, Any], sim_factory: Any
) -> None:
    a, b = sim_factory(token="right-token"), sim_factory(token="right-token")
    servers = [config("a", a, token="wrong-token"), config("b", b, token="wrong-token")]
    code, text, seconds = execute(
        render_job(files), servers, scheduler_options={"no_server_timeout": 20.0}
    )
    assert code == 1, text
    assert seconds < 10, f"waited {seconds:.1f} s for servers that refuse us"
    assert "authentication refused" in text and "token" in text
    assert "wrong-token" not in text and "right-token" not in text  # never the values


def test_a_value_every_server_rejects_exits_2_naming_node_and_input(
    files: dict[str, Any], sim_factory: Any
) -> None:
    a, b = sim_factory(node_seconds=0.01), sim_factory(node_seconds=0.01)
    job = render_job(files, "--set", "1.width=abc", workflow="generated")
    code, text, _ = execute(job, [config("a", a), config("b", b)], health=False)
    assert code == 2, text
    assert "node 1 (EmptyImage) input 'width'" in text


def test_a_value_out_of_range_exits_2(files: dict[str, Any], sim_factory: Any) -> None:
    a = sim_factory(node_seconds=0.01)
    job = render_job(files, "--set", "1.width=99999999", workflow="generated")
    code, text, _ = execute(job, [config("a", a)], health=False)
    assert code == 2, text
    assert "input 'width'" in text


def test_ctrl_c_with_a_frozen_server_exits_130_within_3_s(files: dict[str, Any]) -> None:
    import _thread

    freezer = Freezer()
    a = FakeServer("a", seconds=0.3)
    b = FakeServer("b", plan=["hang"])
    try:
        with FakeCluster([a, b]) as cluster:

            def make(cfg: ServerConfig) -> Any:
                server = cluster.servers[cfg.name]
                return WrappedClient(server, freezer if cfg.name == "b" else lambda call: None)

            options = dict(
                client_factory=make,
                stall_timeout=30.0,
                poll_interval=0.02,
                retry=retry_transient(attempts=3, max_seconds=2.0, sleep=lambda s: None),
            )
            pressed: dict[str, float] = {}

            def press_ctrl_c() -> None:
                if freezer.frozen.wait(10):
                    time.sleep(0.3)
                    pressed["at"] = time.monotonic()
                    _thread.interrupt_main()

            presser = threading.Thread(target=press_ctrl_c, daemon=True)
            presser.start()
            job = render_job(files, "--chunk-size", "1", "--strategy", "round_robin")
            code, text, _ = execute(job, cluster.configs, scheduler_options=options, health=False)
            took = time.monotonic() - pressed["at"]
            presser.join()
            assert code == 130, text
            assert took < 3.0, f"exit took {took:.1f} s after Ctrl-C"
            assert "b did not answer our cancel in time and may still hold a prompt" in text
            assert "a did not answer" not in text
            assert a.our_prompts_left() == []  # removed from the server that answers
    finally:
        freezer.thaw()
