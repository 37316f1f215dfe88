"""The user file (core/config): edits over the base, atomic 0600 writes, clear errors."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from comfy_cluster.core.config import loading as config
from comfy_cluster.core.config.loading import (
    ServerEdit,
    UserConfig,
    load_servers,
    load_user_config,
    save_user_config,
    user_config_path,
)
from comfy_cluster.core.errors import ConfigError
from comfy_cluster.core.server import ServerConfig

BASE = [
    {"name": "a", "ip": "10.0.0.5", "priority": 1},
    {"name": "b", "ip": "10.0.0.6", "priority": 2},
]


@pytest.fixture
def user_file(tmp_path):
    return tmp_path / "nuke" / "comfy_cluster" / "servers.json"


@pytest.fixture
def env(user_file):
    """A base of two servers; the user file is under tmp_path (never the real ~/.nuke)."""
    return {"NUKE_COMFYUI_SERVERS": json.dumps(BASE), "COMFY_CLUSTER_CONFIG": str(user_file)}


def new_server(name="c", **kwargs):
    return ServerConfig(name=name, host=kwargs.pop("host", "10.0.0.7"), **kwargs)


# --------------------------------------------------------------------------- path


def test_user_config_path_override(tmp_path):
    path = tmp_path / "x.json"
    assert user_config_path({"COMFY_CLUSTER_CONFIG": str(path)}) == path


def test_user_config_path_default_and_empty_override():
    expected = Path.home() / ".nuke" / "comfy_cluster" / "servers.json"
    assert user_config_path({}) == expected
    assert user_config_path({"COMFY_CLUSTER_CONFIG": ""}) == expected


# --------------------------------------------------------------------------- edits (pure)


def test_missing_file_is_empty_and_leaves_base_unchanged(env, user_file):
    assert load_user_config(user_file) == UserConfig(source=f"user file {user_file}")
    servers = load_servers(env)
    assert [(s.name, s.enabled, s.priority, s.source) for s in servers] == [
        ("a", True, 1, "NUKE_COMFYUI_SERVERS"),
        ("b", True, 2, "NUKE_COMFYUI_SERVERS"),
    ]
    assert not user_file.exists()


def test_edits_return_new_values():
    empty = UserConfig()
    edited = empty.set_enabled("a", False)
    assert empty == UserConfig()
    assert edited.edits == {"a": ServerEdit(enabled=False)}
    assert edited.set_priority("a", 4).edits == {"a": ServerEdit(enabled=False, priority=4)}


def test_apply_edits_add_and_remove():
    base = tuple(config.parse_server_dict(d, "base") for d in BASE)
    user = (
        UserConfig()
        .set_enabled("a", False)
        .set_priority("a", 5)
        .remove_server("b")
        .add_server(new_server("c", token="t"))
    )
    result = user.apply(base)
    assert [(s.name, s.enabled, s.priority, s.source) for s in result] == [
        ("a", False, 5, "base"),
        ("c", True, 1, "user file"),
    ]
    assert result[1].token == "t"


def test_added_server_replaces_base_of_same_name():
    base = tuple(config.parse_server_dict(d, "base") for d in BASE)
    user = UserConfig().set_enabled("a", False).add_server(new_server("a", host="10.9.9.9"))
    result = user.apply(base)
    assert [(s.name, s.host, s.enabled) for s in result] == [
        ("b", "10.0.0.6", True),
        ("a", "10.9.9.9", True),
    ]
    assert "a" not in user.edits  # the added record carries its own values


def test_edits_of_added_server_change_the_record():
    user = UserConfig().add_server(new_server("c")).set_enabled("c", False).set_priority("c", 3)
    (server,) = user.added
    assert (server.enabled, server.priority) == (False, 3)
    assert user.edits == {}


def test_remove_added_server_forgets_it_and_restore_base():
    user = UserConfig().add_server(new_server("c")).remove_server("c")
    assert user.added == ()
    base = tuple(config.parse_server_dict(d, "base") for d in BASE)
    user = UserConfig().remove_server("a")
    assert [s.name for s in user.apply(base)] == ["b"]
    assert [s.name for s in user.restore_server("a").apply(base)] == ["a", "b"]
    # adding a server under a removed name brings that name back
    assert [s.name for s in user.add_server(new_server("a")).apply(base)] == ["b", "a"]


def test_priority_one_is_the_most_preferred_and_allowed():
    base = tuple(config.parse_server_dict(d, "base") for d in BASE)
    user = UserConfig().set_priority("b", 1).add_server(new_server("c")).set_priority("c", 1)
    assert [(s.name, s.priority) for s in user.apply(base)] == [("a", 1), ("b", 1), ("c", 1)]


def test_adding_a_server_again_replaces_it_and_keeps_the_others():
    user = (
        UserConfig()
        .add_server(new_server("c"))
        .add_server(new_server("d", host="10.0.0.8"))
        .add_server(new_server("c", host="10.0.0.9"))
    )
    assert [(s.name, s.host) for s in user.added] == [("d", "10.0.0.8"), ("c", "10.0.0.9")]


@pytest.mark.parametrize("value", [0, -1, 1.5, "2", True, None])
def test_set_priority_rejects_bad_values(value):
    with pytest.raises(ConfigError) as info:
        UserConfig().set_priority("a", value)
    assert (info.value.field, info.value.server) == ("priority", "a")


@pytest.mark.parametrize("value", [1, "yes", None])
def test_set_enabled_rejects_non_bool(value):
    with pytest.raises(ConfigError) as info:
        UserConfig().set_enabled("a", value)
    assert info.value.field == "enabled"


def test_add_server_validates_the_record():
    with pytest.raises(ConfigError) as info:
        UserConfig().add_server(new_server("c", port=0))
    assert info.value.field == "port"
    with pytest.raises(TypeError):
        UserConfig().add_server({"name": "c"})  # type: ignore[arg-type]


# --------------------------------------------------------------------------- file


def test_save_and_load_round_trip(env, user_file):
    user = (
        UserConfig()
        .set_enabled("a", False)
        .remove_server("b")
        .add_server(new_server("c", token="secret", headers={"X-Key": "k"}, tags=("gpu",)))
    )
    assert save_user_config(user, user_file) == user_file
    loaded = load_user_config(user_file)
    source = f"user file {user_file}"
    assert loaded.edits == user.edits
    assert loaded.removed == frozenset({"b"})
    assert loaded.added == (
        ServerConfig(
            name="c",
            host="10.0.0.7",
            token="secret",
            headers={"X-Key": "k"},
            tags=("gpu",),
            source=source,
        ),
    )
    servers = load_servers(env)
    assert [(s.name, s.enabled, s.source) for s in servers] == [
        ("a", False, "NUKE_COMFYUI_SERVERS"),
        ("c", True, source),
    ]


def test_disabled_added_server_stays_disabled_after_save_and_load(env, user_file):
    """A server the user switched off must not come back on at the next start of Nuke."""
    user = UserConfig().add_server(new_server("c", enabled=False, priority=4))
    save_user_config(user, user_file)
    (loaded,) = load_user_config(user_file).added
    assert (loaded.name, loaded.enabled, loaded.priority) == ("c", False, 4)
    assert [(s.name, s.enabled) for s in load_servers(env)] == [
        ("a", True),
        ("b", True),
        ("c", False),
    ]


def test_disabling_an_added_server_survives_save_and_load(env, user_file):
    user = UserConfig().add_server(new_server("c")).set_enabled("c", False)
    save_user_config(user, user_file)
    assert [(s.name, s.enabled) for s in load_servers(env)][-1] == ("c", False)
    # and switching it back on is saved too
    save_user_config(load_user_config(user_file).set_enabled("c", True), user_file)
    assert [(s.name, s.enabled) for s in load_servers(env)][-1] == ("c", True)


def test_disabled_base_server_stays_disabled_after_save_and_load(env, user_file):
    save_user_config(UserConfig().set_enabled("b", False), user_file)
    assert load_user_config(user_file).edits == {"b": ServerEdit(enabled=False)}
    assert [(s.name, s.enabled) for s in load_servers(env)] == [("a", True), ("b", False)]


def test_hand_written_edit_to_priority_one_is_read(env, user_file):
    user_file.parent.mkdir(parents=True)
    user_file.write_text('{"edits": {"b": {"priority": 1}}}', encoding="utf-8")
    assert [(s.name, s.priority) for s in load_servers(env)] == [("a", 1), ("b", 1)]


def test_saved_file_reads_like_the_documented_example(user_file):
    """People edit this file by hand: version first, two-space indents, keys in the order of
    the documentation (not sorted), one trailing newline."""
    user = UserConfig().add_server(new_server("c")).set_enabled("a", False).remove_server("b")
    save_user_config(user, user_file)
    text = user_file.read_text(encoding="utf-8")
    assert text.startswith('{\n  "version": 1,\n  "added": {\n    "c": {\n      "host": ')
    assert text.endswith("}\n") and not text.endswith("\n\n")
    document = json.loads(text)
    assert list(document) == ["version", "added", "edits", "removed"]
    assert list(document["added"]["c"])[:3] == ["host", "port", "scheme"]


def test_removed_base_server_stays_removed(env, user_file):
    save_user_config(UserConfig().remove_server("b"), user_file)
    document = json.loads(user_file.read_text())
    assert document["removed"] == ["b"]
    assert [s.name for s in load_servers(env)] == ["a"]


def test_user_path_argument_overrides_environment(env, tmp_path):
    other = tmp_path / "other.json"
    save_user_config(UserConfig().set_enabled("a", False), other)
    assert [s.enabled for s in load_servers(env, user_path=other)] == [False, True]
    assert [s.enabled for s in load_servers(env)] == [True, True]


def test_default_path_comes_from_environment(monkeypatch, tmp_path):
    target = tmp_path / "env.json"
    monkeypatch.setenv("COMFY_CLUSTER_CONFIG", str(target))
    save_user_config(UserConfig().remove_server("x"))
    assert load_user_config().removed == frozenset({"x"})


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_file_is_private(user_file):
    user_file.parent.mkdir(parents=True)
    user_file.write_text("{}")
    os.chmod(user_file, 0o644)
    save_user_config(UserConfig().add_server(new_server(token="t")), user_file)
    assert stat.S_IMODE(user_file.stat().st_mode) == 0o600


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_new_folder_for_the_file_is_private(tmp_path):
    """The folder created for the token file is the user's alone (mode 0700)."""
    old_umask = os.umask(0o022)
    try:
        target = tmp_path / "home" / ".nuke" / "comfy_cluster" / "servers.json"
        save_user_config(UserConfig().add_server(new_server(token="t")), target)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700


@pytest.mark.skipif(os.name != "posix", reason="directory fsync is POSIX only")
def test_write_is_durable_before_and_after_the_rename(monkeypatch, user_file):
    """Documented: the temp file is flushed to disk, then renamed, and the rename made durable.

    Each ``fsync`` is recorded with what it syncs: the file must already hold the whole text
    (a buffered write synced too early loses it on a crash), and the folder is synced last.
    """
    synced = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        info = os.fstat(fd)
        synced.append(("dir" if stat.S_ISDIR(info.st_mode) else "file", info.st_size))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    save_user_config(UserConfig().remove_server("x"), user_file)
    size = user_file.stat().st_size
    assert [kind for kind, _ in synced] == ["file", "dir"]
    assert synced[0] == ("file", size)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_saving_leaks_no_file_descriptors(user_file):
    """Nuke sessions last days and the panel saves on every edit."""
    save_user_config(UserConfig(), user_file)
    before = len(os.listdir("/proc/self/fd"))
    for n in range(20):
        save_user_config(UserConfig().remove_server(f"s{n}"), user_file)
    assert len(os.listdir("/proc/self/fd")) == before


@pytest.mark.parametrize(
    ("target", "attribute", "error"),
    [
        (json, "dumps", TypeError),
        (os, "fsync", ConfigError),
        (os, "replace", ConfigError),
        (os, "chmod", ConfigError),
    ],
)
def test_crash_mid_write_keeps_the_old_file(monkeypatch, user_file, target, attribute, error):
    save_user_config(UserConfig().remove_server("old"), user_file)
    before = user_file.read_bytes()

    def crash(*args, **kwargs):
        if error is TypeError:
            raise TypeError("Object of type X is not JSON serializable")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(target, attribute, crash)
    with pytest.raises(error) as info:
        save_user_config(UserConfig().remove_server("new"), user_file)
    monkeypatch.undo()
    if error is ConfigError:
        assert str(user_file) in str(info.value)
        assert "No space left" in str(info.value)
    assert user_file.read_bytes() == before
    assert sorted(p.name for p in user_file.parent.iterdir()) == [user_file.name]  # no temp left
    assert load_user_config(user_file).removed == frozenset({"old"})


USER_ERRORS = [
    ('{"removed": ["a"],\n "edits": }', None, "line 2, column 11"),
    ("[]", None, "expected a JSON object"),
    ('{"version": 2}', "version", "not supported"),
    ('{"extra": 1}', "extra", "unknown key"),
    ('{"added": []}', "added", "keyed by name"),
    ('{"added": {"c": {"port": 8188}}}', "ip", "missing host"),
    ('{"added": {"c": {"ip": "h", "name": "d"}}}', "name", "different name"),
    ('{"added": {"c": 1}}', "added", "must be an object"),
    ('{"edits": {"a": {"enabled": "no"}}}', "enabled", "true or false"),
    ('{"edits": {"a": {"priority": 0}}}', "priority", "1 or more"),
    ('{"edits": {"a": {"colour": "red"}}}', "edits", "'enabled' and/or 'priority'"),
    ('{"edits": []}', "edits", "keyed by name"),
    ('{"removed": "a"}', "removed", "array of names"),
]


@pytest.mark.parametrize(("text", "field", "words"), USER_ERRORS)
def test_user_file_errors_name_file_and_field(env, user_file, text, field, words):
    user_file.parent.mkdir(parents=True)
    user_file.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_servers(env)
    assert info.value.source == f"user file {user_file}"
    assert info.value.field == field
    assert words in str(info.value)
    assert str(user_file) in str(info.value)
