"""Files to and from one server over HTTP: ``POST /upload/image`` and ``GET /view``.

Uploads are deduplicated by content: :class:`UploadCache` remembers which bytes (by sha256) a
server already holds, so a frame used by many prompts is sent once. Downloads are streamed to a
hidden temporary file beside the destination and renamed onto it, so a reader never sees half an
image; and only once they are checked (``core/image_check.py``): the image kind the server named,
whole, not empty, within ``ServerConfig.max_download_bytes``. Anything else raises and leaves
nothing behind, not even the temporary file. Only network failures are translated; a local disk
error stays an ``OSError``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Optional, Union

from comfy_cluster.core.errors import ConfigError, ProtocolError
from comfy_cluster.core.http_session import HttpSession
from comfy_cluster.core.image_check import HeadTail, image_kind, kind_problem, refused_download
from comfy_cluster.core.protocol import ImageRef

__all__ = ["ServerFiles", "UploadCache", "file_sha256"]


class UploadCache:
    """Which contents a server already holds: (server, sha256, subfolder, name) -> LoadImage value.

    Share one between the clients of a job so an identical file is sent once per server.
    Any thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[tuple[str, str, str, str], str] = {}

    def get(self, key: tuple[str, str, str, str]) -> Optional[str]:
        with self._lock:
            return self._values.get(key)

    def put(self, key: tuple[str, str, str, str], value: str) -> None:
        with self._lock:
            self._values[key] = value


def file_sha256(path: Union[str, Path], chunk: int = 1 << 20) -> str:
    """The hex sha256 of a file, read in ``chunk``-sized blocks (frames can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


class ServerFiles:
    """Uploads and downloads for one server, through its :class:`HttpSession`; one thread."""

    def __init__(self, http: HttpSession, uploads: UploadCache) -> None:
        self._http = http
        self._uploads = uploads

    @property
    def name(self) -> str:
        return self._http.server.name

    def upload_image(
        self, path: Union[str, Path], *, subfolder: str = "", name: Optional[str] = None
    ) -> str:
        """POST /upload/image; returns the LoadImage value ``"subfolder/name"`` the server chose.

        The content's sha256 is remembered per server, so the same bytes are not sent twice.
        """
        path = Path(path)
        name = name or path.name
        try:
            digest = file_sha256(path)
        except OSError as exc:
            raise ConfigError(f"cannot read input file {path}: {exc}", field="input") from exc
        key = (self.name, digest, subfolder, name)
        cached = self._uploads.get(key)
        if cached is not None:
            return cached
        with open(path, "rb") as fh:
            body = self._http.json(
                "POST",
                "/upload/image",
                files={"image": (name, fh, "application/octet-stream")},
                data={"subfolder": subfolder, "type": "input"},
            )
        if not isinstance(body, dict) or not body.get("name"):
            raise ProtocolError(
                f"POST /upload/image: unexpected answer {self._http.text.clean(body, 80)}",
                server=self.name,
            )
        stored_sub = str(body.get("subfolder") or "")
        value = f"{stored_sub}/{body['name']}" if stored_sub else str(body["name"])
        self._uploads.put(key, value)
        return value

    def download(
        self, image_ref: Union[ImageRef, Mapping[str, Any]], dest: Union[str, Path]
    ) -> Path:
        """GET /view, streamed to a hidden temporary file beside ``dest``, then renamed onto it.

        Only a whole image of the kind its name says, within the server's
        ``max_download_bytes``, reaches ``dest``; otherwise ProtocolError (naming the server, the
        file and what was wrong), and nothing is left behind (also on KeyboardInterrupt).
        """
        ref = _image_ref(image_ref)
        shown = self._http.text.clean(ref.relpath, 200)
        what = f"GET /view {shown}"
        kind = image_kind(ref.filename)
        if kind is None:
            raise refused_download(self.name, what, kind_problem(shown))
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:8]}.part"
        params = {"filename": ref.filename, "subfolder": ref.subfolder, "type": ref.type}
        response = self._http.open("GET", "/view", what=what, params=params)
        try:
            probe = HeadTail()
            # Only reads are translated: a local disk error stays an OSError.
            with open(tmp, "wb") as fh:
                for block in self._checked_blocks(response, what, kind, probe):
                    fh.write(block)
            problem = probe.problem(kind)
            if problem is not None:
                raise refused_download(self.name, what, problem)
            os.replace(tmp, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            response.close()
        return dest

    def _checked_blocks(
        self, response: Any, what: str, kind: str, probe: HeadTail
    ) -> Iterator[bytes]:
        """The body's blocks, each seen by ``probe``; a wrong start is refused before any write."""
        limit = self._http.server.max_download_bytes
        checked = False
        for block in self._http.body(response, what, limit):
            probe.feed(block)
            if not checked and probe.head_complete:
                problem = probe.start_problem(kind)
                if problem is not None:
                    raise refused_download(self.name, what, problem)
                checked = True
            yield block


def _image_ref(value: Union[ImageRef, Mapping[str, Any]]) -> ImageRef:
    if isinstance(value, Mapping):
        return ImageRef(
            filename=str(value["filename"]),
            subfolder=str(value.get("subfolder") or ""),
            type=str(value.get("type") or "output"),
        )
    return value
