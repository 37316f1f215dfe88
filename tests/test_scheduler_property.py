"""Property: whatever faults the servers show, as long as one server works, every requested frame
is written exactly once, with the right content, and nothing is left queued.

Runs on the in-process fake cluster (tests/fake_comfy.py), so each example takes milliseconds
(plus a fraction of a second per simulated hang). Every wait is bounded: a job that does not end
in ``JOB_LIMIT`` seconds is cancelled and the example fails with its plans, instead of hanging
the suite.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fake_comfy import ACTIONS, FakeCluster, FakeServer, invert
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from workflows import invert_workflow

from comfy_cluster.core.engine import events as ev
from comfy_cluster.core.engine.job import RenderJob
from comfy_cluster.core.engine.scheduler import Scheduler
from comfy_cluster.core.retry import retry_transient
from comfy_cluster.core.transfer import HttpTransfer

WORKFLOW = invert_workflow()


class CountingTransfer(HttpTransfer):
    """Counts writes per destination, to prove no frame is written twice."""

    def __init__(self, counts: dict[str, int], lock: threading.Lock) -> None:
        super().__init__()
        self.counts = counts
        self.lock = lock

    def fetch_output(self, client: Any, server: Any, ref: Any, dest: Path) -> Path:
        path = super().fetch_output(client, server, ref, dest)
        with self.lock:
            self.counts[str(dest)] = self.counts.get(str(dest), 0) + 1
        return path


#: Seconds one example's job may take (a few simulated hangs take well under one).
JOB_LIMIT = 30.0

plans = st.lists(st.sampled_from(ACTIONS), max_size=4)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    plan_a=plans,
    plan_b=plans,
    n_frames=st.integers(min_value=1, max_value=8),
    batch=st.booleans(),
    chunk_size=st.integers(min_value=0, max_value=3),
    slots=st.integers(min_value=1, max_value=2),
)
def test_every_frame_exactly_once_under_random_faults(
    plan_a: list, plan_b: list, n_frames: int, batch: bool, chunk_size: int, slots: int
) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="cc-prop-"))
    for f in range(1, n_frames + 1):
        (tmp / f"in.{f:04d}.png").write_bytes(b"frame-%d" % f)
    servers = [
        FakeServer("a", plan=plan_a, max_in_flight=slots),
        FakeServer("b", plan=plan_b),
        FakeServer("ok", seconds=0.004),  # the one server that always works
    ]
    counts: dict[str, int] = {}
    lock = threading.Lock()
    written: list[int] = []

    def on_event(event: ev.JobEvent) -> None:
        if isinstance(event, ev.FrameWritten):
            written.append(event.frame)

    with FakeCluster(servers) as cluster:
        scheduler = Scheduler(
            cluster.configs,
            client_factory=cluster.client_factory,
            stall_timeout=0.15,
            first_prompt_timeout=0.3,
            poll_interval=0.005,
            history_interval=0.1,
            retry=retry_transient(attempts=3, max_seconds=5.0, sleep=lambda s: None),
            transfer_factory=lambda shared: CountingTransfer(counts, lock),
            # Failures spread over many chunks must not take the working server out.
            blocklist_after=3,
            probe_interval=0.02,
            join_timeout=5.0,
        )
        with scheduler:
            job = RenderJob(
                WORKFLOW,
                f"1-{n_frames}",
                str(tmp / "out" / "o.####.png"),
                input_pattern=str(tmp / "in.####.png"),
                mode="batch" if batch else "frame",
                chunk_size=chunk_size,
            )
            handle = scheduler.start(job, on_event)
            result = handle.wait(JOB_LIMIT)
            if result is None:
                handle.cancel()
                handle.wait(10.0)
                pytest.fail(
                    f"job did not end in {JOB_LIMIT:.0f} s: plans a={plan_a} b={plan_b}, "
                    f"{n_frames} frames, batch={batch}, chunk_size={chunk_size}, slots={slots}"
                )
        assert result.ok, (result.message, plan_a, plan_b)
        frames = list(range(1, n_frames + 1))
        assert result.frames_written == tuple(frames)
        assert sorted(written) == frames
        assert all(n == 1 for n in counts.values()), counts
        assert len(counts) == n_frames
        for f in frames:
            data = (tmp / "out" / f"o.{f:04d}.png").read_bytes()
            assert data == invert(b"frame-%d" % f)
        assert sorted(p.name for p in (tmp / "out").iterdir()) == [f"o.{f:04d}.png" for f in frames]
        for server in servers:
            if server.dead:
                continue
            assert not server.pending, server.name
            deadline = time.monotonic() + 3
            while server.our_prompts_left():
                assert time.monotonic() < deadline, server.name
                time.sleep(0.005)
