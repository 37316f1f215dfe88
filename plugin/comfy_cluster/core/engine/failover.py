"""What a failed attempt costs: :class:`Failover`.

A failure is charged to the server (its count; at ``blocklist_after`` it is out of the job, and
a server that looks dead is suspended until a probe answers) and to the chunk (the servers that
failed it; at ``max_chunk_servers`` of them, or ``max_chunk_attempts`` failures, the job gives
up, as it does when no server is left). Otherwise the chunk's undelivered frames go back to the
front of the queue. Plain bookkeeping on the job's parts: the job's book holds the one lock
around every call.
"""

from __future__ import annotations

from typing import Optional

from comfy_cluster.core.engine.attempt import Attempt, Outcome, OutcomeKind
from comfy_cluster.core.engine.chunk_queue import ChunkQueue, QueuedChunk
from comfy_cluster.core.engine.events import ChunkRetried, ServerBlocklisted
from comfy_cluster.core.engine.feed import JobFeed
from comfy_cluster.core.engine.settings import EngineSettings
from comfy_cluster.core.engine.standing import ServerStanding
from comfy_cluster.core.engine.stop import JobStop

__all__ = ["Failover"]


class Failover:
    """The failover rules of one job, acting on its queue, standing and stop, and posting
    ``ChunkRetried`` / ``ServerBlocklisted``. Caller holds the job's lock."""

    def __init__(
        self,
        mode: str,
        queue: ChunkQueue,
        standing: ServerStanding,
        feed: JobFeed,
        stop: JobStop,
        settings: EngineSettings,
    ) -> None:
        self.mode = mode
        self.queue = queue
        self.standing = standing
        self.feed = feed
        self.stop = stop
        self.max_chunk_servers = settings.max_chunk_servers
        self.max_chunk_attempts = settings.max_chunk_attempts

    def retry(
        self,
        attempt: Attempt,
        queued: QueuedChunk,
        remaining: tuple[int, ...],
        outcome: Outcome,
        why: str,
    ) -> None:
        """Charge ``attempt``'s failure and put its ``remaining`` frames back in the queue, or
        fail the job when this chunk (or the job's last server) has failed too often."""
        server = attempt.server
        if outcome.kind is OutcomeKind.DEGRADED:
            self.blocklist(server, why)
        elif outcome.down and self.standing.comes_back(server):
            # It worked in this job: gone for now, probed until it answers (not a failure).
            queued.count_failure(server)
            if self.standing.suspend(server, why):
                self.queue.unassign_server(server)
        else:
            queued.count_failure(server)
            failures = self.standing.count_failure(server)
            if self.standing.too_many(failures):
                self.blocklist(server, f"failed {failures} chunks; last: {why}")
            elif outcome.down and self.standing.suspend(server, why):
                self.queue.unassign_server(server)  # assigned but not started: back in line
        if self.mode == "frame":
            # Only the frames not yet on disk go back; batch chunks keep their shape for context.
            queued.narrow_to(remaining)
        self.feed.post(
            ChunkRetried, chunk_index=queued.chunk.index, server=server, why=why, frames=remaining
        )
        give_up = queued.give_up_reason(
            remaining,
            f"{server}: {why}",
            max_servers=self.max_chunk_servers,
            max_attempts=self.max_chunk_attempts,
        )
        if give_up is not None:
            self.stop.fail(give_up, outcome.node_id, outcome.error)
            return
        self.queue.retry_first(queued)
        self.check_servers_left(outcome)

    def probe_failed(self, server: str, why: str) -> None:
        """The probe of suspended ``server`` failed: back off, or take it out of the job."""
        reason = self.standing.probe_failed(server, why)
        if reason is not None:
            self.blocklist(server, reason)
            self.check_servers_left(None)

    def refused(self, server: str, outcome: Outcome) -> bool:
        """``server`` refuses us (authentication): out of the job at once, and the job fails
        when no server is left. False when it was out already."""
        if server in self.standing.blocklist:
            return False  # pragma: no mutate
        self.blocklist(server, outcome.why)
        self.queue.unassign_server(server)
        self.check_servers_left(outcome)
        return True

    def blocklist(self, server: str, why: str) -> None:
        """Take ``server`` out of the job (the first reason wins, and is announced once)."""
        if self.standing.block(server, why):
            self.feed.post(ServerBlocklisted, server=server, why=why)

    def check_servers_left(self, outcome: Optional[Outcome]) -> None:
        """Fail the job when every server is out of it (``outcome``: the last straw)."""
        if self.standing.eligible() or self.standing.away or self.stop.over:
            return  # a server away (it worked, then stopped answering) is waited for
        reasons = "; ".join(f"{s}: {why}" for s, why in self.standing.blocklist.items())
        node_id, error = (outcome.node_id, outcome.error) if outcome else (None, None)
        self.stop.fail(f"no eligible server left ({reasons})", node_id, error)
