"""The scheduler on sims with real cluster conditions: cold, shared and restarted servers."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sim_jobs import configs, inputs
from workflows import invert_workflow

from comfy_cluster.core.engine import events as ev
from comfy_cluster.core.engine.job import RenderJob
from comfy_cluster.core.engine.scheduler import Scheduler
from comfy_cluster.sim.harness import start_sims, stop_all
from comfy_cluster.sim.options import SimOptions


def test_cold_and_shared_servers_render_every_frame_once(tmp_path: Path) -> None:
    sims = start_sims(
        2,
        [
            SimOptions(name="cold", node_seconds=0.01, warmup_seconds=0.3),
            SimOptions(name="shared", node_seconds=0.01, foreign_load=0.5, foreign_seconds=0.2),
        ],
    )
    written: list[int] = []
    try:
        with Scheduler(configs(sims)) as scheduler:
            job = RenderJob(
                invert_workflow("c"),
                "1-20",
                str(tmp_path / "out" / "o.####.png"),
                input_pattern=inputs(tmp_path / "in", 20),
            )

            def on_event(event: ev.JobEvent) -> None:
                if isinstance(event, ev.FrameWritten):
                    written.append(event.frame)

            result = scheduler.run(job, on_event)
        assert result.ok, result.message
        assert sorted(written) == list(range(1, 21))
    finally:
        stop_all(sims)


def test_every_server_killed_and_restarted_on_the_same_port(tmp_path: Path) -> None:
    sims = start_sims(2, SimOptions(name="back", node_seconds=0.02))
    ports = [s.port for s in sims]
    try:
        for s in sims:
            s.kill()
        assert not any(s.running for s in sims)
        restarted = threading.Event()

        def bring_back() -> None:
            time.sleep(0.5)
            for s in sims:
                s.start()
            restarted.set()

        thread = threading.Thread(target=bring_back)
        thread.start()
        thread.join(10)
        assert restarted.is_set() and [s.port for s in sims] == ports
        with Scheduler(configs(sims)) as scheduler:
            job = RenderJob(
                invert_workflow("b"),
                "1-6",
                str(tmp_path / "out" / "o.####.png"),
                input_pattern=inputs(tmp_path / "in", 6),
            )
            result = scheduler.run(job)
        assert result.ok, result.message
    finally:
        stop_all(sims)
