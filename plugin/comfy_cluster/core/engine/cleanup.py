"""Best-effort cleanup: :func:`ignore_errors`.

Closing a client, telling the health monitor a job ended or recording a speed must never turn
a finished render into a failed one, so such calls go through here: errors are logged at debug
level and dropped.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

__all__ = ["ignore_errors"]

log = logging.getLogger(__name__)


def ignore_errors(fn: Callable[[], Any]) -> None:
    """Call ``fn`` for cleanup, logging and ignoring any ``Exception`` it raises."""
    try:
        fn()
    except Exception:
        log.debug("ignored error in %r", fn, exc_info=True)
