"""Whose fault the failure of an attempt is: :func:`blame` turns an exception into an
:class:`Outcome`.

The order matters: a cancel is nobody's fault; a server that is gone is suspended; a rejection
or an execution error is judged against the other servers (``ServerStanding``); a workflow the
engine refuses, or our own disk, is the job's fault; a server that cannot run this workflow
(auth, a hung server, its own configuration) is out of the job; anything else from a server is
that server's failure, retried elsewhere.
"""

from __future__ import annotations

import logging
from typing import Callable, Union

from comfy_cluster.core.engine.attempt import Aborted, Attempt, Outcome, OutcomeKind
from comfy_cluster.core.errors import (
    AuthenticationFailed,
    ComfyClusterError,
    ConfigError,
    ExecutionFailed,
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
    if isinstance(exc, (AuthenticationFailed, ServerHung)):
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


def why(exc: BaseException) -> str:
    """The message of ``exc``, or its type's name when it has none."""
    text = str(exc)
    return text or type(exc).__name__
