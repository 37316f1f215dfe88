"""A render job: what to render (:class:`RenderJob`), how it ended (:class:`JobResult`), and the
one object holding all of a running job's mutable state (:class:`JobState`).

``JobState`` is the job's bookkeeping and nothing else: the client-side queue of chunks, which
worker slot holds which attempt, the ledger of delivered frames, failure counts, the per-job
blocklist, and the job-fault/server-fault decisions. It does no I/O and starts no threads, so its
rules are testable by calling methods. Every method takes its one lock; the scheduler's worker
threads call it concurrently.
"""

from __future__ import annotations

import enum
import itertools
import threading
import uuid
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

from comfy_cluster.core.engine.events import (
    ChunkAssigned,
    ChunkProgress,
    ChunkRetried,
    EventSink,
    FrameWritten,
    JobEvent,
    ServerBlocklisted,
)
from comfy_cluster.core.errors import (
    ErrorInfo,
    ExecutionFailed,
    WorkflowRejected,
)
from comfy_cluster.core.frames import Chunk, FrameRange, format_frame_path, frames_text

__all__ = [
    "EXISTING_MODES",
    "MODES",
    "Attempt",
    "JobResult",
    "JobState",
    "JobStatus",
    "Outcome",
    "RenderJob",
]

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
    ``"resume"`` skips them, ``"overwrite"`` replaces them. Raises ``ValueError`` on bad values.
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
        if isinstance(self.chunk_size, bool) or not isinstance(self.chunk_size, int):
            raise ValueError(f"chunk_size must be a whole number, not {self.chunk_size!r}")
        if self.chunk_size < 0 or self.handles < 0:
            raise ValueError("chunk_size and handles must be >= 0")
        if self.handles and self.mode != "batch":
            raise ValueError("handles only make sense in batch mode")
        if self.mode == "batch" and not self.input_pattern:
            raise ValueError("batch mode needs an input_pattern (the frames to batch)")
        format_frame_path(self.output_pattern, 0)  # raises ConfigError without a frame token
        if self.input_pattern:
            format_frame_path(self.input_pattern, 0)
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
        from comfy_cluster.core import errors

        if self.status is JobStatus.CANCELLED:
            raise errors.JobCancelledError(self.message or "cancelled")
        if self.status is JobStatus.FAILED:
            raise errors.JobFailedError(self.message)
        return self


# ---------------------------------------------------------------------------------------------
# Running-job state


@dataclass(frozen=True)
class Attempt:
    """One try of one chunk on one worker slot. ``attempt_id`` is unique within the job."""

    attempt_id: int
    chunk: Chunk
    server: str
    slot: str
    reason: str


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended, as the worker judged it.

    ``kind``: ``ok``; ``server`` (this server failed: retry the frames elsewhere, count it);
    ``degraded`` (this server cannot run this workflow: out of the job with ``why``); ``job``
    (the workflow itself is at fault: fail the job); ``aborted`` (cancel or job over: nothing).
    ``down``: with ``server``, the server looks dead (connection refused and its websocket
    dropped): it is suspended until a probe answers, instead of being handed more chunks.
    """

    kind: str
    why: str = ""
    node_id: Optional[str] = None
    error: Optional[BaseException] = None
    down: bool = False

    @classmethod
    def ok(cls) -> Outcome:
        return cls("ok")


class _Work:
    """A chunk in the client-side queue, with its failure history. Owned by JobState."""

    __slots__ = ("chunk", "failed_on", "failures")

    def __init__(self, chunk: Chunk) -> None:
        self.chunk = chunk
        #: server name -> failures of this chunk there.
        self.failed_on: dict[str, int] = {}
        self.failures = 0


class _Suspension:
    """A server that looked dead: no work until a probe answers. Owned by JobState."""

    __slots__ = ("delay", "probing", "until", "why")

    def __init__(self, until: float, delay: float, why: str) -> None:
        self.until = until  # clock time of the next probe
        self.delay = delay  # backoff before the probe after that
        self.probing = False  # one slot of the server is probing now
        self.why = why


class _Slot:
    __slots__ = ("attempt", "busy", "closed", "name", "server", "started")

    def __init__(self, name: str, server: str) -> None:
        self.name = name
        self.server = server
        self.attempt: Optional[Attempt] = None  # assigned, not yet finished
        self.busy = False  # the worker has taken its attempt
        self.closed = False
        self.started = 0.0


#: ``chooser(chunk, free, in_flight, remaining_frames, able) -> (server, reason) | None``:
#: ``free`` servers have a free slot and may take the chunk; ``able`` may take it at all.
Chooser = Callable[
    [Chunk, Sequence[str], Mapping[str, int], int, Sequence[str]], Optional[tuple[str, str]]
]
#: ``eta(remaining_frames, active_servers) -> seconds | None``.
EtaFn = Callable[[float, Sequence[str]], Optional[float]]


class JobState:
    """All mutable state of one running job, under one lock. Any thread may call any method.

    Rules it enforces:

    - chunks wait client-side; one is handed to a worker slot only when that slot is free, so a
      server never holds more of our prompts than it has slots (``max_in_flight``);
    - a frame is written at most once: :meth:`claim_frame` before writing, :meth:`frame_written`
      after, :meth:`release_frame` if the write failed;
    - a failed attempt returns its undelivered frames to the front of the queue, avoiding the
      servers that already failed that chunk (unless no other server is left);
    - a server failing ``blocklist_after`` chunks is out of the job; the job fails when a chunk
      has failed on ``max_chunk_servers`` different servers, or no eligible server is left;
    - a 400 every eligible server gives, or an execution error (same node, same exception type)
      on two servers, is the job's fault.

    Events are queued under the lock and delivered by :meth:`flush` outside it, in order.
    """

    def __init__(
        self,
        job: RenderJob,
        chunks: Iterable[Chunk],
        servers: Sequence[tuple[str, int]],
        *,
        frames_to_render: Iterable[int],
        skipped: Iterable[int] = (),
        chooser: Chooser,
        sink: EventSink,
        clock: Callable[[], float],
        eta: Optional[EtaFn] = None,
        blocklist_after: int = 3,
        max_chunk_servers: int = 3,
        max_chunk_attempts: int = 6,
        probe_interval: float = 0.5,
        probe_interval_max: float = 10.0,
    ) -> None:
        self.job = job
        self._cond = threading.Condition(threading.RLock())
        #: Wakes the supervisor (wait_ended): set at the end and by wake().
        self._supervisor = threading.Event()
        self._emit_lock = threading.Lock()
        self._sink = sink
        self._outbox: list[JobEvent] = []
        self._clock = clock
        self._eta = eta
        self._chooser = chooser
        self.started = clock()
        self.blocklist_after = blocklist_after
        self.max_chunk_servers = max_chunk_servers
        self.max_chunk_attempts = max_chunk_attempts
        self.probe_interval = probe_interval
        self.probe_interval_max = probe_interval_max
        #: Server names in configuration order, with their slot counts.
        self.servers: tuple[str, ...] = tuple(name for name, _ in servers)
        self._capacity = dict(servers)
        self._pending: deque[_Work] = deque(_Work(c) for c in chunks)
        self._works: dict[int, _Work] = {w.chunk.index: w for w in self._pending}
        self._slots: dict[str, _Slot] = {}
        self._ids = itertools.count(1)
        self.to_render: frozenset[int] = frozenset(frames_to_render)
        self.skipped: tuple[int, ...] = tuple(sorted(skipped))
        # The ledger: frame -> (path, server) once written; frame -> attempt id while writing.
        self._delivered: dict[int, tuple[str, str]] = {}
        self._done = 0  # delivered frames that are in to_render (progress without a scan)
        self._claimed: dict[int, int] = {}
        self._fractions: dict[int, float] = {}  # attempt id -> running prompt fraction
        self._frames_done_in: dict[int, int] = {}  # attempt id -> frames delivered
        self._server_failures: dict[str, int] = {}
        self.blocklist: dict[str, str] = {}
        #: Servers that looked dead, until a probe answers (see :meth:`probe_due`).
        self._suspended: dict[str, _Suspension] = {}
        self._rejections: dict[str, WorkflowRejected] = {}
        self._validated_on: set[str] = set()
        self._exec_errors: dict[tuple[Optional[str], str], dict[str, ExecutionFailed]] = {}
        self._live_prompts: dict[str, set[str]] = {}
        self.retries = 0
        self.discarded = 0
        self._last_why = ""
        # None while running; ("failed", message, node_id, error) or ("cancelled",) at the end.
        self._end: Optional[tuple[Any, ...]] = None
        self._idle_since: Optional[float] = None

    # -- events -------------------------------------------------------------------------------

    def _progress_locked(self) -> tuple[float, Optional[float]]:
        total = len(self.to_render)
        if total == 0:
            return 1.0, 0.0
        done = self._done
        running = sum(min(1.0, max(0.0, x)) for x in self._fractions.values())
        progress = min(1.0, (done + running) / total)
        remaining = max(0.0, total - done - running)
        eta: Optional[float] = None
        if remaining == 0:
            eta = 0.0
        else:
            active = [s for s in self.servers if s not in self.blocklist]
            if self._eta is not None:
                eta = self._eta(remaining, active)
            if eta is None and progress > 0:
                elapsed = self._clock() - self.started
                eta = elapsed * (1 - progress) / progress
        return progress, eta

    def _post(self, cls: type, **fields: Any) -> None:
        progress, eta = self._progress_locked()
        self._outbox.append(
            cls(job_id=self.job.job_id, progress=progress, eta_seconds=eta, **fields)
        )

    def post(self, cls: type, **fields: Any) -> None:
        """Queue an event carrying the current progress and ETA; call :meth:`flush` to send."""
        with self._cond:
            self._post(cls, **fields)

    def flush(self) -> None:
        """Deliver queued events in order. Any thread; the callback runs without the state lock."""
        with self._emit_lock:
            with self._cond:
                events, self._outbox = self._outbox, []
            for event in events:
                self._sink.emit(event)

    def progress(self) -> tuple[float, Optional[float]]:
        with self._cond:
            return self._progress_locked()

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def ended(self) -> bool:
        with self._cond:
            return self._end is not None or self._complete_locked()

    def _complete_locked(self) -> bool:
        return self._done >= len(self.to_render)

    def end_state(self) -> Optional[tuple[Any, ...]]:
        with self._cond:
            return self._end

    def fail(self, message: str, node_id: Optional[str] = None, error: Any = None) -> None:
        """End the job as failed (the first reason wins). Any thread."""
        with self._cond:
            self._fail_locked(message, node_id, error)

    def _fail_locked(self, message: str, node_id: Optional[str], error: Any) -> None:
        if self._end is None and not self._complete_locked():
            self._end = ("failed", message, node_id, error)
        self._cond.notify_all()
        self._supervisor.set()

    def cancel(self) -> None:
        """End the job as cancelled unless it already ended. Any thread."""
        with self._cond:
            if self._end is None and not self._complete_locked():
                self._end = ("cancelled",)
            self._cond.notify_all()
        self._supervisor.set()

    def wake(self) -> None:
        """Wake every waiting worker and the supervisor (e.g. after cancel_token was set)."""
        with self._cond:
            self._cond.notify_all()
        self._supervisor.set()

    def wait_ended(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds until the job ended or :meth:`wake`; re-dispatch on
        the way. The supervisor waits on its own event, so the per-frame ``notify_all`` of the
        workers' condition does not wake it."""
        with self._cond:
            if self._end is not None or self._complete_locked():
                return True
            self._dispatch_locked()
        self._supervisor.wait(timeout)
        self._supervisor.clear()
        with self._cond:
            return self._end is not None or self._complete_locked()

    # -- slots and dispatch ---------------------------------------------------------------------

    def add_slot(self, slot: str, server: str) -> None:
        with self._cond:
            self._slots[slot] = _Slot(slot, server)

    def close_slot(self, slot: str) -> None:
        """The worker of ``slot`` is gone; an attempt it never started goes back to the queue."""
        with self._cond:
            s = self._slots[slot]
            s.closed = True
            self._unassign_locked(s)
            self._dispatch_locked()
            self._cond.notify_all()

    def _unassign_locked(self, s: _Slot) -> None:
        if s.attempt is not None and not s.busy:
            work = self._works[s.attempt.chunk.index]
            if work not in self._pending:
                self._pending.appendleft(work)
            s.attempt = None

    def next_attempt(self, slot: str, timeout: float) -> Union[Attempt, bool, None]:
        """The attempt assigned to ``slot``; ``None`` when the job is over or the server is out;
        ``False`` if nothing came within ``timeout`` (the worker checks cancel, probes a suspended
        server when :meth:`probe_due` says so, and asks again). Events the dispatch queued (the
        ``ChunkAssigned`` of this and other slots) are delivered before it returns."""
        result: Union[Attempt, bool, None]
        with self._cond:
            s = self._slots[slot]
            if self._end is not None or self._complete_locked() or s.server in self.blocklist:
                self._unassign_locked(s)
                self._dispatch_locked()
                result = None
            else:
                if s.attempt is None:
                    self._dispatch_locked()
                if s.attempt is None and not self._outbox:
                    wait = timeout
                    suspension = self._suspended.get(s.server)
                    if suspension is not None and not suspension.probing:
                        wait = min(wait, max(0.0, suspension.until - self._clock()))
                    if wait > 0:
                        self._cond.wait(wait)
                if s.attempt is None:
                    result = False
                else:
                    s.busy = True
                    s.started = self._clock()
                    result = s.attempt
        if self._outbox:  # a racy read is fine: a later flush delivers anything missed
            self.flush()
        return result

    # -- suspended servers ----------------------------------------------------------------------

    def suspended(self, server: str) -> bool:
        with self._cond:
            return server in self._suspended

    def probe_due(self, slot: str) -> bool:
        """Whether ``slot`` should probe its suspended server now; claims the probe (one slot per
        server probes at a time). Report with :meth:`probe_result`."""
        with self._cond:
            s = self._slots[slot]
            suspension = self._suspended.get(s.server)
            if (
                suspension is None
                or suspension.probing
                or self._end is not None
                or s.server in self.blocklist
                or self._clock() < suspension.until
            ):
                return False
            suspension.probing = True
            return True

    def probe_result(self, server: str, ok: bool, why: str = "") -> None:
        """The probe of a suspended ``server`` answered (``ok``) or failed: resume it, or back off
        (doubling) and count a failure; ``blocklist_after`` failures take it out of the job."""
        with self._cond:
            suspension = self._suspended.get(server)
            if suspension is None:
                return
            if ok:
                del self._suspended[server]
            else:
                suspension.probing = False
                suspension.until = self._clock() + suspension.delay
                suspension.delay = min(suspension.delay * 2, self.probe_interval_max)
                failures = self._server_failures.get(server, 0) + 1
                self._server_failures[server] = failures
                if failures >= self.blocklist_after:
                    del self._suspended[server]
                    self._blocklist_locked(
                        server, f"unreachable ({failures} failures); last: {why or suspension.why}"
                    )
                    self._check_servers_left_locked(None)
            self._dispatch_locked()
            self._cond.notify_all()
        self.flush()

    def _suspend_locked(self, server: str, why: str) -> None:
        if server in self.blocklist or server in self._suspended:
            return
        self._suspended[server] = _Suspension(
            self._clock() + self.probe_interval,
            min(self.probe_interval * 2, self.probe_interval_max),
            why,
        )
        for s in self._slots.values():
            if s.server == server:
                self._unassign_locked(s)  # assigned but not started: back to the queue

    def _in_flight_locked(self) -> dict[str, int]:
        counts = {name: 0 for name in self.servers}
        for s in self._slots.values():
            if s.attempt is not None:
                counts[s.server] += 1
        return counts

    def in_flight(self) -> dict[str, int]:
        with self._cond:
            return self._in_flight_locked()

    def eligible(self) -> tuple[str, ...]:
        """Servers still allowed to take work in this job."""
        with self._cond:
            return self._eligible_locked()

    def _eligible_locked(self) -> tuple[str, ...]:
        return tuple(s for s in self.servers if s not in self.blocklist)

    def _remaining_locked(self) -> int:
        return len(self.to_render) - self._done

    def dispatch(self) -> None:
        with self._cond:
            self._dispatch_locked()

    def _dispatch_locked(self) -> None:
        """Hand queued chunks to free slots as the chooser decides. Lock held."""
        if self._end is not None or self.job.cancel_token.is_set():
            return
        eligible = self._eligible_locked()
        free: dict[str, list[_Slot]] = {}
        suspended = self._suspended
        for s in self._slots.values():
            if (
                s.attempt is None
                and not s.closed
                and s.server not in self.blocklist
                and s.server not in suspended
            ):
                free.setdefault(s.server, []).append(s)
        in_flight = self._in_flight_locked()
        if not self._pending or not free:
            self._track_idle_locked(in_flight)
            return
        remaining = self._remaining_locked()
        for work in list(self._pending):
            servers = [name for name in self.servers if free.get(name)]
            if not servers:
                break
            allowed = [name for name in servers if name not in work.failed_on]
            if not allowed:
                # Last resort: every eligible server already failed this chunk; let them retry.
                if all(name in work.failed_on for name in eligible):
                    allowed = servers
                else:
                    continue
            able = [name for name in eligible if name not in work.failed_on] or list(eligible)
            able = [name for name in able if name not in suspended]
            choice = self._chooser(work.chunk, allowed, in_flight, remaining, able)
            if choice is None:
                break
            name, reason = choice
            if name not in allowed:
                break  # the balancer prefers a busy server: hold the chunk for it
            slot = free[name].pop(0)
            attempt = Attempt(next(self._ids), work.chunk, name, slot.name, reason)
            slot.attempt = attempt
            slot.busy = False
            in_flight[name] += 1
            self._pending.remove(work)
            self._post(
                ChunkAssigned,
                chunk_index=work.chunk.index,
                frames=work.chunk.frames,
                server=name,
                reason=reason,
            )
        self._track_idle_locked(in_flight)
        self._cond.notify_all()

    def _track_idle_locked(self, in_flight: Mapping[str, int]) -> None:
        if self._pending and not any(in_flight.values()):
            if self._idle_since is None:
                self._idle_since = self._clock()
        else:
            self._idle_since = None

    def idle_for(self) -> float:
        """Seconds that work has been waiting with nothing running anywhere (0 if not)."""
        with self._cond:
            if self._idle_since is None:
                return 0.0
            return self._clock() - self._idle_since

    def pending_chunks(self) -> int:
        with self._cond:
            return len(self._pending)

    # -- per-attempt reporting ----------------------------------------------------------------

    def is_current(self, attempt: Attempt) -> bool:
        """Whether ``attempt`` should keep going (not cancelled, job not over)."""
        with self._cond:
            s = self._slots.get(attempt.slot)
            return (
                self._end is None
                and not self.job.cancel_token.is_set()
                and s is not None
                and s.attempt is attempt
            )

    def delivered(self, frame: int) -> bool:
        with self._cond:
            return frame in self._delivered

    def undelivered(self, frames: Iterable[int]) -> tuple[int, ...]:
        with self._cond:
            return tuple(f for f in frames if f not in self._delivered)

    def claim_frame(self, attempt: Attempt, frame: int) -> bool:
        """Reserve ``frame`` for writing by ``attempt``. False: written or being written already,
        or the attempt is stale; the caller discards its result."""
        with self._cond:
            if frame in self._delivered or frame in self._claimed or frame not in self.to_render:
                self.discarded += 1
                return False
            s = self._slots.get(attempt.slot)
            if self._end is not None or s is None or s.attempt is not attempt:
                self.discarded += 1
                return False
            self._claimed[frame] = attempt.attempt_id
            return True

    def release_frame(self, attempt: Attempt, frame: int) -> None:
        with self._cond:
            if self._claimed.get(frame) == attempt.attempt_id:
                del self._claimed[frame]

    def frame_written(self, attempt: Attempt, frame: int, path: str) -> None:
        """Record ``frame`` as delivered; emits FrameWritten and ChunkProgress."""
        with self._cond:
            if self._claimed.get(frame) == attempt.attempt_id:
                del self._claimed[frame]
            if frame not in self._delivered and frame in self.to_render:
                self._done += 1
            self._delivered[frame] = (path, attempt.server)
            done = self._frames_done_in.get(attempt.attempt_id, 0) + 1
            self._frames_done_in[attempt.attempt_id] = done
            self._fractions.pop(attempt.attempt_id, None)
            self._post(FrameWritten, frame=frame, path=path, server=attempt.server)
            self._post(
                ChunkProgress,
                chunk_index=attempt.chunk.index,
                server=attempt.server,
                frames_done=done,
                frame_fraction=0.0,
            )
            if self._complete_locked():
                self._cond.notify_all()
                self._supervisor.set()

    def set_fraction(self, attempt: Attempt, fraction: float, *, frames: int = 1) -> None:
        """The running prompt of ``attempt`` (rendering ``frames`` frames) is ``fraction`` done."""
        fraction = min(1.0, max(0.0, fraction))
        with self._cond:
            weighted = fraction * frames
            previous = self._fractions.get(attempt.attempt_id)
            if previous is not None and abs(previous - weighted) < 0.01 * frames:
                return
            self._fractions[attempt.attempt_id] = weighted
            self._post(
                ChunkProgress,
                chunk_index=attempt.chunk.index,
                server=attempt.server,
                frames_done=self._frames_done_in.get(attempt.attempt_id, 0),
                frame_fraction=fraction,
            )

    def prompt_submitted(self, server: str, prompt_id: str) -> None:
        """Remember a prompt we may have queued (called *before* POST, so cancel can find it)."""
        with self._cond:
            self._live_prompts.setdefault(server, set()).add(prompt_id)

    def prompt_finished(self, server: str, prompt_id: str) -> None:
        with self._cond:
            self._live_prompts.get(server, set()).discard(prompt_id)

    def live_prompts(self) -> dict[str, tuple[str, ...]]:
        """Prompts that may still sit on a server, by server (for the cancel sweep)."""
        with self._cond:
            return {s: tuple(ids) for s, ids in self._live_prompts.items() if ids}

    def mark_validated(self, server: str) -> None:
        """``server`` accepted a prompt of this job (so the workflow is valid somewhere)."""
        with self._cond:
            self._validated_on.add(server)

    # -- fault decisions ------------------------------------------------------------------------

    def judge_rejection(self, server: str, error: WorkflowRejected) -> Outcome:
        """A 400 from ``server``: the job's fault if structural or every eligible server gives
        one (and none accepted the workflow); otherwise the server is degraded for this job."""
        node = error.node_ids[0] if error.node_ids else None
        structural = error.error_type in ("no_prompt", "prompt_no_outputs") or (
            error.error_type == "invalid_prompt" and not error.missing_classes
        )
        with self._cond:
            if structural:
                return Outcome("job", f"workflow rejected: {error.message}", node, error)
            self._rejections[server] = error
            others = [s for s in self._eligible_locked() if s != server]
            if not self._validated_on and all(s in self._rejections for s in others):
                names = ", ".join(sorted(self._rejections))
                return Outcome(
                    "job",
                    f"workflow rejected by every server ({names}): {error.message}",
                    node,
                    error,
                )
            return Outcome("degraded", f"rejected the workflow: {error.message}", node, error)

    def judge_execution_error(self, server: str, error: ExecutionFailed) -> Outcome:
        """An execution_error: the job's fault when the same node failed with the same exception
        type on another server too; otherwise this server's fault."""
        key = (error.node_id, error.exception_type)
        with self._cond:
            seen = self._exec_errors.setdefault(key, {})
            seen[server] = error
            if len(seen) >= 2:
                names = " and ".join(sorted(seen))
                return Outcome("job", f"{error.message} (on {names})", error.node_id, error)
            return Outcome("server", error.message, error.node_id, error)

    # -- attempt end --------------------------------------------------------------------------

    def finish_attempt(self, attempt: Attempt, outcome: Outcome) -> None:
        """Account for the end of ``attempt``: requeue, blocklist, fail or complete the job."""
        with self._cond:
            slot = self._slots[attempt.slot]
            if slot.attempt is attempt:
                slot.attempt = None
                slot.busy = False
            self._fractions.pop(attempt.attempt_id, None)
            work = self._works[attempt.chunk.index]
            remaining = tuple(f for f in work.chunk.frames if f not in self._delivered)
            if outcome.kind == "job":
                self._fail_locked(outcome.why, outcome.node_id, outcome.error)
            elif outcome.kind in ("server", "degraded", "ok") and remaining and self._end is None:
                why = outcome.why or "finished without delivering every frame"
                self._requeue_locked(attempt, work, remaining, outcome, why)
            elif (
                outcome.kind == "aborted"
                and remaining
                and self._end is None
                and work not in self._pending
            ):
                # Not the server's fault (e.g. a job-level stop raced); put the work back as is.
                self._pending.appendleft(work)
            self._dispatch_locked()
            self._cond.notify_all()
        self.flush()

    def _requeue_locked(
        self, attempt: Attempt, work: _Work, remaining: tuple[int, ...], outcome: Outcome, why: str
    ) -> None:
        server = attempt.server
        self._last_why = f"{server}: {why}"
        self.retries += 1
        if outcome.kind == "degraded":
            self._blocklist_locked(server, why)
        else:
            work.failures += 1
            work.failed_on[server] = work.failed_on.get(server, 0) + 1
            failures = self._server_failures.get(server, 0) + 1
            self._server_failures[server] = failures
            if failures >= self.blocklist_after:
                self._blocklist_locked(server, f"failed {failures} chunks; last: {why}")
            elif outcome.down:
                self._suspend_locked(server, why)
        if self.job.mode == "frame":
            # Only the frames not yet on disk go back; batch chunks keep their shape for context.
            work.chunk = Chunk(
                work.chunk.index,
                remaining,
                work.chunk.handles_before,
                work.chunk.handles_after,
            )
        self._post(
            ChunkRetried,
            chunk_index=work.chunk.index,
            server=server,
            why=why,
            frames=remaining,
        )
        if len(work.failed_on) >= self.max_chunk_servers:
            names = ", ".join(sorted(work.failed_on))
            self._fail_locked(
                f"chunk {work.chunk.index} (frames {frames_text(remaining)}) failed on "
                f"{len(work.failed_on)} servers ({names}); last: {server}: {why}",
                outcome.node_id,
                outcome.error,
            )
            return
        if work.failures >= self.max_chunk_attempts:
            self._fail_locked(
                f"chunk {work.chunk.index} (frames {frames_text(remaining)}) failed "
                f"{work.failures} times; last: {server}: {why}",
                outcome.node_id,
                outcome.error,
            )
            return
        self._pending.appendleft(work)
        self._check_servers_left_locked(outcome)

    def _blocklist_locked(self, server: str, why: str) -> None:
        if server in self.blocklist:
            return
        self.blocklist[server] = why
        self._post(ServerBlocklisted, server=server, why=why)

    def blocklist_server(self, server: str, why: str) -> None:
        """Take ``server`` out of this job (e.g. health says it lacks a node). Any thread."""
        with self._cond:
            self._blocklist_locked(server, why)
            self._check_servers_left_locked(None)
            self._cond.notify_all()
        self.flush()

    def _check_servers_left_locked(self, outcome: Optional[Outcome]) -> None:
        if self._eligible_locked() or self._end is not None or self._complete_locked():
            return
        reasons = "; ".join(f"{s}: {why}" for s, why in self.blocklist.items())
        self._fail_locked(
            f"no eligible server left ({reasons})",
            outcome.node_id if outcome else None,
            outcome.error if outcome else None,
        )

    # -- summary ------------------------------------------------------------------------------

    def delivered_frames(self) -> dict[int, tuple[str, str]]:
        with self._cond:
            return dict(self._delivered)
