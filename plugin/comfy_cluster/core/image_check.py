"""Is this file the image it claims to be? Judged from its first and last bytes only.

A server answering ``/view`` with an HTML error page, nothing, or half a PNG must not leave
``shot.0001.png`` behind, and ``--resume`` must not take such a file for a finished frame. The kind
is the one the name says (``.png``, ``.jpg``/``.jpeg``, ``.webp``, ``.exr``, ``.tif``/``.tiff``);
the bytes must start with that kind's signature, and for kinds that end with a marker (PNG's IEND
chunk, JPEG's end-of-image) or state their size (WebP's RIFF header) the end must agree: that is
what tells a truncated file. Other kinds are not accepted.

Pure and cheap: :func:`image_file_ok` reads 64 bytes from each end of the file, whatever its size.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path, PurePath
from types import MappingProxyType
from typing import Optional, Union

from comfy_cluster.core.errors import DownloadRefused

__all__ = [
    "HEAD_BYTES",
    "KINDS",
    "TAIL_BYTES",
    "HeadTail",
    "image_file_ok",
    "image_file_problem",
    "image_kind",
    "image_problem",
    "kind_problem",
    "refused_download",
]

#: Bytes kept from the start and from the end: enough for every check below.
HEAD_BYTES = 64
TAIL_BYTES = 64

#: File name suffix -> image kind; read-only.
KINDS: Mapping[str, str] = MappingProxyType(
    {
        ".png": "PNG",
        ".jpg": "JPEG",
        ".jpeg": "JPEG",
        ".webp": "WebP",
        ".exr": "EXR",
        ".tif": "TIFF",
        ".tiff": "TIFF",
    }
)

_PNG_START = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR"  # signature, then the IHDR chunk's header
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk, always these 12 bytes
_PNG_SMALLEST = 8 + 25 + 12  # signature, IHDR chunk, IEND chunk
_JPEG_START = b"\xff\xd8\xff"
_JPEG_END = b"\xff\xd9"
_EXR_START = b"v/1\x01"
_TIFF_STARTS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF


def image_kind(name: Union[str, PurePath]) -> Optional[str]:
    """The image kind a file name says (``"PNG"``...), or None for a kind we do not accept."""
    return KINDS.get(PurePath(name).suffix.lower())


def kind_problem(name: Union[str, PurePath]) -> str:
    """Why a file name's kind is refused (for a name :func:`image_kind` gives None for)."""
    suffix = PurePath(name).suffix.lower() or "no suffix"
    return f"{suffix!r} is not an image kind we accept ({', '.join(KINDS)})"


def _signature_kind(head: bytes) -> Optional[str]:
    if head.startswith(_PNG_START[:8]):
        return "PNG"
    if head.startswith(_JPEG_START):
        return "JPEG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head.startswith(_EXR_START):
        return "EXR"
    if head.startswith(_TIFF_STARTS):
        return "TIFF"
    return None


def _a(kind: str) -> str:
    """``"a PNG"``, ``"an EXR"``."""
    return f"an {kind}" if kind[0] in "AEIOU" else f"a {kind}"


def _looks_like(head: bytes) -> str:
    """What a wrong start looks like, for the message: "an HTML page", "a JPEG image"..."""
    kind = _signature_kind(head)
    if kind is not None:
        return f"{_a(kind)} image"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "an HTML page"
    if text.startswith((b"{", b"[")):
        return "JSON"
    if text.startswith(b"<"):
        return "XML or HTML"
    return "not an image we know"


def _start_problem(kind: str, head: bytes) -> Optional[str]:
    if _signature_kind(head) != kind:
        return f"{_looks_like(head)}, not {_a(kind)} image"
    if kind == "PNG" and not head.startswith(_PNG_START):
        return "a PNG signature without its IHDR header"
    return None


def _end_problem(kind: str, head: bytes, tail: bytes, size: int) -> Optional[str]:
    if kind == "PNG" and (size < _PNG_SMALLEST or not tail.endswith(_PNG_END)):
        return "a PNG without its IEND chunk at the end (truncated?)"
    if kind == "JPEG" and not tail.endswith(_JPEG_END):
        return "a JPEG without its end-of-image marker (truncated?)"
    if kind == "WebP":
        stated = int.from_bytes(head[4:8], "little") + 8
        if stated != size:
            return f"a WebP whose header says {stated:,} bytes, but it has {size:,} (truncated?)"
    return None


def image_problem(kind: str, head: bytes, tail: bytes, size: int) -> Optional[str]:
    """Why ``size`` bytes starting with ``head`` and ending with ``tail`` are not a ``kind``
    image (``"an HTML page, not a PNG image"``), or None when they are.

    ``head``/``tail``: at least the first/last :data:`HEAD_BYTES`/:data:`TAIL_BYTES` bytes (all
    of them for a shorter file). ``kind``: a value of :data:`KINDS`.
    """
    if size <= 0:
        return "an empty answer (0 bytes)"
    return _start_problem(kind, head) or _end_problem(kind, head, tail, size)


class HeadTail:
    """The first and last bytes of a stream and its size, kept while it goes by (downloads)."""

    def __init__(self) -> None:
        self.head = b""
        self.tail = b""
        self.size = 0

    def feed(self, block: bytes) -> None:
        if len(self.head) < HEAD_BYTES:
            self.head += block[: HEAD_BYTES - len(self.head)]
        if len(block) >= TAIL_BYTES:
            self.tail = block[-TAIL_BYTES:]
        else:
            self.tail = (self.tail + block)[-TAIL_BYTES:]
        self.size += len(block)

    @property
    def head_complete(self) -> bool:
        return len(self.head) >= HEAD_BYTES

    def start_problem(self, kind: str) -> Optional[str]:
        """What is wrong with the start alone (checked before anything is written)."""
        return _start_problem(kind, self.head)

    def problem(self, kind: str) -> Optional[str]:
        """What is wrong with the whole stream, once it has ended."""
        return image_problem(kind, self.head, self.tail, self.size)


def image_file_problem(path: Union[str, Path], kind: Optional[str] = None) -> Optional[str]:
    """Why the file at ``path`` is not a whole ``kind`` image (default: the kind its name says),
    or None when it is.

    Reads only its first and last 64 bytes. A missing file or a kind we do not accept is a problem.
    """
    path = Path(path)
    kind = kind or image_kind(path)
    if kind is None:
        return kind_problem(path)
    try:
        with path.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            head = fh.read(HEAD_BYTES)
            fh.seek(max(0, size - TAIL_BYTES))
            tail = fh.read(TAIL_BYTES)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    return image_problem(kind, head, tail, size)


def image_file_ok(path: Union[str, Path]) -> bool:
    """True if ``path`` is a whole image of the kind its name says (``--resume``, skip existing).

    Fast whatever the size: reads only the first and last 64 bytes. Never raises.
    """
    return image_file_problem(path) is None


def refused_download(server: Optional[str], what: str, problem: str) -> DownloadRefused:
    """The error for a file a server sent that is not the image it named (nothing was written).

    ``what`` names the call and the file (``GET /view out/s_00001_.png``).
    """
    return DownloadRefused(f"{what}: refused ({problem}); nothing was written", server=server)
