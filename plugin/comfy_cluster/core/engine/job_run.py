"""One job's controller, :class:`JobRun`: run on its own thread, ``comfy-cluster-job-<id>``.

First it probes the output folder and takes the output lock (``core/output_lock.py``), so two
jobs never write one output pattern at once; the lock is released however the job ends. Then it
plans the job before anything is sent (``plan.py``: workflow, servers, existing and input
frames, chunks), builds the job's book (``book.py``), starts the worker slots (``worker.py``)
and supervises them, then sweeps the job's prompts off every server (``sweep.py``) and verifies
the frames on disk (``ending.py``). Servers *pull*: a slot asks the book for work only when it
is free, so a server never holds more of our prompts than it has slots, and faster servers take
more. Which free server gets the next chunk is the balancer's call (``balancing.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Callable, Optional

from comfy_cluster.core.engine.balancing import JobBalancer
from comfy_cluster.core.engine.book import JobBook
from comfy_cluster.core.engine.book_models import workflow_models
from comfy_cluster.core.engine.cleanup import ignore_errors
from comfy_cluster.core.engine.ending import early_result, final_result
from comfy_cluster.core.engine.events import EventSink, JobStarted
from comfy_cluster.core.engine.inputs import InputHook, InputWaiter
from comfy_cluster.core.engine.job import JobResult, JobStatus, RenderJob
from comfy_cluster.core.engine.plan import EarlyFailure, JobPlan, plan_job
from comfy_cluster.core.engine.server_gate import ServerGate
from comfy_cluster.core.engine.server_watch import ServerWatch
from comfy_cluster.core.engine.settings import EngineSettings
from comfy_cluster.core.engine.sweep import sweep_prompts
from comfy_cluster.core.engine.tools import EngineTools
from comfy_cluster.core.engine.worker import Worker
from comfy_cluster.core.errors import ConfigError, OutputLocked
from comfy_cluster.core.output_checks import probe_output_folder
from comfy_cluster.core.output_lock import OutputLock
from comfy_cluster.core.server import ServerConfig

__all__ = ["JobRun"]

log = logging.getLogger(__name__)


class JobRun:
    """The controller of one job: plan, book, worker slots, the end. :meth:`main` runs on the
    job's own thread and hands the result to ``on_end``; :meth:`wake` and :meth:`progress`
    may be called from any thread."""

    def __init__(
        self,
        job: RenderJob,
        servers: Sequence[ServerConfig],
        sink: EventSink,
        on_end: Callable[[JobResult], None],
        *,
        settings: EngineSettings,
        tools: EngineTools,
        wait_for_input: Optional[InputHook] = None,
    ) -> None:
        self.job = job
        self.servers = tuple(servers)
        self.sink = sink
        self.on_end = on_end
        self.settings = settings
        self.tools = tools
        self.wait_for_input = wait_for_input
        self.clock = tools.clock
        #: Set once the plan passed (read by other threads: a single assignment).
        self.book: Optional[JobBook] = None
        self.plan: Optional[JobPlan] = None
        self.balancer: Optional[JobBalancer] = None
        self.transfer = tools.transfer_factory(job.shared_storage)
        self.started = self.clock()
        self.threads: list[threading.Thread] = []
        self.output_lock = OutputLock(job.output_pattern, job.job_id, break_lock=job.break_lock)

    # -- any thread -------------------------------------------------------------------------

    def wake(self) -> None:
        """Wake the supervisor and every waiting worker (after the cancel token was set)."""
        book = self.book
        if book is not None:
            book.wake()

    def progress(self) -> float:
        book = self.book
        return book.progress()[0] if book is not None else 0.0

    # -- the job's thread -------------------------------------------------------------------

    def main(self) -> None:
        try:
            try:
                result = self._run()
            except Exception as exc:  # a bug: still end the job cleanly
                log.exception("job %s crashed", self.job.job_id)
                result = self._crashed(exc)
        finally:
            # Before on_end: whoever waits for this job may start the next one on this output.
            self.output_lock.release()
        self.on_end(result)

    def _crashed(self, exc: Exception) -> JobResult:
        """The result of a job whose run raised: failed, told through the usual end if that
        works, else bare (whoever waits on the job must always get a result)."""
        message = f"internal error: {exc!r}"
        try:
            return self._fail_early(message, error=exc)
        except Exception:
            log.exception("job %s could not end cleanly", self.job.job_id)
            frames = self.job.frame_range.frames
            return JobResult(
                job_id=self.job.job_id,
                status=JobStatus.FAILED,
                frames_requested=frames,
                frames_missing=frames,
                seconds=self.clock() - self.started,
                message=message,
            )

    def _take_output(self) -> Optional[JobResult]:
        """Probe the output folder and take the output lock; the early result if either fails."""
        try:
            probe_output_folder(self.job.output_pattern, self.job.frame_range.first)
            self.output_lock.acquire()  # logs a warning when it takes over a stale lock
        except (ConfigError, OutputLocked) as exc:
            return self._fail_early(str(exc), error=exc)
        return None

    def _fail_early(
        self,
        message: str,
        *,
        node_id: Optional[str] = None,
        error: Optional[BaseException] = None,
        existing: tuple[int, ...] = (),
    ) -> JobResult:
        """Fail before the work ran (a bug after the book exists still stops and sweeps)."""
        book = self.book
        if book is not None:
            book.fail(message, node_id, error)
            return self._end()
        return early_result(
            self.job,
            self.sink,
            message,
            seconds=self.clock() - self.started,
            node_id=node_id,
            error=error,
            existing=existing,
        )

    def _run(self) -> JobResult:
        refused = self._take_output()
        if refused is not None:
            return refused
        try:
            plan = plan_job(
                self.job,
                self.servers,
                speed=self.tools.speed,
                settings=self.settings,
                inputs_arrive_later=self.wait_for_input is not None,
                speed_for=self.tools.speed_for,  # speeds of this workflow's shape only
            )
        except EarlyFailure as failure:
            return self._fail_early(
                failure.message,
                node_id=failure.node_id,
                error=failure.error,
                existing=failure.existing,
            )
        self.plan = plan
        self.tools = replace(self.tools, speed=plan.speed)
        book = self.book = self._open_book(plan)
        book.post(
            JobStarted,
            total_frames=len(plan.to_render),
            servers=tuple(srv.name for srv in plan.servers),
            skipped_frames=plan.skipped,
        )
        book.flush()  # pragma: no mutate
        health = self.tools.health
        who = f"job-{self.job.job_id}"
        if health is not None:
            ignore_errors(lambda: health.set_active(True, who))
        try:
            if plan.to_render:
                self._start_workers(plan, book)
                self._supervise(book)
        finally:
            if health is not None:
                ignore_errors(lambda: health.set_active(False, who))
        return self._end()

    def _open_book(self, plan: JobPlan) -> JobBook:
        balancer = self.balancer = JobBalancer(
            plan.servers, plan.strategy, self.tools.speed, self.tools.health
        )
        return JobBook(
            self.job,
            plan.chunks,
            [srv.name for srv in plan.servers],
            frames_to_render=plan.to_render,
            skipped=plan.skipped,
            chooser=balancer.choose,
            sink=self.sink,
            clock=self.clock,
            eta=balancer.eta,
            settings=self.settings,
            models=workflow_models(plan.workflow),
        )

    def _end(self) -> JobResult:
        """Stop the workers, sweep the job's prompts off the servers, verify and report."""
        book = self.book
        assert book is not None and self.plan is not None
        self._stop_workers(book)
        sweep_prompts(book, self.plan.servers, self.tools.client_factory)
        return final_result(self.job, book, lambda: self.clock() - self.started)

    # -- workers --------------------------------------------------------------------------------

    def _start_workers(self, plan: JobPlan, book: JobBook) -> None:
        # Each server's slots join the book once its own preflight verdict is in (server_gate).
        gate = ServerGate(
            book,
            plan,
            self.job,
            self.tools.preflight,
            max_wait=self.settings.no_server_timeout / 2,
        )
        for srv in plan.servers:
            for n in range(max(1, int(srv.max_in_flight))):
                slot = f"comfy-cluster-{srv.name}-{n}"
                gate.add_slot(slot, srv.name)
                worker = Worker(
                    self.job,
                    plan,
                    book,
                    srv,
                    slot,
                    settings=self.settings,
                    tools=self.tools,
                    transfer=self.transfer,
                    inputs=self._input_waiter(),
                    gate=gate,
                )
                thread = threading.Thread(target=worker.main, name=slot, daemon=True)
                self.threads.append(thread)
        for thread in self.threads:
            thread.start()
        gate.start()

    def _input_waiter(self) -> Optional[InputWaiter]:
        if self.wait_for_input is None:
            return None
        return InputWaiter(
            self.wait_for_input,
            clock=self.clock,
            cancel=self.job.cancel_token,
            timeout=self.settings.input_timeout,
            poll=self.settings.input_poll,
        )

    def _supervise(self, book: JobBook) -> None:
        """Wait for the end; turn the cancel token and a long idle spell into the job's end."""
        cancel = self.job.cancel_token
        watch = ServerWatch(book.post)
        assert self.balancer is not None
        while not book.wait_ended(self.settings.wait_step):
            ignore_errors(lambda: watch.update(self.balancer.statuses()))
            if cancel.is_set():
                book.cancel()  # pragma: no mutate
                break  # pragma: no mutate
            idle = book.idle_for()
            if idle > self.settings.no_server_timeout:
                detail = ", ".join(
                    f"{n} {getattr(st.state, 'value', st.state)}"
                    for n, st in self.balancer.statuses().items()
                )
                book.fail(f"no server took work for {idle:.0f} s ({detail})")
            book.flush()  # pragma: no mutate
        if cancel.is_set():  # pragma: no mutate
            book.cancel()  # pragma: no mutate
        book.flush()  # pragma: no mutate

    def _stop_workers(self, book: JobBook) -> None:
        book.wake()  # pragma: no mutate
        deadline = time.monotonic() + self.settings.join_timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():  # pragma: no mutate
                log.warning("worker %s did not stop in time", thread.name)
