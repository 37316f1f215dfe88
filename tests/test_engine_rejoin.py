"""Rejoin: a server that left the job because it became unreachable is probed for the rest of the
job and takes work again once it answers; a whole-cluster outage is waited out (up to
``no_server_timeout``) instead of failing the job."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

from sim_jobs import configs, inputs
from workflows import invert_workflow

from comfy_cluster.core.engine import events as ev
from comfy_cluster.core.engine.job import JobResult, JobStatus, RenderJob
from comfy_cluster.core.engine.scheduler import Scheduler
from comfy_cluster.core.engine.settings import EngineSettings
from comfy_cluster.core.engine.standing import ServerStanding
from comfy_cluster.sim.harness import SimServer, start_sims, stop_all
from comfy_cluster.sim.options import SimOptions


class Record:
    """Events by type; calls ``trigger`` on its own thread once ``at`` frames are written."""

    def __init__(self, at: int, trigger) -> None:  # type: ignore[no-untyped-def]
        self.lock = threading.Lock()
        self.events: list[ev.JobEvent] = []
        self.at = at
        self.trigger = trigger
        self.thread: threading.Thread | None = None

    def __call__(self, event: ev.JobEvent) -> None:
        with self.lock:
            self.events.append(event)
            written = sum(isinstance(e, ev.FrameWritten) for e in self.events)
            if self.thread is None and written >= self.at:
                self.thread = threading.Thread(target=self.trigger)
                self.thread.start()

    def of(self, cls: type) -> list:
        with self.lock:
            return [e for e in self.events if isinstance(e, cls)]


def run_with_outage(
    tmp_path: Path, sims: list[SimServer], down: list[SimServer], pause: float, frames: int = 24
) -> tuple[JobResult, Record]:
    def outage() -> None:
        for s in down:
            s.kill()
        time.sleep(pause)
        for s in down:
            s.start()

    rec = Record(6, outage)
    with Scheduler(configs(sims), probe_interval=0.05, no_server_timeout=30.0) as scheduler:
        job = RenderJob(
            invert_workflow("r"),
            f"1-{frames}",
            str(tmp_path / "out" / "o.####.png"),
            input_pattern=inputs(tmp_path / "in", frames),
        )
        result = scheduler.run(job, rec)
    assert rec.thread is not None
    rec.thread.join(10)
    return result, rec


def test_a_restarted_server_rejoins_the_job(tmp_path: Path) -> None:
    sims = start_sims(2, SimOptions(name="rj", node_seconds=0.03))
    try:
        result, rec = run_with_outage(tmp_path, sims, [sims[0]], 0.8, frames=60)
        assert result.ok, result.message
        written = Counter(e.frame for e in rec.of(ev.FrameWritten))
        assert sorted(written) == list(range(1, 61)) and set(written.values()) == {1}
        name = sims[0].options.name
        assert name in {e.server for e in rec.of(ev.ServerRejoined)}
        assert name not in result.blocklisted
        rejoined_at = next(i for i, e in enumerate(rec.events) if isinstance(e, ev.ServerRejoined))
        after = [e for e in rec.events[rejoined_at:] if isinstance(e, ev.FrameWritten)]
        assert any(e.server == name for e in after), "the restarted server took no work again"
    finally:
        stop_all(sims)


def test_whole_cluster_outage_is_waited_out(tmp_path: Path) -> None:
    sims = start_sims(2, SimOptions(name="all", node_seconds=0.02))
    try:
        result, rec = run_with_outage(tmp_path, sims, list(sims), 2.5)
        assert result.ok, result.message
        assert result.status is JobStatus.DONE
        written = Counter(e.frame for e in rec.of(ev.FrameWritten))
        assert sorted(written) == list(range(1, 25)) and set(written.values()) == {1}
        assert not result.blocklisted  # out as unreachable for a while, then back
        assert {e.server for e in rec.of(ev.ServerRejoined)} == {s.options.name for s in sims}
    finally:
        stop_all(sims)


def test_outage_longer_than_no_server_timeout_fails_the_job(tmp_path: Path) -> None:
    sims = start_sims(1, SimOptions(name="gone", node_seconds=0.02))
    try:

        def kill() -> None:
            sims[0].kill()

        rec = Record(3, kill)
        started = time.monotonic()
        with Scheduler(configs(sims), probe_interval=0.05, no_server_timeout=2.0) as scheduler:
            job = RenderJob(
                invert_workflow("g"),
                "1-40",
                str(tmp_path / "out" / "o.####.png"),
                input_pattern=inputs(tmp_path / "in", 40),
            )
            result = scheduler.run(job, rec)
        assert result.status is JobStatus.FAILED
        assert "no server took work" in result.message
        assert time.monotonic() - started < 20
    finally:
        stop_all(sims)


def test_probes_come_every_second_while_no_server_is_usable() -> None:
    now = [0.0]
    settings = EngineSettings(probe_interval=0.5, probe_interval_max=10.0)
    standing = ServerStanding(["a", "b"], lambda: now[0], settings)
    standing.mark_validated("a")
    standing.mark_validated("b")
    assert standing.suspend("a", "down")
    reasons = []
    for _ in range(6):  # a alone is down: its probes back off to 10 s
        now[0] += 20.0
        assert standing.claim_probe("a")
        reason = standing.probe_failed("a", "refused")
        if reason is not None:
            reasons.append(reason)
            standing.block("a", reason)
    assert len(reasons) == 1 and reasons[0].startswith("unreachable (3 failures)")
    assert "a" in standing.away and "a" not in standing.eligible()  # out, still probed
    assert standing.until_probe("a") == 10.0
    assert standing.suspend("b", "down")  # now nothing is usable: at most 1 s between probes
    assert standing.until_probe("a") == 0.5
    now[0] += 0.5
    assert standing.claim_probe("a")
    assert standing.back("a") is not None  # it answered: back in the job
    assert "a" in standing.eligible() and "a" not in standing.blocklist


def test_a_server_that_never_worked_is_still_taken_out() -> None:
    now = [0.0]
    standing = ServerStanding(["a"], lambda: now[0], EngineSettings(blocklist_after=2))
    assert standing.suspend("a", "down")
    reasons = []
    for _ in range(2):
        now[0] += 20.0
        assert standing.claim_probe("a")
        reasons.append(standing.probe_failed("a", "refused"))
    assert reasons[0] is None and reasons[1] is not None and "unreachable" in reasons[1]


def test_a_server_out_for_what_it_did_gets_one_second_chance() -> None:
    now = [0.0]
    standing = ServerStanding(["a", "b"], lambda: now[0], EngineSettings(rejoin_after=30.0))
    assert standing.block("a", "sent junk")
    assert "a" not in standing.eligible() and standing.waits_for_second_chance("a")
    assert standing.eligible() == ("b",)  # the job never waits for it
    assert not standing.claim_probe("a") and standing.until_probe("a") == 30.0
    now[0] = 30.0
    assert standing.claim_probe("a") and not standing.claim_probe("a")  # one slot probes
    assert standing.rejoin("a") == "sent junk"
    assert "a" in standing.eligible() and not standing.waits_for_second_chance("a")
    assert standing.block("a", "sent junk again")
    assert not standing.waits_for_second_chance("a")  # at most once per job


def test_a_failed_second_chance_leaves_it_out() -> None:
    now = [0.0]
    standing = ServerStanding(["a"], lambda: now[0], EngineSettings(rejoin_after=1.0))
    standing.block("a", "authentication refused")
    now[0] = 1.0
    assert standing.claim_probe("a")
    standing.no_second_chance("a")
    assert not standing.waits_for_second_chance("a") and "a" in standing.blocklist
