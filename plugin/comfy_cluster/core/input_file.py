"""Reading a text file a user pointed us at (a server list, the user file, a workflow) safely.

A path from the environment or a file dialog may name anything: a FIFO that blocks on open and
never sends end-of-file, ``/dev/zero`` that never ends, a directory, or a file of gigabytes. We
read only regular files of at most :data:`MAX_INPUT_BYTES`: the type and size are checked with
``stat`` before opening, the open is non-blocking (so even a FIFO swapped in after the check cannot
hang us), the type is checked again on the open descriptor, and no more than the limit is read.
Callers turn :class:`InputFileError` into their own error, naming the file.
"""

from __future__ import annotations

import os
import stat
from typing import Union

__all__ = ["MAX_INPUT_BYTES", "InputFileError", "read_input_text"]

#: The largest configuration or workflow file we read: 16 MiB.
MAX_INPUT_BYTES = 16 * 1024 * 1024

_CHUNK = 1024 * 1024
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_BINARY", 0)
)


class InputFileError(ValueError):
    """Why a file was not read, as a phrase to follow "it" (never the content); ``missing`` when
    there is no such file."""

    def __init__(self, reason: str, *, missing: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.missing = missing


def _kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _check_stat(info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise InputFileError(f"is {_kind(info.st_mode)}, not a regular file")
    if info.st_size > MAX_INPUT_BYTES:
        raise InputFileError(_too_big())


def _too_big() -> str:
    return f"is larger than {MAX_INPUT_BYTES // (1024 * 1024)} MiB, the limit for such files"


def _os_reason(exc: OSError) -> InputFileError:
    if isinstance(exc, FileNotFoundError):
        return InputFileError("does not exist", missing=True)
    return InputFileError(f"cannot be read ({exc.strerror or type(exc).__name__})")


def _read_capped(fd: int) -> bytes:
    """At most ``MAX_INPUT_BYTES`` (a file may grow after the ``stat``, or lie about its size)."""
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = os.read(fd, _CHUNK)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > MAX_INPUT_BYTES:
            raise InputFileError(_too_big())
        chunks.append(chunk)


def read_input_text(path: Union[str, os.PathLike]) -> str:
    """The UTF-8 text of the regular file ``path``, at most :data:`MAX_INPUT_BYTES`.

    Raises :class:`InputFileError` (``missing`` set for a missing file) for anything else: not a
    regular file, too large, unreadable, or not UTF-8. Never blocks on a FIFO.
    """
    try:
        _check_stat(os.stat(path))
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise _os_reason(exc) from None
    try:
        _check_stat(os.fstat(fd))
        data = _read_capped(fd)
    except OSError as exc:
        raise _os_reason(exc) from None
    finally:
        os.close(fd)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputFileError(f"is not UTF-8 text (bad byte at offset {exc.start})") from None
