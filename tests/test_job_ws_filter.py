"""A render job's websocket listeners drop what the job never reads before parsing it, and the
job still sees every message it needs (issue 14): a real render on a sim, the real client."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from workflows import generated_workflow

from comfy_cluster.core import event_stream, protocol
from comfy_cluster.core.engine.job import RenderJob
from comfy_cluster.core.engine.scheduler import Scheduler
from comfy_cluster.core.server import ServerConfig
from comfy_cluster.sim.harness import SimServer


def test_a_job_parses_only_the_messages_it_reads(
    sim: SimServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[str] = []
    dropped: list[str] = []
    real_parse = protocol.parse_message
    on_listener = "comfy-cluster-ws-"

    def parse(frame: Any, **kw: Any) -> protocol.Event:
        if threading.current_thread().name.startswith(on_listener):
            parsed.append(protocol.peek_type(frame) or "?")
        return real_parse(frame, **kw)

    real_drops = protocol.MessageFilter.drops

    def drops(self: protocol.MessageFilter, frame: Any) -> bool:
        gone = real_drops(self, frame)
        if gone:
            dropped.append(protocol.peek_type(frame) or "?")
        return gone

    monkeypatch.setattr(event_stream.protocol, "parse_message", parse)
    monkeypatch.setattr(protocol.MessageFilter, "drops", drops)
    server = ServerConfig(name="a", host="127.0.0.1", port=sim.port)
    job = RenderJob(
        generated_workflow("w"),
        "1-4",
        str(tmp_path / "o.####.png"),
        overrides=("1.color={frame}",),
    )
    with Scheduler([server]) as scheduler:
        result = scheduler.run(job)
    assert result.ok, result.message
    assert result.frames_written == (1, 2, 3, 4)
    # What the job reads arrived parsed; what it never reads was dropped unparsed.
    assert {"executing", "executed"} <= set(parsed)
    assert {"status", "execution_success"} <= set(dropped)
    assert not set(parsed) & protocol.JOB_UNUSED.types
