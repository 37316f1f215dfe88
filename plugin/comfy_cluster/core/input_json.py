"""Decoding JSON a user wrote (a variable, a file, a ``--set`` value) into one clear error.

``json.loads`` alone raises three things besides a syntax error: ``RecursionError`` for deeply
nested text (``[[[[...``), a plain ``ValueError`` for an integer of thousands of digits, and
nothing at all for nesting just under the interpreter's limit, which then breaks later (a deep
copy of a workflow overflows the stack near 500 levels). :func:`decode_json` turns all of them
into :class:`JsonTextError` and caps nesting at :data:`MAX_JSON_DEPTH`. Messages give line and
column but never quote the text: it may hold a token.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["MAX_JSON_DEPTH", "JsonTextError", "decode_json"]

#: The deepest nesting accepted; real workflows and server lists use fewer than ten levels.
MAX_JSON_DEPTH = 100


class JsonTextError(ValueError):
    """JSON that cannot be used; the message never quotes the text.

    ``too_deep`` tells valid-looking but over-nested JSON from text that is not JSON at all.
    """

    def __init__(self, message: str, *, too_deep: bool = False) -> None:
        super().__init__(message)
        self.too_deep = too_deep


def _too_deep() -> JsonTextError:
    return JsonTextError(f"JSON nested more than {MAX_JSON_DEPTH} levels deep", too_deep=True)


def _check_depth(data: Any) -> None:
    """Walk without recursion, so the check itself cannot overflow the stack."""
    pending: list[tuple[Any, int]] = [(data, 0)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth >= MAX_JSON_DEPTH:
            raise _too_deep()
        pending.extend((child, depth + 1) for child in children)


def decode_json(text: str) -> Any:
    """Parse ``text``; raises :class:`JsonTextError` with line and column, never the text."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise JsonTextError(
            f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise _too_deep() from None
    except ValueError:  # e.g. an integer longer than Python's int-from-text limit
        raise JsonTextError("malformed JSON: a number in it is too long") from None
    _check_depth(data)
    return data
