"""The engine's timing and failover knobs, as one validated value: :class:`EngineSettings`.

The scheduler builds it once from its keyword arguments and hands it down to every job run and
worker slot, so those parts read plain values instead of reaching back into the scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

__all__ = ["EngineSettings"]


@dataclass(frozen=True)
class EngineSettings:
    """Timeouts, intervals and limits of the render engine. Immutable; any thread.

    Raises ``ValueError`` at construction when a value makes no sense (as the scheduler always
    did), so a bad knob fails before any job starts.
    """

    #: No websocket event for this long triggers a ``/queue`` check.
    stall_timeout: float = 30.0
    #: A running prompt is stuck past this many times its expected time.
    stuck_factor: float = 4.0
    #: The limit while no server has a measured speed; ``None``: none.
    first_prompt_timeout: Optional[float] = 900.0
    #: Fail when work waits this long with nothing running anywhere.
    no_server_timeout: float = 120.0
    #: How often waits wake to look at cancel and events.
    poll_interval: float = 0.1
    #: How often ``/history`` is read as a safety net for missed events.
    history_interval: float = 2.0
    #: Failed chunks (or failed probes) that take a server out of the job.
    blocklist_after: int = 3
    #: The job fails when one chunk has failed on this many different servers...
    max_chunk_servers: int = 3
    #: ... or this many times in all (not a scheduler knob).
    max_chunk_attempts: int = 6
    #: The automatic chunker aims at chunks of about this many seconds.
    target_chunk_seconds: float = 30.0
    #: How long stopping waits for worker threads (and ``close()`` for jobs).
    join_timeout: float = 10.0
    #: First wait before probing a server that looked dead; doubles up to ``probe_interval_max``.
    probe_interval: float = 0.5
    probe_interval_max: float = 10.0
    #: A server taken out of a job for what it did (bad data, a cap, authentication, a missing
    #: class or model) is probed once this long after, and rejoins once if it answers.
    rejoin_after: float = 60.0
    #: How long a worker waits in all for one input frame (``wait_for_input``).
    input_timeout: float = 600.0
    #: The longest single wait on the input hook, so cancel stays responsive.
    input_poll: float = 0.25
    #: How long a check of a silent prompt (``/history``, ``/queue``) or a probe waits for an
    #: answer before the request is abandoned and the server counts as silent.
    answer_timeout: float = 5.0
    #: How long one cleanup request (cancel a prompt, the sweep of one server, closing a client)
    #: may take before it is abandoned: a frozen server never holds up the job's end.
    cleanup_timeout: float = 1.0
    #: Speculative tail: a server with nothing to do runs a copy of a running chunk it would
    #: clearly finish sooner than its holder (the first result wins).
    speculation: bool = True

    def __post_init__(self) -> None:
        if self.stall_timeout <= 0 or self.poll_interval <= 0 or self.history_interval <= 0:
            raise ValueError("stall_timeout, poll_interval and history_interval must be > 0")
        if self.probe_interval <= 0 or self.input_timeout <= 0 or self.input_poll <= 0:
            raise ValueError("probe_interval, input_timeout and input_poll must be > 0")
        if self.answer_timeout <= 0 or self.cleanup_timeout <= 0 or self.rejoin_after <= 0:
            raise ValueError("answer_timeout, cleanup_timeout and rejoin_after must be > 0")
        if self.blocklist_after < 1 or self.max_chunk_servers < 1:
            raise ValueError("blocklist_after and max_chunk_servers must be >= 1")
        # A maximum below the first interval would shrink the backoff: take the larger.
        object.__setattr__(
            self, "probe_interval_max", max(self.probe_interval, self.probe_interval_max)
        )

    @property
    def wait_step(self) -> float:
        """How long a worker or the supervisor blocks between looks at cancel and the job."""
        return self.poll_interval * 5
