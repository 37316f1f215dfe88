"""Path mapping between a server's directory as Nuke sees it and as ComfyUI sees it.

A Windows client may mount the server's ComfyUI folder as ``U:/`` while ComfyUI runs on Linux in
``/home/user/ComfyUI/`` (or the reverse). :class:`PathMapper` swaps one prefix for the other, only
on whole path components (``/srv/comfy`` never matches ``/srv/comfy2``), and writes the result in
the target side's style.

Rules:

- A side is *Windows* when its directory has a drive letter (``U:``), a backslash, or is a UNC
  path (``//host/share`` or ``\\\\host\\share``); otherwise it is POSIX. Pass ``local_style`` /
  ``remote_style`` to force it.
- On a Windows side, ``\\`` and ``/`` are both separators and matching ignores case (drive letters
  included), as Windows does. POSIX sides match case-sensitively and only ``/`` separates.
- Output uses ``/`` on POSIX sides; on Windows sides it uses the separator the configured
  directory was written with (``U:/`` gives ``/``, ``U:\\`` gives ``\\``); Nuke and Python both
  accept ``/`` on Windows.
- Repeated separators and ``.`` components are dropped; ``..`` is kept as written.
- A path outside the mapped directory, or any path when either directory is empty, is returned
  unchanged: callers that need a mapped path check :meth:`PathMapper.covers_local` first.

Round trip: for ``p`` under ``dir_local``, ``to_local(to_remote(p)) == normalise_local(p)``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

__all__ = ["POSIX", "WINDOWS", "PathMapper", "detect_style"]

WINDOWS = "windows"
POSIX = "posix"

_DRIVE = re.compile(r"^([A-Za-z]):")
_UNC = re.compile(r"^[/\\]{2}[^/\\]")


def detect_style(directory: str) -> str:
    """``windows`` for drive-letter, backslash or UNC paths, else ``posix``."""
    if _DRIVE.match(directory) or "\\" in directory or _UNC.match(directory):
        return WINDOWS
    return POSIX


@dataclass(frozen=True)
class _Parsed:
    """A path split into its root (``U:``, ``//host/share``, ``/`` or ``""``) and components."""

    root: str
    parts: tuple[str, ...]


def _parse(path: str, style: str) -> _Parsed:
    """Split ``path`` the way ``style`` does; UNC and drive roots are recognised on Windows."""
    if style == WINDOWS:
        text = path.replace("\\", "/")
        if _UNC.match(text):
            pieces = [p for p in text[2:].split("/") if p not in ("", ".")]
            root = "//" + "/".join(pieces[:2])
            return _Parsed(root, tuple(pieces[2:]))
        match = _DRIVE.match(text)
        if match:
            root = match.group(1).upper() + ":"
            text = text[2:]
        else:
            root = "/" if text.startswith("/") else ""
        return _Parsed(root, tuple(p for p in text.split("/") if p not in ("", ".")))
    root = "/" if path.startswith("/") else ""
    return _Parsed(root, tuple(p for p in path.split("/") if p not in ("", ".")))


def _format(parsed: _Parsed, style: str, sep: str) -> str:
    """Join a parsed path for ``style`` with ``sep``; roots keep their trailing separator."""
    body = sep.join(parsed.parts)
    if style == WINDOWS and parsed.root.startswith("//"):
        root = sep * 2 + parsed.root[2:].replace("/", sep)
        return root + (sep + body if body else "")
    if style == WINDOWS and parsed.root.endswith(":"):
        return parsed.root + sep + body
    if parsed.root:
        return sep + body
    return body


def _key(parsed: _Parsed, style: str) -> tuple[str, tuple[str, ...]]:
    if style == WINDOWS:
        return parsed.root.casefold(), tuple(p.casefold() for p in parsed.parts)
    return parsed.root, parsed.parts


class _Side:
    """One side of the mapping: its directory, style and output separator."""

    def __init__(self, directory: str, style: Optional[str]) -> None:
        self.style = style or detect_style(directory)
        if self.style not in (WINDOWS, POSIX):
            raise ValueError(f"style must be {WINDOWS!r} or {POSIX!r}, got {style!r}")
        if self.style == WINDOWS:
            self.sep = "\\" if "\\" in directory and "/" not in directory else "/"
        else:
            self.sep = "/"
        self.dir = _parse(directory, self.style)
        root_key, parts_key = _key(self.dir, self.style)
        self.root_key = root_key
        self.parts_key = parts_key

    def relative(self, path: str) -> Optional[tuple[str, ...]]:
        """The components of ``path`` below this side's directory, or None if it is outside."""
        parsed = _parse(path, self.style)
        root_key, parts_key = _key(parsed, self.style)
        n = len(self.parts_key)
        if root_key != self.root_key or parts_key[:n] != self.parts_key:
            return None
        return parsed.parts[n:]

    def join(self, rest: tuple[str, ...]) -> str:
        return _format(_Parsed(self.dir.root, self.dir.parts + rest), self.style, self.sep)


class PathMapper:
    """Maps paths between ``dir_local`` (Nuke's view) and ``dir_remote`` (the server's view).

    Immutable after construction; safe to share between threads. An empty directory on either
    side disables mapping (every path is returned unchanged).
    """

    def __init__(
        self,
        dir_local: str,
        dir_remote: str,
        *,
        local_style: Optional[str] = None,
        remote_style: Optional[str] = None,
    ) -> None:
        self.dir_local = dir_local or ""
        self.dir_remote = dir_remote or ""
        self._local = _Side(self.dir_local, local_style)
        self._remote = _Side(self.dir_remote, remote_style)

    @property
    def active(self) -> bool:
        """True when both directories are set, i.e. paths are actually rewritten."""
        return bool(self.dir_local.strip() and self.dir_remote.strip())

    def __repr__(self) -> str:
        return f"PathMapper({self.dir_local!r}, {self.dir_remote!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PathMapper):
            return NotImplemented
        return (self.dir_local, self.dir_remote, self._local.style, self._remote.style) == (
            other.dir_local,
            other.dir_remote,
            other._local.style,
            other._remote.style,
        )

    def __hash__(self) -> int:
        return hash((self.dir_local, self.dir_remote, self._local.style, self._remote.style))

    def covers_local(self, path: str) -> bool:
        """True if ``path`` lies in ``dir_local`` (so :meth:`to_remote` rewrites it)."""
        return self.active and self._local.relative(path) is not None

    def covers_remote(self, path: str) -> bool:
        """True if ``path`` lies in ``dir_remote`` (so :meth:`to_local` rewrites it)."""
        return self.active and self._remote.relative(path) is not None

    def to_remote(self, path: str) -> str:
        """``path`` as the server sees it; unchanged when outside ``dir_local``."""
        return self._map(path, self._local, self._remote)

    def to_local(self, path: str) -> str:
        """``path`` as Nuke sees it; unchanged when outside ``dir_remote``."""
        return self._map(path, self._remote, self._local)

    def normalise_local(self, path: str) -> str:
        """``path`` in the canonical local form (what a round trip returns)."""
        return self._normalise(path, self._local)

    def normalise_remote(self, path: str) -> str:
        """``path`` in the canonical remote form (what a round trip returns)."""
        return self._normalise(path, self._remote)

    def _map(self, path: str, source: _Side, target: _Side) -> str:
        if not self.active:
            return path
        rest = source.relative(path)
        return path if rest is None else target.join(rest)

    def _normalise(self, path: str, side: _Side) -> str:
        if not self.active:
            return path
        rest = side.relative(path)
        return path if rest is None else side.join(rest)
