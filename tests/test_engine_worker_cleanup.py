"""Nothing of a job is left on any server: the cancel sweep (``sweep.py``) and the slot's own
cleanup. A prompt left running keeps a GPU busy for nobody and blocks the next job's prompts
queued behind it, so the sweep must work even when a worker slot could not clean up after
itself.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fake_comfy import FakeClient, FakeCluster, FakeServer, SlotRig
from workflows import generated_workflow, invert_workflow

from comfy_cluster.core.engine.job import JobStatus, RenderJob
from comfy_cluster.core.engine.scheduler import Scheduler
from comfy_cluster.core.engine.sweep import sweep_prompts
from comfy_cluster.core.errors import ServerTimeout
from comfy_cluster.core.retry import retry_transient

WORKFLOW = invert_workflow()
#: Runs on a fake server without any upload.
STANDALONE = generated_workflow()


def inputs(folder: Path, frames: range) -> str:
    for f in frames:
        (folder / f"in.{f:04d}.png").write_bytes(b"frame-%d" % f)
    return str(folder / "in.####.png")


def until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.002)


class CannotCancel(FakeClient):
    """A client whose ``cancel`` never gets through (its connection is wedged); the sweep's
    fresh clients use ``interrupt``/``delete_queued``, which work."""

    def cancel(self, prompt_id: str) -> None:
        raise ServerTimeout("read timed out", server=self.name)


def test_cancel_interrupts_a_running_prompt_the_worker_could_not_clean_up(
    tmp_path: Path,
) -> None:
    """Item 10: the slot's own cancel fails; the sweep still interrupts our hung prompt."""
    hung = FakeServer("a", plan=["hang"])
    cluster = FakeCluster([hung])
    pattern = inputs(tmp_path, range(1, 3))
    scheduler = Scheduler(
        cluster.configs,
        client_factory=lambda config: CannotCancel(cluster.servers[config.name]),
        stall_timeout=30,
        poll_interval=0.01,
        retry=retry_transient(attempts=2, sleep=lambda s: None),
    )
    with cluster, scheduler:
        handle = scheduler.start(
            RenderJob(WORKFLOW, "1", str(tmp_path / "o.####.png"), input_pattern=pattern)
        )
        until(lambda: hung.running is not None)
        handle.cancel()
        result = handle.wait(10)
        assert result is not None and result.status is JobStatus.CANCELLED
        until(lambda: not hung.our_prompts_left())
    (prompt_id,) = hung.received
    assert hung.history[prompt_id]["status"]["status_str"] == "error"  # interrupted


def rig_with_live_prompts(tmp_path: Path, *servers: FakeServer) -> SlotRig:
    pattern = inputs(tmp_path, range(1, 2))
    job = RenderJob(WORKFLOW, "1", str(tmp_path / "o.####.png"), input_pattern=pattern)
    return SlotRig(FakeCluster(servers), job)


def test_the_sweep_interrupts_ours_deletes_our_queued_ones_and_leaves_others_alone(
    tmp_path: Path,
) -> None:
    a = FakeServer("a", plan=["hang", "ok", "ok"])
    rig = rig_with_live_prompts(tmp_path, a)
    someone = FakeClient(a)
    with rig.cluster:
        a.hold()
        for pid in ("ours-running", "ours-queued"):
            a.submit(dict(STANDALONE), pid, "us")
            rig.book.prompt_submitted("a", pid)
        a.submit(dict(STANDALONE), "theirs", someone.client_id)
        a.release()
        until(lambda: a.running is not None)
        rig.book.prompt_submitted("a", "ours-finished-long-ago")
        sweep_prompts(rig.book, rig.plan.servers, rig.cluster.client_factory)
        until(lambda: a.running is None or a.running.prompt_id != "ours-running")
        assert a.history["ours-running"]["status"]["status_str"] == "error"
        assert "ours-queued" not in a.our_prompts_left()
        until(lambda: "theirs" in a.history)  # not ours: it runs to the end
        assert a.history["theirs"]["status"]["status_str"] == "success"
        assert "ours-queued" not in a.history
        assert rig.book.live_prompts() == {}
        assert rig.cluster.clients and all(c.closed for c in rig.cluster.clients)


def test_the_sweep_deletes_queued_prompts_before_they_start(tmp_path: Path) -> None:
    """A queued prompt of ours is deleted, not left to start (and cost a render) after the
    job is over; a prompt of another client queued with it stays."""
    a = FakeServer("a")
    rig = rig_with_live_prompts(tmp_path, a)
    with rig.cluster:
        a.hold()
        a.submit(dict(STANDALONE), "ours", "us")
        a.submit(dict(STANDALONE), "theirs", "someone")
        rig.book.prompt_submitted("a", "ours")
        sweep_prompts(rig.book, rig.plan.servers, rig.cluster.client_factory)
        assert [item.prompt_id for item in a.pending] == ["theirs"]
        assert rig.book.live_prompts() == {}


def test_a_dead_server_does_not_stop_the_sweep_of_the_others(tmp_path: Path) -> None:
    dead, alive = FakeServer("dead"), FakeServer("alive")
    rig = rig_with_live_prompts(tmp_path, dead, alive)
    with rig.cluster:
        dead.kill()
        alive.hold()
        alive.submit(dict(STANDALONE), "ours", "us")
        rig.book.prompt_submitted("dead", "lost-with-it")
        rig.book.prompt_submitted("alive", "ours")
        sweep_prompts(rig.book, rig.plan.servers, rig.cluster.client_factory)
        assert alive.pending == []
        assert rig.book.live_prompts() == {"dead": ("lost-with-it",)}  # unknown fate: kept
        assert len(rig.cluster.clients) == 2 and all(c.closed for c in rig.cluster.clients)
