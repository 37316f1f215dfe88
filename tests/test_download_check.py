"""Downloads are checked (core/image_check.py, core/server_files.py, core/transfer.py): only a whole
image of the kind the server named, within ``max_download_bytes``, is ever written; otherwise a
clear error naming server, file and fault, and nothing on disk (not even a ``.part``)."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from fixtures_sim import INVERT_PROMPT, wait_until

from comfy_cluster.core.client import ComfyClient
from comfy_cluster.core.connection_settings import Timeouts
from comfy_cluster.core.errors import ProtocolError
from comfy_cluster.core.image_check import (
    HEAD_BYTES,
    KINDS,
    image_file_ok,
    image_file_problem,
    image_problem,
)
from comfy_cluster.core.protocol import ImageRef
from comfy_cluster.core.server import ServerConfig
from comfy_cluster.core.server_text import ELLIPSIS
from comfy_cluster.core.transfer import SharedTransfer, existing_frames
from comfy_cluster.sim.harness import SimServer

FAST = Timeouts(connect=1.0, read=5.0)


def image_bytes(fmt: str, size: tuple[int, int] = (8, 8)) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, (200, 100, 50)).save(out, fmt)
    return out.getvalue()


#: A minimal EXR start: magic, version 2, then the header (not parsed: only the start is checked).
EXR = b"v/1\x01\x02\x00\x00\x00channels\x00chlist\x00" + b"\x00" * 64
GOOD = {
    "PNG": image_bytes("PNG"),
    "JPEG": image_bytes("JPEG"),
    "WebP": image_bytes("WEBP"),
    "TIFF": image_bytes("TIFF"),
    "EXR": EXR,
}
HTML = b"<!DOCTYPE html>\n<html><body><h1>502 Bad Gateway</h1></body></html>\n"


def check(kind: str, data: bytes) -> Any:
    return image_problem(kind, data[:HEAD_BYTES], data[-64:], len(data))


# --- the pure check ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(GOOD))
def test_whole_images_of_each_kind_pass(kind: str) -> None:
    assert check(kind, GOOD[kind]) is None


@pytest.mark.parametrize(
    ("kind", "data", "says"),
    [
        ("PNG", HTML, "an HTML page, not a PNG image"),
        ("PNG", b"", "empty"),
        ("PNG", GOOD["PNG"][: len(GOOD["PNG"]) // 2], "IEND"),
        ("PNG", GOOD["PNG"][:8] + b"\x00" * 60, "IHDR"),
        ("PNG", GOOD["JPEG"], "a JPEG image, not a PNG image"),
        ("JPEG", GOOD["JPEG"][:-10], "end-of-image"),
        ("JPEG", b'{"error": "no such file"}', "JSON, not a JPEG image"),
        ("WebP", GOOD["WebP"][:-4], "truncated"),
        ("EXR", GOOD["PNG"], "a PNG image, not an EXR image"),
        ("TIFF", b"hello world", "not an image we know"),
    ],
)
def test_what_is_not_the_named_image_is_refused_with_a_reason(
    kind: str, data: bytes, says: str
) -> None:
    problem = check(kind, data)
    assert problem is not None and says in problem


def test_image_file_ok_judges_by_the_files_name_and_bytes(tmp_path: Path) -> None:
    for suffix, kind in KINDS.items():
        good = tmp_path / f"good{suffix}"
        good.write_bytes(GOOD[kind])
        assert image_file_ok(good), suffix
    (tmp_path / "page.png").write_bytes(HTML)
    (tmp_path / "half.png").write_bytes(GOOD["PNG"][:40])
    (tmp_path / "empty.exr").write_bytes(b"")
    (tmp_path / "movie.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    for name in ("page.png", "half.png", "empty.exr", "movie.mp4", "missing.png"):
        assert not image_file_ok(tmp_path / name), name
    assert "not an image kind we accept" in (image_file_problem(tmp_path / "movie.mp4") or "")
    assert image_file_ok(str(tmp_path / "good.png"))  # str paths too


def test_image_file_ok_reads_only_the_ends_of_a_huge_file(tmp_path: Path) -> None:
    """A sparse 8 GiB "PNG" with a good start and end: judged in well under a second."""
    png = GOOD["PNG"]
    path = tmp_path / "huge.png"
    with path.open("wb") as fh:
        fh.write(png[:33])
        fh.seek(8 << 30)
        fh.write(png[-12:])
    start = time.perf_counter()
    assert image_file_ok(path)
    assert time.perf_counter() - start < 0.5
    with path.open("r+b") as fh:
        fh.truncate((8 << 30) - 1)  # the end cut off
    assert not image_file_ok(path)


def test_existing_frames_can_count_only_whole_images(tmp_path: Path) -> None:
    pattern = str(tmp_path / "shot.####.png")
    (tmp_path / "shot.0001.png").write_bytes(GOOD["PNG"])
    (tmp_path / "shot.0002.png").write_bytes(HTML)
    (tmp_path / "shot.0003.png").write_bytes(GOOD["PNG"][:-1])
    assert existing_frames(pattern, range(1, 5)) == (1, 2, 3)
    assert existing_frames(pattern, range(1, 5), whole_images=True) == (1,)


# --- downloads from a server --------------------------------------------------------------------


def cfg(sim: SimServer, **kw: Any) -> ServerConfig:
    return ServerConfig(name="s1", host="127.0.0.1", port=sim.port, **kw)


def rendered(sim: SimServer) -> ImageRef:
    """A real output file on ``sim`` (rendered by it)."""
    with ComfyClient(cfg(sim), timeouts=FAST) as client:
        pid = client.submit(INVERT_PROMPT)
        entry = wait_until(lambda: client.history(pid))
    (image,) = [i for node in entry["outputs"].values() for i in node.get("images", [])]
    return ImageRef(image["filename"], image["subfolder"], image["type"])


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize(
    ("fault", "says"),
    [
        ("html", "an HTML page, not a PNG image"),
        ("empty", "an empty answer (0 bytes)"),
        ("truncated", "without its IEND chunk"),
        ("jpeg", "a JPEG image, not a PNG image"),
    ],
)
def test_a_bad_view_answer_is_refused_and_nothing_is_written(
    sim_factory: Callable[..., SimServer], tmp_path: Path, fault: str, says: str
) -> None:
    sim = sim_factory()
    ref = rendered(sim)
    sim.set_faults(view_fault=fault)
    dest = tmp_path / "out" / "shot.0001.png"
    with ComfyClient(cfg(sim), timeouts=FAST) as client, pytest.raises(ProtocolError) as info:
        client.download(ref, dest)
    message = str(info.value)
    assert info.value.server == "s1" and message.startswith("s1: GET /view ")
    assert ref.filename in message and says in message and "nothing was written" in message
    assert leftovers(dest.parent) == []


def test_a_refused_download_leaves_an_existing_file_untouched(
    sim_factory: Callable[..., SimServer], tmp_path: Path
) -> None:
    sim = sim_factory()
    ref = rendered(sim)
    dest = tmp_path / "shot.0001.png"
    dest.write_bytes(GOOD["PNG"])
    sim.set_faults(view_fault="html")
    with ComfyClient(cfg(sim), timeouts=FAST) as client, pytest.raises(ProtocolError):
        client.download(ref, dest)
    assert dest.read_bytes() == GOOD["PNG"] and leftovers(tmp_path) == ["shot.0001.png"]
    sim.set_faults(view_fault=None)
    with ComfyClient(cfg(sim), timeouts=FAST) as client:
        client.download(ref, dest)  # a good answer still replaces it
    assert image_file_ok(dest) and dest.read_bytes() != GOOD["PNG"]


def test_a_download_over_max_download_bytes_stops_at_the_cap(
    sim_factory: Callable[..., SimServer], tmp_path: Path, read_meter: dict[str, int]
) -> None:
    sim = sim_factory()
    ref = rendered(sim)
    sim.set_faults(view_fault="endless")  # a PNG start, then bytes for ever
    cap = 3 << 20
    dest = tmp_path / "shot.0001.png"
    with ComfyClient(cfg(sim, max_download_bytes=cap), timeouts=FAST) as client:
        read_meter["bytes"] = 0
        with pytest.raises(ProtocolError) as info:
            client.download(ref, dest)
    assert "over the 3 MiB cap" in str(info.value) and ref.filename in str(info.value)
    assert read_meter["bytes"] == cap + 1  # read up to cap + 1, never more
    assert leftovers(tmp_path) == []


def test_an_announced_size_over_the_cap_is_refused_before_reading(
    sim_factory: Callable[..., SimServer], tmp_path: Path, read_meter: dict[str, int]
) -> None:
    sim = sim_factory()
    ref = rendered(sim)  # a real PNG of a few hundred bytes, sent with its Content-Length
    with ComfyClient(cfg(sim, max_download_bytes=64), timeouts=FAST) as client:
        read_meter["bytes"] = 0
        with pytest.raises(ProtocolError) as info:
            client.download(ref, tmp_path / "x.png")
    assert "bytes announced" in str(info.value) and read_meter["bytes"] == 0
    assert leftovers(tmp_path) == []


def test_keyboard_interrupt_mid_download_leaves_no_part_file(
    sim_factory: Callable[..., SimServer], tmp_path: Path, read_meter: dict[str, int]
) -> None:
    sim = sim_factory()
    ref = rendered(sim)
    sim.set_faults(view_fault="endless")
    with ComfyClient(cfg(sim), timeouts=FAST) as client:
        read_meter["bytes"], read_meter["interrupt_at"] = 0, 4 << 20
        with pytest.raises(KeyboardInterrupt):
            client.download(ref, tmp_path / "shot.0001.png")
    assert read_meter["bytes"] > 4 << 20  # interrupted mid-download, a .part being written
    assert leftovers(tmp_path) == []


def test_an_unaccepted_kind_is_refused_before_any_request(tmp_path: Path) -> None:
    server = ServerConfig(name="s1", host="127.0.0.1", port=9)  # nothing listens: never asked
    with ComfyClient(server, timeouts=FAST) as client, pytest.raises(ProtocolError) as info:
        client.download({"filename": "clip.mp4"}, tmp_path / "x.png")
    assert "'.mp4' is not an image kind we accept" in str(info.value)
    assert leftovers(tmp_path) == []


# --- shared storage: the same rule for files copied from the server's folder --------------------


def shared(tmp_path: Path, **kw: Any) -> tuple[ServerConfig, Path]:
    local = tmp_path / "mnt" / "ComfyUI"
    (local / "output").mkdir(parents=True)
    server = ServerConfig(
        name="r1", host="127.0.0.1", port=1, dir_local=str(local), dir_remote="/srv/C", **kw
    )
    return server, local / "output"


@pytest.mark.parametrize(
    ("data", "says"),
    [(HTML, "an HTML page"), (b"", "empty"), (GOOD["PNG"][:50], "IEND")],
)
def test_shared_storage_copies_only_whole_images(tmp_path: Path, data: bytes, says: str) -> None:
    server, output = shared(tmp_path)
    (output / "x_00001_.png").write_bytes(data)
    dest = tmp_path / "out" / "o.0001.png"
    with pytest.raises(ProtocolError) as info:
        SharedTransfer().fetch_output(None, server, ImageRef("x_00001_.png"), dest)
    assert says in str(info.value) and "x_00001_.png" in str(info.value)
    assert leftovers(dest.parent) == []


def test_a_long_server_file_name_is_cut_in_the_refusal(tmp_path: Path) -> None:
    """The name of a junk file is the server's text: the refusal shows at most 200 of its
    characters, like every server file name in our messages, so one name is one short line."""
    server, output = shared(tmp_path)
    name = "x" * 236 + ".png"  # a legal name of 240 characters
    (output / name).write_bytes(HTML)
    with pytest.raises(ProtocolError) as info:
        SharedTransfer().fetch_output(None, server, ImageRef(name), tmp_path / "o.0001.png")
    message = str(info.value)
    assert "x" * 199 + ELLIPSIS in message and "x" * 200 not in message, message


def test_shared_storage_respects_max_download_bytes(tmp_path: Path) -> None:
    server, output = shared(tmp_path, max_download_bytes=1000)
    big = image_bytes("PNG", (512, 512))
    (output / "x_00001_.png").write_bytes(big)
    assert len(big) > 1000
    dest = tmp_path / "out" / "o.0001.png"
    with pytest.raises(ProtocolError) as info:
        SharedTransfer().fetch_output(None, server, ImageRef("x_00001_.png"), dest)
    assert "over the 1000 bytes cap" in str(info.value) and leftovers(dest.parent) == []
    assert os.path.getsize(output / "x_00001_.png") == len(big)  # the server's file is untouched
