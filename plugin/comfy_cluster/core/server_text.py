"""Server text made safe to show: one line, no control characters, no secrets, a sane length.

Whatever a server says (an error body, an exception message, a node id, a device name) ends up in
our errors, events, logs, the terminal and the ``--json`` stream. Raw, it could clear the screen or
fake lines (escape sequences, BEL, CR/LF), or repeat our token back to us (a 401 that echoes the
request). :class:`ServerText` cleans it, and is applied where server data becomes our errors and
events (``wire_errors`` and ``protocol``), nowhere else. Pure and immutable: any thread.
"""

from __future__ import annotations

import json
import re
import reprlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Optional
from urllib.parse import quote

from comfy_cluster.core.limits import MAX_TEXT_CHARS
from comfy_cluster.core.server import MASK, ServerConfig

__all__ = ["ELLIPSIS", "PLAIN", "SEPARATOR", "ServerText", "secret_forms"]

#: What a line break becomes (visible, and one line stays one line).
SEPARATOR = " | "
#: The end of text that was cut.
ELLIPSIS = "…"

#: Terminal escape sequences, removed whole (their parameters would otherwise show as junk).
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor moves, clear screen
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC: window title, hyperlinks
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"  # DCS, SOS, PM, APC strings
    r"|\x1b[ -/]*[0-~]?"  # any other escape (ESC c resets the terminal), or a lone ESC
)
_LINE_BREAKS = re.compile(r"[\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]+")
#: C0 and C1 controls, DEL, and the invisible direction marks that reorder what a terminal shows.
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
#: Text beyond this many times the limit is never looked at (escapes can only make text shorter).
_LOOK_AHEAD = 8


def secret_forms(values: Iterable[str]) -> tuple[str, ...]:
    """Each secret as it may come back: raw, JSON-escaped, percent-encoded; longest first."""
    forms = set()
    for value in values:
        if value:
            forms.update((value, json.dumps(value)[1:-1], quote(value, safe="")))
    return tuple(sorted(forms, key=lambda s: (-len(s), s)))


@dataclass(frozen=True)
class ServerText:
    """How one server's text is cleaned: its secret values are masked, lines joined, text cut.

    ``ServerText.of(server)`` for a configured server; :data:`PLAIN` (no secrets) where none is
    known, which still removes control characters and cuts the length.
    """

    secrets: tuple[str, ...] = ()
    limit: int = MAX_TEXT_CHARS

    @classmethod
    def of(cls, server: ServerConfig, limit: int = MAX_TEXT_CHARS) -> ServerText:
        return cls(secret_forms(server.secret_values()), limit)

    def clean(self, value: object, limit: Optional[int] = None) -> str:
        """``value`` as one safe line of at most ``limit`` characters (default: ``self.limit``).

        Strings are cleaned as they are; other values as a short ``repr`` (a huge body is never
        turned into a huge string first).
        """
        limit = limit or self.limit
        text = value if isinstance(value, str) else _short_repr(value, limit)
        if len(text) <= limit and text.isprintable() and not self._holds_secret(text):
            return text  # the common case, kept cheap: ids, names, short messages
        text = self._masked(text)[: limit * _LOOK_AHEAD]
        text = _ESCAPES.sub("", text).strip()
        text = _LINE_BREAKS.sub(SEPARATOR, text).replace("\t", " ")
        text = self._masked(_CONTROLS.sub("", text)).strip()
        return text if len(text) <= limit else text[: limit - 1].rstrip() + ELLIPSIS

    def _holds_secret(self, text: str) -> bool:
        return any(secret in text for secret in self.secrets)

    def _masked(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text


def _short_repr(value: object, limit: int) -> str:
    """A ``repr`` that never grows past about ``limit`` characters, however big ``value`` is."""
    shortener = reprlib.Repr()
    shortener.maxstring = shortener.maxother = shortener.maxlong = limit
    shortener.maxdict = shortener.maxlist = shortener.maxtuple = shortener.maxset = 8
    shortener.maxlevel = 3
    return shortener.repr(value)


#: Cleaning without secrets (pure parsers called with no server at hand).
PLAIN = ServerText()
