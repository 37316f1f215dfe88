"""Watching one worker slot's prompts through its websocket: :class:`PromptWatch`.

The listener thread feeds :meth:`PromptWatch.on_event`, which notes the time (for stall
detection), when the watched prompt started and its output node's images, and hands over only
what the worker must act on (progress, the end, an error, connection changes) through a queue:
the worker thread wakes once per prompt plus once per progress step, not for every message.
:meth:`PromptWatch.wait` is the worker's side: it waits for the prompt's images, reads
``/history`` only when events may have been missed, and checks ``/queue`` after a silence
(``StuckRule`` decides what counts as stuck).
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional

from comfy_cluster.core import protocol
from comfy_cluster.core.engine.cleanup import ignore_errors
from comfy_cluster.core.engine.settings import EngineSettings
from comfy_cluster.core.engine.stuck import StuckRule
from comfy_cluster.core.engine.tools import SpeedRecord
from comfy_cluster.core.engine.waits import QueuedBehind, QueueWaits
from comfy_cluster.core.errors import (
    ComfyClusterError,
    PromptStuck,
    ServerGone,
    ServerSilent,
    ServerUnreachable,
)

__all__ = ["PromptWatch"]

#: Events of the watched prompt handed to the worker besides ``executing`` None.
_HANDED_OVER = frozenset(
    {protocol.ProgressEvent, protocol.ExecutionErrorEvent, protocol.ExecutionInterrupted}
)


@dataclass
class _Waiting:
    """The worker's record of one prompt it waits for (worker thread only)."""

    client: Any
    pid: str
    frames: int
    #: Clock time of the submission.
    submitted: float
    #: Last ``/queue`` check (stall detection counts from here too).
    checked: float
    #: When ``/history`` is read next (a safety net for missed events).
    next_history: float
    #: Events may have been missed (a reconnect): confirm the end with ``/history``.
    missed: bool
    #: Clock time our prompt was first seen pending in the server's queue.
    pending_since: Optional[float] = None
    #: Clock time our prompt was last seen pending (it started after that).
    pending_seen: Optional[float] = None
    #: When a queued (not started) prompt is next looked at for a move to an idle server.
    next_move: float = 0.0


class PromptWatch:
    """The websocket side of one worker slot. :meth:`on_event` runs on the listener thread,
    everything else on the worker thread; they share single assignments only.

    ``call(fn, what)`` runs a server request under the worker's retry rules, abandoned (raising
    ``ServerSilent``) when the server does not answer in time; ``progress(fraction,
    frames)`` reports the running prompt's sampler progress; ``check()`` raises Aborted when
    the attempt must stop.
    """

    def __init__(
        self,
        server: str,
        output_node: str,
        *,
        settings: EngineSettings,
        clock: Callable[[], float],
        speed: SpeedRecord,
        stuck: StuckRule,
        call: Callable[[Callable[[], Any], str], Any],
        cancel: threading.Event,
        waits: Optional[QueueWaits] = None,
    ) -> None:
        self.server = server
        self.waits = waits
        self.output_node = output_node
        self.settings = settings
        self.clock = clock
        self.speed = speed
        self.stuck = stuck
        self.call = call
        self.cancel = cancel
        self.inbox: queue.Queue[Any] = queue.Queue()
        #: The prompt whose events go to the inbox; set before POST (events may beat its reply).
        self._watch: Optional[str] = None
        #: Clock time the watched prompt started running (its first start/executing event).
        self._started_at: Optional[float] = None
        #: Images of the watched prompt's output node, from its ``executed`` event.
        self._images: Optional[tuple[Any, ...]] = None
        #: Clock time of the last websocket message (any prompt): the stall detector's input.
        self._last_event = clock()
        #: The websocket dropped and has not reconnected.
        self._ws_down = False
        #: The client's websocket listener, set by the worker when it connects (its
        #: ``connected`` flag, when it has one, tells :meth:`ws_lost`).
        self.listener: Any = None

    # -- listener thread ----------------------------------------------------------------------

    def on_event(self, event: Any) -> None:
        """Listener thread: note liveness, start and images; hand over what :meth:`wait` acts
        on; drop the rest (broadcasts, other prompts, per-node chatter)."""
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

    # -- worker thread ------------------------------------------------------------------------

    def ws_lost(self) -> bool:
        """Whether our websocket is down (dropped, or never connected)."""
        return self._ws_down or not getattr(self.listener, "connected", True)

    def silent_for(self) -> float:
        """Seconds since the last websocket message."""
        return self.clock() - self._last_event

    def expect(self, pid: Optional[str]) -> None:
        """Watch ``pid`` from now on (``None``: no prompt), forgetting the previous one's."""
        self._watch = None
        self._started_at = None
        self._images = None
        self._watch = pid

    def forget(self) -> None:
        """Stop routing events to the inbox (the prompt is over for us)."""
        self._watch = None

    def drain(self) -> None:
        """Drop what the previous prompt left in the inbox."""
        while True:
            try:
                self.inbox.get_nowait()
            except queue.Empty:
                return

    def wait(
        self,
        client: Any,
        pid: str,
        frames: int,
        check: Callable[[], None],
        progress: Callable[[float, int], None],
        move: Optional[Callable[[bool], bool]] = None,
    ) -> tuple[Any, ...]:
        """Wait for ``pid`` to finish; return the output node's images (and record the speed).
        ``move(commit)`` says whether a prompt still queued should move to an idle server
        (:meth:`_maybe_move`).

        The images come from the ``executed`` event of the output node, confirmed by
        ``executing`` node=None; ``/history`` is read only when events may have been missed
        (a reconnect, or the end without ``executed``) and, as a safety net, every
        ``history_interval``. Silence for ``stall_timeout`` triggers a ``/queue`` check.
        Raises ExecutionFailed / Interrupted, PromptStuck, ServerGone, Aborted (``check``).
        """
        now = self.clock()
        history_at = now + self.settings.history_interval
        w = _Waiting(client, pid, frames, now, now, history_at, self.ws_lost())
        inbox_get = self.inbox.get
        poll = self.settings.poll_interval
        while True:
            check()
            try:
                event = inbox_get(timeout=poll)
            except queue.Empty:
                event = None
            now = self.clock()
            if event is not None:
                images = self._handle(w, event, now, progress)
                if images is not None:
                    return self._done(w, images)
            if now >= w.next_history:
                entry = self._history(w)
                if entry is not None:
                    return self._result(w, entry)
                w.next_history = now + self.settings.history_interval
            if now - max(self._last_event, w.checked) > self.settings.stall_timeout:
                entry = self._look_in_queue(w)
                if entry is not None:
                    return self._result(w, entry)
            if move is not None and self._started_at is None and now >= w.next_move:
                self._maybe_move(w, now, move)

    def _maybe_move(self, w: _Waiting, now: float, move: Callable[[bool], bool]) -> None:
        """Our prompt has not started: past twice its expected time, while another server has
        a free slot and nothing else waits, confirm with ``/queue`` that it is still queued and
        raise QueuedBehind (the worker deletes it; the chunk moves)."""
        spf = self.speed.seconds_per_frame(self.server)
        if spf is None:
            w.next_move = float("inf")  # no measured speed: no basis for a move
            return
        expected = spf * max(1, w.frames)
        w.next_move = now + max(self.settings.poll_interval, expected / 2)
        if now - w.submitted < 2 * expected or not move(False):
            return
        q = self.call(lambda: w.client.queue(), "/queue")
        if w.pid in q.pending and self._started_at is None and move(True):
            ahead = len(q.running) + q.pending.index(w.pid)
            raise QueuedBehind(
                f"queued {now - w.submitted:.1f} s behind {ahead} prompt(s) while another "
                "server is free: moved"
            )

    def _handle(
        self, w: _Waiting, event: Any, now: float, progress: Callable[[float, int], None]
    ) -> Optional[tuple[Any, ...]]:
        """Act on one handed-over event; returns the images when the prompt is done."""
        cls = type(event)
        if cls is protocol.Disconnected:
            self._alive_after_drop(w)  # no event arrives until the Connected that marks a gap
        elif cls is protocol.Connected:
            w.missed = True
            w.next_history = now  # events were missed while disconnected: re-sync
        elif event.prompt_id == w.pid:
            if cls is protocol.ProgressEvent:
                if event.max > 0:
                    progress(event.value / event.max, w.frames)
            elif cls is protocol.Executing:  # node None: finished, history written
                if self._images and not w.missed:
                    return self._images
                w.next_history = now
            elif cls in (protocol.ExecutionErrorEvent, protocol.ExecutionInterrupted):
                raise event.to_error(self.server)
        return None

    def _history(self, w: _Waiting) -> Any:
        """The safety net: ``/history`` of our prompt. A server that does not answer is given
        up only once its websocket has been silent for ``stall_timeout`` too."""
        try:
            return self.call(lambda: w.client.history(w.pid), "/history")
        except ServerSilent as exc:
            if self.silent_for() > self.settings.stall_timeout:
                raise self._stopped_answering(exc) from exc
            return None

    def _stopped_answering(self, exc: ServerSilent) -> ServerSilent:
        """``exc``, told with the real wait: how long the websocket has been silent."""
        return ServerSilent(
            f"stopped answering: no websocket event for {self.silent_for():.1f} s and "
            f"{exc.message}",
            server=self.server,
        )

    def _alive_after_drop(self, w: _Waiting) -> None:
        """The websocket dropped: a refused connection (or no answer) means the server is gone."""
        try:
            self.call(lambda: w.client.queue(), "/queue")
        except ServerSilent as exc:
            raise ServerSilent(f"websocket dropped and {exc.message}", server=self.server) from exc
        except ServerGone:
            raise
        except ServerUnreachable as exc:
            raise ServerGone(
                f"server down (websocket dropped; {exc.message})", server=self.server
            ) from exc
        except ComfyClusterError:
            pass  # it answers somehow (timeout, odd status): the normal checks decide

    def _look_in_queue(self, w: _Waiting) -> Any:
        """After a silence: is our prompt running (for too long?), waiting (behind too much?),
        or gone? Returns its history entry when it finished unnoticed; raises PromptStuck."""
        try:
            q = self.call(lambda: w.client.queue(), "/queue")
        except ServerSilent as exc:
            raise self._stopped_answering(exc) from exc
        now = self.clock()
        w.checked = now
        if w.pid in q.running:
            if self._started_at is None:  # the start event was missed: it started since
                self._started_at = w.pending_seen or w.submitted
            self.stuck.check_running(now - self._started_at, now - self._last_event, w.frames)
            return None
        if w.pid in q.pending:
            w.pending_since = w.pending_since or now
            w.pending_seen = now
            self.stuck.check_pending(q, w.pid, now - w.pending_since, w.frames)
            return None
        entry = self.call(lambda: w.client.history(w.pid), "/history")
        if entry is None:
            raise PromptStuck(
                "prompt vanished from the server's queue without a result (restarted?)",
                server=self.server,
            )
        return entry

    def _result(self, w: _Waiting, entry: Any) -> tuple[Any, ...]:
        result = protocol.parse_history_entry(w.pid, entry)
        result.raise_for_outcome(self.server)
        return self._done(w, tuple(protocol.output_images(entry, node_id=self.output_node)))

    def _done(self, w: _Waiting, images: tuple[Any, ...]) -> tuple[Any, ...]:
        now = self.clock()
        seconds = max(0.0, now - (self._started_at or w.submitted))
        if self.waits is not None:
            # The wait behind other clients' prompts counts in the estimate (not in stuck).
            seconds += self.waits.foreign_wait(self.server, w.submitted, self._started_at)
            self.waits.ended(self.server, now)
        ignore_errors(lambda: self.speed.record(self.server, seconds, max(1, w.frames)))
        return images

    def still_running(self, client: Any, pid: str) -> Optional[float]:
        """Seconds ``pid`` still ran after our interrupt when it still runs ``stall_timeout``
        later (a hung server); ``None`` when it stopped (or the server does not say)."""
        start = self.clock()
        deadline = start + self.settings.stall_timeout
        while True:
            try:
                if pid not in self.call(lambda: client.queue(), "/queue").running:
                    return None
            except ComfyClusterError:
                return None
            if self.clock() >= deadline or self.cancel.wait(self.settings.wait_step):
                return self.clock() - start
