"""The pre-flight checks of a job: :func:`plan_job` turns a :class:`RenderJob` into a
:class:`JobPlan`, or raises :class:`EarlyFailure` before anything is sent.

Checked in order: the workflow (API format, output node, image loader), the strategy name, the
job's server allow-list, the output set-up (``core/output_checks.py``: the save node's image kind
against the output's extension, input and output naming the same files, an output folder that
cannot be written), the output frames already on disk (``existing``; for ``resume`` only whole
images count), and, unless the host is still writing them (``wait_for_input``), the input frames.
Then the frames are cut into chunks.

Fast for long ranges: files are looked up in one listing per folder (``transfer.frames_on_disk``),
never ``stat``-ed per frame, sets are built once, and a frame-mode job holds at most
:data:`MAX_FRAME_MODE_CHUNKS` chunks (``--frames 1-1000000``: under a second to the first
prompt, about 130 bytes of client memory per frame).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable, Optional

from comfy_cluster.core.balance import Strategy, make_strategy
from comfy_cluster.core.engine.job import RenderJob
from comfy_cluster.core.engine.settings import EngineSettings
from comfy_cluster.core.engine.tools import SpeedRecord
from comfy_cluster.core.errors import ConfigError, WorkflowError
from comfy_cluster.core.frames import (
    AutoChunker,
    Chunk,
    Chunker,
    FixedChunker,
    frames_text,
    order_chunks,
)
from comfy_cluster.core.output_checks import check_output_setup
from comfy_cluster.core.server import ServerConfig
from comfy_cluster.core.transfer import existing_frames, frames_on_disk
from comfy_cluster.core.workflow import Workflow, WorkflowTargets, validate_workflow

__all__ = ["MAX_FRAME_MODE_CHUNKS", "EarlyFailure", "JobPlan", "plan_job"]

#: Most chunks a frame-mode job is cut into without a chunk size: past it chunks grow beyond one
#: frame (``--frames 1-1000000`` gets 10-frame chunks), so the client's memory for the job's
#: bookkeeping stays bounded while every server still gets work in small steps.
MAX_FRAME_MODE_CHUNKS = 100_000


@dataclass(frozen=True)
class JobPlan:
    """What the controller worked out before sending anything."""

    workflow: Workflow
    targets: WorkflowTargets
    #: The servers that may take work, in configuration order.
    servers: tuple[ServerConfig, ...]
    strategy: Strategy
    requested: tuple[int, ...]
    to_render: tuple[int, ...]
    #: Frames on disk already and not rendered (``existing="resume"``).
    skipped: tuple[int, ...]
    chunks: tuple[Chunk, ...]
    #: The speed record the chunks were sized with (the workflow shape's, when known).
    speed: SpeedRecord


class EarlyFailure(Exception):
    """The job cannot start: ``message`` says why, ``node_id`` names a workflow node at fault,
    ``existing`` lists output frames found on disk (``existing="error"``)."""

    def __init__(
        self,
        message: str,
        *,
        node_id: Optional[str] = None,
        error: Optional[BaseException] = None,
        existing: tuple[int, ...] = (),
    ) -> None:
        super().__init__(message)  # pragma: no mutate
        self.message = message
        self.node_id = node_id
        self.error = error
        self.existing = existing


def plan_job(
    job: RenderJob,
    servers: Sequence[ServerConfig],
    *,
    speed: SpeedRecord,
    settings: EngineSettings,
    inputs_arrive_later: bool = False,
    speed_for: Optional[Callable[[Workflow], SpeedRecord]] = None,
) -> JobPlan:
    """Check ``job`` against the scheduler's ``servers`` and cut it into chunks.

    ``inputs_arrive_later``: the job was started with ``wait_for_input``, so its input frames
    need not exist yet (each worker waits for its own). ``speed_for``: the record of the
    loaded workflow's shape, used instead of ``speed`` (the workflow is read once, here).
    Raises :class:`EarlyFailure`.
    """
    try:
        workflow = Workflow.load(job.workflow)
        targets = validate_workflow(
            workflow,
            needs_image_input=bool(job.input_pattern),
            output_node=job.output_node,
            loader=job.image_loader,
        )
    except WorkflowError as exc:
        raise EarlyFailure(str(exc), node_id=exc.node_id, error=exc) from None
    if speed_for is not None:
        speed = speed_for(workflow)
    try:
        strategy = make_strategy(job.strategy)
    except ConfigError as exc:
        raise EarlyFailure(str(exc), error=exc) from None
    usable = _job_servers(job, servers)
    requested = job.frame_range.frames
    try:
        check_output_setup(
            workflow,
            targets.output_node,
            job.output_pattern,
            job.input_pattern,
            _input_frames(requested, job.handles),
            requested,
        )
    except ConfigError as exc:
        raise EarlyFailure(str(exc), error=exc) from None
    if job.existing == "overwrite":
        existing: tuple[int, ...] = ()
    else:
        # resume: only whole images are skipped (an HTML page or half a PNG is rendered again).
        existing = existing_frames(
            job.output_pattern, requested, whole_images=job.existing == "resume"
        )
    if existing and job.existing == "error":
        raise EarlyFailure(
            f"{len(existing)} output frame(s) already exist ({frames_text(existing)} in "
            f"{job.output_pattern}); choose resume to skip them or overwrite to replace them",
            existing=existing,
        )
    skipped = existing if job.existing == "resume" else ()
    if skipped:
        skip = set(skipped)
        to_render = tuple(f for f in requested if f not in skip)
    else:
        to_render = requested
    chunks: tuple[Chunk, ...] = ()
    if to_render:
        chunker = _chunker(job, len(to_render), usable, speed, settings)
        # The job's range is sorted and unique already: no need to check a million frames again.
        frames = job.frame_range if to_render is requested else to_render
        chunks = tuple(order_chunks(chunker.split(frames), job.order))
    if job.input_pattern and not inputs_arrive_later:
        _check_inputs(job.input_pattern, chunks)
    return JobPlan(
        workflow, targets, usable, strategy, requested, to_render, skipped, chunks, speed
    )


def _job_servers(job: RenderJob, servers: Sequence[ServerConfig]) -> tuple[ServerConfig, ...]:
    """The enabled servers the job's allow-list permits; every name in it must exist."""
    if job.servers is not None:
        known = {srv.name for srv in servers}
        unknown = [name for name in job.servers if name not in known]
        if unknown:
            raise EarlyFailure(f"unknown server(s) in the job's allow-list: {', '.join(unknown)}")
    usable = tuple(
        srv for srv in servers if srv.enabled and (job.servers is None or srv.name in job.servers)
    )
    if not usable:
        raise EarlyFailure("no enabled server may take this job")
    return usable


def _chunker(
    job: RenderJob,
    frames: int,
    servers: Sequence[ServerConfig],
    speed: SpeedRecord,
    settings: EngineSettings,
) -> Chunker:
    """How the job's frames are cut: fixed sizes when asked (or per frame), else by timing."""
    if job.mode == "frame":
        # One prompt per frame anyway: one-frame chunks balance best at little extra cost, up
        # to MAX_FRAME_MODE_CHUNKS chunks (each costs the client some memory).
        return FixedChunker(job.chunk_size or -(-frames // MAX_FRAME_MODE_CHUNKS))
    if job.chunk_size:
        return FixedChunker(job.chunk_size, job.handles)
    known = [speed.seconds_per_frame(srv.name) for srv in servers]
    measured = [x for x in known if x]
    spf = sum(measured) / len(measured) if measured else None
    workers = sum(max(1, srv.max_in_flight) for srv in servers)
    return AutoChunker(
        target_seconds=settings.target_chunk_seconds,
        seconds_per_frame=spf,
        workers=workers,
        handles=job.handles,
    )


def _input_frames(requested: Sequence[int], handles: int) -> Sequence[int]:
    """The input frames a job may read: the requested ones and ``handles`` either side."""
    if not handles:  # pragma: no mutate
        return requested
    # Each requested frame is read itself, so a frame read beyond the last handle collides with
    # no output frame: an end one too far changes no verdict of the output check.
    stop = handles + 1  # pragma: no mutate
    return sorted({g for f in requested for g in range(f - handles, f + stop)})


def _check_inputs(input_pattern: str, chunks: Sequence[Chunk]) -> None:
    """Every input frame the chunks read (handles included) must be on disk."""
    needed = sorted({f for c in chunks for f in c.all_frames})
    present = set(frames_on_disk(input_pattern, needed))
    missing = [f for f in needed if f not in present]
    if missing:
        raise EarlyFailure(
            f"{len(missing)} input frame(s) missing ({frames_text(missing)} of {input_pattern})"
        )
