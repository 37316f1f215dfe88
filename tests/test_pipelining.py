"""A server with ``max_in_flight`` 2 always has our next prompt queued while the current one
runs (issue 14): no idle gap between frames for the round trip of submitting the next one."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import requests
from workflows import generated_workflow

from comfy_cluster.core.engine.job import RenderJob
from comfy_cluster.core.engine.scheduler import Scheduler
from comfy_cluster.core.server import ServerConfig
from comfy_cluster.sim.harness import SimServer


def watch_queue(sim: SimServer, stop: threading.Event) -> list[tuple[int, int]]:
    """(running, pending) samples of the sim's /queue until ``stop``."""
    samples: list[tuple[int, int]] = []

    def run() -> None:
        with requests.Session() as session:
            session.trust_env = False
            while not stop.is_set():
                body: Any = session.get(f"{sim.url}/queue", timeout=5).json()
                samples.append((len(body["queue_running"]), len(body["queue_pending"])))
                time.sleep(0.02)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    stop.wait()
    thread.join(5)
    return samples


def render(sim: SimServer, tmp_path: Path, slots: int) -> list[tuple[int, int]]:
    server = ServerConfig(name="a", host="127.0.0.1", port=sim.port, max_in_flight=slots)
    job = RenderJob(
        generated_workflow(f"p{slots}"),
        "1-6",
        str(tmp_path / f"s{slots}" / "o.####.png"),
        overrides=("1.color={frame}",),
    )
    stop = threading.Event()
    samples: list[list[tuple[int, int]]] = []
    watcher = threading.Thread(target=lambda: samples.append(watch_queue(sim, stop)))
    watcher.start()
    try:
        with Scheduler([server]) as scheduler:
            result = scheduler.run(job)
    finally:
        stop.set()
        watcher.join(10)
    assert result.ok, result.message
    assert result.frames_written == (1, 2, 3, 4, 5, 6)
    return samples[0]


def test_two_slots_keep_the_next_prompt_queued_behind_the_running_one(
    sim_factory: Any, tmp_path: Path
) -> None:
    sim = sim_factory(node_seconds=0.1)  # three nodes: about 0.3 s per frame
    samples = render(sim, tmp_path, slots=2)
    busy = [s for s in samples if s[0] == 1]
    assert busy
    # Most of the time a frame runs, the next one already waits on the server.
    assert sum(1 for s in busy if s[1] >= 1) >= len(busy) // 2
    assert max(s[1] for s in samples) <= 1  # never more than max_in_flight in all
    one = render(sim, tmp_path, slots=1)
    # One slot: nothing of ours waits there, but for a sample caught in the instant the server
    # still lists the finished prompt as running while our next one is already in (seen once
    # under load on CI).
    waiting = sum(1 for s in one if s[1] >= 1)
    assert waiting <= max(1, len(one) // 10), one
