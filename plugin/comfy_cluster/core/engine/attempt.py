"""One try of one chunk on one worker slot (:class:`Attempt`) and how it ended (:class:`Outcome`).

These are the values the worker and the job's book pass each other; :class:`Aborted` is the
signal that stops an attempt early. Nothing here holds state or does I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional

from comfy_cluster.core.frames import Chunk

__all__ = ["Aborted", "Attempt", "Outcome", "OutcomeKind"]


class Aborted(Exception):
    """The attempt must stop: the job was cancelled or ended elsewhere. Not an error: the worker
    turns it into ``OutcomeKind.ABORTED`` and nobody is blamed."""


@dataclass(frozen=True)
class Attempt:
    """One try of one chunk on one worker slot. ``attempt_id`` is unique within the job."""

    attempt_id: int
    chunk: Chunk
    server: str
    slot: str
    reason: str


class OutcomeKind(enum.Enum):
    """Whose fault the end of an attempt was, which decides what happens to its frames."""

    OK = "ok"  #: every frame delivered (any left over are retried, as for SERVER)
    SERVER = "server"  #: this server failed: retry the frames elsewhere, count it
    DEGRADED = "degraded"  #: this server cannot run this workflow: out of the job
    JOB = "job"  #: the workflow itself is at fault: fail the job
    ABORTED = "aborted"  #: cancel, or the job is over: nothing to count


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended, as the worker judged it.

    ``why`` says what went wrong (``ChunkRetried.why``, the blocklist reason, the job's failure
    message); ``node_id`` names the workflow node at fault when one is. ``down``: with
    ``SERVER``, the server looks dead (connection refused and its websocket dropped): it is
    suspended until a probe answers, instead of being handed more chunks.
    """

    kind: OutcomeKind
    why: str = ""
    node_id: Optional[str] = None
    error: Optional[BaseException] = None
    down: bool = False

    @classmethod
    def ok(cls) -> Outcome:
        return cls(OutcomeKind.OK)
