"""The preflight gate itself (``core/engine/server_gate.py``), driven by hand on a real sim.

What a worker slot's ``wait`` promises: False for a server its check refused, False at once
when the job ends while the check still hangs (never blocked until the check's own deadline),
and True for a server that passed. The render-level behaviour is in
``test_engine_preflight_gate.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

from test_engine_job_book import first_free
from test_engine_preflight_gate import HangingInfo, img2img, shot

from comfy_cluster.core.balance import SpeedTracker
from comfy_cluster.core.client import ComfyClient
from comfy_cluster.core.connection_settings import Timeouts
from comfy_cluster.core.engine import events as ev
from comfy_cluster.core.engine.book import JobBook
from comfy_cluster.core.engine.job import RenderJob
from comfy_cluster.core.engine.plan import plan_job
from comfy_cluster.core.engine.server_gate import ServerGate
from comfy_cluster.core.engine.settings import EngineSettings
from comfy_cluster.core.engine.tools import Preflight
from comfy_cluster.core.server import ServerConfig


def gate_on(
    sims: Sequence[Any],
    tmp_path: Path,
    *,
    release: Optional[threading.Event] = None,
    sink: Callable[[ev.JobEvent], None] = lambda event: None,
) -> tuple[ServerGate, JobBook]:
    """A two-frame img2img job's gate for ``sims``, one slot registered per server, not
    started; its book's events go to ``sink``. With ``release``, every check's
    ``/object_info`` hangs until it is set."""
    servers = [ServerConfig(name=s.options.name, host="127.0.0.1", port=s.port) for s in sims]
    inputs, output = shot(tmp_path, 2)
    job = RenderJob(img2img(), "1-2", output, input_pattern=inputs)
    plan = plan_job(job, servers, speed=SpeedTracker(), settings=EngineSettings())
    book = JobBook(
        job,
        plan.chunks,
        [server.name for server in servers],
        frames_to_render=plan.to_render,
        chooser=first_free,
        sink=ev.EventSink(sink),
        clock=time.monotonic,
    )

    def factory(config: ServerConfig, timeouts: Timeouts) -> Any:
        client = ComfyClient(config, timeouts=timeouts)
        return client if release is None else HangingInfo(client, release)

    gate = ServerGate(book, plan, job, Preflight(client_factory=factory, timeout=30.0))
    for server in servers:
        gate.add_slot(f"{server.name}-0", server.name)
    return gate, book


def waiting(gate: ServerGate, server: str) -> tuple[threading.Thread, list[bool]]:
    """``gate.wait(server)`` on a daemon thread, as a worker slot calls it; its answer lands
    in the list."""
    answer: list[bool] = []
    thread = threading.Thread(target=lambda: answer.append(gate.wait(server)), daemon=True)
    thread.start()
    return thread, answer


def test_a_refused_servers_slot_is_told_not_to_work(tmp_path: Path, sim_factory: Any) -> None:
    """A server missing the workflow's model is out of the job: its waiting slot must hear
    False (a True would start a worker that polls the server's queue for nothing), while the
    job goes on and a server that passed is told to work. Each verdict is announced by the
    time its slot hears it, not held until some worker next flushes the book's events."""
    good = sim_factory(name="good", node_seconds=0.01)
    nomodel = sim_factory(name="nomodel", node_seconds=0.01, models=("other.safetensors",))
    seen: list[ev.JobEvent] = []
    gate, book = gate_on([good, nomodel], tmp_path, sink=seen.append)
    refused, refused_answer = waiting(gate, "nomodel")
    passed, passed_answer = waiting(gate, "good")
    gate.start()
    refused.join(20)
    passed.join(20)
    assert not book.over()  # the job goes on: each answer is its own server's verdict
    assert refused_answer == [False]
    assert passed_answer == [True]
    checked = {e.server: e.ok for e in seen if isinstance(e, ev.ServerChecked)}
    assert checked == {"good": True, "nomodel": False}


def test_a_passing_verdict_is_announced_by_the_time_its_slot_is_told(
    tmp_path: Path, sim_factory: Any
) -> None:
    """Not held in the book's feed until a worker next flushes it (a slot with no chunk to
    take would leave the view without the verdict)."""
    sim = sim_factory(name="good", node_seconds=0.01)
    seen: list[ev.JobEvent] = []
    gate, _ = gate_on([sim], tmp_path, sink=seen.append)
    thread, answer = waiting(gate, "good")
    gate.start()
    thread.join(20)
    assert answer == [True]
    assert [(e.server, e.ok) for e in seen if isinstance(e, ev.ServerChecked)] == [("good", True)]


def test_a_job_ended_during_a_hanging_check_frees_its_slot_at_once(
    tmp_path: Path, sim_factory: Any
) -> None:
    """The slot waits from before the check starts (as the job's workers do); the check then
    hangs. Cancelling the job must release the slot within a wait step or two with False, not
    leave it blocked until the check's 30 s deadline."""
    sim = sim_factory(name="silent", node_seconds=0.01)
    release = threading.Event()
    try:
        gate, book = gate_on([sim], tmp_path, release=release)
        thread, answer = waiting(gate, "silent")
        time.sleep(0.15)  # the slot is waiting before the check has started
        gate.start()
        time.sleep(0.4)  # the check is in its hanging /object_info
        assert thread.is_alive() and answer == []
        book.job.cancel_token.set()
        thread.join(2.0)
        assert not thread.is_alive(), "the slot stayed blocked on the hanging check"
        assert answer == [False]
    finally:
        release.set()
