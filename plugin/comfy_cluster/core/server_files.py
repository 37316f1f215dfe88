"""Files to and from one server over HTTP: ``POST /upload/image`` and ``GET /view``.

Uploads are deduplicated by content: :class:`UploadCache` remembers which bytes (by sha256) a
server already holds, so a frame used by many prompts is sent once. Downloads are streamed to a
hidden temporary file beside the destination and renamed onto it, so a reader never sees half an
image. Only network failures are translated; a local disk error stays an ``OSError``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional, Union

from comfy_cluster.core.errors import ConfigError, ProtocolError
from comfy_cluster.core.http_session import HttpSession
from comfy_cluster.core.protocol import ImageRef
from comfy_cluster.core.wire_errors import map_errors

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
                f"POST /upload/image: unexpected answer {str(body)[:80]!r}", server=self.name
            )
        stored_sub = str(body.get("subfolder") or "")
        value = f"{stored_sub}/{body['name']}" if stored_sub else str(body["name"])
        self._uploads.put(key, value)
        return value

    def download(
        self, image_ref: Union[ImageRef, Mapping[str, Any]], dest: Union[str, Path]
    ) -> Path:
        """GET /view, streamed to a hidden temporary file beside ``dest``, then renamed onto it."""
        if isinstance(image_ref, Mapping):
            image_ref = ImageRef(
                filename=str(image_ref["filename"]),
                subfolder=str(image_ref.get("subfolder") or ""),
                type=str(image_ref.get("type") or "output"),
            )
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:8]}.part"
        params = {
            "filename": image_ref.filename,
            "subfolder": image_ref.subfolder,
            "type": image_ref.type,
        }
        what = "GET /view"
        response = self._http.request("GET", "/view", what=what, params=params, stream=True)
        try:
            blocks = response.iter_content(chunk_size=1 << 20)
            # Only the network side is translated: a local disk error stays an OSError.
            with open(tmp, "wb") as fh:
                while True:
                    with map_errors(self.name, what):
                        block = next(blocks, None)
                    if block is None:
                        break
                    fh.write(block)
            os.replace(tmp, dest)
        finally:
            response.close()
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return dest
