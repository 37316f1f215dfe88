"""The render engine's public face: :class:`Scheduler`, :class:`JobHandle`, :class:`SchedulerState`.

Shape (modelled on ``concurrent.futures.thread``, with daemon threads we own)::

    Scheduler.start(job) ─► controller thread  comfy-cluster-job-<id>       core/engine/job_run.py
                               │ plan, JobBook, final verification, cancel sweep
                               └─► worker slots  comfy-cluster-<server>-<n>  core/engine/worker.py
                                     pull an Attempt from the JobBook, run its prompts, write frames

The scheduler turns its keyword arguments into an :class:`EngineSettings` (what the parts read)
and an :class:`EngineTools` (what they call), and hands both down: no part reaches back here.

Threads: :meth:`Scheduler.run` blocks its caller; :meth:`Scheduler.start` returns a
:class:`JobHandle` at once; both, and every handle method, may be called from any thread.
``on_event`` is called from worker threads, never concurrently. Nothing here knows about Nuke or
the CLI.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Sequence
from typing import Any, Callable, Optional

from comfy_cluster.core.balance import SpeedTracker
from comfy_cluster.core.client import ComfyClient
from comfy_cluster.core.connection_settings import Timeouts
from comfy_cluster.core.engine.events import EventSink, OnEvent
from comfy_cluster.core.engine.inputs import InputHook
from comfy_cluster.core.engine.job import JobResult, RenderJob
from comfy_cluster.core.engine.job_run import JobRun
from comfy_cluster.core.engine.settings import EngineSettings
from comfy_cluster.core.engine.speed_book import SpeedBook
from comfy_cluster.core.engine.tools import (
    CheckFactory,
    ClientFactory,
    EngineTools,
    Preflight,
    ServerCall,
)
from comfy_cluster.core.errors import ClosedError
from comfy_cluster.core.retry import RetryPolicy, retry_transient
from comfy_cluster.core.server import ServerConfig
from comfy_cluster.core.transfer import Transfer, make_transfer

__all__ = ["ClientFactory", "InputHook", "JobHandle", "Scheduler", "SchedulerState"]


class SchedulerState(enum.Enum):
    OPEN = "open"  #: accepts jobs
    CLOSED = "closed"  #: close() was called; start() raises ClosedError


def _default_client_factory(server: ServerConfig) -> Any:
    return ComfyClient(server)


def _default_check_factory(server: ServerConfig, timeouts: Timeouts) -> Any:
    return ComfyClient(server, timeouts=timeouts)


def _preflight(
    client_factory: Optional[ClientFactory],
    check_factory: Optional[CheckFactory],
    timeout: float,
) -> Optional[Preflight]:
    """The preflight check jobs run: given, or real clients when the scheduler makes real
    clients; none when a caller brought its own clients but no way to check (a test's fakes
    need not speak ``/object_info``)."""
    if check_factory is None and client_factory is None:
        check_factory = _default_check_factory
    return Preflight(check_factory, timeout) if check_factory is not None else None


class JobHandle:
    """A running job. Any thread may call any method.

    ``cancel()`` interrupts and deletes every prompt of the job on every server and returns at
    once; ``wait(timeout)`` returns the :class:`JobResult` (``None`` on timeout).
    """

    def __init__(self, job: RenderJob) -> None:
        self.job = job
        self._done = threading.Event()
        self._result: Optional[JobResult] = None
        #: The job's controller, once started.
        self._run: Optional[JobRun] = None

    @property
    def job_id(self) -> str:
        return self.job.job_id

    def cancel(self) -> None:
        """Ask the job to stop; nothing is left queued on any server when it ends."""
        self.job.cancel_token.set()
        run = self._run
        if run is not None:
            run.wake()

    def wait(self, timeout: Optional[float] = None) -> Optional[JobResult]:
        """Block until the job ends (or ``timeout`` seconds pass: ``None``)."""
        if not self._done.wait(timeout):
            return None
        return self._result

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def result(self) -> Optional[JobResult]:
        """The result once the job ended, else ``None``."""
        return self._result if self._done.is_set() else None

    def servers_holding_prompts(self) -> tuple[str, ...]:
        """Servers that may still hold a prompt of this job (it did not answer our cancel)."""
        run = self._run
        book = run.book if run is not None else None
        return tuple(sorted(book.live_prompts())) if book is not None else ()

    @property
    def progress(self) -> float:
        run = self._run
        return run.progress() if run is not None else 0.0

    def _finish(self, result: JobResult) -> None:
        self._result = result
        self._done.set()

    def __repr__(self) -> str:
        status = self._result.status.value if self.done and self._result else "running"
        return f"JobHandle({self.job_id[:8]}, {status})"


class Scheduler:
    """Renders :class:`RenderJob` s on a set of servers. A context manager; any thread.

    ``client_factory(server) -> client`` builds one client per worker slot (a ``ComfyClient`` by
    default; tests pass an in-process fake). ``health`` (optional) filters out servers the health
    monitor sees offline or degraded; without it every enabled server is a candidate and the
    scheduler learns from failures. ``clock``/``sleep`` are injected for tests.

    Timing knobs: ``stall_timeout`` (no websocket event for this long triggers a queue check),
    ``stuck_factor`` (a running prompt is stuck past this many times its expected time),
    ``first_prompt_timeout`` (the limit while no server has a measured speed; ``None``: none),
    ``no_server_timeout`` (fail when work waits this long with nothing running anywhere),
    ``probe_interval`` (first wait before probing a server that looked dead; doubles up to
    ``probe_interval_max``), ``input_timeout`` (how long a worker waits in all for one input
    frame when the job is started with ``wait_for_input``), ``answer_timeout`` (how long a check
    of a silent prompt or a probe waits for the server's answer before it is abandoned and the
    server counts as gone), ``cleanup_timeout`` (how long one cancel or close request may take
    before it is abandoned: a frozen server never holds up the job's end), ``speculation``
    (False: no speculative copies of a slow server's last chunks).

    Preflight: at the start of each job every server is asked whether it can run the workflow
    (``core/engine/server_gate.py``); a server lacking a class or a model stays out of the job,
    and each server's slots wait for its own verdict only. ``check_factory(server, timeouts)``
    makes the clients for that (default: ``ComfyClient`` when ``client_factory`` is the default,
    no check when only ``client_factory`` is given); ``check_timeout`` bounds one verdict.
    """

    def __init__(
        self,
        servers: Sequence[ServerConfig],
        *,
        client_factory: Optional[ClientFactory] = None,
        health: Any = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        stall_timeout: float = 30.0,
        stuck_factor: float = 4.0,
        first_prompt_timeout: Optional[float] = 900.0,
        no_server_timeout: float = 120.0,
        poll_interval: float = 0.1,
        history_interval: float = 2.0,
        retry: Optional[RetryPolicy] = None,
        blocklist_after: int = 3,
        max_chunk_servers: int = 3,
        target_chunk_seconds: float = 30.0,
        speed: Any = None,
        transfer_factory: Callable[[bool], Transfer] = make_transfer,
        join_timeout: float = 10.0,
        probe_interval: float = 0.5,
        probe_interval_max: float = 10.0,
        input_timeout: float = 600.0,
        input_poll: float = 0.25,
        answer_timeout: float = 5.0,
        cleanup_timeout: float = 1.0,
        rejoin_after: float = 60.0,
        check_factory: Optional[CheckFactory] = None,
        check_timeout: float = 30.0,
        speculation: bool = True,
    ) -> None:
        self.settings = EngineSettings(
            stall_timeout=stall_timeout,
            stuck_factor=stuck_factor,
            first_prompt_timeout=first_prompt_timeout,
            no_server_timeout=no_server_timeout,
            poll_interval=poll_interval,
            history_interval=history_interval,
            blocklist_after=blocklist_after,
            max_chunk_servers=max_chunk_servers,
            target_chunk_seconds=target_chunk_seconds,
            join_timeout=join_timeout,
            probe_interval=probe_interval,
            probe_interval_max=probe_interval_max,
            input_timeout=input_timeout,
            input_poll=input_poll,
            answer_timeout=answer_timeout,
            cleanup_timeout=cleanup_timeout,
            rejoin_after=rejoin_after,
            speculation=speculation,
        )
        names = [s.name for s in servers]
        if len(set(names)) != len(names):
            raise ValueError(f"server names must be unique: {names}")
        self.servers: tuple[ServerConfig, ...] = tuple(servers)
        self.health = health
        #: Seconds per frame per server and workflow shape, learnt across this scheduler's jobs;
        #: a ``speed`` record passed in serves every workflow instead.
        self.speeds = SpeedBook(fixed=speed)
        self.speed = SpeedTracker() if speed is None else speed
        policy = retry or retry_transient(attempts=3, max_seconds=20.0, sleep=sleep, clock=clock)
        self.tools = EngineTools(
            client_factory=client_factory or _default_client_factory,
            clock=clock,
            call=ServerCall(policy),
            speed=self.speed,
            speed_for=self.speeds.for_workflow,
            transfer_factory=transfer_factory,
            health=health,
            preflight=_preflight(client_factory, check_factory, check_timeout),
        )
        self._lock = threading.Lock()
        self._state = SchedulerState.OPEN
        self._handles: list[JobHandle] = []

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def state(self) -> SchedulerState:
        return self._state

    def __enter__(self) -> Scheduler:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self, timeout: Optional[float] = None) -> None:
        """Cancel running jobs and wait up to ``timeout`` (default ``join_timeout``) for them."""
        with self._lock:
            self._state = SchedulerState.CLOSED
            handles = list(self._handles)
        join_timeout = self.settings.join_timeout
        deadline = time.monotonic() + (join_timeout if timeout is None else timeout)
        for handle in handles:
            handle.cancel()
        for handle in handles:
            handle.wait(max(0.0, deadline - time.monotonic()))

    def active_jobs(self) -> tuple[JobHandle, ...]:
        with self._lock:
            return tuple(h for h in self._handles if not h.done)

    # -- running jobs ---------------------------------------------------------------------------

    def run(
        self,
        job: RenderJob,
        on_event: Optional[OnEvent] = None,
        *,
        wait_for_input: Optional[InputHook] = None,
    ) -> JobResult:
        """Render ``job`` and block until it ends; returns its result (never raises for job
        failures: see ``JobResult.raise_for_status``). Raises ClosedError after close().
        ``wait_for_input``: as for :meth:`start`."""
        handle = self.start(job, on_event, wait_for_input=wait_for_input)
        result = handle.wait()
        assert result is not None
        return result

    def start(
        self,
        job: RenderJob,
        on_event: Optional[OnEvent] = None,
        *,
        wait_for_input: Optional[InputHook] = None,
    ) -> JobHandle:
        """Start ``job`` on a controller thread; returns its handle at once.

        ``wait_for_input(frame, timeout) -> bool`` (optional) says whether input ``frame`` is
        ready, blocking up to ``timeout`` seconds. With it the input frames need not exist yet:
        the check at job start is skipped and a worker waits for each input frame of its chunk
        (handles included) before rendering it, so rendering starts while later frames are still
        being written (the Nuke host exports them chunk by chunk). A frame not ready after
        ``input_timeout`` seconds, or a hook that raises, fails the job naming the frame. The hook
        is called on worker threads, with short timeouts so cancel stays responsive.
        """
        handle = JobHandle(job)
        with self._lock:
            if self._state is SchedulerState.CLOSED:
                raise ClosedError("the scheduler is closed")
            self._handles = [h for h in self._handles if not h.done]
            self._handles.append(handle)
        run = handle._run = JobRun(
            job,
            self.servers,
            EventSink(on_event),
            handle._finish,
            settings=self.settings,
            tools=self.tools,
            wait_for_input=wait_for_input,
        )
        thread = threading.Thread(
            target=run.main, name=f"comfy-cluster-job-{job.job_id[:8]}", daemon=True
        )
        thread.start()
        return handle
