"""Transfers: atomic writes, untrusted output names, upload caching, shared-storage mapping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from comfy_cluster.core.errors import ConfigError, ProtocolError
from comfy_cluster.core.protocol import ImageRef
from comfy_cluster.core.server import ServerConfig
from comfy_cluster.core.transfer import (
    HttpTransfer,
    SharedTransfer,
    atomic_write,
    check_image_ref,
    existing_frames,
    frame_path,
    make_transfer,
)
from comfy_cluster.sim.harness import make_test_image

SERVER = ServerConfig(name="r1", host="127.0.0.1", port=1)


@pytest.mark.parametrize(
    "ref",
    [
        ImageRef(filename="../evil.png"),
        ImageRef(filename="a/b.png"),
        ImageRef(filename="a\\b.png"),
        ImageRef(filename=""),
        ImageRef(filename="x.png", subfolder="../up"),
        ImageRef(filename="x.png", subfolder="/etc"),
        ImageRef(filename="x.png", subfolder="C:/Windows"),
        ImageRef(filename="x.png", type="elsewhere"),
        {"filename": "x.png", "subfolder": "a/../../b"},
    ],
)
def test_unsafe_output_names_are_refused(ref: Any) -> None:
    with pytest.raises(ProtocolError):
        check_image_ref(ref, server="r1")


def test_safe_output_names_pass() -> None:
    assert check_image_ref(ImageRef("x_00001_.png", "shot/a", "output")) == (
        "x_00001_.png",
        "shot/a",
        "output",
    )
    assert check_image_ref({"filename": "p.png", "type": "temp"}) == ("p.png", "", "temp")


def test_atomic_write_is_all_or_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "sub" / "f.png"
    atomic_write(dest, lambda tmp: tmp.write_bytes(b"new"))
    assert dest.read_bytes() == b"new"

    def fail(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(dest, fail)
    assert dest.read_bytes() == b"new"
    assert [p.name for p in dest.parent.iterdir()] == ["f.png"]
    with pytest.raises(ProtocolError):
        atomic_write(tmp_path / "g.png", lambda tmp: None)  # nothing produced


def test_existing_frames_and_paths(tmp_path: Path) -> None:
    pattern = str(tmp_path / "o.####.png")
    frame_path(pattern, 2).write_bytes(b"x")
    assert existing_frames(pattern, [1, 2, 3]) == (2,)
    assert frame_path(pattern, 7).name == "o.0007.png"


class CountingClient:
    def __init__(self) -> None:
        self.uploads: list[Path] = []
        self.downloads: list[Any] = []

    def upload_image(self, path: Path, *, subfolder: str = "") -> str:
        self.uploads.append(path)
        return f"up/{path.name}"

    def download(self, ref: Any, dest: Path) -> Path:
        self.downloads.append(ref)
        Path(dest).write_bytes(b"png")
        return Path(dest)


def test_http_uploads_once_per_server_and_downloads_atomically(tmp_path: Path) -> None:
    src = tmp_path / "in.png"
    src.write_bytes(b"abc")
    other = ServerConfig(name="r2", host="127.0.0.1", port=2)
    client = CountingClient()
    transfer = HttpTransfer()
    assert transfer.prepare_input(client, SERVER, src) == "up/in.png"
    assert transfer.prepare_input(client, SERVER, src) == "up/in.png"
    transfer.prepare_input(client, other, src)
    assert len(client.uploads) == 2  # once per server
    dest = tmp_path / "out" / "o.0001.png"
    transfer.fetch_output(client, SERVER, ImageRef("x.png"), dest)
    assert dest.read_bytes() == b"png"
    assert [p.name for p in dest.parent.iterdir()] == ["o.0001.png"]
    with pytest.raises(ProtocolError):
        transfer.fetch_output(client, SERVER, ImageRef("../x.png"), dest)
    assert len(client.downloads) == 1


def test_shared_storage_maps_paths_and_stages_inputs(tmp_path: Path) -> None:
    local = tmp_path / "mnt" / "ComfyUI"
    (local / "input").mkdir(parents=True)
    (local / "output" / "job").mkdir(parents=True)
    server = ServerConfig(
        name="r1", host="127.0.0.1", port=1, dir_local=str(local), dir_remote="/srv/ComfyUI"
    )
    transfer = SharedTransfer()
    inside = local / "input" / "plates" / "a.png"
    inside.parent.mkdir()
    inside.write_bytes(b"in")
    assert transfer.prepare_input(None, server, inside) == "plates/a.png"
    outside = tmp_path / "plate.0001.png"
    outside.write_bytes(b"plate")
    value = transfer.prepare_input(None, server, outside)
    assert value.startswith("comfy_cluster/") and value.endswith(".png")
    assert (local / "input" / value).read_bytes() == b"plate"
    assert transfer.prepare_input(None, server, outside) == value
    result = make_test_image(local / "output" / "job" / "x_00001_.png").read_bytes()
    dest = tmp_path / "out" / "o.0001.png"
    transfer.fetch_output(None, server, ImageRef("x_00001_.png", "job"), dest)
    assert dest.read_bytes() == result
    with pytest.raises(ProtocolError):
        transfer.fetch_output(None, server, ImageRef("missing.png"), dest)
    with pytest.raises(ConfigError):
        transfer.prepare_input(None, SERVER, outside)  # no dir_local/dir_remote


def test_make_transfer() -> None:
    assert isinstance(make_transfer(False), HttpTransfer)
    assert isinstance(make_transfer(True), SharedTransfer)
