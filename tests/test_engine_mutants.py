"""Engine behaviours that the mutation run (tools/mutate.py) showed no test pinned.

Each test names the one-line slip it catches; they use the same fakes as the other engine tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_comfy import FakeCluster, FakeServer
from test_engine_job_runs import WORKFLOW, Broken, Shot, run, scheduler_for

from comfy_cluster.core.engine.chunk_queue import ChunkQueue
from comfy_cluster.core.engine.job import JobStatus, RenderJob
from comfy_cluster.core.frames import Chunk


@pytest.fixture
def shot(tmp_path: Path) -> Shot:
    return Shot(tmp_path)


def test_a_server_is_not_idle_elsewhere_while_chunks_still_wait() -> None:
    """``idle_elsewhere`` says a queued prompt should move to a free server only when nothing
    else waits: with a chunk waiting, the free slot takes that chunk instead."""
    queue = ChunkQueue([Chunk(0, (1,), (), ()), Chunk(1, (2,), (), ())], ["a", "b"], lambda: 0.0)
    queue.add_slot("a-0", "a")
    queue.add_slot("b-0", "b")
    assert not queue.idle_elsewhere("a", usable=("a", "b"))  # both chunks wait
    assert not queue.idle_elsewhere("a", usable=("a",))


def test_an_output_folder_blocked_by_a_file_names_that_file(tmp_path: Path) -> None:
    """The output probe runs before anything else and says which file is in the way (the lock
    alone would only say 'Not a directory')."""
    shot = Shot(tmp_path)
    (tmp_path / "blocker").write_bytes(b"a file where the output folder should be")
    job = RenderJob(
        WORKFLOW, "1-2", str(tmp_path / "blocker" / "shot.####.png"), input_pattern=shot.input
    )
    with FakeCluster([FakeServer("a")]) as cluster:
        result = run(cluster, job)
    assert result.status is JobStatus.FAILED
    assert "a file is in the way" in result.message, result.message


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_job_that_cannot_even_fail_cleanly_reports_its_real_duration(shot: Shot) -> None:
    """The last-resort result of a job whose end itself fails still counts its seconds from
    the job's start (not some sum of clock readings)."""
    with FakeCluster([FakeServer("bug")]) as cluster:
        scheduler = scheduler_for(cluster, speed=Broken())
        handle = scheduler.start(shot.job("1"))
        result = handle.wait(10.0)
        scheduler.close(timeout=0)
    assert result is not None and result.status is JobStatus.FAILED
    assert 0.0 <= result.seconds < 10.0
