"""A worker slot's side of model affinity (``core/engine/worker.py``), against fake servers.

The slot reads its server's whole ``/queue`` (others' loader inputs) so the job's book knows
what each server holds. What matters here: the first read happens before the slot gets work,
even when it fails, so dispatch never waits a poll interval for it; later reads come once per
``MODELS_POLL``, while the slot idles and while its prompt waits, never more often (100 servers
read by every slot every few milliseconds would load them); the history is read only when the
queue shows nothing; a workflow without a checkpoint costs no read at all; and a prompt of ours
that waits in the queue is never taken back because it waits.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Optional

from fake_comfy import FakeClient, FakeCluster, FakeServer, SlotRig
from fixtures_sim import wait_until
from workflows import invert_workflow

from comfy_cluster.core.engine import events as ev
from comfy_cluster.core.engine.job import JobStatus, RenderJob
from comfy_cluster.core.engine.model_names import QueueModels
from comfy_cluster.core.engine.worker import MODELS_HISTORY_ITEMS, MODELS_POLL
from comfy_cluster.core.errors import ServerUnreachable

CHECKPOINT = "ours.safetensors"


def checkpoint_workflow() -> dict[str, Any]:
    """The invert workflow with a checkpoint loader beside it: the job's model is known, so
    its book turns model affinity on (the fake server renders without the loader)."""
    workflow = invert_workflow()
    workflow["9"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}}
    return workflow


class Reads:
    """Every read and POST the slots made, in order: ``(kind, server, monotonic time)``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.log: list[tuple[str, str, float]] = []

    def add(self, kind: str, server: str) -> None:
        with self._lock:
            self.log.append((kind, server, time.monotonic()))

    def of(self, kind: str, server: str = "a") -> list[float]:
        with self._lock:
            return [at for k, s, at in self.log if k == kind and s == server]

    def kinds(self, server: str = "a") -> list[str]:
        with self._lock:
            return [k for k, s, _ in self.log if s == server]


class ModelClient(FakeClient):
    """A FakeClient that also serves the two reads of model affinity: the whole ``/queue``
    (built from the fake server's real queue) and the newest ``/history`` entries."""

    def __init__(self, server: FakeServer, reads: Reads, *, refuse: bool = False) -> None:
        super().__init__(server)
        self.reads = reads
        self.refuse = refuse
        #: ``recent_history``'s ``max_items`` on each call.
        self.history_sizes: list[int] = []

    def submit(self, workflow: dict, *, prompt_id: Optional[str] = None) -> str:
        self.reads.add("submit", self.name)
        return super().submit(workflow, prompt_id=prompt_id)

    def queue_body(self) -> dict[str, Any]:
        self.reads.add("queue", self.name)
        if self.refuse:
            raise ServerUnreachable("connection refused", server=self.name)
        fake = self.fake
        with fake._cond:
            running = [fake.running] if fake.running is not None else []
            pending = list(fake.pending)
        return {
            "queue_running": [[0, i.prompt_id, i.prompt, {}, []] for i in running],
            "queue_pending": [[n, i.prompt_id, i.prompt, {}, []] for n, i in enumerate(pending, 1)],
        }

    def recent_history(self, max_items: int = 64) -> dict[str, Any]:
        self.reads.add("history", self.name)
        self.history_sizes.append(max_items)
        return {}


def model_rig(
    cluster: FakeCluster,
    job: RenderJob,
    reads: Reads,
    *,
    refuse: Callable[[str], bool] = lambda name: False,
    clients: Optional[list[ModelClient]] = None,
    **settings: Any,
) -> SlotRig:
    def factory(config: Any) -> ModelClient:
        client = ModelClient(cluster.servers[config.name], reads, refuse=refuse(config.name))
        if clients is not None:
            clients.append(client)
        return client

    return SlotRig(cluster, job, client_factory=factory, **settings)


def job_of(tmp_path: Path, frames: str, workflow: Optional[dict] = None, **kw: Any) -> RenderJob:
    folder = tmp_path / "in"
    folder.mkdir(exist_ok=True)
    first, _, last = frames.partition("-")
    for f in range(int(first), int(last or first) + 1):
        (folder / f"in.{f:04d}.png").write_bytes(b"frame-%d" % f)
    return RenderJob(
        workflow or checkpoint_workflow(),
        frames,
        str(tmp_path / "out" / "o.####.png"),
        input_pattern=str(folder / "in.####.png"),
        **kw,
    )


def test_a_workflow_without_a_checkpoint_reads_no_queue_for_models(tmp_path: Path) -> None:
    reads = Reads()
    with FakeCluster([FakeServer("a")]) as cluster:
        rig = model_rig(cluster, job_of(tmp_path, "1-3", invert_workflow()), reads)
        rig.run()
    assert rig.written() == [1, 2, 3]
    assert reads.of("queue") == [] and reads.of("history") == []


def test_a_failed_first_read_still_lets_the_slot_take_work_at_once(tmp_path: Path) -> None:
    """A server whose ``/queue`` cannot be read in full (a proxy that refuses it) is judged by
    the normal checks, not by this optional read: its slot's first read counts as done, failed
    or not, and the first chunk goes there without waiting a poll interval for a second."""
    reads = Reads()
    with FakeCluster([FakeServer("a")]) as cluster:
        rig = model_rig(cluster, job_of(tmp_path, "1"), reads, refuse=lambda name: True)
        rig.run()
    assert rig.written() == [1]
    kinds = reads.kinds()
    assert kinds.index("submit") == 1, kinds  # one (failed) read, then the prompt


def test_an_idle_servers_first_read_looks_at_its_history(tmp_path: Path) -> None:
    """With nothing queued, what the server holds is its newest history entries' model."""
    reads = Reads()
    clients: list[ModelClient] = []
    with FakeCluster([FakeServer("a")]) as cluster:
        rig = model_rig(cluster, job_of(tmp_path, "1"), reads, clients=clients)
        rig.run()
    assert reads.kinds()[:3] == ["queue", "history", "submit"]
    assert clients[0].history_sizes[0] == MODELS_HISTORY_ITEMS


def test_a_busy_queue_is_read_without_its_history(tmp_path: Path) -> None:
    """When the queue shows a prompt, the history says nothing newer: it is not read."""
    reads = Reads()
    a = FakeServer("a", seconds=3 * MODELS_POLL)
    with FakeCluster([a]) as cluster:
        rig = model_rig(cluster, job_of(tmp_path, "1"), reads)
        rig.run()
    queue, history, submit = reads.of("queue"), reads.of("history"), reads.of("submit")
    assert history and history[0] < submit[0]  # the idle first read
    running = [at for at in queue if submit[0] < at < submit[0] + 0.8 * a.seconds]
    assert running, queue  # read while our prompt ran...
    assert not [at for at in history if submit[0] < at < submit[0] + 0.8 * a.seconds], history


def test_a_slot_reads_its_queue_once_per_poll_interval_while_its_prompt_runs(
    tmp_path: Path,
) -> None:
    """Reads go on while our prompt runs (another client's prompt queued behind it would take
    the server from us), but once per ``MODELS_POLL``: not at every turn of the wait."""
    reads = Reads()
    render = 4 * MODELS_POLL
    with FakeCluster([FakeServer("a", seconds=render)]) as cluster:
        rig = model_rig(cluster, job_of(tmp_path, "1"), reads)
        rig.run()
    assert rig.written() == [1]
    submit = reads.of("submit")[0]
    during = [at for at in reads.of("queue") if at > submit]
    # About one read per interval of the render (a loaded machine may miss one or two).
    assert 2 <= len(during) <= render / MODELS_POLL + 1, during
    gaps = [b - a for a, b in zip(during, during[1:])]
    assert min(gaps) >= MODELS_POLL * 0.8, gaps


def test_an_idle_slot_keeps_reading_its_queue(tmp_path: Path) -> None:
    """A slot with no work reads its server once per interval: another client's model that
    arrives there meanwhile decides whether our next chunk may go there."""
    reads = Reads()
    # Both render slowly: whichever takes the frame, the other idles about two seconds.
    a, b = (FakeServer(name, seconds=4 * MODELS_POLL) for name in ("a", "b"))
    with FakeCluster([a, b]) as cluster:
        rig = model_rig(cluster, job_of(tmp_path, "1"), reads)
        rig.run()
    assert rig.written() == [1]
    idle = "b" if reads.of("submit", "a") else "a"
    assert not reads.of("submit", idle)
    assert len(reads.of("queue", idle)) >= 3, reads.of("queue", idle)


@contextmanager
def prompt_held_in_queue(tmp_path: Path) -> Iterator[tuple[FakeServer, SlotRig, list]]:
    """A one-frame job whose prompt waits in held server ``a``'s queue, its slot running (the
    stall limit far off, so only the rule under test ends the wait)."""
    a = FakeServer("a")
    a.hold()
    with FakeCluster([a]) as cluster:
        rig = model_rig(cluster, job_of(tmp_path, "1"), Reads(), stall_timeout=30.0)
        threads = rig.start()
        wait_until(lambda: a.received, 5.0)
        yield a, rig, threads


def test_our_prompt_waiting_in_the_queue_is_not_taken_back(tmp_path: Path) -> None:
    """A prompt of ours queued behind other work waits there: only another client's model
    taking the server moves it. It is sent once."""
    with prompt_held_in_queue(tmp_path) as (a, rig, threads):
        time.sleep(3 * MODELS_POLL)  # several reads see it pending
        a.release()
        rig.join(threads)
    assert rig.written() == [1]
    assert len(a.posted) == 1, a.posted
    assert not rig.of(ev.ChunkRetried)


def test_a_job_that_ends_interrupts_the_prompts_still_waiting(tmp_path: Path) -> None:
    """Another slot failed the job (say its disk is full): a prompt of ours still waiting on a
    server is deleted there at once, not at the stall limit."""
    with prompt_held_in_queue(tmp_path) as (a, rig, threads):
        rig.book.fail("disk full on another slot")
        rig.join(threads, timeout=5.0)
        assert a.our_prompts_left() == []
    end = rig.book.end()
    assert end is not None and end.status is JobStatus.FAILED


def test_the_load_estimate_comes_from_our_own_prompts_times(tmp_path: Path) -> None:
    """Each prompt's time, submit to result, feeds the load estimate: on ``a`` the first prompt
    loads our model (20 times a warm prompt's time), the next one is warm. With that learnt, a
    cold server costs more than it saves on four frames: the job does not load ours there."""
    reads = Reads()
    a = FakeServer("a", seconds=0.05, plan=["slow"])
    with FakeCluster([a, FakeServer("b")]) as cluster:
        rig = model_rig(cluster, job_of(tmp_path, "1-2", chunk_size=1), reads)
        rig.run(rig.slot("a"))
    assert rig.written() == [1, 2]
    rig.book.models_seen("b", QueueModels(), frozenset({"theirs.safetensors"}))
    assert rig.book.models.admit(["b"], ["a", "b"], 4) == []
