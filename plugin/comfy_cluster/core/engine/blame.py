"""Whose fault the failure of an attempt is: :func:`blame` turns an exception into an
:class:`Outcome`.

The order matters: a cancel is nobody's fault; a server that is gone is suspended; a rejection
or an execution error is judged against the other servers (``ServerStanding``); a workflow the
engine refuses, or our own disk, is the job's fault; a server that cannot run this workflow
(auth, a hung server, its own configuration) or sends junk instead of our image is out of the
job; anything else from a server is
that server's failure, retried elsewhere.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional, Union

from comfy_cluster.core.engine.attempt import Aborted, Attempt, Outcome, OutcomeKind
from comfy_cluster.core.errors import (
    AuthenticationFailed,
    ComfyClusterError,
    ConfigError,
    DownloadRefused,
    ExecutionFailed,
    ResponseTooLarge,
    ServerGone,
    ServerHung,
    WorkflowError,
    WorkflowRejected,
)

__all__ = ["blame"]

log = logging.getLogger(__name__)

#: ``judge(error) -> Outcome`` for a rejection or an execution error (the job's book judges).
Judge = Callable[[Union[WorkflowRejected, ExecutionFailed]], Outcome]


def blame(exc: Exception, attempt: Attempt, judge: Judge) -> Outcome:
    """The outcome of ``attempt``, which raised ``exc``. Call it from the ``except`` block, so
    the log of an unexpected error has the traceback."""
    if isinstance(exc, Aborted):
        return Outcome(OutcomeKind.ABORTED)
    if isinstance(exc, ServerGone):
        return Outcome(OutcomeKind.SERVER, str(exc), None, exc, down=True)
    if isinstance(exc, (WorkflowRejected, ExecutionFailed)):
        return judge(exc)
    if isinstance(exc, WorkflowError):
        return Outcome(OutcomeKind.JOB, str(exc), exc.node_id, exc)
    if isinstance(exc, AuthenticationFailed):
        return refusal(exc)
    if isinstance(exc, (DownloadRefused, ResponseTooLarge)):
        # Junk instead of our image (or an answer over its cap): nothing was written; the frame
        # goes to another server and this one leaves the job.
        return Outcome(OutcomeKind.DEGRADED, f"sent junk: {exc.message}", None, exc)
    if isinstance(exc, ServerHung):
        return Outcome(OutcomeKind.DEGRADED, str(exc), None, exc)
    if isinstance(exc, ConfigError):
        kind = OutcomeKind.DEGRADED if exc.server else OutcomeKind.JOB
        return Outcome(kind, str(exc), None, exc)
    if isinstance(exc, ComfyClusterError):
        return Outcome(OutcomeKind.SERVER, why(exc), None, exc)
    if isinstance(exc, OSError):
        # Our own disk (output folder): every server would hit it.
        return Outcome(OutcomeKind.JOB, f"cannot write output: {exc}", None, exc)
    log.exception("%s: unexpected error in chunk %s", attempt.slot, attempt.chunk.index)
    return Outcome(OutcomeKind.SERVER, f"internal error: {exc!r}", None, exc)


def refusal(exc: AuthenticationFailed) -> Outcome:
    """The server refuses us: out of the job, saying what to check (never the values)."""
    what = f"authentication refused: {exc.message}"
    if "token" not in exc.message:
        what += " (check the server's token and headers)"
    return Outcome(OutcomeKind.DEGRADED, what, None, exc)


def refused_by_health(health: Any, server: str) -> Optional[AuthenticationFailed]:
    """The 401/403 the health monitor's last poll of ``server`` got, if it got one."""
    try:
        error = getattr(health.facts_of(server), "http_error", None)
    except Exception:  # no monitor, or one without facts
        return None
    return error if isinstance(error, AuthenticationFailed) else None


def why(exc: BaseException) -> str:
    """The message of ``exc``, or its type's name when it has none."""
    text = str(exc)
    return text or type(exc).__name__
