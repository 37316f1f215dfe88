"""Choosing a server for the next chunk: small strategy objects over health snapshots.

Every strategy has one method, ``choose(candidates, ctx) -> Choice | None``: ``candidates`` are
:class:`~comfy_cluster.core.health.ServerStatus` values (a snapshot), ``ctx`` a
:class:`BalanceContext` with what the scheduler knows (priorities, our prompts in flight, measured
speeds, a pinned server or an allow-list from a per-node override). A :class:`Choice` carries a
one-line reason for the UI (``"render2: idle, 1.8 s/frame"``). No choice (all offline, pinned server
down, allow-list empty) is ``None``; :func:`why_none` says why.

Only READY and BUSY servers are eligible. Ties always break by server name, so a choice is
deterministic. Strategies hold no state except :class:`RoundRobin`'s cursor (locked). The
scheduler never branches on names: ``make_strategy(config_name)`` builds one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Optional, Protocol

from comfy_cluster.core.errors import ConfigError
from comfy_cluster.core.health import ServerState, ServerStatus

__all__ = [
    "STRATEGIES",
    "BalanceContext",
    "Choice",
    "FastestCompletion",
    "LeastLoaded",
    "Priority",
    "RoundRobin",
    "SpeedTracker",
    "Strategy",
    "eligible",
    "make_strategy",
    "why_none",
]

_EMPTY: Mapping = MappingProxyType({})
USABLE = frozenset({ServerState.READY, ServerState.BUSY})


@dataclass(frozen=True)
class Choice:
    """The chosen server and why, in one line the UI can show."""

    name: str
    reason: str


@dataclass(frozen=True)
class BalanceContext:
    """What the scheduler knows beyond the health snapshot. Immutable; build one per decision.

    ``in_flight``: our prompts queued or running per server (the snapshot may lag behind them).
    ``seconds_per_frame``: measured speed (see :class:`SpeedTracker`). ``chunk_frames``: size of
    the chunk being placed. ``pinned``: only this server; ``allow``: only these servers.
    """

    priorities: Mapping[str, int] = field(default_factory=lambda: _EMPTY)
    in_flight: Mapping[str, int] = field(default_factory=lambda: _EMPTY)
    seconds_per_frame: Mapping[str, float] = field(default_factory=lambda: _EMPTY)
    remaining_frames: int = 0
    chunk_frames: int = 1
    pinned: Optional[str] = None
    allow: Optional[frozenset] = None


class Strategy(Protocol):
    """What every balancer offers. ``choose`` is safe from any thread."""

    name: str

    def choose(self, candidates: Sequence[ServerStatus], ctx: BalanceContext) -> Optional[Choice]:
        """The server for the next chunk, or None if no candidate may take it."""
        ...


def eligible(candidates: Sequence[ServerStatus], ctx: BalanceContext) -> list[ServerStatus]:
    """Usable candidates (READY/BUSY) that the pin / allow-list permits, sorted by name."""
    out = []
    for status in candidates:
        if status.state not in USABLE:
            continue
        if ctx.pinned is not None and status.name != ctx.pinned:
            continue
        if ctx.allow is not None and status.name not in ctx.allow:
            continue
        out.append(status)
    return sorted(out, key=lambda s: s.name)


def why_none(candidates: Sequence[ServerStatus], ctx: BalanceContext) -> str:
    """Why :func:`eligible` is empty, for the UI ("render2 (pinned) is offline")."""
    by_name = {s.name: s for s in candidates}
    if ctx.pinned is not None:
        status = by_name.get(ctx.pinned)
        if status is None:
            return f"pinned server {ctx.pinned} is not configured"
        if status.state not in USABLE:
            return f"pinned server {ctx.pinned} is {status.state.value}"
    if ctx.allow is not None:
        allowed = [by_name[n] for n in sorted(ctx.allow) if n in by_name]
        if not allowed:
            return "none of the allowed servers is configured: " + ", ".join(sorted(ctx.allow))
        if all(s.state not in USABLE for s in allowed):
            return "no allowed server is available: " + ", ".join(
                f"{s.name} {s.state.value}" for s in allowed
            )
    if not candidates:
        return "no servers configured"
    states = ", ".join(
        f"{s.name} {s.state.value}" for s in sorted(candidates, key=lambda s: s.name)
    )
    return f"no server is available ({states})"


def load_of(status: ServerStatus, ctx: BalanceContext) -> int:
    """Prompts ahead of a new one: the server's queue, or our own count if the snapshot lags.

    Ours are part of the server's queue once it has seen them, so take the larger, not the sum.
    """
    return max(status.queue_running + status.queue_pending, ctx.in_flight.get(status.name, 0))


def _load_text(load: int) -> str:
    return "idle" if load == 0 else f"queue {load}"


def _speed_text(spf: Optional[float]) -> str:
    return "speed unknown yet" if spf is None else f"{spf:.1f} s/frame"


class RoundRobin:
    """Each usable server in turn (by name), starting after the last one chosen. Any thread."""

    name = "round_robin"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: Optional[str] = None

    def choose(self, candidates: Sequence[ServerStatus], ctx: BalanceContext) -> Optional[Choice]:
        servers = eligible(candidates, ctx)
        if not servers:
            return None
        with self._lock:
            pick = next((s for s in servers if self._last is None or s.name > self._last), None)
            pick = pick or servers[0]
            self._last = pick.name
        return Choice(pick.name, f"{pick.name}: round robin, {_load_text(load_of(pick, ctx))}")


class LeastLoaded:
    """Fewest prompts queued or running; ties by name. Stateless."""

    name = "least_loaded"

    def choose(self, candidates: Sequence[ServerStatus], ctx: BalanceContext) -> Optional[Choice]:
        servers = eligible(candidates, ctx)
        if not servers:
            return None
        pick = min(servers, key=lambda s: (load_of(s, ctx), s.name))
        return Choice(pick.name, f"{pick.name}: least loaded, {_load_text(load_of(pick, ctx))}")


class Priority:
    """Lowest priority number first (1 = most preferred); least loaded among equals, then name.

    A server missing from ``ctx.priorities`` counts as ``default``.
    """

    name = "priority"

    def __init__(self, default: int = 1) -> None:
        self.default = default

    def choose(self, candidates: Sequence[ServerStatus], ctx: BalanceContext) -> Optional[Choice]:
        servers = eligible(candidates, ctx)
        if not servers:
            return None

        def key(s: ServerStatus) -> tuple:
            return (ctx.priorities.get(s.name, self.default), load_of(s, ctx), s.name)

        pick = min(servers, key=key)
        prio = ctx.priorities.get(pick.name, self.default)
        return Choice(pick.name, f"{pick.name}: priority {prio}, {_load_text(load_of(pick, ctx))}")


class FastestCompletion:
    """Smallest expected finish: ``(load + 1) * chunk_frames * seconds_per_frame``; ties by name.

    A server without a measurement yet is assumed as fast as the average of the measured ones
    (or ``default_spf`` when none is measured), so it gets tried and seeds its own speed.
    Stateless.
    """

    name = "fastest"

    def __init__(self, default_spf: float = 1.0) -> None:
        self.default_spf = default_spf

    def expected_seconds(self, status: ServerStatus, ctx: BalanceContext) -> float:
        spf = self._spf(status.name, ctx)
        return (load_of(status, ctx) + 1) * max(ctx.chunk_frames, 1) * spf

    def _spf(self, name: str, ctx: BalanceContext) -> float:
        known = ctx.seconds_per_frame.get(name)
        if known is not None:
            return known
        measured = list(ctx.seconds_per_frame.values())
        return sum(measured) / len(measured) if measured else self.default_spf

    def choose(self, candidates: Sequence[ServerStatus], ctx: BalanceContext) -> Optional[Choice]:
        servers = eligible(candidates, ctx)
        if not servers:
            return None
        pick = min(servers, key=lambda s: (self.expected_seconds(s, ctx), s.name))
        load = load_of(pick, ctx)
        speed = _speed_text(ctx.seconds_per_frame.get(pick.name))
        if load == 0:
            reason = f"{pick.name}: idle, {speed}"
        else:
            eta = self.expected_seconds(pick, ctx)
            reason = f"{pick.name}: ~{eta:.0f} s to finish (queue {load}, {speed})"
        return Choice(pick.name, reason)


#: Config name -> strategy class (read-only).
STRATEGIES: Mapping[str, type] = MappingProxyType(
    {
        "round_robin": RoundRobin,
        "least_loaded": LeastLoaded,
        "priority": Priority,
        "fastest": FastestCompletion,
    }
)


def make_strategy(name: str) -> Strategy:
    """A fresh strategy for a config name. Raises ConfigError naming the choices."""
    try:
        return STRATEGIES[name]()
    except KeyError:
        raise ConfigError(
            f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}", field="strategy"
        ) from None


class SpeedTracker:
    """Seconds per frame per server: an exponential moving average seeded by the first result.

    ``alpha`` weighs the newest sample (0.3: a slowdown shows within a few chunks). A first
    result more than twice as slow as the second was a cold one (warm-up, a model load, a wait
    behind others): it is dropped, the second seeds the average, and the difference is kept
    apart as the server's one-off cost (:meth:`one_off_seconds`). Any thread.

    An estimate older than ``stale_after`` seconds (default 10 minutes; ``None``: never) is
    forgotten: a server's speed an hour later says little (another artist's job, a model
    evicted), so it is measured again as a new server is, its next first result may be cold.
    """

    #: A first sample this many times the second was cold.
    COLD_RATIO = 2.0

    def __init__(
        self,
        alpha: float = 0.3,
        initial: Optional[Mapping[str, float]] = None,
        *,
        stale_after: Optional[float] = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        if stale_after is not None and stale_after <= 0:
            raise ValueError(f"stale_after must be > 0 or None, got {stale_after}")
        self.alpha = alpha
        self.stale_after = stale_after
        self._clock = clock
        self._lock = threading.Lock()
        self._spf: dict[str, float] = dict(initial or {})
        self._samples: dict[str, int] = {}
        self._first: dict[str, tuple[float, int]] = {}
        self._one_off: dict[str, float] = {}
        now = clock()
        self._seen: dict[str, float] = {server: now for server in self._spf}

    def record(self, server: str, seconds: float, frames: int = 1) -> float:
        """Add one finished chunk (``frames`` frames in ``seconds``); returns the new average."""
        if frames <= 0 or seconds < 0:
            raise ValueError(f"bad sample: {seconds} s for {frames} frames")
        sample = seconds / frames
        with self._lock:
            self._drop_if_stale(server)
            self._seen[server] = self._clock()
            count = self._samples.get(server, 0)
            old = self._spf.get(server)
            first = self._first.get(server) if count == 1 else None
            if count == 0 or old is None:
                new = sample
                self._first[server] = (sample, frames)
            elif first is not None and first[0] > self.COLD_RATIO * sample:
                new = sample  # the first result was cold: it never stands as the speed
                self._one_off[server] = (first[0] - sample) * first[1]
            else:
                new = old + self.alpha * (sample - old)
            self._spf[server] = new
            self._samples[server] = count + 1
            return new

    def seconds_per_frame(self, server: str) -> Optional[float]:
        with self._lock:
            self._drop_if_stale(server)
            return self._spf.get(server)

    def _drop_if_stale(self, server: str) -> None:
        """Forget ``server``'s average (not its one-off cost) once it is too old. Under the lock."""
        seen = self._seen.get(server)
        if self.stale_after is None or seen is None:
            return
        if self._clock() - seen > self.stale_after:
            self._spf.pop(server, None)
            self._samples.pop(server, None)
            self._first.pop(server, None)
            self._seen.pop(server, None)

    def one_off_seconds(self, server: str) -> Optional[float]:
        """The one-off cost seen in ``server``'s cold first result (``None``: none seen)."""
        with self._lock:
            return self._one_off.get(server)

    def samples(self, server: str) -> int:
        with self._lock:
            return self._samples.get(server, 0)

    def snapshot(self) -> Mapping[str, float]:
        """A read-only copy for :attr:`BalanceContext.seconds_per_frame`."""
        with self._lock:
            for server in list(self._spf):
                self._drop_if_stale(server)
            return MappingProxyType(dict(self._spf))

    def forget(self, server: str) -> None:
        with self._lock:
            self._spf.pop(server, None)
            self._samples.pop(server, None)
            self._first.pop(server, None)
            self._one_off.pop(server, None)
            self._seen.pop(server, None)
