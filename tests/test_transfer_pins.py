"""Transfers (``core/transfer.py``): the rules that keep frames right, pinned one by one.

A frame file is finished or absent; a server's names never become paths outside the folders we
chose; an input is sent again when it changed on disk (even to the same size), and only then;
the resume check counts files, not folders.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Optional

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
)

SERVER = ServerConfig(name="r1", host="127.0.0.1", port=1)


def rewrite(path: Path, data: bytes, mtime_ns: int) -> None:
    """Write ``data`` and set the modification time explicitly (filesystem clocks are coarse)."""
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))


# --- the resume check (item 16) -----------------------------------------------------------------


def test_a_folder_at_a_frames_path_is_not_an_existing_frame(tmp_path: Path) -> None:
    """Item 16: ``existing="resume"`` must not skip a frame because a folder has its name (the
    frame was never written); ``"error"`` must not list it as a frame to keep."""
    pattern = str(tmp_path / "o.####.png")
    frame_path(pattern, 1).mkdir()
    frame_path(pattern, 2).write_bytes(b"png")
    assert existing_frames(pattern, [1, 2, 3]) == (2,)


# --- atomic writes -------------------------------------------------------------------------------


def test_atomic_write_creates_missing_folders_and_writes_beside_existing_frames(
    tmp_path: Path,
) -> None:
    first = tmp_path / "shot" / "v001" / "o.0001.png"
    atomic_write(first, lambda tmp: tmp.write_bytes(b"1"))
    atomic_write(first.with_name("o.0002.png"), lambda tmp: tmp.write_bytes(b"2"))
    assert sorted(p.name for p in first.parent.iterdir()) == ["o.0001.png", "o.0002.png"]


def test_atomic_write_writes_a_hidden_file_in_the_target_folder(tmp_path: Path) -> None:
    """The rename must stay on one filesystem, and a reader listing the folder for frames must
    not take the half-written file for one."""
    seen: list[Path] = []
    dest = tmp_path / "o.0001.png"
    atomic_write(dest, lambda tmp: (seen.append(tmp), tmp.write_bytes(b"x")))
    assert seen[0].parent == dest.parent and seen[0].name.startswith(".o.0001.png.")


# --- names a server sends back -------------------------------------------------------------------


@pytest.mark.parametrize(
    "ref, expected",
    [
        ({"filename": "x.png", "subfolder": None, "type": None}, ("x.png", "", "output")),
        (ImageRef("x.png", "a", "temp"), ("x.png", "a", "temp")),
        (ImageRef("x.png", "a\\b", "input"), ("x.png", "a/b", "input")),
        (ImageRef("x.png", "./a//b/", "output"), ("x.png", "a/b", "output")),
        (ImageRef("x..png", "a..b", "output"), ("x..png", "a..b", "output")),
    ],
)
def test_plain_names_and_relative_subfolders_are_accepted(ref: Any, expected: tuple) -> None:
    assert check_image_ref(ref) == expected


@pytest.mark.parametrize(
    "ref",
    [
        ImageRef(filename="."),
        ImageRef(filename=".."),
        ImageRef(filename="x\x00.png"),
        ImageRef(filename="x.png", subfolder="C:"),
        ImageRef(filename="x.png", subfolder="d:relative"),
        ImageRef(filename="x.png", subfolder="a/\x00"),
        ImageRef(filename="x.png", subfolder="a\\..\\..\\b"),
        ImageRef(filename="x.png", type="models"),
    ],
)
def test_names_that_could_leave_the_output_folder_are_refused(ref: Any) -> None:
    with pytest.raises(ProtocolError, match="unsafe output reference") as info:
        check_image_ref(ref, server="r1")
    assert info.value.server == "r1"


# --- HTTP ----------------------------------------------------------------------------------------


class Client:
    """Counts uploads; ``download`` writes where it is told (not atomically by itself)."""

    def __init__(self, fail_download: bool = False) -> None:
        self.uploaded: list[bytes] = []
        self.download_paths: list[Path] = []
        self.fail_download = fail_download

    def upload_image(self, path: Path, *, subfolder: str = "") -> str:
        self.uploaded.append(Path(path).read_bytes())
        return f"up/{len(self.uploaded)}_{Path(path).name}"

    def download(self, ref: Any, dest: Path) -> Path:
        dest = Path(dest)
        self.download_paths.append(dest)
        dest.write_bytes(b"half an ima")
        if self.fail_download:
            raise ConnectionResetError("reset mid-download")
        dest.write_bytes(b"image")
        return dest


def test_an_input_rewritten_with_the_same_size_is_uploaded_again(tmp_path: Path) -> None:
    """Item 15: the host re-exports a plate mid-job (same size, new pixels): the cache keyed
    by size alone would hand the server the old image. The modification time is in the key."""
    plate = tmp_path / "in.0001.png"
    rewrite(plate, b"old pixels", 1_000_000_000_000_000_000)
    client, transfer = Client(), HttpTransfer()
    first = transfer.prepare_input(client, SERVER, plate)
    assert transfer.prepare_input(client, SERVER, plate) == first  # unchanged: not sent again
    rewrite(plate, b"new pixels", 1_000_000_001_000_000_000)
    second = transfer.prepare_input(client, SERVER, plate)
    assert client.uploaded == [b"old pixels", b"new pixels"]
    assert second != first


def test_an_input_is_uploaded_once_per_server(tmp_path: Path) -> None:
    plate = tmp_path / "in.0001.png"
    plate.write_bytes(b"plate")
    client, transfer = Client(), HttpTransfer()
    other = ServerConfig(name="r2", host="127.0.0.1", port=2)
    values = {transfer.prepare_input(client, srv, plate) for srv in (SERVER, other, SERVER)}
    assert len(client.uploaded) == 2 and len(values) == 2


def test_a_client_that_cannot_download_atomically_gets_a_hidden_temporary_file(
    tmp_path: Path,
) -> None:
    """A download cut off halfway must not leave half a frame under the frame's name."""
    dest = tmp_path / "out" / "o.0001.png"
    client = Client(fail_download=True)
    with pytest.raises(ConnectionResetError):
        HttpTransfer().fetch_output(client, SERVER, ImageRef("x.png"), dest)
    assert not dest.exists() and list(dest.parent.iterdir()) == []
    assert client.download_paths[0] != dest and client.download_paths[0].parent == dest.parent
    client = Client()
    HttpTransfer().fetch_output(client, SERVER, ImageRef("x.png"), dest)
    assert dest.read_bytes() == b"image"


class AtomicClient(Client):
    downloads_atomically = True


def test_a_client_that_downloads_atomically_writes_the_frame_itself(tmp_path: Path) -> None:
    dest = tmp_path / "o.0001.png"
    client = AtomicClient()
    assert HttpTransfer().fetch_output(client, SERVER, ImageRef("x.png"), dest) == dest
    assert client.download_paths == [dest]


# --- shared storage ------------------------------------------------------------------------------


def shared(tmp_path: Path, **kw: Optional[str]) -> ServerConfig:
    local = tmp_path / "mnt" / "ComfyUI"
    (local / "input").mkdir(parents=True, exist_ok=True)
    fields: dict[str, Any] = dict(dir_local=str(local), dir_remote="/srv/ComfyUI")
    fields.update(kw)
    return ServerConfig(name="r1", host="127.0.0.1", port=1, **fields)


def test_an_input_rewritten_with_the_same_size_is_staged_again(tmp_path: Path) -> None:
    """Item 15 on shared storage: the staged copy must be the new pixels."""
    server = shared(tmp_path)
    plate = tmp_path / "plate.0001.png"
    rewrite(plate, b"old pixels", 1_000_000_000_000_000_000)
    transfer = SharedTransfer()
    first = transfer.prepare_input(None, server, plate)
    rewrite(plate, b"new pixels", 1_000_000_001_000_000_000)
    second = transfer.prepare_input(None, server, plate)
    staged = Path(server.dir_local or "") / "input"
    assert (staged / first).read_bytes() == b"old pixels"
    assert (staged / second).read_bytes() == b"new pixels"


def test_different_inputs_are_staged_under_different_names(tmp_path: Path) -> None:
    """Staged names come from the content: two plates never share one (a server would read
    the wrong plate), the same plate twice is staged once."""
    server = shared(tmp_path)
    a, b, a_again = (tmp_path / n for n in ("a.png", "b.png", "a_copy.PNG"))
    a.write_bytes(b"plate A")
    b.write_bytes(b"plate B")
    a_again.write_bytes(b"plate A")
    transfer = SharedTransfer()
    va, vb = transfer.prepare_input(None, server, a), transfer.prepare_input(None, server, b)
    staged = Path(server.dir_local or "") / "input"
    assert va != vb
    assert (staged / va).read_bytes() == b"plate A" and (staged / vb).read_bytes() == b"plate B"
    assert transfer.prepare_input(None, server, a_again) == va


@pytest.mark.parametrize("missing", ["dir_local", "dir_remote"])
def test_shared_storage_needs_both_folders(tmp_path: Path, missing: str) -> None:
    server = shared(tmp_path, **{missing: None})
    plate = tmp_path / "p.png"
    plate.write_bytes(b"p")
    with pytest.raises(ConfigError, match="dir_local and dir_remote"):
        SharedTransfer().prepare_input(None, server, plate)
    with pytest.raises(ConfigError, match="dir_local and dir_remote"):
        SharedTransfer().fetch_output(None, server, ImageRef("x.png"), tmp_path / "o.png")


def test_the_whole_image_check_of_many_frames_keeps_only_whole_ones(tmp_path: Path) -> None:
    """Hundreds of frames are opened on a thread pool: the answer is the same as one by one
    (whole files kept, cut ones dropped, in frame order)."""
    from comfy_cluster.sim.harness import make_test_image

    pattern = str(tmp_path / "s.####.png")
    good = tmp_path / "good.png"
    make_test_image(good)
    data = good.read_bytes()
    cut = {7, 150, 299}
    for f in range(1, 301):
        frame_path(pattern, f).write_bytes(data[:-1] if f in cut else data)
    expected = tuple(f for f in range(1, 301) if f not in cut)
    assert existing_frames(pattern, range(1, 302), whole_images=True) == expected


class _Entry:
    """A directory entry whose type cannot be read (a stale network-share entry)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def is_dir(self) -> bool:
        raise OSError("stale file handle")


class _Listing(list):
    def __enter__(self) -> _Listing:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


def test_an_entry_whose_type_cannot_be_read_still_counts_as_a_frame(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """Only a real folder is not a frame: an entry that cannot be stat-ed is listed as a file,
    so resume keeps it rather than rendering over it."""
    from comfy_cluster.core import transfer

    monkeypatch.setattr(transfer.os, "scandir", lambda folder: _Listing([_Entry("o.0001.png")]))
    assert existing_frames(str(tmp_path / "o.####.png"), [1, 2]) == (1,)


def test_a_file_name_with_two_frame_tokens_is_found_on_disk(tmp_path: Path) -> None:
    """The fast name formatter handles one token; a name with two (``a.####.b.####.png``) must
    still have both filled in, or resume never sees the frame."""
    pattern = str(tmp_path / "a.####.b.####.png")
    frame_path(pattern, 3).write_bytes(b"png")
    assert frame_path(pattern, 3).name == "a.0003.b.0003.png"
    assert existing_frames(pattern, [1, 2, 3]) == (3,)


def _shared_output(tmp_path: Path, name: str, data: bytes) -> None:
    output = tmp_path / "mnt" / "ComfyUI" / "output"
    output.mkdir(parents=True, exist_ok=True)
    (output / name).write_bytes(data)


def test_shared_storage_refuses_an_output_of_another_image_kind(tmp_path: Path) -> None:
    """PNG bytes written as ``.exr``: refused before copying, naming both kinds (with the
    right article: 'a PNG', 'an EXR'), and nothing is written."""
    from comfy_cluster.sim.harness import make_test_image

    server = shared(tmp_path)
    make_test_image(tmp_path / "good.png")
    _shared_output(tmp_path, "x.png", (tmp_path / "good.png").read_bytes())
    dest = tmp_path / "out" / "shot.0001.exr"
    with pytest.raises(ConfigError, match=r"wrote a PNG file .* asks for an EXR"):
        SharedTransfer().fetch_output(None, server, ImageRef("x.png"), dest)
    assert not dest.exists()


def test_shared_storage_takes_an_output_exactly_at_the_download_cap(tmp_path: Path) -> None:
    from comfy_cluster.sim.harness import make_test_image

    make_test_image(tmp_path / "good.png")
    data = (tmp_path / "good.png").read_bytes()
    _shared_output(tmp_path, "x.png", data)
    dest = tmp_path / "out" / "shot.0001.png"
    at_cap = dataclasses.replace(shared(tmp_path), max_download_bytes=len(data))
    assert SharedTransfer().fetch_output(None, at_cap, ImageRef("x.png"), dest) == dest
    assert dest.read_bytes() == data
    under = dataclasses.replace(at_cap, max_download_bytes=len(data) - 1)
    with pytest.raises(ProtocolError, match="over the"):
        SharedTransfer().fetch_output(None, under, ImageRef("x.png"), tmp_path / "o.0002.png")
