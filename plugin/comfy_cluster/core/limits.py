"""How much one server may send us: the cap on every answer, in one place (see docs/trust.md).

A server is not trusted: a broken or hostile one must not be able to exhaust the memory or disk of
the process we run in (Nuke's). So every read from a server stops at a cap, checked against the
announced size first (``Content-Length``, a websocket frame header) and then while reading, never
after: an answer over its cap is refused after reading at most cap + 1 bytes.

Downloads are capped per server by ``ServerConfig.max_download_bytes`` (2 GiB by default, set in
the server's configuration). The other caps are the constants below; a :class:`Limits` carries
them into a client (tests pass smaller ones). Pure values and functions: any thread.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

from comfy_cluster.core.errors import ResponseTooLarge

__all__ = [
    "DEFAULT_LIMITS",
    "MAX_ERROR_BODY_BYTES",
    "MAX_JSON_BYTES",
    "MAX_OBJECT_INFO_BYTES",
    "MAX_TEXT_CHARS",
    "MAX_TRACEBACK_LINES",
    "MAX_WS_MESSAGE_BYTES",
    "RECENT_HISTORY_ITEMS",
    "Limits",
    "is_too_large",
    "size_text",
    "too_large",
]

_KIB = 1 << 10
_MIB = 1 << 20

#: A JSON answer (``/system_stats``, ``/queue``, ``/prompt``, ``/history/{id}``...): real ones are
#: a few KiB.
MAX_JSON_BYTES = 16 * _MIB
#: ``GET /object_info`` alone: about 0.5 MB on a stock install, but installs with thousands of
#: custom nodes (or a huge input folder listed by LoadImage) answer over 100 MiB.
MAX_OBJECT_INFO_BYTES = 256 * _MIB
#: One websocket message, all its fragments together (preview images are the largest).
MAX_WS_MESSAGE_BYTES = 64 * _MIB
#: How much of an error answer (4xx/5xx) is read for its message; the rest is never read.
MAX_ERROR_BODY_BYTES = 16 * _KIB
#: One piece of server text in our errors, events and logs, after cleaning (core/server_text.py).
MAX_TEXT_CHARS = 500
#: The last lines of a server's traceback kept in an execution_error event.
MAX_TRACEBACK_LINES = 40
#: Entries asked of ``GET /history?max_items=`` when looking through recent prompts.
RECENT_HISTORY_ITEMS = 64


@dataclass(frozen=True)
class Limits:
    """The caps one client applies (bytes, or characters for ``text_chars``); all must be > 0."""

    json_bytes: int = MAX_JSON_BYTES
    object_info_bytes: int = MAX_OBJECT_INFO_BYTES
    ws_message_bytes: int = MAX_WS_MESSAGE_BYTES
    error_body_bytes: int = MAX_ERROR_BODY_BYTES
    text_chars: int = MAX_TEXT_CHARS

    def __post_init__(self) -> None:
        for item in fields(self):
            if getattr(self, item.name) <= 0:
                raise ValueError(f"{item.name} must be > 0, got {getattr(self, item.name)!r}")


DEFAULT_LIMITS = Limits()


def size_text(size: int) -> str:
    """``16777216`` -> ``"16 MiB"``, ``1536`` -> ``"1.5 KiB"``, ``100`` -> ``"100 bytes"``."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", _MIB), ("KiB", _KIB)):
        if size >= scale:
            return f"{size / scale:.1f}".rstrip("0").rstrip(".") + f" {unit}"
    return f"{size} bytes"


def too_large(
    what: str,
    limit: int,
    *,
    server: Optional[str],
    announced: Optional[int] = None,
    noun: str = "answer",
) -> ResponseTooLarge:
    """The error for an answer (or websocket ``noun="message"``) over its cap; ``announced`` is
    the size the server declared, if it did.

    """
    size = f"{announced:,} bytes announced" if announced is not None else "more sent"
    return ResponseTooLarge(
        f"{what}: {noun} over the {size_text(limit)} cap ({size}); refused, not read further",
        server=server,
        cap=limit,
    )


def is_too_large(exc: BaseException) -> bool:
    """True for the error :func:`too_large` makes (health calls such a server degraded)."""
    return isinstance(exc, ResponseTooLarge)
