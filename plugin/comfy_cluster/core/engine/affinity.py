"""Warm-model affinity of one job: :class:`ModelAffinity`.

A server keeps a few models in memory and pays a load to switch. Two jobs with different
checkpoints on one cluster must split it instead of making every server switch back and forth,
so the job follows three rules, decided from what its worker slots see in each server's
``/queue`` (other clients' loader inputs, ``model_names.py``) and from its own prompts:

- **at most one load per server**: once our model was loaded on a server and another client's
  prompt with another model waits there (behind ours, ahead of the next one we would send, or
  ahead of a pending one of ours once ours no longer runs), the server is *lost* to this job:
  no new prompt goes there, a prompt of ours still pending there is taken back. Only when every
  server is lost do we load again (better than no end);
- **fair share**: a server busy with another client's other-model work (seen in its queue within
  the last ``CONTEST_MEMORY`` seconds) is taken over only while the job holds fewer servers than
  its share (servers / models in demand);
- **a load is weighed**: with warm servers at hand, a cold server (another model in memory) gets
  work only when the estimate says the job ends sooner with it, the load included.

Plain bookkeeping under the job book's lock; disabled (every call a no-op) for workflows that
load no checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Callable, Optional

from comfy_cluster.core.engine.model_names import QueueModels

__all__ = ["ModelAffinity"]

#: A cold server must cut the estimated finish by this share to be worth its load.
GAIN = 0.9
#: Seconds another model seen in a server's queue keeps it contested. Another job's warm
#: prompts are short and its queue is often empty between two of them when read: one empty
#: read must not make its server look free for the taking.
CONTEST_MEMORY = 5.0


@dataclass
class _Server:
    """What this job knows of one server's models."""

    known: bool = False
    held: Optional[frozenset] = None
    view: QueueModels = field(default_factory=QueueModels)
    #: Other clients' models seen in its queue, with when they were last seen.
    others: dict = field(default_factory=dict)
    claimed: bool = False
    loaded: bool = False
    #: Our model was in memory there (a prompt of ours seen running or finished).
    ran: bool = False
    lost: bool = False
    polled_at: float = -math.inf


class ModelAffinity:
    """Which servers hold, will hold, or are lost for this job's checkpoint. Caller holds the
    book's lock; the worker slots feed it (``observe``, ``submitted``, ``prompt_done``)."""

    def __init__(self, ours: frozenset, servers: Iterable[str], clock: Callable[[], float]) -> None:
        self.ours = frozenset(ours)
        self._clock = clock
        self._servers = {name: _Server() for name in servers}
        #: Seconds of our prompts that needed no load (the fastest), and the load estimate.
        self._steady: Optional[float] = None
        self._load: Optional[float] = None

    @property
    def enabled(self) -> bool:
        return bool(self.ours)

    # -- what the slots see -----------------------------------------------------------------

    def poll_due(self, server: str, interval: float) -> bool:
        """Whether a slot of ``server`` should read its queue now (one read per interval)."""
        s = self._servers[server]
        now = self._clock()
        if not self.enabled or now - s.polled_at < interval:
            return False
        s.polled_at = now
        return True

    def observe(self, server: str, view: QueueModels, held: Optional[frozenset] = None) -> None:
        """A fresh read of ``server``'s queue (``held``: the newest history entry's models)."""
        s = self._servers[server]
        s.known, s.view = True, view
        s.ran = s.ran or view.ours_running
        now = self._clock()
        for models in (view.running, *view.ahead, *view.behind):
            if self._other(models):
                s.others[models] = now
        if view.running:
            s.held = view.running
        elif view.ours_running:
            s.held = self.ours
        elif held is not None and not (view.ahead or view.behind or view.ours_pending):
            s.held = held
        if s.loaded and not s.lost and self._evicted(s):
            s.lost = True

    def _other(self, models: frozenset) -> bool:
        return bool(models) and models.isdisjoint(self.ours)

    def _evicted(self, s: _Server) -> bool:
        """Another model will be (or is) loaded before our next prompt there would run. While
        ours runs, only a prompt behind all of ours counts: one ahead of our pending prompt may
        be the other job's stray, which it takes back once it sees our model running."""
        v = s.view
        if any(self._other(m) for m in v.behind):
            return True
        if v.ours_running or (v.ours_pending and not s.ran):
            return False  # ours runs, or our first load there is still to come
        return self._other(v.running) or any(self._other(m) for m in v.ahead)

    def assigned(self, server: str) -> None:
        """A chunk of ours went to ``server``."""
        if self.enabled:
            self._servers[server].claimed = True

    def submitted(self, server: str) -> bool:
        """A prompt of ours goes to ``server``; returns whether it will load our model there."""
        if not self.enabled:
            return False
        s = self._servers[server]
        loads = s.held is None or not (s.held & self.ours)
        s.held, s.loaded, s.claimed = self.ours, True, True
        return loads

    def prompt_done(self, server: str, seconds: float, loaded: bool) -> None:
        """One prompt of ours on ``server`` took ``seconds`` (submit to result), ``loaded`` or
        warm: the load estimate is the slowest loading prompt less the fastest warm one."""
        if not self.enabled:
            return
        self._servers[server].ran = True
        if not loaded:
            self._steady = seconds if self._steady is None else min(self._steady, seconds)
        elif self._steady is not None:
            self._load = max(self._load or 0.0, seconds - self._steady)
        if loaded and self._steady is None:
            self._load = max(self._load or 0.0, seconds)

    def lost(self, server: str) -> bool:
        """No new prompt of ours should go to ``server`` (another model took it)."""
        return self.enabled and self._servers[server].lost and not self._all_lost()

    def pending_here(self, server: str, prompt_id: str) -> bool:
        """Our ``prompt_id`` still waits (not running) in ``server``'s queue as last read."""
        return prompt_id in self._servers[server].view.ours_pending

    def _all_lost(self) -> bool:
        return all(s.lost for s in self._servers.values())

    # -- what the chooser may pick ----------------------------------------------------------

    def admit(self, free: Sequence[str], eligible: Sequence[str], remaining: int) -> list[str]:
        """The ``free`` servers this job's next chunk may go to (see the module's rules)."""
        if not self.enabled:
            return list(free)
        known = [n for n in free if self._servers[n].known]
        usable = [n for n in eligible if n in self._servers]
        if not self._all_lost():
            known = [n for n in known if not self._servers[n].lost]
        warm_free = [n for n in known if self._warm(n)]
        if warm_free:
            return warm_free
        warm = [n for n in usable if self._warm(n) and not self._servers[n].lost]
        out = []
        for name in known:
            if self._contested(name):
                if len(warm) < self._share(usable):
                    out.append(name)
            elif not warm or self._worth_a_load(len(warm), remaining):
                out.append(name)
        return out

    def _warm(self, name: str) -> bool:
        s = self._servers[name]
        return s.claimed or (s.held is not None and bool(s.held & self.ours))

    def _seen_others(self, name: str) -> set:
        """Other clients' models in ``name``'s queue lately (``CONTEST_MEMORY``)."""
        since = self._clock() - CONTEST_MEMORY
        return {m for m, at in self._servers[name].others.items() if at >= since}

    def _contested(self, name: str) -> bool:
        return bool(self._seen_others(name))

    def _share(self, usable: Sequence[str]) -> int:
        """Servers this job may hold: all of them over the models in demand, ours included."""
        demand = {self.ours}
        for name in usable:
            demand.update(self._seen_others(name))
        return max(1, math.ceil(len(usable) / len(demand)))

    def _worth_a_load(self, warm: int, remaining: int) -> bool:
        """With ``warm`` servers doing ``remaining`` frames, does one more that must load first
        end the job sooner (``warm`` >= 1)? Unknown costs: yes (early in a job every server is
        tried)."""
        if self._steady is None or self._load is None:
            return True
        work = remaining * self._steady
        return (work + self._load) / (warm + 1) < GAIN * work / warm
