"""A render job: what to render (:class:`RenderJob`) and how it ended (:class:`JobResult`).

Plain values, immutable once built. The bookkeeping of a *running* job lives in
``core/engine/book.py`` (:class:`~comfy_cluster.core.engine.book.JobBook`).
"""

from __future__ import annotations

import enum
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from comfy_cluster.core.errors import ErrorInfo, JobCancelledError, JobFailedError
from comfy_cluster.core.frames import FRAME_ORDERS, ORDER_SEQUENTIAL, FrameRange, format_frame_path

__all__ = ["EXISTING_MODES", "MODES", "JobResult", "JobStatus", "RenderJob"]

MODES = ("frame", "batch")
EXISTING_MODES = ("error", "resume", "overwrite")


@dataclass(frozen=True)
class RenderJob:
    """Everything a render needs. Immutable, except that ``cancel_token`` may be set by anyone.

    ``workflow`` is a loaded ``Workflow``, an API-format dict or a path. ``frames`` is a
    ``FrameRange``, Nuke range text (``"1001-1100"``) or frame numbers. ``output_pattern`` has a
    frame token (``out/shot.####.png``); ``input_pattern`` (optional) names the input frame bound to
    the image loader. ``mode`` is ``"frame"`` (one prompt per frame) or ``"batch"`` (one prompt per
    chunk, with ``handles`` frames of context each side that are never written). ``chunk_size`` 0
    means automatic. ``servers`` is an allow-list of server names (``None``: all enabled).
    ``existing``: ``"error"`` refuses to start when output frames exist (listing them),
    ``"resume"`` skips them (only whole images count), ``"overwrite"`` replaces them.
    ``break_lock``: take the output pattern even though a lock file says another job holds it
    (``core/output_lock.py``; for a lock left by a job on another host that is gone). Raises
    ``ValueError`` on bad values.
    """

    workflow: Any
    frames: Union[FrameRange, str, Sequence[int]]
    output_pattern: str
    input_pattern: Optional[str] = None
    mode: str = "frame"
    chunk_size: int = 0
    strategy: str = "fastest"
    servers: Optional[tuple[str, ...]] = None
    overrides: tuple[Any, ...] = ()
    existing: str = "error"
    shared_storage: bool = False
    handles: int = 0
    #: Output node (id or title) when the workflow has several image outputs.
    output_node: Optional[str] = None
    #: Image loader (id or title) when the workflow has several LoadImage nodes.
    image_loader: Optional[str] = None
    #: Take the output pattern even if another job's lock file is there (see above).
    break_lock: bool = False
    #: Which frames render first: ``"sequential"`` or ``"preview"`` (a spread of the shot first).
    order: str = ORDER_SEQUENTIAL
    job_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    #: Set to cancel; the scheduler polls it. ``JobHandle.cancel()`` sets it too.
    cancel_token: threading.Event = field(
        default_factory=threading.Event, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        frames = self.frames
        if isinstance(frames, str):
            frames = FrameRange.parse(frames)
        elif not isinstance(frames, FrameRange):
            frames = FrameRange.from_frames(frames)
        object.__setattr__(self, "frames", frames)
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.existing not in EXISTING_MODES:
            raise ValueError(
                f"existing must be one of {', '.join(EXISTING_MODES)}, not {self.existing!r}"
            )
        if self.order not in FRAME_ORDERS:
            raise ValueError(f"order must be one of {', '.join(FRAME_ORDERS)}, not {self.order!r}")
        if isinstance(self.chunk_size, bool) or not isinstance(self.chunk_size, int):
            raise ValueError(f"chunk_size must be a whole number, not {self.chunk_size!r}")
        if self.chunk_size < 0 or self.handles < 0:
            raise ValueError("chunk_size and handles must be >= 0")
        if self.handles and self.mode != "batch":
            raise ValueError("handles only make sense in batch mode")
        if self.mode == "batch" and not self.input_pattern:
            raise ValueError("batch mode needs an input_pattern (the frames to batch)")
        # Raises ConfigError without a frame token; any frame number would do.
        format_frame_path(self.output_pattern, 0)  # pragma: no mutate
        if self.input_pattern:
            format_frame_path(self.input_pattern, 0)  # pragma: no mutate
        if self.servers is not None:
            object.__setattr__(self, "servers", tuple(self.servers))
        object.__setattr__(self, "overrides", tuple(self.overrides))

    @property
    def frame_range(self) -> FrameRange:
        """``frames`` as a FrameRange (always normalised by the constructor)."""
        assert isinstance(self.frames, FrameRange)
        return self.frames


class JobStatus(enum.Enum):
    """How a job ended."""

    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class JobResult:
    """The end of a job: what was written where, by whom, and why it stopped.

    ``frames_missing`` lists requested frames not on disk at the end (empty when ``ok``).
    ``existing`` lists frames found on disk before anything was sent (``existing="error"``).
    """

    job_id: str
    status: JobStatus
    frames_requested: tuple[int, ...] = ()
    frames_written: tuple[int, ...] = ()
    frames_skipped: tuple[int, ...] = ()
    frames_missing: tuple[int, ...] = ()
    paths: Mapping[int, str] = field(default_factory=dict)
    #: Frames written per server name.
    per_server: Mapping[str, int] = field(default_factory=dict)
    #: Chunk attempts that failed and were retried elsewhere.
    retries: int = 0
    #: Servers taken out of this job, with the reason.
    blocklisted: Mapping[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    message: str = ""
    node_id: Optional[str] = None
    error: Optional[ErrorInfo] = None
    existing: tuple[int, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status is JobStatus.DONE

    def raise_for_status(self) -> JobResult:
        """Return self when done; raise ``JobFailedError`` / ``JobCancelledError`` otherwise."""
        if self.status is JobStatus.CANCELLED:
            raise JobCancelledError(self.message or "cancelled")
        if self.status is JobStatus.FAILED:
            raise JobFailedError(self.message)
        return self
