"""The typed event stream a render job emits, and the sink that delivers it.

Every event is a frozen dataclass carrying ``job_id``, the overall ``progress`` (0..1, where 1
means every frame is on disk) and ``eta_seconds`` (``None`` until there is something to estimate
from). A consumer (the CLI's progress bar, the Nuke panel) dispatches on the class::

    JobStarted        total_frames, skipped_frames, servers
    ChunkAssigned     chunk_index, frames, server, reason        (the balancer's reason)
    ChunkProgress     chunk_index, server, frames_done, frame_fraction
    FrameWritten      frame, path, server
    ChunkRetried      chunk_index, server, why, frames            (frames went back to the queue)
    ChunkSpeculated   chunk_index, frames, server, holder, reason (a copy of a slow holder's chunk)
    ServerBlocklisted server, why                                 (out of this job only)
    ServerChecked     server, ok, reasons, state                  (the preflight verdict)
    ServerStateChanged server, state, reason                      (offline, unusable, back...)
    JobDone           frames_written, per_server, retries, seconds
    JobFailed         message, node_id
    JobCancelled      (nothing more)

Events are built on worker threads; :class:`EventSink` serialises them so the callback is never
called concurrently. Nothing here knows about Nuke, Qt or the CLI.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Callable, Optional

__all__ = [
    "ChunkAssigned",
    "ChunkProgress",
    "ChunkRetried",
    "ChunkSpeculated",
    "EventSink",
    "FrameWritten",
    "JobCancelled",
    "JobDone",
    "JobEvent",
    "JobFailed",
    "JobStarted",
    "OnEvent",
    "ServerBlocklisted",
    "ServerChecked",
    "ServerRejoined",
    "ServerStateChanged",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobEvent:
    """Base of every job event: which job, how far along, and the estimated seconds left."""

    job_id: str
    #: Fraction of the job's frames done, 0..1; counts the running frames' sampler fraction.
    progress: float
    #: Estimated seconds until the last frame is written; ``None`` when unknown.
    eta_seconds: Optional[float]


@dataclass(frozen=True)
class JobStarted(JobEvent):
    """The job passed its checks and work is about to be sent."""

    #: Frames this job will render (skipped frames excluded).
    total_frames: int
    #: Names of the servers that may take work.
    servers: tuple[str, ...]
    #: Frames skipped because they already exist (``existing="resume"``).
    skipped_frames: tuple[int, ...] = ()


@dataclass(frozen=True)
class ChunkAssigned(JobEvent):
    """A chunk went to a server; ``reason`` is the balancer's explanation."""

    chunk_index: int
    frames: tuple[int, ...]
    server: str
    reason: str


@dataclass(frozen=True)
class ChunkProgress(JobEvent):
    """Progress inside a chunk: frames finished and the current frame's sampler fraction."""

    chunk_index: int
    server: str
    frames_done: int
    #: Fraction (0..1) of the prompt running now, from ComfyUI's ``progress`` messages.
    frame_fraction: float


@dataclass(frozen=True)
class FrameWritten(JobEvent):
    """A frame is complete on disk at ``path`` (written atomically, exactly once)."""

    frame: int
    path: str
    server: str


@dataclass(frozen=True)
class ChunkRetried(JobEvent):
    """A chunk attempt failed on ``server``; its undelivered ``frames`` return to the queue."""

    chunk_index: int
    server: str
    why: str
    frames: tuple[int, ...] = ()


@dataclass(frozen=True)
class ChunkSpeculated(JobEvent):
    """Speculative tail: idle ``server`` runs a copy of chunk ``chunk_index`` (its undelivered
    ``frames``) that ``holder`` is still rendering, because it would clearly finish sooner.
    Whichever writes a frame first wins it; the other's prompt is interrupted and deleted."""

    chunk_index: int
    frames: tuple[int, ...]
    server: str
    holder: str
    reason: str


@dataclass(frozen=True)
class ServerBlocklisted(JobEvent):
    """``server`` takes no more work in this job (too many failures, or degraded)."""

    server: str
    why: str


@dataclass(frozen=True)
class ServerRejoined(JobEvent):
    """``server``, which had left the job (unreachable, or excluded once for what it did),
    answers again and takes work from now on; ``why`` said why it had left."""

    server: str
    why: str = ""


@dataclass(frozen=True)
class ServerChecked(JobEvent):
    """The preflight verdict on ``server`` for this job's workflow (before its first prompt).

    ``ok`` False keeps the server out of the job; ``reasons`` say why, one line each
    (``missing node classes: ImageInvert``, ``node 4 (CheckpointLoaderSimple) input ckpt_name:
    'x.safetensors' is not on this server (it has none)``, ``unreachable: connection refused``).
    ``state`` is the verdict's one word (``ok``, ``unusable``, ``unreachable``, ``auth``,
    ``disabled``, ``error``; see ``core.preflight.VerdictState``), empty when not known.
    Without it a server that cannot run the job just sits at "0/40 waiting" all job long.
    """

    server: str
    ok: bool
    reasons: tuple[str, ...] = ()
    state: str = ""


@dataclass(frozen=True)
class ServerStateChanged(JobEvent):
    """``server``'s state changed during the job, with why: ``offline`` / ``connection refused``.

    ``state`` is one word (the health states ``ready``, ``busy``, ``offline``, ``degraded``,
    ``disabled``, or a preflight word such as ``unusable``); ``reason`` is one line, empty when
    the state says it all. Sent on a change only, so a view may print each one.
    """

    server: str
    state: str
    reason: str = ""


@dataclass(frozen=True)
class JobDone(JobEvent):
    """Every requested frame is on disk."""

    frames_written: int
    #: Frames written per server name.
    per_server: Mapping[str, int] = field(default_factory=dict)
    #: Chunk attempts that failed and were handed to another try.
    retries: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class JobFailed(JobEvent):
    """The job gave up; ``node_id`` names the workflow node at fault when one is."""

    message: str
    node_id: Optional[str] = None


@dataclass(frozen=True)
class JobCancelled(JobEvent):
    """The user cancelled; no prompt of this job is left on any server."""


OnEvent = Callable[[JobEvent], None]


class EventSink:
    """Delivers events to one callback, one at a time, from whichever thread emits them.

    Any thread may call :meth:`emit`. The callback runs on the emitting thread under a lock, so
    it is never called concurrently; it must not block for long and must marshal to its own
    thread (Nuke's main thread, Qt) itself. A callback that raises is logged, not propagated: a
    broken progress bar must not fail a render.
    """

    def __init__(self, callback: Optional[OnEvent]) -> None:
        self._callback = callback
        self._lock = threading.Lock()

    def emit(self, event: JobEvent) -> None:
        if self._callback is None:
            return
        with self._lock:
            try:
                self._callback(event)
            except Exception:
                log.exception("on_event callback raised on %s; ignored", type(event).__name__)
