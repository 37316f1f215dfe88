"""How a job's end is told: :func:`final_result` (after the job ran) and :func:`early_result`
(when it failed its pre-flight checks).

The final verification trusts the disk, not the ledger: a requested frame missing from disk at
the end fails a job that would otherwise be done. Each path sends the one closing event
(``JobDone``, ``JobFailed`` or ``JobCancelled``) and builds the :class:`JobResult`.
"""

from __future__ import annotations

from typing import Callable, Optional

from comfy_cluster.core.engine.book import JobBook
from comfy_cluster.core.engine.events import EventSink, JobCancelled, JobDone, JobFailed
from comfy_cluster.core.engine.job import JobResult, JobStatus, RenderJob
from comfy_cluster.core.errors import ErrorInfo
from comfy_cluster.core.frames import frames_text
from comfy_cluster.core.transfer import frames_on_disk

__all__ = ["early_result", "final_result"]


def final_result(job: RenderJob, book: JobBook, elapsed: Callable[[], float]) -> JobResult:
    """Verify the frames on disk, send the closing event and build the result. ``elapsed()``
    gives the job's wall time so far (``JobDone.seconds``, ``JobResult.seconds``), read once
    the verification is done."""
    delivered = book.delivered_frames()
    requested = job.frame_range.frames
    # One listing per folder, not a stat per frame: cheap even for a million frames.
    on_disk = set(frames_on_disk(job.output_pattern, requested))
    missing = tuple(f for f in requested if f not in on_disk)
    end = book.end()
    if end is None and missing:
        book.fail_verification(
            f"{len(missing)} frame(s) missing on disk at the end: {frames_text(missing)}"
        )
        end = book.end()
    seconds = elapsed()
    per_server: dict[str, int] = {}
    for _path, server in delivered.values():
        per_server[server] = per_server.get(server, 0) + 1
    common = dict(
        job_id=job.job_id,
        frames_requested=requested,
        frames_written=tuple(sorted(delivered)),
        frames_skipped=book.skipped,
        frames_missing=missing,
        paths={f: p for f, (p, _s) in sorted(delivered.items())},
        per_server=per_server,
        retries=book.retries,
        blocklisted=dict(book.blocklist),
        seconds=seconds,
    )
    if end is None:
        book.post(
            JobDone,
            frames_written=len(delivered),
            per_server=dict(per_server),
            retries=book.retries,
            seconds=seconds,
        )
        book.flush()
        return JobResult(status=JobStatus.DONE, message="done", **common)
    if end.status is JobStatus.CANCELLED:
        book.post(JobCancelled)
        book.flush()
        return JobResult(status=JobStatus.CANCELLED, message="cancelled", **common)
    book.post(JobFailed, message=end.message, node_id=end.node_id)
    book.flush()
    error = end.error
    info = ErrorInfo.from_exception(error) if isinstance(error, BaseException) else None
    return JobResult(
        status=JobStatus.FAILED, message=end.message, node_id=end.node_id, error=info, **common
    )


def early_result(
    job: RenderJob,
    sink: EventSink,
    message: str,
    *,
    seconds: float,
    node_id: Optional[str] = None,
    error: Optional[BaseException] = None,
    existing: tuple[int, ...] = (),
) -> JobResult:
    """The job failed before any work was sent (no book): send ``JobFailed`` and say so."""
    sink.emit(
        JobFailed(
            job_id=job.job_id, progress=0.0, eta_seconds=None, message=message, node_id=node_id
        )
    )
    return JobResult(
        job_id=job.job_id,
        status=JobStatus.FAILED,
        frames_requested=job.frame_range.frames,
        frames_missing=job.frame_range.frames,
        seconds=seconds,
        message=message,
        node_id=node_id,
        error=ErrorInfo.from_exception(error) if error is not None else None,
        existing=existing,
    )
