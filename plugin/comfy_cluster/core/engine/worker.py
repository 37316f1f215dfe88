"""One worker slot, :class:`_Worker`: run on its own thread, ``comfy-cluster-<server>-<n>``.

A slot pulls attempts from the job's ``JobState``, runs their prompts on its server (its own
client and websocket, whose listener thread feeds it events) and writes the frames. Failover:
transient errors are retried on the same server (``core/retry.py``), then the chunk's undelivered
frames go back to the queue for another server. A prompt with no websocket event for
``stall_timeout`` is checked against ``/queue``: gone (and no history) or running far longer than
that server's measured time per frame means stuck; it is interrupted and deleted where the server
still answers *before* its frames are handed on, and a late result is discarded by the frame
ledger. Job-or-server fault decisions live in ``JobState``.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from typing import TYPE_CHECKING, Any, Callable, Optional

from comfy_cluster.core import protocol
from comfy_cluster.core.engine.job import Attempt, Outcome
from comfy_cluster.core.errors import (
    AuthenticationFailed,
    ComfyClusterError,
    ConfigError,
    ExecutionFailed,
    ProtocolError,
    ServerUnreachable,
    TransientError,
    UnexpectedStatus,
    WorkflowError,
    WorkflowRejected,
)
from comfy_cluster.core.server import ServerConfig
from comfy_cluster.core.transfer import frame_path
from comfy_cluster.core.workflow import build_batch_prompt, build_frame_prompt, map_batch_outputs

if TYPE_CHECKING:
    from comfy_cluster.core.engine.job_run import _JobRun

log = logging.getLogger(__name__)


class _Aborted(Exception):
    """The attempt must stop: the job was cancelled or ended elsewhere."""


class _Stuck(TransientError):
    """The server stopped making progress on our prompt."""


class _Wedged(TransientError):
    """A stuck prompt kept running after we interrupted it: the server is hung."""


class _ServerDown(ComfyClusterError):
    """Connection refused while our websocket is down: the server is gone. Not retried: the
    chunk moves at once and the server is suspended until a probe answers."""


class _Worker:
    """One slot on one server: runs attempts one after another on its own client and websocket.

    Owns its client (one ``requests.Session`` per thread) and listener. Events arrive on the
    listener thread; :meth:`_on_ws_event` notes the time (for stall detection), when the watched
    prompt started and its output node's images, and hands over only what the worker must act
    on (progress, the end, an error, connection changes) through a queue: the worker thread
    wakes once per prompt plus once per progress step, not for every message.
    """

    def __init__(self, run: _JobRun, server: ServerConfig, slot: str) -> None:
        assert run.prepared is not None
        self.run = run
        self.s = run.s
        self.clock = run.s.clock
        self.server = server
        self.name = server.name
        self.slot = slot
        self.state = run.state
        self.job = run.job
        self.client: Any = None
        self.listener: Any = None
        self.stop = threading.Event()
        self.inbox: queue.Queue[Any] = queue.Queue()
        self.output_node = run.prepared.targets.output_node
        # Shared with the listener thread (single assignments only):
        #: The prompt whose events go to the inbox; set before POST (events may beat its reply).
        self._watch: Optional[str] = None
        #: Clock time the watched prompt started running (its first start/executing event).
        self._started_at: Optional[float] = None
        #: Images of the watched prompt's output node, from its ``executed`` event.
        self._images: Optional[tuple[Any, ...]] = None
        #: Clock time of the last websocket message (any prompt): the stall detector's input.
        self._last_event = self.clock()
        #: The websocket dropped and has not reconnected.
        self._ws_down = False

    def main(self) -> None:
        state = self.state
        assert state is not None
        try:
            while True:
                attempt = state.next_attempt(self.slot, self.s.poll_interval * 5)
                if attempt is None:
                    break
                if attempt is False:
                    if state.probe_due(self.slot):
                        self._probe()
                    continue
                outcome = self._attempt(attempt)
                state.finish_attempt(attempt, outcome)
        except Exception:
            log.exception("worker %s crashed", self.slot)
        finally:
            self.stop.set()
            if self.listener is not None:
                _safe(self.listener.close)
            if self.client is not None:
                _safe(self.client.close)
            state.close_slot(self.slot)
            state.flush()

    def _connect(self) -> None:
        if self.client is not None:
            return
        self.client = self.s.client_factory(self.server)
        self.listener = self.client.listen(self._on_ws_event, self.stop)
        wait = getattr(self.listener, "wait_connected", None)
        if wait is not None:
            # Events of a fast prompt can come before POST returns: listen first.
            wait(min(2.0, self.s.stall_timeout))

    def _on_ws_event(self, event: Any) -> None:
        """Listener thread: note liveness, start and images; hand over what :meth:`_await`
        acts on; drop the rest (broadcasts, other prompts, per-node chatter)."""
        cls = type(event)
        if cls is protocol.Disconnected:
            self._ws_down = True
            self.inbox.put(event)
            return
        if cls is protocol.Connected:
            self._ws_down = False
            self.inbox.put(event)
            return
        now = self._last_event = self.clock()
        pid = event.prompt_id
        if pid is None or pid != self._watch:
            return
        if cls is protocol.Executing:
            if event.node is None:
                self.inbox.put(event)
            elif self._started_at is None:
                self._started_at = now
        elif cls is protocol.ExecutionStart:
            if self._started_at is None:
                self._started_at = now
        elif cls is protocol.Executed:
            if event.node == self.output_node:
                self._images = protocol.output_images(event)
        elif cls in _HANDED_OVER:
            self.inbox.put(event)

    def _ws_lost(self) -> bool:
        """Whether our websocket is down (dropped, or never connected)."""
        return self._ws_down or not getattr(self.listener, "connected", True)

    def _probe(self) -> None:
        """Probe this (suspended) server once: does it answer ``/queue`` again?"""
        assert self.state is not None
        try:
            self._connect()
            self.client.queue()
        except ComfyClusterError as exc:
            self.state.probe_result(self.name, False, _why(exc))
        except Exception as exc:  # a bug in a client: count it as a failed probe
            log.exception("%s: probe failed", self.slot)
            self.state.probe_result(self.name, False, repr(exc))
        else:
            log.info("%s: answers again; resuming", self.name)
            self.state.probe_result(self.name, True)

    # -- one attempt ------------------------------------------------------------------------

    def _attempt(self, attempt: Attempt) -> Outcome:
        state = self.state
        assert state is not None
        try:
            self._connect()
            if self.job.mode == "batch":
                self._batch(attempt)
            else:
                self._frames(attempt)
            return Outcome.ok()
        except _Aborted:
            return Outcome("aborted")
        except _ServerDown as exc:
            return Outcome("server", str(exc), None, exc, down=True)
        except WorkflowRejected as exc:
            return state.judge_rejection(self.name, exc)
        except ExecutionFailed as exc:
            return state.judge_execution_error(self.name, exc)
        except WorkflowError as exc:
            return Outcome("job", str(exc), exc.node_id, exc)
        except (AuthenticationFailed, _Wedged) as exc:
            return Outcome("degraded", str(exc), None, exc)
        except ConfigError as exc:
            if exc.server:
                return Outcome("degraded", str(exc), None, exc)
            return Outcome("job", str(exc), None, exc)
        except ComfyClusterError as exc:
            return Outcome("server", _why(exc), None, exc)
        except OSError as exc:
            # Our own disk (output folder): every server would hit it.
            return Outcome("job", f"cannot write output: {exc}", None, exc)
        except Exception as exc:
            log.exception("%s: unexpected error in chunk %s", self.slot, attempt.chunk.index)
            return Outcome("server", f"internal error: {exc!r}", None, exc)

    def _check(self, attempt: Attempt) -> None:
        assert self.state is not None
        if not self.state.is_current(attempt):
            raise _Aborted()

    def _call(self, fn: Callable[[], Any]) -> Any:
        """``fn`` under the retry policy, except that a refused connection while our websocket is
        down means the server is gone: no retries, the chunk moves at once (_ServerDown)."""

        def guarded() -> Any:
            try:
                return fn()
            except ServerUnreachable as exc:
                if self._ws_lost():
                    raise _ServerDown(
                        f"server down (websocket dropped; {exc.message})", server=self.name
                    ) from exc
                raise

        return self.s.call(guarded, cancel=self.job.cancel_token)

    def _input_value(self, attempt: Attempt, frame: int) -> str:
        assert self.job.input_pattern
        path = frame_path(self.job.input_pattern, frame)
        if self.run.wait_for_input is not None:
            self._wait_input(attempt, frame, path)
        try:
            return self._call(
                lambda: self.run.transfer.prepare_input(self.client, self.server, path)
            )
        except OSError as exc:  # our disk: the input frame is not readable here
            raise ConfigError(f"cannot read input frame {frame}: {exc}", field="input") from exc

    def _wait_input(self, attempt: Attempt, frame: int, path: Any) -> None:
        """Block until the host says input ``frame`` is ready (``wait_for_input``), in short
        steps that check cancel; raise ConfigError (the job's fault) naming the frame when it
        is not ready within ``input_timeout`` or the hook raises."""
        hook = self.run.wait_for_input
        assert hook is not None
        clock = self.clock
        limit = self.s.input_timeout
        deadline = clock() + limit
        while True:
            self._check(attempt)
            began = clock()
            step = max(0.0, min(self.s.input_poll, deadline - began))
            try:
                ready = hook(frame, step)
            except Exception as exc:
                raise ConfigError(
                    f"waiting for input frame {frame} ({path}) failed: {exc!r}", field="input"
                ) from exc
            if ready:
                return
            now = clock()
            if now >= deadline:
                raise ConfigError(
                    f"input frame {frame} ({path}) was not ready after {limit:.0f} s",
                    field="input",
                )
            # A hook that says no at once (its export stopped) must not make us spin.
            rest = step - (now - began)
            if rest > 0 and self.job.cancel_token.wait(rest):
                raise _Aborted()

    def _prefix(self, prompt_id: str, frame: int) -> str:
        # Unique per prompt: SaveImage then always writes a new file (no stale cached names).
        return f"comfy_cluster/{self.job.job_id[:8]}/f{frame}_{prompt_id[:8]}"

    def _frames(self, attempt: Attempt) -> None:
        state = self.state
        prepared = self.run.prepared
        assert state is not None and prepared is not None
        for frame in attempt.chunk.frames:
            self._check(attempt)
            if state.delivered(frame):
                continue
            image_value = self._input_value(attempt, frame) if self.job.input_pattern else None
            prompt_id = uuid.uuid4().hex
            prompt = build_frame_prompt(
                prepared.workflow,
                frame,
                image_value=image_value,
                overrides=self.job.overrides,
                output_prefix=self._prefix(prompt_id, frame),
                loader=prepared.targets.image_loader,
                output_node=prepared.targets.output_node,
            )
            images = self._run_prompt(attempt, prompt, prompt_id, frames=1)
            if not images:
                raise ProtocolError(
                    f"frame {frame}: output node {prepared.targets.output_node} produced no image",
                    server=self.name,
                )
            self._deliver(attempt, frame, images[0])

    def _batch(self, attempt: Attempt) -> None:
        state = self.state
        prepared = self.run.prepared
        assert state is not None and prepared is not None
        chunk = attempt.chunk
        if not state.undelivered(chunk.frames):
            return
        rendered = chunk.all_frames
        values = [self._input_value(attempt, f) for f in rendered]
        self._check(attempt)
        prompt_id = uuid.uuid4().hex
        prompt = build_batch_prompt(
            prepared.workflow,
            chunk,
            image_values=values,
            overrides=self.job.overrides,
            output_prefix=self._prefix(prompt_id, chunk.frames[0]),
            loader=prepared.targets.image_loader,
            output_node=prepared.targets.output_node,
        )
        images = self._run_prompt(attempt, prompt, prompt_id, frames=len(chunk.frames))
        mapping = map_batch_outputs(images, rendered, chunk.frames)
        for frame in chunk.frames:
            self._check(attempt)
            self._deliver(attempt, frame, mapping[frame])

    def _deliver(self, attempt: Attempt, frame: int, ref: Any) -> None:
        """Write ``frame`` once: claim it in the ledger, write atomically, record it."""
        state = self.state
        assert state is not None
        if not state.claim_frame(attempt, frame):
            log.info("%s: frame %s already delivered; late result discarded", self.name, frame)
            return
        dest = frame_path(self.job.output_pattern, frame)
        try:
            self._call(lambda: self.run.transfer.fetch_output(self.client, self.server, ref, dest))
        except BaseException:
            state.release_frame(attempt, frame)
            raise
        state.frame_written(attempt, frame, str(dest))
        state.flush()

    # -- one prompt -------------------------------------------------------------------------

    def _submit(self, prompt: dict, prompt_id: str) -> str:
        """POST the prompt; on an ambiguous failure look for it before sending a fresh id."""
        state = self.state
        assert state is not None
        ids = [prompt_id]

        def once() -> str:
            pid = ids[-1]
            self._watch = None
            self._started_at = None
            self._images = None
            self._watch = pid
            state.prompt_submitted(self.name, pid)
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
            if pid in self.client.queue():
                return True
            return self.client.history(pid) is not None
        except ComfyClusterError:
            return False

    def _run_prompt(
        self, attempt: Attempt, prompt: dict, prompt_id: str, *, frames: int
    ) -> tuple[Any, ...]:
        """Submit ``prompt`` and wait for its output images (of the output node).

        Raises ExecutionFailed / Interrupted / WorkflowRejected, _Stuck, _Aborted or a transient
        error; on anything but success the prompt is cancelled on the server first.
        """
        state = self.state
        assert state is not None
        self._drain()
        pid = self._submit(prompt, prompt_id)
        state.mark_validated(self.name)
        try:
            result = self._await(attempt, pid, frames)
        except _Stuck as exc:
            self._abandon(pid)
            if self._still_running(pid):
                raise _Wedged(f"{exc.message}; it ignores interrupts", server=self.name) from exc
            raise
        except BaseException:
            self._abandon(pid)
            raise
        finally:
            self._watch = None
        state.prompt_finished(self.name, pid)
        return result

    def _still_running(self, pid: str) -> bool:
        """Whether ``pid`` still runs ``stall_timeout`` after our interrupt (a hung server)."""
        deadline = self.s.clock() + self.s.stall_timeout
        while True:
            try:
                if pid not in self.client.queue().running:
                    return False
            except ComfyClusterError:
                return False
            if self.s.clock() >= deadline or self.job.cancel_token.wait(self.s.poll_interval * 5):
                return True

    def _abandon(self, pid: str) -> None:
        """Interrupt/delete ``pid`` where the server still answers (best effort, bounded)."""
        assert self.state is not None
        try:
            self.client.cancel(pid)
            self.state.prompt_finished(self.name, pid)
        except ComfyClusterError as exc:
            log.info("%s: could not cancel prompt %s: %s", self.name, pid, exc)

    def _drain(self) -> None:
        while True:
            try:
                self.inbox.get_nowait()
            except queue.Empty:
                return

    def _alive_after_drop(self) -> None:
        """The websocket dropped: a refused connection now means the server is gone."""
        try:
            self.client.queue()
        except ServerUnreachable as exc:
            raise _ServerDown(
                f"server down (websocket dropped; {exc.message})", server=self.name
            ) from exc
        except ComfyClusterError:
            pass  # it answers somehow (timeout, odd status): the normal checks decide

    def _await(self, attempt: Attempt, pid: str, frames: int) -> tuple[Any, ...]:
        """Wait for ``pid`` to finish; return the output node's images.

        The images come from the ``executed`` event of the output node, confirmed by
        ``executing`` node=None; ``/history`` is read only when events may have been missed
        (a reconnect, or the end without ``executed``) and, as a safety net, every
        ``history_interval``. Silence for ``stall_timeout`` triggers a ``/queue`` check (stuck,
        vanished, or pending for too long behind others).
        """
        state = self.state
        assert state is not None
        clock = self.clock
        output_node = self.output_node
        inbox_get = self.inbox.get
        poll = self.s.poll_interval
        submitted = clock()
        checked = submitted  # last /queue check (stall detection counts from here too)
        next_history = submitted + self.s.history_interval
        pending_since: Optional[float] = None
        missed = self._ws_lost()
        while True:
            self._check(attempt)
            try:
                event = inbox_get(timeout=poll)
            except queue.Empty:
                event = None
            now = clock()
            if event is not None:
                cls = type(event)
                if cls is protocol.Disconnected:
                    missed = True
                    self._alive_after_drop()
                elif cls is protocol.Connected:
                    missed = True
                    next_history = now  # events were missed while disconnected: re-sync
                elif event.prompt_id == pid:
                    if cls is protocol.ProgressEvent:
                        if event.max > 0:
                            state.set_fraction(attempt, event.value / event.max, frames=frames)
                            state.flush()
                    elif cls is protocol.Executing:  # node None: finished, history written
                        images = self._images
                        started = self._started_at or submitted
                        if images and not missed:
                            return self._done(images, started, frames)
                        next_history = now
                    elif cls in (protocol.ExecutionErrorEvent, protocol.ExecutionInterrupted):
                        raise event.to_error(self.name)
            if now >= next_history:
                entry = self._call(lambda: self.client.history(pid))
                if entry is not None:
                    started = self._started_at or submitted
                    return self._result(pid, entry, output_node, started, frames)
                next_history = now + self.s.history_interval
            if now - max(self._last_event, checked) > self.s.stall_timeout:
                q = self._call(lambda: self.client.queue())
                now = clock()
                checked = now
                if pid in q.running:
                    if self._started_at is None:
                        self._started_at = pending_since or submitted
                    running_since = self._started_at
                    limit = self._run_limit(frames)
                    if limit is not None and now - running_since > limit:
                        raise _Stuck(
                            f"stuck: no event for {now - self._last_event:.1f} s, running "
                            f"{now - running_since:.1f} s (limit {limit:.1f} s)",
                            server=self.name,
                        )
                elif pid in q.pending:
                    pending_since = pending_since or now
                    self._check_pending(q, pid, now - pending_since, frames)
                else:
                    entry = self._call(lambda: self.client.history(pid))
                    if entry is not None:
                        started = self._started_at or submitted
                        return self._result(pid, entry, output_node, started, frames)
                    raise _Stuck(
                        "prompt vanished from the server's queue without a result (restarted?)",
                        server=self.name,
                    )

    def _check_pending(self, q: Any, pid: str, waited: float, frames: int) -> None:
        """Our prompt waits in the server's queue. Raise _Stuck when it waited longer than the
        prompts ahead of it should take (``_run_limit`` each), or when the server is out of the
        job: a prompt ahead that never ends must not hold the chunk (and the job) forever."""
        assert self.state is not None
        if self.name in self.state.blocklist:
            raise _Stuck("queued on a server that is out of the job", server=self.name)
        limit = self._run_limit(frames)
        if limit is None:
            return
        ahead = len(q.running) + q.pending.index(pid) + 1
        if waited > limit * ahead:
            raise _Stuck(
                f"stuck: queued {waited:.1f} s behind {ahead - 1} prompt(s) "
                f"(limit {limit * ahead:.1f} s)",
                server=self.name,
            )

    def _run_limit(self, frames: int) -> Optional[float]:
        """How long a silent running prompt may run before it counts as stuck."""
        spf = self.s.speed.seconds_per_frame(self.name)
        if spf is None:
            assert self.state is not None
            known = [
                x
                for n in self.state.servers
                if (x := self.s.speed.seconds_per_frame(n)) is not None
            ]
            spf = max(known) if known else None
        if spf is None:
            return self.s.first_prompt_timeout
        return max(self.s.stall_timeout, self.s.stuck_factor * spf * max(1, frames))

    def _done(self, images: tuple[Any, ...], started: float, frames: int) -> tuple[Any, ...]:
        seconds = max(0.0, self.s.clock() - started)
        _safe(lambda: self.s.speed.record(self.name, seconds, max(1, frames)))
        return images

    def _result(
        self, pid: str, entry: Any, output_node: str, started: float, frames: int
    ) -> tuple[Any, ...]:
        result = protocol.parse_history_entry(pid, entry)
        result.raise_for_outcome(self.name)
        images = tuple(protocol.output_images(entry, node_id=output_node))
        return self._done(images, started, frames)


#: Events of the watched prompt handed to :meth:`_Worker._await` besides ``executing`` None.
_HANDED_OVER = frozenset(
    {protocol.ProgressEvent, protocol.ExecutionErrorEvent, protocol.ExecutionInterrupted}
)


def _why(exc: BaseException) -> str:
    text = str(exc)
    return text or type(exc).__name__


def _safe(fn: Callable[[], Any]) -> None:
    """Call ``fn`` for cleanup, logging and ignoring any error (the job run uses it too)."""
    try:
        fn()
    except Exception:
        log.debug("ignored error in %r", fn, exc_info=True)
