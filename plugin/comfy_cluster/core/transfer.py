"""Moving frames between the artist's disk and a server: HTTP (default) or shared storage.

Two transfers share one small interface (``prepare_input`` / ``fetch_output``); the scheduler
never branches on which one it holds:

- :class:`HttpTransfer` uploads input frames (``POST /upload/image``, deduplicated per server by
  content) and downloads outputs (``GET /view``) into the output pattern.
- :class:`SharedTransfer` sends nothing over HTTP: the server's ComfyUI folder is mounted locally
  (``ServerConfig.dir_local`` here is ``dir_remote`` there), inputs are staged into its ``input``
  folder and outputs copied out of its ``output`` folder, paths mapped by ``core/paths.PathMapper``.

Either way a frame file is finished or absent: bytes go to a hidden temporary file in the target
folder and are renamed into place (:func:`atomic_write`). Names returned by a server are never used
as paths: :func:`check_image_ref` refuses anything but a plain file name in a relative subfolder.
And either way only a whole image of the kind the server named, within its
``max_download_bytes``, is written (``core/image_check.py``; the HTTP client checks its downloads,
:class:`SharedTransfer` the files it copies).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Optional, Protocol

from comfy_cluster.core.errors import ConfigError, ProtocolError
from comfy_cluster.core.frames import _FRAME_TOKEN, format_frame_path, has_frame_token
from comfy_cluster.core.image_check import (
    image_file_ok,
    image_file_problem,
    image_kind,
    kind_problem,
    refused_download,
)
from comfy_cluster.core.limits import size_text
from comfy_cluster.core.server import ServerConfig
from comfy_cluster.core.server_text import PLAIN

__all__ = [
    "HttpTransfer",
    "SharedTransfer",
    "Transfer",
    "atomic_write",
    "check_image_ref",
    "check_output_kind",
    "existing_frames",
    "frame_name_formatter",
    "frame_path",
    "frames_on_disk",
    "make_transfer",
]

_IMAGE_TYPES = ("output", "temp", "input")
#: The frame number part of a file name (sign, then at most the digits a frame number has).
_FRAME_NUMBER = re.compile(r"-?[0-9]{1,12}")


def frame_path(pattern: str, frame: int) -> Path:
    """The local path of ``frame`` in ``pattern`` (``out/shot.####.png``), made absolute."""
    return Path(format_frame_path(pattern, frame)).expanduser().absolute()


def existing_frames(
    pattern: str, frames: Iterable[int], *, whole_images: bool = False
) -> tuple[int, ...]:
    """Frames of ``frames`` whose output file already exists (the resume/overwrite check).

    ``whole_images``: count only files that are a whole image of the kind their name says
    (``image_check.image_file_ok``: reads 64 bytes at each end), so that an HTML page or half a
    PNG is rendered again rather than skipped.

    Fast for long ranges: each folder is listed once (``os.scandir``) and frames are looked up
    in that listing, so no file is ``stat``-ed per frame, and an empty or missing folder costs
    nothing per frame. Only the files found are opened (``whole_images``).
    """
    found = frames_on_disk(pattern, frames)
    if not whole_images:
        return found
    return tuple(f for f, good in zip(found, _whole_images(_frame_paths(pattern, found))) if good)


def _frame_paths(pattern: str, frames: tuple[int, ...]) -> list[str]:
    """``frame_path`` of each frame as text, without building a ``Path`` per frame."""
    full = str(Path(pattern).expanduser().absolute())
    folder, name = os.path.split(full)
    if has_frame_token(folder):
        return [format_frame_path(full, f) for f in frames]
    fmt = frame_name_formatter(name)
    return [os.path.join(folder, fmt(f)) for f in frames]


#: Files checked one after another before deciding whether the disk is slow to open them.
_SAMPLE_FILES = 64  # pragma: no mutate (a speed setting: any sample gives the same answer)
#: Seconds per file above which the rest are checked by :data:`_CHECK_THREADS` threads.
_SLOW_FILE_SECONDS = 0.0005
_CHECK_THREADS = 8  # pragma: no mutate (a speed setting: any count gives the same answer)


def _whole_images(paths: list[str]) -> list[bool]:
    """``image_file_ok`` of each path, in order. A local disk answers in microseconds and
    threads would only fight over the GIL; a network disk's latency is overlapped instead,
    once the first files show it (each thread checks one contiguous slice)."""
    started = time.monotonic()
    ok = [image_file_ok(p) for p in paths[:_SAMPLE_FILES]]
    rest = paths[_SAMPLE_FILES:]
    if not rest:
        return ok
    if time.monotonic() - started <= _SLOW_FILE_SECONDS * len(ok):
        return ok + [image_file_ok(p) for p in rest]
    from concurrent.futures import ThreadPoolExecutor

    step = -(-len(rest) // _CHECK_THREADS)
    slices = [rest[i : i + step] for i in range(0, len(rest), step)]
    with ThreadPoolExecutor(_CHECK_THREADS, thread_name_prefix="comfy-cluster-check") as pool:
        for checked in pool.map(lambda part: [image_file_ok(p) for p in part], slices):
            ok += checked
    return ok


def frames_on_disk(pattern: str, frames: Iterable[int]) -> tuple[int, ...]:
    """Frames of ``frames`` whose file in ``pattern`` is in its folder's listing (not a folder).

    Each folder is listed once; file names are compared with ``os.path.normcase`` (so a
    case-insensitive Windows disk matches as it would on open).
    """
    full = str(Path(pattern).expanduser().absolute())
    folder, name = os.path.split(full)
    listings: dict[str, frozenset[str]] = {}
    if not has_frame_token(folder):
        listing = listings[folder] = _listing(folder)
        if not listing:
            return ()
        named = _frames_named(listing, name)
        if named is not None:  # the usual case: read the few names, not format every frame
            return tuple(f for f in frames if f in named) if named else ()
        fmt = frame_name_formatter(name)
        return tuple(f for f in frames if os.path.normcase(fmt(f)) in listing)
    out = []
    for f in frames:
        where, leaf = os.path.split(format_frame_path(full, f))
        listing = listings.get(where)
        if listing is None:
            listing = listings[where] = _listing(where)
        if os.path.normcase(leaf) in listing:
            out.append(f)
    return tuple(out)


def _frames_named(listing: frozenset[str], name: str) -> Optional[set[int]]:
    """The frames whose file name (``name`` with its one frame token filled) is in
    ``listing``, read off the names themselves; ``None`` when ``name`` has several tokens.

    A name counts only if formatting its number gives the name back (``s.01.png`` is not
    frame 1 of ``s.####.png``), so the answer is the one a per-frame lookup would give.
    """
    tokens = list(_FRAME_TOKEN.finditer(name))
    if len(tokens) != 1:
        return None
    fmt = frame_name_formatter(name)
    prefix = os.path.normcase(name[: tokens[0].start()])
    suffix = os.path.normcase(name[tokens[0].end() :])
    frames: set[int] = set()
    for entry in listing:
        # Where the number would stand; formatting it back checks the prefix and suffix too.
        number = entry[len(prefix) : len(entry) - len(suffix)]
        if _FRAME_NUMBER.fullmatch(number) and os.path.normcase(fmt(int(number))) == entry:
            frames.add(int(number))
    return frames


def _listing(folder: str) -> frozenset[str]:
    """Names of the non-folder entries of ``folder`` (empty when it is missing or unreadable)."""
    try:
        with os.scandir(folder) as entries:
            return frozenset(os.path.normcase(e.name) for e in entries if not _is_dir(e))
    except OSError:
        return frozenset()


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def frame_name_formatter(name: str) -> Callable[[int], str]:
    """``format_frame_path`` for one file name, fast when it has a single frame token (the
    usual case): a million frames are formatted in well under a second."""
    tokens = list(_FRAME_TOKEN.finditer(name))
    if len(tokens) != 1:
        return lambda frame: format_frame_path(name, frame)
    prefix, suffix = name[: tokens[0].start()], name[tokens[0].end() :]
    # The token's width (1 for an unpadded one, which pads nothing).
    width = len(format_frame_path(tokens[0].group(0), 0))  # pragma: no mutate (any frame 0-9)
    return lambda frame: f"{prefix}{frame:0{width}d}{suffix}"


def atomic_write(dest: Path, produce: Callable[[Path], Any]) -> Path:
    """Write ``dest`` through a hidden temporary file in its folder, then rename it into place.

    ``produce(tmp)`` must write ``tmp`` completely. A reader sees the old file (or none) until
    the rename, never a half-written one; a failed ``produce`` leaves no temporary file behind.
    Any thread; safe for different ``dest`` concurrently.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:8]}.part"
    try:
        produce(tmp)
        if not tmp.is_file():
            raise ProtocolError(f"nothing was written for {dest.name}")
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def _ref_field(ref: Any, name: str) -> str:
    value = ref.get(name, "") if isinstance(ref, dict) else getattr(ref, name, "")
    return "" if value is None else str(value)


def check_image_ref(ref: Any, *, server: Optional[str] = None) -> tuple[str, str, str]:
    """Validate a server's image reference; return ``(filename, subfolder, type)``.

    The server names the file; we only accept a plain file name and a relative subfolder without
    ``..`` so a hostile or confused server cannot point us at another path. Raises
    :class:`ProtocolError` otherwise.
    """
    filename = _ref_field(ref, "filename")
    subfolder = _ref_field(ref, "subfolder").replace("\\", "/")
    kind = _ref_field(ref, "type") or "output"
    bad_name = (
        not filename
        or filename in (".", "..")
        or "/" in filename
        or "\\" in filename
        or "\x00" in filename
    )
    parts = PurePosixPath(subfolder).parts if subfolder else ()
    bad_sub = (
        subfolder.startswith("/")
        or (len(subfolder) > 1 and subfolder[1] == ":")
        or ".." in parts
        or "\x00" in subfolder
    )
    if bad_name or bad_sub or kind not in _IMAGE_TYPES:
        shown = ", ".join(
            f"{key}={PLAIN.clean(value, 120)!r}"
            for key, value in (("filename", filename), ("subfolder", subfolder), ("type", kind))
        )
        raise ProtocolError(f"refusing unsafe output reference {shown}", server=server)
    return filename, "/".join(p for p in parts if p not in ("", ".")), kind


def check_output_kind(filename: str, dest: Path) -> None:
    """Refuse to write a server's ``filename`` as ``dest`` when their image kinds differ
    (PNG bytes named ``.exr``): raises :class:`ConfigError` naming both, nothing written.

    Every server runs the same workflow and would send the same kind, so this is the job's
    fault (the output's extension or the save node), not the server's.
    """
    sent, wanted = image_kind(filename), image_kind(dest)
    if sent is None or wanted is None or sent == wanted:
        return
    raise ConfigError(
        f"the server wrote {_a(sent)} file ({PLAIN.clean(filename, 120)}) but the output "
        f"{dest.name} asks for {_a(wanted)}: change the output's extension to "
        f"{dest.suffix and PurePosixPath(filename).suffix} or use a save node that writes "
        f"{wanted}; nothing was written",
        field="output",
    )


def _a(kind: str) -> str:
    """``"a PNG"``, ``"an EXR"``."""
    return f"an {kind}" if kind[0] in "AEIOU" else f"a {kind}"


class Transfer(Protocol):
    """How inputs reach a server and outputs come back. Called from worker threads."""

    def prepare_input(self, client: Any, server: ServerConfig, path: Path) -> str:
        """Make ``path`` readable by ``server``; return the value for the image loader."""
        ...

    def fetch_output(self, client: Any, server: ServerConfig, ref: Any, dest: Path) -> Path:
        """Write the server's output ``ref`` to ``dest`` atomically; return ``dest``."""
        ...


class HttpTransfer:
    """Upload inputs and download outputs over HTTP. One per job; any worker thread.

    Uploads are remembered per (server, file, size, mtime) for the job, so a frame re-rendered on
    the same server is not uploaded again; the client deduplicates by content hash on top.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._uploaded: dict[tuple[str, str, int, int], str] = {}

    def prepare_input(self, client: Any, server: ServerConfig, path: Path) -> str:
        st = path.stat()
        key = (server.name, str(path), st.st_size, st.st_mtime_ns)
        with self._lock:
            cached = self._uploaded.get(key)
        if cached is not None:
            return cached
        value = str(client.upload_image(path))
        with self._lock:
            self._uploaded[key] = value
        return value

    def fetch_output(self, client: Any, server: ServerConfig, ref: Any, dest: Path) -> Path:
        filename, _sub, _kind = check_image_ref(ref, server=server.name)
        check_output_kind(filename, dest)
        if getattr(client, "downloads_atomically", False):
            # The client streams to a hidden temporary file and renames it onto ``dest``.
            return Path(client.download(ref, dest))
        return atomic_write(dest, lambda tmp: client.download(ref, tmp))


class SharedTransfer:
    """Shared storage: the server's ComfyUI folder is mounted here; no bytes over HTTP.

    ``dir_local`` (this machine) and ``dir_remote`` (the server) name the same ComfyUI folder,
    holding ``input/`` and ``output/``. An input already inside ``<dir_local>/input`` is used in
    place; any other is staged (atomically, once per content) into
    ``<dir_local>/input/comfy_cluster/``. Outputs are copied from
    ``<dir_remote>/<type>/<subfolder>/<filename>`` mapped to the local side. Any worker thread.
    """

    STAGE = "comfy_cluster"

    def __init__(self, mapper_factory: Optional[Callable[[str, str], Any]] = None) -> None:
        if mapper_factory is None:
            from comfy_cluster.core.config.paths import PathMapper

            mapper_factory = PathMapper
        self._mapper_factory = mapper_factory
        self._lock = threading.Lock()
        self._staged: dict[tuple[str, str, int, int], str] = {}

    @staticmethod
    def _check(server: ServerConfig) -> None:
        if not server.dir_local or not server.dir_remote:
            from comfy_cluster.core.errors import ConfigError

            raise ConfigError(
                "shared storage needs dir_local and dir_remote",
                field="dir_local",
                server=server.name,
            )

    def prepare_input(self, client: Any, server: ServerConfig, path: Path) -> str:
        self._check(server)
        input_dir = Path(server.dir_local).expanduser().absolute() / "input"
        path = path.absolute()
        try:
            return path.relative_to(input_dir).as_posix()
        except ValueError:
            pass
        st = path.stat()
        key = (server.name, str(path), st.st_size, st.st_mtime_ns)
        with self._lock:
            cached = self._staged.get(key)
        if cached is not None:
            return cached
        digest = _file_digest(path)
        name = f"{digest[:24]}{path.suffix.lower()}"
        dest = input_dir / self.STAGE / name
        if not dest.is_file():
            atomic_write(dest, lambda tmp: shutil.copyfile(path, tmp))
        value = f"{self.STAGE}/{name}"
        with self._lock:
            self._staged[key] = value
        return value

    def fetch_output(self, client: Any, server: ServerConfig, ref: Any, dest: Path) -> Path:
        self._check(server)
        filename, subfolder, kind = check_image_ref(ref, server=server.name)
        check_output_kind(filename, dest)
        mapper = self._mapper_factory(server.dir_local, server.dir_remote)
        remote = "/".join(
            p for p in (server.dir_remote.rstrip("/\\"), kind, subfolder, filename) if p
        )
        source = Path(mapper.to_local(remote))
        if not source.is_file():
            raise ProtocolError(
                f"output {PLAIN.clean(filename, 200)!r} is not at {PLAIN.clean(str(source))} "
                f"(is {server.dir_local} the shared ComfyUI folder?)",
                server=server.name,
            )
        return atomic_write(dest, lambda tmp: _copy_checked(server, source, tmp))


def _copy_checked(server: ServerConfig, source: Path, tmp: Path) -> None:
    """Copy a server's output file to ``tmp`` if it is the image its name says, and not over
    the server's ``max_download_bytes``; ProtocolError otherwise."""
    shown = PLAIN.clean(source.name, 200)
    what = f"copy of {shown}"
    kind = image_kind(source.name)
    if kind is None:
        raise refused_download(server.name, what, kind_problem(shown))
    size = source.stat().st_size
    if size > server.max_download_bytes:
        limit = size_text(server.max_download_bytes)
        raise refused_download(server.name, what, f"{size:,} bytes, over the {limit} cap")
    shutil.copyfile(source, tmp)
    problem = image_file_problem(tmp, kind)
    if problem is not None:
        raise refused_download(server.name, what, problem)


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):  # pragma: no mutate (a block size)
            h.update(block)
    return h.hexdigest()


def make_transfer(shared_storage: bool) -> Transfer:
    """The transfer a job asks for: shared storage or HTTP."""
    return SharedTransfer() if shared_storage else HttpTransfer()
