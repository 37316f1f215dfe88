"""Where each server stands in one job: :class:`ServerStanding`.

It keeps the per-job blocklist, failure counts, the suspension of servers that looked dead (and
their probes), and judges whose fault a rejection or an execution error is: the workflow's (fail
the job) or the server's (move the work). Plain bookkeeping: the job's book holds the one lock
around every call, and posts the events.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Callable, Optional, Union

from comfy_cluster.core.engine.attempt import Outcome, OutcomeKind
from comfy_cluster.core.engine.settings import EngineSettings
from comfy_cluster.core.errors import ExecutionFailed, WorkflowInvalid, WorkflowRejected

__all__ = ["ServerStanding", "Suspension"]


class Suspension:
    """A server that looked dead: no work until a probe answers."""

    __slots__ = ("delay", "last", "probing", "until", "why")

    def __init__(self, until: float, delay: float, why: str, last: float) -> None:
        self.until = until  # clock time of the next probe
        self.delay = delay  # backoff before the probe after that
        self.probing = False  # one slot of the server is probing now
        self.why = why
        self.last = last  # clock time of the suspension or of the last failed probe


class ServerStanding:
    """Blocklist, failure counts, suspensions and fault judgements of one job's servers.

    A server failing ``blocklist_after`` chunks (or probes) is out of the job, except that a
    server which worked in this job and then became unreachable (:meth:`comes_back`) is
    probed for the rest of the job, even once it is out (``away``): it rejoins when it answers,
    and the job waits for it (up to its idle limit) instead of failing. Probes come at least
    every ``REJOIN_PROBE`` seconds while no server is usable. Caller holds the job's lock.
    """

    #: The longest wait between probes while every eligible server is suspended.
    REJOIN_PROBE = 0.5

    def __init__(
        self, servers: Sequence[str], clock: Callable[[], float], settings: EngineSettings
    ) -> None:
        #: Server names in configuration order.
        self.servers: tuple[str, ...] = tuple(servers)
        self._clock = clock
        self.blocklist_after = settings.blocklist_after
        self.probe_interval = settings.probe_interval
        self.probe_interval_max = settings.probe_interval_max
        #: Servers out of this job, with the reason.
        self.blocklist: dict[str, str] = {}
        #: Servers that looked dead, until a probe answers.
        self.suspended: dict[str, Suspension] = {}
        self.rejoin_after = settings.rejoin_after
        #: Servers out of the job for what they did, with the clock time of their one probe.
        self.second_chance: dict[str, float] = {}
        self._had_second_chance: set[str] = set()
        self._probing_out: set[str] = set()
        #: Servers out of the job as unreachable after working in it: still probed.
        self.away: set[str] = set()
        self._failures: dict[str, int] = {}
        self._rejections: dict[str, WorkflowRejected] = {}
        self._validated_on: set[str] = set()
        self._exec_errors: dict[tuple[Optional[str], str], dict[str, ExecutionFailed]] = {}

    # -- in or out --------------------------------------------------------------------------

    def eligible(self) -> tuple[str, ...]:
        """Servers still allowed to take work in this job."""
        return tuple(s for s in self.servers if s not in self.blocklist)

    def block(self, server: str, why: str) -> bool:
        """Take ``server`` out of the job; False when it was out already (first reason wins)."""
        if server in self.blocklist:
            return False
        self.blocklist[server] = why
        if server not in self._had_second_chance and not why.startswith("unreachable"):
            self._had_second_chance.add(server)
            self.second_chance[server] = self._clock() + self.rejoin_after
        return True

    def waits_for_second_chance(self, server: str) -> bool:
        """``server`` is out of the job but will be probed (once, or while ``away``)."""
        return server in self.second_chance or server in self.away

    def back(self, server: str) -> Optional[Suspension]:
        """The probe of suspended ``server`` answered: back in the job (from ``away`` too). One
        server back hints that others may be too (a network or a rack restored): the other
        suspended servers are probed soon again, their backoff restarted."""
        now = self._clock()
        for other, suspension in self.suspended.items():
            if other != server:
                suspension.until = min(suspension.until, now + self.probe_interval)
                suspension.delay = min(self.probe_interval * 2, self.probe_interval_max)
        if server in self.away:
            self.away.discard(server)
            self.blocklist.pop(server, None)
            self._failures.pop(server, None)
        return self.suspended.pop(server, None)

    def rejoin(self, server: str) -> Optional[str]:
        """The one probe of ``server`` (out for what it did) answered: back in the job with a
        clean count. Returns why it had been out."""
        self.second_chance.pop(server, None)
        self._probing_out.discard(server)  # pragma: no mutate
        self._failures.pop(server, None)
        self._rejections.pop(server, None)
        return self.blocklist.pop(server, None)

    def no_second_chance(self, server: str) -> None:
        """The one probe of ``server`` failed: it stays out for the rest of the job."""
        self.second_chance.pop(server, None)
        self._probing_out.discard(server)  # pragma: no mutate

    def count_failure(self, server: str) -> int:
        """One more failure of ``server``; returns how many it has had in this job."""
        failures = self._failures.get(server, 0) + 1
        self._failures[server] = failures
        return failures

    def too_many(self, failures: int) -> bool:
        return failures >= self.blocklist_after

    # -- suspension and probes --------------------------------------------------------------

    def suspend(self, server: str, why: str) -> bool:
        """Stop handing work to ``server`` until a probe answers; False if out or suspended."""
        if server in self.blocklist or server in self.suspended:
            return False
        now = self._clock()
        self.suspended[server] = Suspension(
            now + self.probe_interval,
            min(self.probe_interval * 2, self.probe_interval_max),
            why,
            now,
        )
        return True

    def comes_back(self, server: str) -> bool:
        """Whether ``server`` worked in this job (accepted a prompt): unreachable now, it is
        waited for and probed for the rest of the job instead of being taken out."""
        return server in self._validated_on

    def none_usable(self) -> bool:
        """Every server still in the job is suspended (no server can take work now)."""
        return all(s in self.suspended for s in self.eligible())

    def _due(self, suspension: Suspension) -> float:
        """Clock time the probe of ``suspension`` is due: its backoff, but at least every
        ``REJOIN_PROBE`` s while no server is usable."""
        if self.none_usable():
            return min(suspension.until, suspension.last + self.REJOIN_PROBE)
        return suspension.until

    def until_probe(self, server: str) -> Optional[float]:
        """Seconds until ``server``'s next probe is due; ``None`` when none is awaited."""
        if server in self.second_chance and server not in self.away:
            if server in self._probing_out:
                return None
            return max(0.0, self.second_chance[server] - self._clock())
        suspension = self.suspended.get(server)
        if suspension is None or suspension.probing:
            return None
        return max(0.0, self._due(suspension) - self._clock())

    def claim_probe(self, server: str) -> bool:
        """Whether ``server`` should be probed now; claims the probe (one slot at a time)."""
        if server in self.second_chance and server not in self.away:
            due = self._clock() >= self.second_chance[server]
            if not due or server in self._probing_out:
                return False
            self._probing_out.add(server)
            return True
        suspension = self.suspended.get(server)
        if (
            suspension is None
            or suspension.probing
            or (server in self.blocklist and server not in self.away)
            or self._clock() < self._due(suspension)
        ):
            return False
        suspension.probing = True
        return True

    def probe_failed(self, server: str, why: str) -> Optional[str]:
        """The probe of suspended ``server`` failed: back off (doubling) and count a failure.
        Returns the reason to take it out of the job when it has failed too often."""
        suspension = self.suspended[server]
        suspension.probing = False
        suspension.last = self._clock()
        suspension.until = suspension.last + suspension.delay
        suspension.delay = min(suspension.delay * 2, self.probe_interval_max)
        failures = self.count_failure(server)
        if not self.too_many(failures):
            return None
        if self.comes_back(server):
            self.away.add(server)  # out of the job, still probed (it may come back)
            if server in self.blocklist:
                return None
        else:
            del self.suspended[server]
        return f"unreachable ({failures} failures); last: {why or suspension.why}"

    # -- whose fault ------------------------------------------------------------------------

    def judge(self, server: str, error: Union[WorkflowRejected, ExecutionFailed]) -> Outcome:
        """Whose fault a rejection or an execution error of ``server`` is."""
        if isinstance(error, WorkflowRejected):
            return self.judge_rejection(server, error)
        return self.judge_execution_error(server, error)

    def mark_validated(self, server: str) -> None:
        """``server`` accepted a prompt of this job (so the workflow is valid somewhere)."""
        self._validated_on.add(server)

    def judge_rejection(self, server: str, error: WorkflowRejected) -> Outcome:
        """A 400 from ``server``: the job's fault if structural or every eligible server gives
        one (and none accepted the workflow); otherwise the server is degraded for this job.

        When the workflow is at fault for a validation reason (structural, or the same node
        inputs rejected the same way by every server) the error is a ``WorkflowInvalid``: a bad
        workflow or argument, not a server problem."""
        node = error.node_ids[0] if error.node_ids else None
        structural = error.error_type in ("no_prompt", "prompt_no_outputs") or (
            error.error_type == "invalid_prompt" and not error.missing_classes
        )
        if structural:
            why = f"workflow rejected: {error.message}"
            return Outcome(OutcomeKind.JOB, why, node, WorkflowInvalid.from_rejection(error, why))
        self._rejections[server] = error
        others = [s for s in self.eligible() if s != server]
        if not self._validated_on and all(s in self._rejections for s in others):
            names = ", ".join(sorted(self._rejections))
            why = f"workflow rejected by every server ({names}): {error.message}"
            reasons = {_reason(e) for e in self._rejections.values()}
            if len(reasons) == 1 and not error.missing_classes:
                error = WorkflowInvalid.from_rejection(error, why)
            return Outcome(OutcomeKind.JOB, why, node, error)
        why = f"rejected the workflow: {error.message}"
        return Outcome(OutcomeKind.DEGRADED, why, node, error)

    def judge_execution_error(self, server: str, error: ExecutionFailed) -> Outcome:
        """An execution_error: the job's fault when the same node failed with the same exception
        type on another server too; otherwise this server's fault."""
        seen = self._exec_errors.setdefault((error.node_id, error.exception_type), {})
        seen[server] = error
        if len(seen) >= 2:
            names = " and ".join(sorted(seen))
            why = f"{error.message} (on {names})"
            return Outcome(OutcomeKind.JOB, why, error.node_id, error)
        return Outcome(OutcomeKind.SERVER, error.message, error.node_id, error)


def _reason(error: WorkflowRejected) -> tuple:
    """What a rejection is about: its type and each node input's error type."""
    nodes = tuple(sorted((e.node_id, e.input_name or "", e.type) for e in error.node_errors))
    return (error.error_type, nodes, () if nodes else (error.message,))
