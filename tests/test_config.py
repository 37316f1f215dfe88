"""Base server sources (core/config): NUKE_COMFYUI_SERVERS, numbered, legacy, default."""

from __future__ import annotations

import json
import os
import socket

import pytest

from comfy_cluster.core.config.loading import (
    load_base_servers,
    load_servers,
    parse_server_dict,
    server_to_dict,
)
from comfy_cluster.core.errors import ConfigError
from comfy_cluster.core.server import ServerConfig

FULL = {
    "name": "a",
    "ip": "10.0.0.5",
    "port": 8188,
    "dir_local": "U:/",
    "dir_remote": "/srv/comfy/",
    "priority": 1,
    "enabled": True,
}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Reading the configuration must never connect or resolve anything."""

    def refuse(*args, **kwargs):
        raise AssertionError("configuration code touched the network")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture
def env(tmp_path):
    """A clean environment whose user file lives in tmp_path (never the real ~/.nuke)."""
    return {"COMFY_CLUSTER_CONFIG": str(tmp_path / "user.json"), "HOME": str(tmp_path)}


def servers_env(env, value):
    return {**env, "NUKE_COMFYUI_SERVERS": value if isinstance(value, str) else json.dumps(value)}


# --------------------------------------------------------------------------- NUKE_COMFYUI_SERVERS


def test_servers_variable_full_record(env):
    (server,) = load_base_servers(servers_env(env, [FULL]))
    assert server == ServerConfig(
        name="a",
        host="10.0.0.5",
        port=8188,
        dir_local="U:/",
        dir_remote="/srv/comfy/",
        priority=1,
        enabled=True,
        source="NUKE_COMFYUI_SERVERS",
    )


def test_servers_variable_optional_keys(env):
    item = {
        **FULL,
        "host": "10.0.0.5",
        "scheme": "HTTPS",
        "headers": {"X-Key": "secret"},
        "token": "tok",
        "verify_tls": False,
        "max_in_flight": 3,
        "tags": ["gpu", "a100"],
    }
    (server,) = load_base_servers(servers_env(env, [item]))
    assert server.scheme == "https"
    assert server.url == "https://10.0.0.5:8188"
    assert server.request_headers() == {"X-Key": "secret", "Authorization": "Bearer tok"}
    assert (server.verify_tls, server.max_in_flight, server.tags) == (False, 3, ("gpu", "a100"))


def test_servers_variable_defaults(env):
    """No name: host:port; no port: 8188; no priority: the position in the list."""
    servers = load_base_servers(servers_env(env, [{"host": "h1"}, {"ip": "h2", "port": 9000}]))
    assert [(s.name, s.host, s.port, s.priority, s.enabled) for s in servers] == [
        ("h1:8188", "h1", 8188, 1, True),
        ("h2:9000", "h2", 9000, 2, True),
    ]
    assert all(s.token is None and s.headers == {} and s.max_in_flight == 1 for s in servers)


def test_servers_variable_url_key_and_ipv6(env):
    servers = load_base_servers(
        servers_env(env, [{"url": "https://gpu.example:443"}, {"ip": "::1"}, {"ip": "[fe80::2]"}])
    )
    assert [(s.scheme, s.host, s.port) for s in servers] == [
        ("https", "gpu.example", 443),
        ("http", "::1", 8188),
        ("http", "fe80::2", 8188),
    ]
    assert servers[1].name == "[::1]:8188"
    assert servers[1].url == "http://[::1]:8188"


def test_servers_variable_file(env, tmp_path):
    path = tmp_path / "servers.json"
    path.write_text(json.dumps([FULL, {"name": "b", "ip": "10.0.0.6"}]), encoding="utf-8")
    servers = load_base_servers(servers_env(env, str(path)))
    assert [s.name for s in servers] == ["a", "b"]
    assert servers[0].source == f"NUKE_COMFYUI_SERVERS ({path})"


def test_servers_variable_missing_file(env, tmp_path):
    with pytest.raises(ConfigError) as info:
        load_base_servers(servers_env(env, str(tmp_path / "nope.json")))
    assert info.value.source == "NUKE_COMFYUI_SERVERS"
    assert "no such file" in str(info.value)


def test_servers_file_malformed_names_file_line_and_column(env, tmp_path):
    path = tmp_path / "servers.json"
    path.write_text('[\n  {"name": "a", "ip": }\n]\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_base_servers(servers_env(env, str(path)))
    message = str(info.value)
    assert "NUKE_COMFYUI_SERVERS" in message and str(path) in message
    assert "line 2, column 23" in message


def test_servers_variable_malformed_json_position(env):
    with pytest.raises(ConfigError) as info:
        load_base_servers(servers_env(env, '[{"name": "a", "ip": "x",}]'))
    assert info.value.source == "NUKE_COMFYUI_SERVERS"
    assert "malformed JSON at line 1, column 26" in str(info.value)
    assert str(info.value).startswith("NUKE_COMFYUI_SERVERS: ")


BAD_ITEMS = [
    # (server list, field, words in the message)
    ([], None, "empty"),
    ({"name": "a"}, None, "JSON array"),
    (["10.0.0.5"], None, "expected a server object, got string"),
    ([{"name": "a"}], "ip", "missing host"),
    ([{"name": "a", "ip": ""}], "ip", "missing host"),
    ([{"name": "a", "ip": "h", "port": 0}], "port", "out of range"),
    ([{"name": "a", "ip": "h", "port": 70000}], "port", "out of range"),
    ([{"name": "a", "ip": "h", "port": "8188"}], "port", "must be an integer, got string"),
    ([{"name": "a", "ip": "h", "port": True}], "port", "must be an integer, got boolean"),
    ([{"name": "a", "ip": "h"}, {"name": "a", "ip": "g"}], "name", "duplicate server name 'a'"),
    ([{"ip": "h"}, {"ip": "h", "port": 8188}], "name", "duplicate server name 'h:8188'"),
    ([{"name": "a", "ip": "h", "prt": 1}], "prt", "did you mean 'port'"),
    ([{"name": "a", "ip": "h", "enabled": "yes"}], "enabled", "must be true or false"),
    ([{"name": "a", "ip": "h", "priority": 0}], "priority", "1 or more"),
    ([{"name": "a", "ip": "h", "priority": 1.5}], "priority", "must be an integer"),
    ([{"name": "a", "ip": "h", "max_in_flight": 0}], "max_in_flight", "1 or more"),
    # JSON true is not the integer 1 (bool is an int subclass in Python)
    ([{"name": "a", "ip": "h", "priority": True}], "priority", "must be an integer, got boolean"),
    (
        [{"name": "a", "ip": "h", "max_in_flight": True}],
        "max_in_flight",
        "must be an integer, got boolean",
    ),
    ([{"name": 5, "ip": "h"}], "name", "must be a string"),
    ([{"name": " ", "ip": "h"}], "name", "must not be empty"),
    ([{"name": "a", "ip": 10}], "ip", "must be a string"),
    ([{"name": "a", "ip": "h:8188"}], "ip", "contains a port"),
    ([{"name": "a", "ip": "http://h"}], "ip", "host name or IP address"),
    ([{"name": "a", "ip": "h", "host": "g"}], "host", "disagree"),
    ([{"name": "a", "url": "h", "ip": "h"}], "ip", "not both"),
    ([{"name": "a", "url": "ftp://h"}], "url", "http or https"),
    ([{"name": "a", "url": "http://h/comfy"}], "url", "without a path"),
    ([{"name": "a", "url": "http://u:p@h"}], "url", "credentials"),
    ([{"name": "a", "url": "http://h:99999"}], "port", "out of range"),
    ([{"name": "a", "url": "http://h:81", "port": 82}], "port", "disagrees"),
    ([{"name": "a", "ip": "h", "scheme": "ws"}], "scheme", "'http' or 'https'"),
    ([{"name": "a", "ip": "h", "headers": {"X": 1}}], "headers", "must be a string"),
    ([{"name": "a", "ip": "h", "headers": ["X"]}], "headers", "must be an object"),
    ([{"name": "a", "ip": "h", "tags": "gpu"}], "tags", "array of strings"),
    ([{"name": "a", "ip": "h", "tags": [1]}], "tags", "array of strings"),
    ([{"name": "a", "ip": "h", "token": 12}], "token", "must be a string"),
    ([{"name": "a", "ip": "h", "dir_local": 1}], "dir_local", "must be a string"),
    ([{"name": "a", "ip": "h", "ca_bundle": True}], "ca_bundle", "must be a string"),
    ([{"name": "a", "ip": "h", "ca_bundle": ["/ca.pem"]}], "ca_bundle", "must be a string"),
    ([{"name": "a", "ip": "h", "ca_bundle": "ca.pem"}], "ca_bundle", "absolute path"),
    ([{"name": "a", "ip": "h", "ca_bundle": "/nonexistent/ca.pem"}], "ca_bundle", "no such file"),
]


@pytest.mark.parametrize(("items", "field", "words"), BAD_ITEMS)
def test_servers_variable_errors_name_source_and_field(env, items, field, words):
    with pytest.raises(ConfigError) as info:
        load_base_servers(servers_env(env, items))
    error = info.value
    assert error.source == "NUKE_COMFYUI_SERVERS"
    assert error.field == field
    assert words in str(error)
    assert str(error).startswith("NUKE_COMFYUI_SERVERS: " + (f"{field}: " if field else ""))
    assert isinstance(error, ValueError)


@pytest.mark.parametrize(
    ("items", "words"),
    [
        ({"name": "a"}, "got object"),
        ([{"name": "a", "ip": "h", "headers": ["X"]}], "must be an object of strings, got array"),
        ([{"name": "a", "ip": "h", "tags": {"gpu": 1}}], "must be an array of strings, got object"),
        ([{"name": "a", "ip": None}], "missing host"),
        ([{"name": "a", "ip": "h", "port": 81.0}], "must be an integer, got number"),
        ([{"name": "a", "ip": "h", "port": None}], "must be an integer, got null"),
    ],
)
def test_errors_speak_of_json_types(env, items, words):
    """Users wrote JSON: messages say object/array/number/null, never dict/list/float/None."""
    with pytest.raises(ConfigError, match=words):
        load_base_servers(servers_env(env, items))


@pytest.mark.parametrize("port", [1, 65535])
def test_port_range_is_inclusive(env, port):
    (server,) = load_base_servers(servers_env(env, [{"ip": "h", "port": port}]))
    assert server.port == port
    (legacy,) = load_base_servers({**env, "NUKE_COMFYUI_URL": f"h:{port}"})
    assert legacy.port == port


@pytest.mark.parametrize(
    ("item", "url"),
    [
        ({"url": "https://h", "scheme": "HTTPS"}, "https://h:8188"),
        ({"url": "http://h:81", "port": 81}, "http://h:81"),
        ({"ip": "h", "scheme": "https"}, "https://h:8188"),
    ],
)
def test_url_may_repeat_its_scheme_and_port(env, item, url):
    (server,) = load_base_servers(servers_env(env, [item]))
    assert server.url == url


def test_scheme_disagreeing_with_url_is_an_error(env):
    with pytest.raises(ConfigError, match="disagrees with url") as info:
        load_base_servers(servers_env(env, [{"url": "https://h", "scheme": "http"}]))
    assert info.value.field == "scheme"


def test_error_names_an_unnamed_entry_by_position(env):
    with pytest.raises(ConfigError, match=r"server #2: port 0 is out of range"):
        load_base_servers(servers_env(env, [{"ip": "h"}, {"ip": "g", "port": 0}]))


def test_error_outside_a_list_has_no_position():
    with pytest.raises(ConfigError) as info:
        parse_server_dict({"ip": "h", "port": 0}, "user file x")
    assert str(info.value).startswith("user file x: port: port 0 is out of range")


def test_duplicate_names_say_which_entries(env):
    items = [{"name": "a", "ip": "h"}, {"name": "b", "ip": "g"}, {"name": "a", "ip": "f"}]
    with pytest.raises(ConfigError, match=r"servers #1 and #3"):
        load_base_servers(servers_env(env, items))


@pytest.mark.parametrize(
    ("url", "host", "port"),
    [
        ("::1", "::1", 8188),
        ("http://[::1]:8189", "::1", 8189),
        ("https://[fe80::2]", "fe80::2", 8188),
    ],
)
def test_legacy_url_ipv6_bare_or_bracketed(env, url, host, port):
    (server,) = load_base_servers({**env, "NUKE_COMFYUI_URL": url})
    assert (server.host, server.port) == (host, port)


def test_legacy_url_bracketed_ipv6_without_scheme(env):
    """Addresses without a scheme get http:// (documented); IPv6 ones start with '['."""
    (server,) = load_base_servers({**env, "NUKE_COMFYUI_URL": "[::1]:8189"})
    assert (server.host, server.port) == ("::1", 8189)


def test_bracketed_ipv6_ip_with_a_port_is_an_error(env):
    with pytest.raises(ConfigError, match="port") as info:
        load_base_servers(servers_env(env, [{"ip": "[::1]:8188"}]))
    assert info.value.field == "ip"


@pytest.mark.parametrize("host", ["[::1", "::1]"])
def test_ip_with_unbalanced_brackets_is_an_error(env, host):
    with pytest.raises(ConfigError):
        load_base_servers(servers_env(env, [{"ip": host}]))


def test_error_says_which_entry(env):
    with pytest.raises(ConfigError, match=r"server #2 \('b'\): port 0 is out of range"):
        load_base_servers(servers_env(env, [{"ip": "h"}, {"name": "b", "ip": "g", "port": 0}]))


def test_broken_servers_variable_never_falls_back(env):
    """A typo in the cluster variable must not silently send work to the legacy server."""
    broken = {
        **servers_env(env, "[{"),
        "NUKE_COMFYUI_URL": "10.0.0.9:8188",
        "NUKE_COMFYUI_IP_1": "10.0.0.8",
    }
    with pytest.raises(ConfigError, match="NUKE_COMFYUI_SERVERS"):
        load_base_servers(broken)


def test_ca_bundle_key_expands_home_and_shows_as_a_path(env, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("USERPROFILE", str(tmp_path))  # expanduser's source on Windows
    pem = tmp_path / "certs" / "studio-ca.pem"
    pem.parent.mkdir()
    pem.write_text("-----BEGIN CERTIFICATE-----\n", encoding="utf-8")
    item = {**FULL, "scheme": "https", "ca_bundle": "~/certs/studio-ca.pem"}
    (server,) = load_base_servers(servers_env(env, [item]))
    assert server.ca_bundle == str(pem)
    assert server.verify_tls is True
    assert server.masked()["ca_bundle"] == str(pem)  # a path, not a secret
    assert parse_server_dict(server_to_dict(server), server.source) == server


def test_ca_bundle_absent_or_empty_is_none(env):
    servers = load_base_servers(
        servers_env(
            env, [{"ip": "h1"}, {"ip": "h2", "ca_bundle": " "}, {"ip": "h3", "ca_bundle": None}]
        )
    )
    assert [s.ca_bundle for s in servers] == [None, None, None]
    assert all(
        "ca_bundle" not in s.masked() and "ca_bundle" not in server_to_dict(s) for s in servers
    )


def test_missing_ca_bundle_names_the_server_and_field(env, tmp_path):
    missing = tmp_path / "nope.pem"
    items = [{"ip": "h"}, {"name": "gpu2", "ip": "g", "ca_bundle": str(missing)}]
    with pytest.raises(ConfigError) as info:
        load_base_servers(servers_env(env, items))
    assert (info.value.source, info.value.field, info.value.server) == (
        "NUKE_COMFYUI_SERVERS",
        "ca_bundle",
        "gpu2",
    )
    assert "server #2 ('gpu2')" in str(info.value)
    assert str(missing) in str(info.value)


def test_parse_server_dict_round_trips_server_to_dict():
    original = parse_server_dict(
        {**FULL, "token": "t", "headers": {"H": "v"}, "tags": ["x"], "scheme": "https"}, "src"
    )
    assert parse_server_dict(server_to_dict(original), "src") == original


# --------------------------------------------------------------------------- numbered variables


def test_numbered_variables(env):
    servers = load_base_servers(
        {
            **env,
            "NUKE_COMFYUI_IP_1": "10.0.0.5",
            "NUKE_COMFYUI_PORT_1": "8188",
            "NUKE_COMFYUI_DIR_LOCAL_1": "U:/",
            "NUKE_COMFYUI_DIR_REMOTE_1": "/srv/comfy/",
            "NUKE_COMFYUI_NAME_1": "a",
            "NUKE_COMFYUI_PRIORITY_1": "1",
            "NUKE_COMFYUI_ENABLED_1": "true",
            "NUKE_COMFYUI_HOST_2": "10.0.0.6",
            "NUKE_COMFYUI_ENABLED_2": "0",
        }
    )
    assert servers[0] == ServerConfig(
        name="a",
        host="10.0.0.5",
        port=8188,
        dir_local="U:/",
        dir_remote="/srv/comfy/",
        priority=1,
        enabled=True,
        source="NUKE_COMFYUI_IP_1",
    )
    assert (servers[1].name, servers[1].enabled, servers[1].priority) == (
        "10.0.0.6:8188",
        False,
        2,
    )
    assert servers[1].source == "NUKE_COMFYUI_HOST_2"


def test_numbered_order_is_numeric_and_gaps_allowed(env):
    servers = load_base_servers(
        {**env, "NUKE_COMFYUI_IP_10": "h10", "NUKE_COMFYUI_IP_2": "h2", "NUKE_COMFYUI_IP_1": "h1"}
    )
    assert [s.host for s in servers] == ["h1", "h2", "h10"]


def test_numbered_gaps_get_priorities_by_position(env):
    """Documented default priority: the position (1 for the first server), not the number."""
    servers = load_base_servers({**env, "NUKE_COMFYUI_IP_1": "h1", "NUKE_COMFYUI_IP_3": "h3"})
    assert [(s.host, s.priority, s.enabled, s.source) for s in servers] == [
        ("h1", 1, True, "NUKE_COMFYUI_IP_1"),
        ("h3", 2, True, "NUKE_COMFYUI_IP_3"),
    ]


def test_numbered_explicit_priority_does_not_shift_the_next_default(env):
    servers = load_base_servers(
        {
            **env,
            "NUKE_COMFYUI_IP_2": "h2",
            "NUKE_COMFYUI_PRIORITY_2": "7",
            "NUKE_COMFYUI_IP_5": "h5",
        }
    )
    assert [(s.host, s.priority) for s in servers] == [("h2", 7), ("h5", 2)]


@pytest.mark.parametrize("suffix", ["0", "01", "007"])
def test_numbered_index_zero_or_leading_zero_is_an_error(env, suffix):
    """``<n>`` is 1, 2, 3...: ``_0`` or ``_01`` is a typo that must not send work elsewhere."""
    variable = f"NUKE_COMFYUI_IP_{suffix}"
    with pytest.raises(ConfigError) as info:
        load_base_servers({**env, variable: "10.0.0.9"})
    assert info.value.source == variable


def test_numbered_leading_zero_next_to_valid_servers_is_an_error(env):
    with pytest.raises(ConfigError):
        load_base_servers({**env, "NUKE_COMFYUI_IP_1": "h1", "NUKE_COMFYUI_IP_01": "h2"})


def test_numbered_empty_variables_count_as_unset(env):
    servers = load_base_servers(
        {**env, "NUKE_COMFYUI_IP_1": "h1", "NUKE_COMFYUI_IP_2": "", "NUKE_COMFYUI_PORT_2": " "}
    )
    assert [s.host for s in servers] == ["h1"]


def test_numbered_empty_variable_listed_first_hides_nothing(env):
    """The environment's order is arbitrary: a cleared variable seen first must not end the scan."""
    servers = load_base_servers({"NUKE_COMFYUI_IP_2": "", **env, "NUKE_COMFYUI_IP_1": "h1"})
    assert [(s.host, s.source) for s in servers] == [("h1", "NUKE_COMFYUI_IP_1")]


def test_numbered_ip_may_carry_scheme_and_port(env):
    (server,) = load_base_servers({**env, "NUKE_COMFYUI_IP_1": "https://gpu:9443"})
    assert server.url == "https://gpu:9443"


NUMBERED_ERRORS = [
    ({"NUKE_COMFYUI_IP_1": "h", "NUKE_COMFYUI_PORT_2": "9000"}, "NUKE_COMFYUI_PORT_2", "ip"),
    ({"NUKE_COMFYUI_IP_1": "h", "NUKE_COMFYUI_PORT_1": "x"}, "NUKE_COMFYUI_PORT_1", "port"),
    ({"NUKE_COMFYUI_IP_1": "h", "NUKE_COMFYUI_PORT_1": "0"}, "NUKE_COMFYUI_PORT_1", "port"),
    ({"NUKE_COMFYUI_IP_1": "h:81", "NUKE_COMFYUI_PORT_1": "82"}, "NUKE_COMFYUI_PORT_1", "port"),
    (
        {"NUKE_COMFYUI_IP_1": "h", "NUKE_COMFYUI_ENABLED_1": "maybe"},
        "NUKE_COMFYUI_ENABLED_1",
        "enabled",
    ),
    (
        {"NUKE_COMFYUI_IP_1": "h", "NUKE_COMFYUI_PRIORITY_1": "high"},
        "NUKE_COMFYUI_PRIORITY_1",
        "priority",
    ),
    (
        {"NUKE_COMFYUI_IP_1": "h", "NUKE_COMFYUI_PRIORITY_1": "0"},
        "NUKE_COMFYUI_PRIORITY_1",
        "priority",
    ),
    ({"NUKE_COMFYUI_IP_1": "h", "NUKE_COMFYUI_HOST_1": "g"}, "NUKE_COMFYUI_HOST_1", "host"),
    ({"NUKE_COMFYUI_IP_1": "ftp://h"}, "NUKE_COMFYUI_IP_1", "ip"),
    (
        {"NUKE_COMFYUI_IP_1": "h", "NUKE_COMFYUI_IP_2": "g", "NUKE_COMFYUI_NAME_2": "h:8188"},
        "NUKE_COMFYUI_NAME_2",
        "name",
    ),
]


@pytest.mark.parametrize(("variables", "source", "field"), NUMBERED_ERRORS)
def test_numbered_errors(env, variables, source, field):
    with pytest.raises(ConfigError) as info:
        load_base_servers({**env, **variables})
    assert (info.value.source, info.value.field) == (source, field)
    assert str(info.value).startswith(f"{source}: {field}: ")


# --------------------------------------------------------------------------- legacy variables


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("10.0.0.5", "http://10.0.0.5:8188"),
        ("10.0.0.5:9000", "http://10.0.0.5:9000"),
        ("http://10.0.0.5", "http://10.0.0.5:8188"),
        ("https://gpu.example:8443/", "https://gpu.example:8443"),
        ("  HTTP://Gpu:8188  ", "http://gpu:8188"),
    ],
)
def test_legacy_url(env, url, expected):
    (server,) = load_base_servers({**env, "NUKE_COMFYUI_URL": url})
    assert server.url == expected
    assert server.name == expected.split("://")[1]
    assert server.source == "NUKE_COMFYUI_URL"


def test_legacy_url_list_with_parallel_dirs(env):
    servers = load_base_servers(
        {
            **env,
            "NUKE_COMFYUI_URL": '["10.0.0.5:8188", "http://10.0.0.6"]',
            "NUKE_COMFYUI_DIR": '["U:/", "V:/"]',
            "NUKE_COMFYUI_DIR_REMOTE": "/srv/comfy",
        }
    )
    assert [(s.name, s.dir_local, s.dir_remote, s.priority) for s in servers] == [
        ("10.0.0.5:8188", "U:/", "/srv/comfy", 1),
        ("10.0.0.6:8188", "V:/", "/srv/comfy", 2),
    ]


def test_legacy_single_dir_applies_to_every_url(env):
    servers = load_base_servers(
        {**env, "NUKE_COMFYUI_URL": '["a", "b"]', "NUKE_COMFYUI_DIR": "//nas/comfy"}
    )
    assert [s.dir_local for s in servers] == ["//nas/comfy", "//nas/comfy"]


@pytest.mark.parametrize("old_dir", ["//nas/comfy", '["//nas/comfy"]'])
def test_legacy_one_old_dir_serves_a_whole_url_list(env, old_dir):
    """Documented: NUKE_COMFYUI_DIR may be one folder (plain or a one-item list) for all URLs."""
    servers = load_base_servers(
        {
            **env,
            "NUKE_COMFYUI_URL": '["a", "b", "c"]',
            "NUKE_COMFYUI_DIR": old_dir,
            "NUKE_COMFYUI_DIR_REMOTE": "/srv/comfy",
        }
    )
    assert [(s.host, s.dir_local, s.dir_remote, s.priority) for s in servers] == [
        ("a", "//nas/comfy", "/srv/comfy", 1),
        ("b", "//nas/comfy", "/srv/comfy", 2),
        ("c", "//nas/comfy", "/srv/comfy", 3),
    ]


def test_legacy_host(env):
    (server,) = load_base_servers({**env, "NUKE_COMFYUI_HOST": "192.168.1.123:8189"})
    assert (server.host, server.port, server.source) == ("192.168.1.123", 8189, "NUKE_COMFYUI_HOST")


def test_legacy_ip_and_port_with_dirs(env):
    (server,) = load_base_servers(
        {
            **env,
            "NUKE_COMFYUI_IP": "10.10.10.10",
            "NUKE_COMFYUI_PORT": "8190",
            "NUKE_COMFYUI_DIR_LOCAL": "U:/",
            "NUKE_COMFYUI_DIR_REMOTE": "/home/user/ComfyUI/",
        }
    )
    assert server == ServerConfig(
        name="10.10.10.10:8190",
        host="10.10.10.10",
        port=8190,
        dir_local="U:/",
        dir_remote="/home/user/ComfyUI/",
        source="NUKE_COMFYUI_IP",
    )


def test_legacy_ip_without_port(env):
    (server,) = load_base_servers({**env, "NUKE_COMFYUI_IP": "10.0.0.5"})
    assert server.url == "http://10.0.0.5:8188"


def test_legacy_ip_with_port_and_the_same_port_variable(env):
    (server,) = load_base_servers(
        {**env, "NUKE_COMFYUI_IP": "10.0.0.5:8190", "NUKE_COMFYUI_PORT": "8190"}
    )
    assert server.url == "http://10.0.0.5:8190"
    with pytest.raises(ConfigError, match="disagrees") as info:
        load_base_servers({**env, "NUKE_COMFYUI_IP": "10.0.0.5:8190", "NUKE_COMFYUI_PORT": "81"})
    assert (info.value.source, info.value.field) == ("NUKE_COMFYUI_PORT", "port")
    assert "port 81 disagrees with the port in NUKE_COMFYUI_IP (8190)" in str(info.value)


def test_server_object_port_disagreeing_with_its_url_names_both(env):
    text = '[{"name": "a", "url": "http://h:81", "port": 82}]'
    with pytest.raises(ConfigError) as info:
        load_base_servers({**env, "NUKE_COMFYUI_SERVERS": text})
    assert "port 82 disagrees with the port in url (81)" in str(info.value)
    assert "server #1 ('a')" in str(info.value)


def test_legacy_port_alone(env):
    (server,) = load_base_servers({**env, "NUKE_COMFYUI_PORT": "8190"})
    assert (server.url, server.source) == ("http://127.0.0.1:8190", "NUKE_COMFYUI_PORT")


def test_dir_local_beats_old_dir(env):
    (server,) = load_base_servers(
        {**env, "NUKE_COMFYUI_DIR_LOCAL": "U:/", "NUKE_COMFYUI_DIR": "V:/"}
    )
    assert server.dir_local == "U:/"


def test_default_server(env):
    (server,) = load_base_servers(env)
    assert server == ServerConfig(name="local", host="127.0.0.1", port=8188, source="default")


def test_default_server_keeps_legacy_dirs(env):
    (server,) = load_base_servers({**env, "NUKE_COMFYUI_DIR": "/opt/ComfyUI"})
    assert (server.name, server.dir_local) == ("local", "/opt/ComfyUI")


LEGACY_ERRORS = [
    ({"NUKE_COMFYUI_URL": "[]"}, "NUKE_COMFYUI_URL", None, "empty"),
    ({"NUKE_COMFYUI_URL": '["a",'}, "NUKE_COMFYUI_URL", None, "line 1, column 6"),
    ({"NUKE_COMFYUI_URL": "[1]"}, "NUKE_COMFYUI_URL", "url", "URL #1"),
    ({"NUKE_COMFYUI_URL": "h:70000"}, "NUKE_COMFYUI_URL", "port", "out of range"),
    ({"NUKE_COMFYUI_URL": "http://"}, "NUKE_COMFYUI_URL", "url", "missing host"),
    ({"NUKE_COMFYUI_URL": '["a", "a:8188"]'}, "NUKE_COMFYUI_URL", "name", "duplicate"),
    ({"NUKE_COMFYUI_HOST": "h:port"}, "NUKE_COMFYUI_HOST", "port", "not a number"),
    (
        {"NUKE_COMFYUI_IP": "h", "NUKE_COMFYUI_PORT": "eighty"},
        "NUKE_COMFYUI_PORT",
        "port",
        "integer",
    ),
    (
        {"NUKE_COMFYUI_IP": "h", "NUKE_COMFYUI_PORT": "65536"},
        "NUKE_COMFYUI_PORT",
        "port",
        "out of range",
    ),
    (
        {"NUKE_COMFYUI_URL": '["a", "b", "c"]', "NUKE_COMFYUI_DIR": '["U:/", "V:/"]'},
        "NUKE_COMFYUI_DIR",
        None,
        "2 directories for 3 servers",
    ),
    ({"NUKE_COMFYUI_DIR": "[1]"}, "NUKE_COMFYUI_DIR", None, "JSON array of directories"),
    ({"NUKE_COMFYUI_DIR": '["U:/"'}, "NUKE_COMFYUI_DIR", None, "malformed JSON"),
]


@pytest.mark.parametrize(("variables", "source", "field", "words"), LEGACY_ERRORS)
def test_legacy_errors(env, variables, source, field, words):
    with pytest.raises(ConfigError) as info:
        load_base_servers({**env, **variables})
    assert (info.value.source, info.value.field) == (source, field)
    assert words in str(info.value)


# --------------------------------------------------------------------------- precedence


ALL_SOURCES = {
    "NUKE_COMFYUI_SERVERS": json.dumps([{"name": "cluster", "ip": "10.0.0.1"}]),
    "NUKE_COMFYUI_IP_1": "10.0.0.2",
    "NUKE_COMFYUI_URL": "10.0.0.3",
    "NUKE_COMFYUI_HOST": "10.0.0.4",
    "NUKE_COMFYUI_IP": "10.0.0.5",
}


@pytest.mark.parametrize(
    ("unset", "expected_source", "expected_host"),
    [
        ((), "NUKE_COMFYUI_SERVERS", "10.0.0.1"),
        (("NUKE_COMFYUI_SERVERS",), "NUKE_COMFYUI_IP_1", "10.0.0.2"),
        (("NUKE_COMFYUI_SERVERS", "NUKE_COMFYUI_IP_1"), "NUKE_COMFYUI_URL", "10.0.0.3"),
        (
            ("NUKE_COMFYUI_SERVERS", "NUKE_COMFYUI_IP_1", "NUKE_COMFYUI_URL"),
            "NUKE_COMFYUI_HOST",
            "10.0.0.4",
        ),
        (
            ("NUKE_COMFYUI_SERVERS", "NUKE_COMFYUI_IP_1", "NUKE_COMFYUI_URL", "NUKE_COMFYUI_HOST"),
            "NUKE_COMFYUI_IP",
            "10.0.0.5",
        ),
        (tuple(ALL_SOURCES), "default", "127.0.0.1"),
    ],
)
@pytest.mark.parametrize("how", ["absent", "empty"])
def test_first_source_wins(env, unset, expected_source, expected_host, how):
    variables = dict(ALL_SOURCES)
    for name in unset:
        if how == "absent":
            del variables[name]
        else:
            variables[name] = ""  # an empty variable counts as unset
    servers = load_base_servers({**env, **variables})
    assert [(s.source, s.host) for s in servers] == [(expected_source, expected_host)]


def test_load_servers_without_user_file_is_the_base(env):
    environ = servers_env(env, [FULL])
    assert load_servers(environ) == load_base_servers(environ)


def test_defaults_to_os_environ(monkeypatch, tmp_path):
    """``environ=None`` reads os.environ (monkeypatch restores it)."""
    for name in list(os.environ):
        if name.startswith("NUKE_COMFYUI") or name == "COMFY_CLUSTER_CONFIG":
            monkeypatch.delenv(name)
    monkeypatch.setenv("NUKE_COMFYUI_URL", "10.1.2.3")
    monkeypatch.setenv("COMFY_CLUSTER_CONFIG", str(tmp_path / "user.json"))
    assert [s.host for s in load_servers()] == ["10.1.2.3"]
