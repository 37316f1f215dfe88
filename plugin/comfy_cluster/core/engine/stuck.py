"""When a prompt counts as stuck: :class:`StuckRule`.

A silent prompt is not necessarily stuck: a slow server renders a heavy frame for minutes
without a websocket event. So the limit comes from that server's measured time per frame (times
``stuck_factor``), from the slowest measured server while it has none, and from
``first_prompt_timeout`` while no server has one. The limits count from our prompt's start
(its ``executing`` event, or when it heads ``queue_running``), never while it waits behind
other clients' prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable, Optional

from comfy_cluster.core.engine.settings import EngineSettings
from comfy_cluster.core.engine.tools import SpeedRecord
from comfy_cluster.core.errors import PromptStuck

__all__ = ["StuckRule"]


class StuckRule:
    """The stuck limits of one server's prompts in one job. Any thread (reads only).

    ``servers`` are the job's server names (for a fallback speed); ``out_of_job()`` says
    whether this server was taken out of the job.
    """

    def __init__(
        self,
        server: str,
        servers: Sequence[str],
        speed: SpeedRecord,
        settings: EngineSettings,
        out_of_job: Callable[[], bool],
    ) -> None:
        self.server = server
        self.servers = tuple(servers)
        self.speed = speed
        self.settings = settings
        self.out_of_job = out_of_job

    def run_limit(self, frames: int) -> Optional[float]:
        """How long a silent running prompt of ``frames`` frames may run before it counts as
        stuck; ``None``: no limit."""
        spf = self.speed.seconds_per_frame(self.server)
        if spf is None:
            known = [x for n in self.servers if (x := self.speed.seconds_per_frame(n)) is not None]
            spf = max(known) if known else None
        s = self.settings
        if spf is None:
            return s.first_prompt_timeout
        return max(s.stall_timeout, s.stuck_factor * spf * max(1, frames))

    def check_running(self, running_for: float, silent_for: float, frames: int) -> None:
        """Raise PromptStuck when our prompt has run (silently) longer than its limit."""
        limit = self.run_limit(frames)
        if limit is not None and running_for > limit:
            raise PromptStuck(
                f"stuck: no event for {silent_for:.1f} s, running "
                f"{running_for:.1f} s (limit {limit:.1f} s)",
                server=self.server,
            )

    def check_pending(self, q: Any, pid: str, waited: float, frames: int) -> None:
        """Our prompt waits in the server's queue: queued is not stuck (the stuck and stall
        rules start when it starts running; the wait ahead of it counts in the balancer's
        estimate instead). Only a server out of the job gives its queued work back."""
        if self.out_of_job():
            raise PromptStuck("queued on a server that is out of the job", server=self.server)
