"""Path mapping (core/config/paths.py): whole-component prefixes, separators, drive case."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from comfy_cluster.core.config.paths import POSIX, WINDOWS, PathMapper, detect_style


def win_linux() -> PathMapper:
    """Built per test, not at import: a broken mapper then fails its tests instead of hiding
    the whole module behind a collection error."""
    return PathMapper("U:/", "/home/user/ComfyUI/")


@pytest.mark.parametrize(
    ("local", "remote"),
    [
        ("U:/output/shot_010/frame.0001.png", "/home/user/ComfyUI/output/shot_010/frame.0001.png"),
        ("U:\\output\\shot_010\\a.png", "/home/user/ComfyUI/output/shot_010/a.png"),
        ("u:/input/a.png", "/home/user/ComfyUI/input/a.png"),
        ("U:/", "/home/user/ComfyUI"),
        ("U:", "/home/user/ComfyUI"),
        ("U://input//./a.png", "/home/user/ComfyUI/input/a.png"),
        ("U:/input/../a.png", "/home/user/ComfyUI/input/../a.png"),
        # no separator after the drive letter: the first name keeps all its letters
        ("U:input/a.png", "/home/user/ComfyUI/input/a.png"),
    ],
)
def test_windows_client_linux_server(local, remote):
    assert win_linux().to_remote(local) == remote


@pytest.mark.parametrize(
    ("remote", "local"),
    [
        ("/home/user/ComfyUI/output/a.png", "U:/output/a.png"),
        ("/home/user/ComfyUI/", "U:/"),
        ("/home/user/ComfyUI", "U:/"),
    ],
)
def test_linux_server_back_to_windows(remote, local):
    assert win_linux().to_local(remote) == local


@pytest.mark.parametrize(
    "outside",
    [
        "/home/user/ComfyUI2/output/a.png",  # prefix in the middle of a component
        "/home/user/comfyui/output/a.png",  # POSIX is case-sensitive
        "/srv/home/user/ComfyUI/a.png",  # prefix in the middle of the path
        "home/user/ComfyUI/a.png",  # relative
        "U:/output/a.png",  # already local
    ],
)
def test_remote_paths_outside_the_prefix_are_unchanged(outside):
    assert win_linux().to_local(outside) == outside
    assert not win_linux().covers_remote(outside)


@pytest.mark.parametrize("outside", ["V:/output/a.png", "/home/user/ComfyUI/a.png", "a.png"])
def test_local_paths_outside_the_prefix_are_unchanged(outside):
    assert win_linux().to_remote(outside) == outside
    assert not win_linux().covers_local(outside)


def test_linux_client_windows_server_uses_the_configured_separator():
    forward = PathMapper("/mnt/comfy", "D:/ComfyUI")
    back = PathMapper("/mnt/comfy/", "D:\\ComfyUI\\")
    assert forward.to_remote("/mnt/comfy/output/a.png") == "D:/ComfyUI/output/a.png"
    assert back.to_remote("/mnt/comfy/output/a.png") == "D:\\ComfyUI\\output\\a.png"
    assert back.to_local("d:/comfyui/Output\\a.png") == "/mnt/comfy/Output/a.png"
    assert back.to_remote("/mnt/comfyui/a.png") == "/mnt/comfyui/a.png"


def test_windows_sides_match_case_insensitively_on_component_boundaries():
    mapper = PathMapper("U:/Shots", "/srv/shots")
    assert mapper.to_remote("u:/SHOTS/a.png") == "/srv/shots/a.png"
    assert mapper.to_remote("U:/Shots2/a.png") == "U:/Shots2/a.png"


@pytest.mark.parametrize(
    ("remote_dir", "expected"),
    [
        ("U:", "U:/output/a.png"),  # nothing written after the drive: "/" (Nuke accepts it)
        ("D:\\ComfyUI/x", "D:/ComfyUI/x/output/a.png"),  # mixed: "/"
        ("D:\\ComfyUI\\x", "D:\\ComfyUI\\x\\output\\a.png"),  # backslashes only
    ],
)
def test_windows_side_separator_is_backslash_only_when_written_only_with_backslashes(
    remote_dir, expected
):
    assert PathMapper("/mnt/comfy", remote_dir).to_remote("/mnt/comfy/output/a.png") == expected


def test_forced_windows_side_without_drive_maps_back_without_doubling_the_root():
    """A share mounted as ``/mnt/share`` but matched the Windows way still gets ``/mnt/...``."""
    forced = PathMapper("/mnt/share", "/srv", local_style=WINDOWS)
    assert forced.to_local("/srv/shots/a.png") == "/mnt/share/shots/a.png"
    relative = PathMapper("share\\comfy", "/srv")
    assert relative.to_local("/srv/a.png") == "share\\comfy\\a.png"


def test_unc_share():
    mapper = PathMapper("//10.10.10.10/shares/ComfyUI", "/home/user/ComfyUI/")
    expected = "/home/user/ComfyUI/output/a.png"
    assert mapper.to_remote("\\\\10.10.10.10\\shares\\ComfyUI\\output\\a.png") == expected
    assert mapper.to_remote("//10.10.10.10/SHARES/comfyui/output/a.png") == expected
    assert mapper.to_local(expected) == "//10.10.10.10/shares/ComfyUI/output/a.png"
    assert mapper.to_remote("//10.10.10.11/shares/ComfyUI/a.png").startswith("//10.10.10.11")


def test_posix_to_posix_and_root_prefix():
    assert PathMapper("/mnt/nas", "/data").to_remote("/mnt/nas/x/y") == "/data/x/y"
    assert PathMapper("/", "/data").to_remote("/x/y") == "/data/x/y"
    assert PathMapper("/data", "/").to_remote("/data/x") == "/x"


@pytest.mark.parametrize(("local", "remote"), [("", "/srv"), ("U:/", ""), ("", "")])
def test_empty_directory_disables_mapping(local, remote):
    mapper = PathMapper(local, remote)
    assert not mapper.active
    assert mapper.to_remote("U:/a\\b") == "U:/a\\b"
    assert mapper.to_local("/srv/a") == "/srv/a"


def test_detect_style_and_forced_style():
    assert [detect_style(d) for d in ("U:/", "C:\\x", "//nas/s", "/srv", "rel")] == [
        WINDOWS,
        WINDOWS,
        WINDOWS,
        POSIX,
        POSIX,
    ]
    forced = PathMapper("/mnt/share", "/srv", local_style=WINDOWS)
    assert forced.to_remote("\\MNT\\Share\\a") == "/srv/a"
    with pytest.raises(ValueError):
        PathMapper("/a", "/b", local_style="mac")


def test_mapper_is_a_value():
    assert PathMapper("U:/", "/srv") == PathMapper("U:/", "/srv")
    assert len({PathMapper("U:/", "/srv"), PathMapper("U:/", "/srv")}) == 1
    assert PathMapper("U:/", "/srv") != PathMapper("V:/", "/srv")


# --------------------------------------------------------------------------- properties

_segment = st.text(
    alphabet=st.characters(
        whitelist_categories=("Lu", "Ll", "Nd"),
        whitelist_characters=" _-.()#@",
        max_codepoint=0x2FF,
    ),
    min_size=1,
    max_size=8,
).filter(lambda s: s not in (".", ".."))
_segments = st.lists(_segment, min_size=0, max_size=5)


@st.composite
def windows_dirs(draw):
    drive = draw(st.sampled_from("CDUZ"))
    root = draw(st.sampled_from([f"{drive}:", f"//nas{drive}/share"]))
    parts = draw(st.lists(_segment, max_size=3))
    sep = draw(st.sampled_from(["/", "\\"]))
    text = root.replace("/", sep) + sep + sep.join(parts) + draw(st.sampled_from(["", sep]))
    return text


@st.composite
def posix_dirs(draw):
    parts = draw(st.lists(_segment, max_size=3))
    return "/" + "/".join(parts) + draw(st.sampled_from(["", "/"]))


def _respell_windows(directory, parts, draw):
    """A path under a Windows ``directory`` spelled with random case and separators."""
    seps = st.sampled_from(["/", "\\", "//", "\\\\/"])
    # Only ASCII changes case here: Windows' own case table differs from Unicode's for a few
    # letters (dotless i), and drive letters and share names are what users respell.
    text = "".join(
        ch.swapcase() if ch.isascii() and draw(st.booleans()) else ch for ch in directory
    )
    for part in parts:
        text += draw(seps) + part
    return text


def _respell_posix(directory, parts, draw):
    seps = st.sampled_from(["/", "//", "/./"])
    text = directory
    for part in parts:
        text += draw(seps) + part
    return text


@st.composite
def mapping_cases(draw):
    """(mapper, a local path under dir_local, a remote path under dir_remote)."""
    windows_local = draw(st.booleans())
    local = draw(windows_dirs() if windows_local else posix_dirs())
    remote = draw(posix_dirs() if windows_local or draw(st.booleans()) else windows_dirs())
    mapper = PathMapper(local, remote)
    local_respell = _respell_windows if windows_local else _respell_posix
    remote_respell = _respell_windows if detect_style(remote) == WINDOWS else _respell_posix
    local_path = local_respell(local, draw(_segments), draw)
    remote_path = remote_respell(remote, draw(_segments), draw)
    return mapper, local_path, remote_path


@given(mapping_cases())
def test_round_trips_return_the_normalised_original(case):
    mapper, local_path, remote_path = case
    assert mapper.covers_local(local_path)
    assert mapper.covers_remote(remote_path)
    remote = mapper.to_remote(local_path)
    assert mapper.covers_remote(remote)
    assert mapper.to_local(remote) == mapper.normalise_local(local_path)
    local = mapper.to_local(remote_path)
    assert mapper.to_remote(local) == mapper.normalise_remote(remote_path)
    # normalising is idempotent and maps to the same place
    once = mapper.normalise_local(local_path)
    assert mapper.normalise_local(once) == once
    assert mapper.to_remote(once) == remote


@given(mapping_cases())
def test_target_side_separators(case):
    mapper, local_path, remote_path = case
    if detect_style(mapper.dir_remote) == POSIX:
        assert "\\" not in mapper.to_remote(local_path)
    if detect_style(mapper.dir_local) == POSIX:
        assert "\\" not in mapper.to_local(remote_path)


@given(posix_dirs(), _segment, _segment, _segments)
def test_prefix_only_on_component_boundaries(directory, tail, extra, rest):
    """``<dir><tail>`` (no separator in between) is a different directory: never rewritten."""
    if directory.endswith("/"):
        directory = directory.rstrip("/") or "/"
    if directory == "/":
        return  # every absolute path is under the root
    mapper = PathMapper(directory, "U:/mapped")
    sibling = directory + tail + "/" + "/".join([extra, *rest])
    assert mapper.to_remote(sibling) == sibling
    assert not mapper.covers_local(sibling)
