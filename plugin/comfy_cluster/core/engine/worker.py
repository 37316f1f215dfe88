"""One worker slot, :class:`Worker`: run on its own thread, ``comfy-cluster-<server>-<n>``.

A slot pulls attempts from the job's book (``book.py``), runs their prompts on its server (its
own client and websocket, watched by a ``PromptWatch``) and writes the frames. Failover:
transient errors are retried on the same server (``ServerCall``), then the chunk's undelivered
frames go back to the queue for another server. A stuck prompt (``StuckRule``) is interrupted
and deleted where the server still answers *before* its frames are handed on, and a late result
is discarded by the frame ledger. Whose fault a failure is, the worker says in an
:class:`Outcome`; what follows from it the book decides.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any, Callable, Optional

from comfy_cluster.core.engine import comeback
from comfy_cluster.core.engine.attempt import Aborted, Attempt, Outcome
from comfy_cluster.core.engine.blame import blame
from comfy_cluster.core.engine.book import JobBook
from comfy_cluster.core.engine.inputs import InputWaiter
from comfy_cluster.core.engine.job import RenderJob
from comfy_cluster.core.engine.link import ServerLink
from comfy_cluster.core.engine.model_names import QueueModels, history_models, queue_models
from comfy_cluster.core.engine.plan import JobPlan
from comfy_cluster.core.engine.prompt_watch import PromptWatch
from comfy_cluster.core.engine.server_gate import ServerGate
from comfy_cluster.core.engine.settings import EngineSettings
from comfy_cluster.core.engine.stuck import StuckRule
from comfy_cluster.core.engine.tools import EngineTools
from comfy_cluster.core.errors import (
    ComfyClusterError,
    ConfigError,
    PromptStuck,
    ProtocolError,
    ServerGone,
    ServerHung,
    ServerUnreachable,
    TransientError,
    UnexpectedStatus,
)
from comfy_cluster.core.health import alive_feed, mark_in_use
from comfy_cluster.core.server import ServerConfig
from comfy_cluster.core.transfer import Transfer, frame_path
from comfy_cluster.core.workflow import build_batch_prompt, build_frame_prompt, map_batch_outputs

__all__ = ["Worker"]

log = logging.getLogger(__name__)

#: Seconds between two reads of a server's queue for model affinity (one slot reads).
MODELS_POLL = 0.5
#: Newest history entries read to learn what an idle server holds (how far back to look is a
#: tuning choice: the newest entry that names a model decides).
MODELS_HISTORY_ITEMS = 4  # pragma: no mutate


class Worker:
    """One slot on one server: runs attempts one after another on its own client and websocket.

    Owns its client (one ``requests.Session`` per thread) and listener; everything here runs on
    the slot's thread except ``PromptWatch.on_event`` (the listener's).
    """

    def __init__(
        self,
        job: RenderJob,
        plan: JobPlan,
        book: JobBook,
        server: ServerConfig,
        slot: str,
        *,
        settings: EngineSettings,
        tools: EngineTools,
        transfer: Transfer,
        inputs: Optional[InputWaiter] = None,
        gate: Optional[ServerGate] = None,
    ) -> None:
        self.job = job
        #: Holds this slot back until its server's preflight verdict is in (None: no wait).
        self.gate = gate
        self.plan = plan
        self.book = book
        self.server = server
        self.name = server.name
        self.slot = slot
        self.settings = settings
        self.tools = tools
        self.transfer = transfer
        self.inputs = inputs
        stuck = StuckRule(
            self.name, book.servers, tools.speed, settings, lambda: self.name in book.blocklist
        )
        self.watch = PromptWatch(
            self.name,
            plan.targets.output_node,
            settings=settings,
            clock=tools.clock,
            speed=tools.speed,
            stuck=stuck,
            call=self._ask,
            cancel=job.cancel_token,
            waits=getattr(tools, "waits", None),
        )
        # Every event of ours is a sign of life: the health monitor polls this server less.
        feed = alive_feed(tools.health, server.name, self.watch.on_event)
        self.link = ServerLink(server, tools.client_factory, settings, feed, book.over)

    def main(self) -> None:
        if self.gate is not None and not self.gate.wait(self.name):
            return  # the server failed its check (or the job ended first): the slot never joined
        book = self.book
        mark_in_use(self.tools.health, self.server.name, True)
        try:
            self._read_models(first=True)
            while True:
                attempt = book.next_attempt(self.slot, self.settings.wait_step)
                if attempt is None:
                    if comeback.second_chance(self):
                        continue
                    break
                if attempt is False:
                    self._read_models()
                    copy = self._copy()
                    if copy is not None:
                        book.finish_attempt(copy, self._attempt(copy))
                        continue
                    comeback.idle(self)
                    continue
                book.finish_attempt(attempt, self._attempt(attempt))
        except Exception:
            log.exception("worker %s crashed", self.slot)
        finally:
            mark_in_use(self.tools.health, self.server.name, False)
            self.link.close()
            book.close_slot(self.slot)
            # Latency only: the next next_attempt of any slot and the job's end flush as well.
            book.flush()  # pragma: no mutate

    client = property(lambda self: self.link.client)

    def _connect(self) -> None:
        self.watch.listener = self.link.connect()

    def _ask(self, fn: Callable[[], Any], what: str = "a request") -> Any:
        """``fn`` under the retry policy, each try abandoned after ``answer_timeout``."""
        return self._call(lambda: self.link.ask(fn, what))

    # -- one attempt ------------------------------------------------------------------------

    def _attempt(self, attempt: Attempt) -> Outcome:
        """Run ``attempt``; say how it ended and whose fault that was."""
        try:
            self._connect()
            if self.job.mode == "batch":
                self._batch(attempt)
            else:
                self._frames(attempt)
            return Outcome.ok()
        except Exception as exc:
            return blame(exc, attempt, lambda error: self.book.judge(self.name, error))

    def _check(self, attempt: Attempt) -> None:
        if not self.book.is_current(attempt):
            raise Aborted()

    def _call(self, fn: Callable[[], Any]) -> Any:
        """``fn`` under the retry policy, except that a refused connection while our websocket is
        down means the server is gone: no retries, the chunk moves at once (ServerGone)."""

        def guarded() -> Any:
            try:
                return fn()
            except ServerUnreachable as exc:
                if self.watch.ws_lost():
                    raise ServerGone(
                        f"server down (websocket dropped; {exc.message})", server=self.name
                    ) from exc
                raise

        return self.tools.call(guarded, cancel=self.job.cancel_token)

    def _read_models(self, *, first: bool = False) -> None:
        """Read which models the server's queue will load (others' loader inputs only) for the
        job's model affinity; the first read of a slot always happens, failed or not, so that
        dispatch never waits for it."""
        book = self.book
        if not book.models.enabled or book.over():
            return
        if not first and not book.models_due(self.name, MODELS_POLL):
            return
        view, held = QueueModels(), None
        try:
            if self.link.client is None:
                self._connect()
            client = self.client
            body = self.link.ask(client.queue_body, "/queue")
            view = queue_models(body, frozenset(book.live_prompts().get(self.name, ())))
            if view.idle:
                recent = self.link.ask(
                    lambda: client.recent_history(MODELS_HISTORY_ITEMS), "/history"
                )
                held = history_models(recent)
        except Exception as exc:  # an optional read: the normal checks judge the server
            log.debug("%s: queue models not read: %s", self.name, type(exc).__name__)
            if not first:
                return
        book.models_seen(self.name, view, held)

    def _copy(self) -> Optional[Attempt]:
        """Speculative tail: a copy of a running chunk this idle server would clearly finish
        sooner, once its queue shows no other client's work either."""
        book = self.book
        if not book.copy_worth_asking(self.slot):
            return None
        try:
            if self.link.client is None:
                self._connect()
            if self.link.ask(self.client.queue, "/queue").depth:
                return None
        except ComfyClusterError:
            return None
        return book.take_copy(self.slot)

    def _check_waiting(self, attempt: Attempt, pid: str, covers: tuple[int, ...]) -> None:
        """While our prompt waits: the attempt still current, its frames not written by a
        speculative copy (or the holder) meanwhile, and the prompt not stuck pending on a server
        that another client's model took. Else Aborted: the prompt is interrupted/deleted."""
        self._check(attempt)
        if covers and not self.book.undelivered(covers):
            raise Aborted()  # the other copy won these frames: this prompt lost the race
        self._read_models()
        if self.book.model_lost(self.name) and self.book.model_pending(self.name, pid):
            raise Aborted()

    def _input_value(self, attempt: Attempt, frame: int) -> str:
        assert self.job.input_pattern
        path = frame_path(self.job.input_pattern, frame)
        if self.inputs is not None:
            self.inputs.wait(frame, path, lambda: self._check(attempt))
        try:
            return self._call(lambda: self.transfer.prepare_input(self.client, self.server, path))
        except OSError as exc:  # our disk: the input frame is not readable here
            raise ConfigError(f"cannot read input frame {frame}: {exc}", field="input") from exc

    def _prefix(self, prompt_id: str, frame: int) -> str:
        # Unique per prompt: SaveImage then always writes a new file (no stale cached names).
        return f"comfy_cluster/{self.job.job_id[:8]}/f{frame}_{prompt_id[:8]}"

    def _frames(self, attempt: Attempt) -> None:
        """Frame mode: one prompt per frame of the chunk not on disk yet."""
        targets = self.plan.targets
        for frame in attempt.chunk.frames:
            self._check(attempt)
            if self.book.delivered(frame):
                continue
            image_value = self._input_value(attempt, frame) if self.job.input_pattern else None
            prompt_id = uuid.uuid4().hex
            prompt = build_frame_prompt(
                self.plan.workflow,
                frame,
                image_value=image_value,
                overrides=self.job.overrides,
                output_prefix=self._prefix(prompt_id, frame),
                loader=targets.image_loader,
                output_node=targets.output_node,
            )
            images = self._run_prompt(attempt, prompt, prompt_id, frames=1, covers=(frame,))
            if not images:
                raise ProtocolError(
                    f"frame {frame}: output node {targets.output_node} produced no image",
                    server=self.name,
                )
            self._deliver(attempt, frame, images[0])

    def _batch(self, attempt: Attempt) -> None:
        """Batch mode: one prompt for the whole chunk, handles included."""
        chunk = attempt.chunk
        if not self.book.undelivered(chunk.frames):
            return
        rendered = chunk.all_frames
        values = [self._input_value(attempt, f) for f in rendered]
        self._check(attempt)
        prompt_id = uuid.uuid4().hex
        prompt = build_batch_prompt(
            self.plan.workflow,
            chunk,
            image_values=values,
            overrides=self.job.overrides,
            output_prefix=self._prefix(prompt_id, chunk.frames[0]),
            loader=self.plan.targets.image_loader,
            output_node=self.plan.targets.output_node,
        )
        images = self._run_prompt(
            attempt, prompt, prompt_id, frames=len(chunk.frames), covers=chunk.frames
        )
        mapping = map_batch_outputs(images, rendered, chunk.frames)
        for frame in chunk.frames:
            self._check(attempt)
            self._deliver(attempt, frame, mapping[frame])

    def _deliver(self, attempt: Attempt, frame: int, ref: Any) -> None:
        """Write ``frame`` once: claim it in the ledger, write atomically, record it."""
        book = self.book
        if not book.claim_frame(attempt, frame):
            log.info("%s: frame %s already delivered; late result discarded", self.name, frame)
            return
        dest = frame_path(self.job.output_pattern, frame)
        try:
            self._call(lambda: self.transfer.fetch_output(self.client, self.server, ref, dest))
        except BaseException:
            book.release_frame(attempt, frame)
            raise
        book.frame_written(attempt, frame, str(dest))
        book.flush()

    # -- one prompt -------------------------------------------------------------------------

    def _submit(self, prompt: dict, prompt_id: str) -> str:
        """POST the prompt; on an ambiguous failure look for it before sending a fresh id."""
        ids = [prompt_id]

        def once() -> str:
            pid = ids[-1]
            self.watch.expect(pid)
            self.book.prompt_submitted(self.name, pid)
            try:
                return self.client.submit(prompt, prompt_id=pid)
            except (TransientError, UnexpectedStatus) as exc:
                if isinstance(exc, UnexpectedStatus) and exc.status < 500:
                    raise
                if self._landed(pid):
                    return pid
                ids.append(uuid.uuid4().hex)
                raise

        return self._call(once)

    def _landed(self, pid: str) -> bool:
        try:
            if pid in self.link.ask(self.client.queue, "/queue"):
                return True
            return self.link.ask(lambda: self.client.history(pid), "/history") is not None
        except ComfyClusterError:
            return False

    def _run_prompt(
        self,
        attempt: Attempt,
        prompt: dict,
        prompt_id: str,
        *,
        frames: int,
        covers: tuple[int, ...] = (),
    ) -> tuple[Any, ...]:
        """Submit ``prompt`` and wait for its output node's images. Raises ExecutionFailed /
        Interrupted / WorkflowRejected, PromptStuck, ServerHung, ServerGone, Aborted or a
        transient error, after cancelling the prompt on the server (bounded)."""
        self.watch.drain()
        if self.book.model_lost(self.name):
            raise Aborted()  # another client's model took this server: the chunk moves
        loads = self.book.model_submitted(self.name)
        sent = self.tools.clock()
        pid = self._submit(prompt, prompt_id)
        self.book.mark_validated(self.name)
        try:
            result = self.watch.wait(
                self.client,
                pid,
                frames,
                lambda: self._check_waiting(attempt, pid, covers),
                lambda fraction, n: self._progress(attempt, fraction, n),
                lambda commit: self.book.pull_back(attempt, commit),
            )
        except PromptStuck as exc:
            self._abandon(pid)
            still = self.watch.still_running(self.client, pid)
            if still is not None:
                silent = self.watch.silent_for()
                raise ServerHung(
                    f"{exc.message}; still running {still:.1f} s after our interrupt "
                    f"(no event for {silent:.1f} s in all)",
                    server=self.name,
                ) from exc
            raise
        except ServerGone:
            self._abandon(pid, wait=False)  # it does not answer: the frames move at once
            raise
        except BaseException:
            self._abandon(pid)
            raise
        finally:
            # Saves queueing late events only: drain() and the prompt-id check drop them anyway.
            self.watch.forget()  # pragma: no mutate
        self.book.prompt_finished(self.name, pid)
        self.book.model_prompt_done(self.name, self.tools.clock() - sent, loads)
        return result

    def _progress(self, attempt: Attempt, fraction: float, frames: int) -> None:
        self.book.set_fraction(attempt, fraction, frames=frames)
        self.book.flush()

    def _abandon(self, pid: str, *, wait: bool = True) -> None:
        """Interrupt/delete ``pid`` where the server still answers (best effort, abandoned
        after ``cleanup_timeout``: then the prompt stays listed for the sweep)."""

        def cancel(client: Any) -> None:
            try:
                client.cancel(pid)
            except ComfyClusterError as exc:
                log.info("%s: could not cancel prompt %s: %s", self.name, pid, exc)
                return
            self.book.prompt_finished(self.name, pid)

        # The condition decides only whether a line is logged.
        if not self.link.cleanup(cancel, wait=wait) and wait:  # pragma: no mutate
            log.info("%s: no answer to the cancel of prompt %s; abandoned", self.name, pid)
