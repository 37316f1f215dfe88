"""A small tokenizer for the TCL syntax of ``.nk`` scripts and ``.gizmo`` files.

It splits text into statements (one per line, ``{...}`` may span lines) of words. A braced word
keeps its content verbatim; a quoted word has backslash escapes applied; ``[...]`` inside a bare
word is kept whole. ``#`` starts a comment at the start of a statement.
"""

from __future__ import annotations

import re


class Word(str):
    """A word of a statement; ``braced`` tells whether it was written as ``{...}``."""

    braced: bool = False


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r"}
_BARE = re.compile(r"[A-Za-z0-9_./:#%@+=,-]+")


class TclError(ValueError):
    """The text is not valid for the fake's TCL subset."""


def _word(text: str, braced: bool = False) -> Word:
    word = Word(text)
    word.braced = braced
    return word


def parse(text: str) -> list[list[Word]]:
    """Split ``text`` into statements of words."""
    statements: list[list[Word]] = []
    words: list[Word] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r":
            i += 1
        elif c in "\n;":
            if words:
                statements.append(words)
                words = []
            i += 1
        elif c == "#" and not words:
            while i < n and text[i] != "\n":
                i += 1
        elif c == "{":
            depth, j = 1, i + 1
            while j < n and depth:
                if text[j] == "\\":
                    j += 2
                    continue
                if text[j] == "{":
                    depth += 1
                elif text[j] == "}":
                    depth -= 1
                j += 1
            if depth:
                raise TclError(f"unbalanced braces starting at offset {i}")
            words.append(_word(text[i + 1 : j - 1], braced=True))
            i = j
        elif c == '"':
            out, j = [], i + 1
            while j < n and text[j] != '"':
                if text[j] == "\\" and j + 1 < n:
                    out.append(_ESCAPES.get(text[j + 1], text[j + 1]))
                    j += 2
                else:
                    out.append(text[j])
                    j += 1
            if j >= n:
                raise TclError(f"unterminated quote starting at offset {i}")
            words.append(_word("".join(out)))
            i = j + 1
        else:
            out, j, depth = [], i, 0
            while j < n and (depth or text[j] not in " \t\r\n;"):
                ch = text[j]
                if ch == "\\" and j + 1 < n:
                    out.append(_ESCAPES.get(text[j + 1], text[j + 1]))
                    j += 2
                    continue
                if ch == "[":
                    depth += 1
                elif ch == "]" and depth:
                    depth -= 1
                out.append(ch)
                j += 1
            words.append(_word("".join(out)))
            i = j
    if words:
        statements.append(words)
    return statements


def split_words(text: str) -> list[Word]:
    """All words of ``text`` as one flat list (for ``M {items}`` and array values)."""
    return [w for statement in parse(text) for w in statement]


def quote(text: str) -> str:
    """Write ``text`` as one TCL word that :func:`parse` reads back unchanged."""
    if _BARE.fullmatch(text):
        return text
    escaped = (
        text.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("[", "\\[")
        .replace("]", "\\]")
        .replace("$", "\\$")
        .replace("\n", "\\n")
        .replace("\t", "\\t")
    )
    return f'"{escaped}"'
