"""Which free server takes the next chunk of one job: :class:`JobBalancer`.

It feeds the job's strategy (``core/balance.py``) the health snapshot and the measured speeds,
and adds the tail rule of completion-aware strategies (``fastest``): leave a slow server idle at
the end when the others would finish sooner (:meth:`JobBalancer.hold_for_faster`). It also gives
the book its ETA.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from comfy_cluster.core.balance import BalanceContext, Strategy
from comfy_cluster.core.engine.tools import SpeedRecord
from comfy_cluster.core.frames import Chunk
from comfy_cluster.core.health import ServerState, ServerStatus
from comfy_cluster.core.server import ServerConfig

__all__ = ["JobBalancer"]

log = logging.getLogger(__name__)


class JobBalancer:
    """The chooser and ETA of one job. Called by the book under its lock: never blocks (health
    snapshots never do). ``health`` is the monitor, or ``None`` (every server READY)."""

    def __init__(
        self,
        servers: Sequence[ServerConfig],
        strategy: Strategy,
        speed: SpeedRecord,
        health: Any = None,
    ) -> None:
        self.servers = tuple(servers)
        self.strategy = strategy
        self.speed = speed
        self.health = health

    def statuses(self) -> dict[str, ServerStatus]:
        """ServerStatus per job server: from health when there is one, else synthesised READY."""
        snapshot = None
        if self.health is not None:
            try:
                snapshot = self.health.snapshot()
            except Exception:
                log.exception("health snapshot failed; treating servers as ready")
        out = {}
        for srv in self.servers:
            status = snapshot.get(srv.name) if snapshot is not None else None
            if status is None:
                status = ServerStatus(name=srv.name, url=srv.url, state=ServerState.READY)
            out[srv.name] = status
        return out

    def choose(
        self,
        chunk: Chunk,
        free: Sequence[str],
        in_flight: Mapping[str, int],
        remaining: int,
        able: Sequence[str] = (),
    ) -> Optional[tuple[str, str]]:
        """``(server, reason)`` for ``chunk`` among the ``free`` servers, or ``None`` (hold it).
        ``able`` are the servers that may take the chunk at all (for the tail rule)."""
        statuses = self.statuses()
        speeds = {
            name: spf
            for name in statuses
            if (spf := self.speed.seconds_per_frame(name)) is not None
        }
        ctx = BalanceContext(
            priorities={srv.name: srv.priority for srv in self.servers},
            in_flight=dict(in_flight),
            seconds_per_frame=speeds,
            remaining_frames=remaining,
            chunk_frames=len(chunk.frames),
        )
        choice = self.strategy.choose([statuses[name] for name in free], ctx)
        if choice is None or choice.name not in free:
            return None
        usable = [n for n in able if n in statuses and _usable(statuses[n])]
        if hasattr(self.strategy, "expected_seconds") and self.hold_for_faster(
            choice.name, chunk, in_flight, speeds, remaining, usable
        ):
            return None
        return choice.name, choice.reason

    def hold_for_faster(
        self,
        name: str,
        chunk: Chunk,
        in_flight: Mapping[str, int],
        speeds: Mapping[str, float],
        remaining: int,
        able: Sequence[str],
    ) -> bool:
        """Tail rule: leave ``name`` idle when giving it this chunk would end the job later than
        letting the other servers that may take it do the rest.

        ``name`` would finish its queued work plus this chunk at ``(queued + chunk) * spf``; the
        others finish everything not on ``name`` (``remaining`` minus ``name``'s queue) at their
        combined rate. Hold when the makespan without this chunk on ``name`` is shorter. Only
        while one of the others is busy (it will come back for the work); never for an
        unmeasured server (it must seed its speed)."""
        spf = speeds.get(name)
        if spf is None:
            return False
        others = [n for n in able if n != name and n in speeds]
        if not others or not any(in_flight.get(n, 0) for n in others):
            return False
        rate = sum(1.0 / speeds[n] for n in others)
        size = len(chunk.frames)
        # ``remaining`` counts every undelivered frame, in flight or queued, this chunk included;
        # ``in_flight`` counts chunks, taken as this chunk's size.
        mine = min(in_flight.get(name, 0) * size, max(0, remaining - size))
        rest = max(remaining, mine + size) - mine  # frames not on ``name`` now
        with_chunk = max((mine + size) * spf, (rest - size) / rate)
        without = max(mine * spf, rest / rate)
        return without < with_chunk

    def eta(self, remaining: float, active: Sequence[str]) -> Optional[float]:
        """Seconds until ``remaining`` frames are done by the ``active`` measured servers."""
        rates = [1.0 / spf for n in active if (spf := self.speed.seconds_per_frame(n))]
        return remaining / sum(rates) if rates else None


def _usable(status: ServerStatus) -> bool:
    return status.state in (ServerState.READY, ServerState.BUSY)
