"""Upload caching (``core/server_files.py`` and ``HttpTransfer``): the same bytes reach a server
once; changed bytes always reach it again, even when the file keeps its name and size.

A stale cache hit is the worst kind of failure here: the render succeeds, with the old plate.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from comfy_cluster.core.client import ComfyClient
from comfy_cluster.core.connection_settings import Timeouts
from comfy_cluster.core.server import ServerConfig
from comfy_cluster.core.server_files import ServerFiles, UploadCache, file_sha256
from comfy_cluster.core.transfer import HttpTransfer


class FakeHttp:
    """The part of HttpSession that uploads use: ``json("POST", "/upload/image", ...)``."""

    def __init__(self, name: str = "s1", answer: Any = None) -> None:
        self.server = ServerConfig(name=name, host="127.0.0.1", port=1)
        self.answer = answer
        self.posts: list[tuple[str, bytes, dict]] = []

    def json(self, method: str, path: str, **kw: Any) -> Any:
        assert (method, path) == ("POST", "/upload/image")
        name, fh, _ = kw["files"]["image"]
        self.posts.append((name, fh.read(), dict(kw["data"])))
        if self.answer is not None:
            return self.answer
        sub = kw["data"]["subfolder"]
        return {"name": f"{len(self.posts)}_{name}", "subfolder": sub, "type": "input"}


def rewrite(path: Path, data: bytes, mtime_ns: int) -> None:
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_the_same_bytes_are_sent_to_a_server_once_even_by_another_client(tmp_path: Path) -> None:
    plate = tmp_path / "plate.0001.png"
    plate.write_bytes(b"pixels")
    cache = UploadCache()
    http = FakeHttp()
    first = ServerFiles(http, cache).upload_image(plate, subfolder="job")
    assert first == "job/1_plate.0001.png"
    assert ServerFiles(FakeHttp(), cache).upload_image(plate, subfolder="job") == first
    assert len(http.posts) == 1 and http.posts[0][1:] == (
        b"pixels",
        {"subfolder": "job", "type": "input"},
    )


def test_another_server_another_name_or_folder_gets_its_own_upload(tmp_path: Path) -> None:
    plate = tmp_path / "plate.0001.png"
    plate.write_bytes(b"pixels")
    cache = UploadCache()
    here, there = FakeHttp("s1"), FakeHttp("s2")
    ServerFiles(here, cache).upload_image(plate)
    ServerFiles(there, cache).upload_image(plate)
    ServerFiles(here, cache).upload_image(plate, name="renamed.png")
    ServerFiles(here, cache).upload_image(plate, subfolder="other")
    assert len(here.posts) == 3 and len(there.posts) == 1


def test_a_file_rewritten_with_the_same_size_is_uploaded_again(tmp_path: Path) -> None:
    """Item 15, client side: the cache key is the content, so new pixels of the same size
    (and even the same modification time) are sent, and the new value returned."""
    plate = tmp_path / "plate.0001.png"
    rewrite(plate, b"old pixels", 1_000_000_000_000_000_000)
    cache, http = UploadCache(), FakeHttp()
    first = ServerFiles(http, cache).upload_image(plate)
    rewrite(plate, b"new pixels", 1_000_000_000_000_000_000)
    second = ServerFiles(http, cache).upload_image(plate)
    assert [body for _, body, _ in http.posts] == [b"old pixels", b"new pixels"]
    assert second != first


def test_the_value_has_no_folder_when_the_server_stored_it_at_the_top(tmp_path: Path) -> None:
    plate = tmp_path / "plate.png"
    plate.write_bytes(b"x")
    http = FakeHttp(answer={"name": "plate.png", "subfolder": ""})
    assert ServerFiles(http, UploadCache()).upload_image(plate) == "plate.png"


def test_file_sha256_reads_in_blocks(tmp_path: Path) -> None:
    data = bytes(range(256)) * 100
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    import hashlib

    assert file_sha256(path, chunk=7) == file_sha256(path) == hashlib.sha256(data).hexdigest()


def test_a_plate_rewritten_mid_job_reaches_a_real_server_with_its_new_pixels(
    sim: Any, tmp_path: Path
) -> None:
    """Item 15 end to end: HttpTransfer over a ComfyClient to the simulator. The re-exported
    plate (same name, same size) must be the one the server's LoadImage reads."""
    plate = tmp_path / "plate.0001.png"
    rewrite(plate, b"old pixels", 1_000_000_000_000_000_000)
    config = ServerConfig(name="s1", host="127.0.0.1", port=sim.port)
    transfer = HttpTransfer()
    with ComfyClient(config, timeouts=Timeouts(connect=0.5, read=3.0)) as client:
        first = transfer.prepare_input(client, config, plate)
        rewrite(plate, b"new pixels", 1_000_000_001_000_000_000)
        second = transfer.prepare_input(client, config, plate)
    assert (sim.input_dir / first).read_bytes() == b"old pixels"
    assert (sim.input_dir / second).read_bytes() == b"new pixels"
