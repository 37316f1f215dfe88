"""Each server's preflight check gates that server alone: :class:`ServerGate`.

Why: a server that lacks a node class or a model the workflow names fails every prompt sent to
it, and the failover then spends retries (and the user's minutes) learning what one
``/object_info`` says at once. So at the start of a job every server is checked in parallel
(``core/preflight.py``). A server's worker slots join the job's book only once *its own* verdict
is in, so the first prompt goes to the first server that passes, never after the slowest check,
and no chunk waits on a slot whose server is still being checked.

What a verdict does:

- ``ok``: the server's slots join the book and take work.
- ``unusable`` (a missing class or model) or ``auth`` (401/403): the server is out of the job
  with the verdict's reasons (node, input and value for a model) and never gets a prompt; when
  no server is left the job fails at once, naming each server and why.
- ``unreachable`` or ``error`` (no answer, not ComfyUI...): not a fact about this workflow, so
  the slots join as usual and the engine's own rules (suspension, probes, rejoining) decide.

Every verdict is announced as a ``ServerChecked`` event before that server's first prompt.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any, Optional

from comfy_cluster.core.engine.attempt import Outcome, OutcomeKind
from comfy_cluster.core.engine.book import JobBook
from comfy_cluster.core.engine.events import ServerChecked
from comfy_cluster.core.engine.job import RenderJob
from comfy_cluster.core.engine.plan import JobPlan
from comfy_cluster.core.engine.tools import Preflight
from comfy_cluster.core.preflight import CheckRun, ServerVerdict, VerdictState
from comfy_cluster.core.workflow import build_frame_prompt

__all__ = ["EXCLUDING", "ServerGate"]

log = logging.getLogger(__name__)

#: Verdicts that keep a server out of the job: it answered, and cannot run this workflow (or
#: refuses our credentials). Any other failed verdict is left to the engine's own rules.
EXCLUDING = frozenset({VerdictState.UNUSABLE, VerdictState.AUTH})

#: How often a waiting worker looks at the job's end and the check's deadline.
_WAIT_STEP = 0.1


class ServerGate:
    """The slots of one job, held back per server until that server's verdict is in.

    ``preflight`` ``None``: no check, every slot joins the book at once. Any thread: the
    verdicts arrive on the check's threads, the waits run on the workers' threads.
    """

    def __init__(
        self,
        book: JobBook,
        plan: JobPlan,
        job: RenderJob,
        preflight: Optional[Preflight],
        *,
        max_wait: Optional[float] = None,
    ) -> None:
        self.book = book
        self.plan = plan
        self.job = job
        self.preflight = preflight
        timeout = preflight.timeout if preflight is not None else 0.0
        #: The longest wait for one verdict (below the job's idle limit when given).
        self.timeout = min(timeout, max_wait) if max_wait else timeout
        self._lock = threading.Lock()
        self._held: dict[str, list[str]] = {srv.name: [] for srv in plan.servers}
        self._decided: dict[str, bool] = {}
        self._events = {srv.name: threading.Event() for srv in plan.servers}
        self._run: Optional[CheckRun] = None
        if preflight is None:
            for name, event in self._events.items():
                self._decided[name] = True
                event.set()

    # -- the job's thread -------------------------------------------------------------------

    def add_slot(self, slot: str, server: str) -> None:
        """Register ``slot`` of ``server``: it joins the book now if the server passed, or
        once it does."""
        with self._lock:
            decided = self._decided.get(server)
            if decided is None:
                self._held[server].append(slot)
                return
        if decided:
            self.book.add_slot(slot, server)

    def start(self) -> None:
        """Ask every server of the job (no-op without a preflight)."""
        if self.preflight is None:
            return
        factory = self.preflight.client_factory
        self._run = CheckRun(
            self._workflow(),
            self.plan.servers,
            factory,
            timeout=self.timeout,
            skip_inputs=self._skip_inputs(),
            on_verdict=self._decide,
        ).start()

    def _skip_inputs(self) -> tuple[tuple[str, str], ...]:
        loader = self.plan.targets.image_loader
        return ((loader, "image"),) if loader and self.job.input_pattern else ()

    def _workflow(self) -> Mapping[str, Any]:
        """The prompt of the job's first frame as it will be sent (overrides applied, frame
        tokens expanded), so a ``--set ckpt_name=...`` is what gets checked. Workers, and so
        the gate, start only when a frame is left to render."""
        targets = self.plan.targets
        try:
            return build_frame_prompt(
                self.plan.workflow,
                self.plan.to_render[0],
                image_value="check.png" if self.job.input_pattern else None,
                overrides=self.job.overrides,
                loader=targets.image_loader,
                output_node=targets.output_node,
            )
        except Exception:  # an override the prompt builder refuses fails the job later anyway
            log.debug("preflight: checking the workflow without its overrides", exc_info=True)
            return self.plan.workflow.to_dict()

    # -- the check's threads ----------------------------------------------------------------

    def _decide(self, verdict: ServerVerdict) -> None:
        """Announce ``verdict``, then let the server's slots in or keep the server out."""
        try:
            self._apply(verdict)
        except Exception:  # a bug here must not leave the server's workers waiting
            log.exception("preflight: could not apply the verdict on %s", verdict.name)
        finally:
            self._events[verdict.name].set()

    def _apply(self, verdict: ServerVerdict) -> None:
        name = verdict.name
        book = self.book
        admitted = verdict.state not in EXCLUDING
        if not book.over():
            book.post(
                ServerChecked,
                server=name,
                ok=verdict.ok,
                reasons=verdict.reasons,
                state=verdict.state,
            )
            if admitted:
                with self._lock:
                    self._decided[name] = True
                    held, self._held[name] = self._held[name], []
                for slot in held:
                    book.add_slot(slot, name)  # its workers ask for work as soon as they wake
            else:
                with self._lock:
                    self._decided[name] = False
                    self._held[name] = []
                why = verdict.text
                book.server_refused(name, Outcome(OutcomeKind.DEGRADED, why))
        book.flush()

    # -- the workers' threads ---------------------------------------------------------------

    def wait(self, server: str) -> bool:
        """Block until ``server``'s verdict is in; True when its slots may work (False: the
        server is out of the job, or the job ended first)."""
        event = self._events[server]
        deadline = time.monotonic() + self.timeout
        while not event.wait(_WAIT_STEP):
            if self.book.over():
                return False
            run = self._run
            if run is not None and time.monotonic() >= deadline:
                run.verdict(server)  # past its deadline: records "no answer in N s"
        with self._lock:
            return bool(self._decided.get(server)) and not self.book.over()
