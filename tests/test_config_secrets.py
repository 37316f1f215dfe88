"""Issue 11 items 9 and 10: configuration errors never print a secret, and a token or header that
cannot be sent is refused when the configuration is read, naming the server and the field.

"Secret" means the token, header values, and credentials written into an address
(``http://user:password@host``), which are refused in every address source.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from config_cli import SECRET, assert_one_config_error, run_cli

from comfy_cluster.core.config.loading import (
    UserConfig,
    load_base_servers,
    load_servers,
    parse_server_dict,
)
from comfy_cluster.core.errors import ConfigError
from comfy_cluster.core.server import ServerConfig


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"COMFY_CLUSTER_CONFIG": str(tmp_path / "user.json")}


def servers_json(*items: Any) -> str:
    return json.dumps(list(items))


def cli_servers(monkeypatch, capsys, env, variables):
    return run_cli(monkeypatch, capsys, {**env, **variables}, "servers")


# --- item 9: errors name the field, never the secret ------------------------------------------

SECRET_VALUE_ERRORS = [
    # (server object, field)
    ({"name": "a", "ip": "h", "token": [SECRET]}, "token"),
    ({"name": "a", "ip": "h", "token": {"value": SECRET}}, "token"),
    ({"name": "a", "ip": "h", "headers": f"Bearer {SECRET}"}, "headers"),
    ({"name": "a", "ip": "h", "headers": [SECRET]}, "headers"),
    ({"name": "a", "url": [f"http://u:{SECRET}@h"]}, "url"),
    ({"name": "a", "ip": [f"u:{SECRET}@h"]}, "ip"),
    ({"name": "a", "host": {"h": SECRET}}, "host"),
]


@pytest.mark.parametrize(("item", "field"), SECRET_VALUE_ERRORS)
def test_wrong_type_of_secret_names_field_not_value(monkeypatch, capsys, env, item, field):
    result = cli_servers(monkeypatch, capsys, env, {"NUKE_COMFYUI_SERVERS": servers_json(item)})
    assert_one_config_error(result, f"NUKE_COMFYUI_SERVERS: {field}: ", "'a'")


ADDRESS_CREDENTIALS = [
    ({"NUKE_COMFYUI_IP_1": f"http://u:{SECRET}@host"}, "NUKE_COMFYUI_IP_1: ip"),
    ({"NUKE_COMFYUI_HOST_2": f"u:{SECRET}@host:8188"}, "NUKE_COMFYUI_HOST_2: ip"),
    ({"NUKE_COMFYUI_URL": f"https://u:{SECRET}@host:8443"}, "NUKE_COMFYUI_URL: url"),
    ({"NUKE_COMFYUI_URL": json.dumps(["a", f"http://{SECRET}@b"])}, "NUKE_COMFYUI_URL: url"),
    ({"NUKE_COMFYUI_HOST": f"u:{SECRET}@host"}, "NUKE_COMFYUI_HOST: host"),
    ({"NUKE_COMFYUI_IP": f"u:{SECRET}@host"}, "NUKE_COMFYUI_IP: ip"),
    # Another error in the same address used to quote it whole.
    ({"NUKE_COMFYUI_URL": f"ftp://u:{SECRET}@host"}, "NUKE_COMFYUI_URL: url"),
    ({"NUKE_COMFYUI_URL": f"http://u:{SECRET}@host/comfy"}, "NUKE_COMFYUI_URL: url"),
    (
        {"NUKE_COMFYUI_SERVERS": servers_json({"url": f"http://u:{SECRET}@h"})},
        "NUKE_COMFYUI_SERVERS: url",
    ),
    (
        {"NUKE_COMFYUI_SERVERS": servers_json({"ip": f"u:{SECRET}@h"})},
        "NUKE_COMFYUI_SERVERS: ip",
    ),
    (
        {"NUKE_COMFYUI_SERVERS": servers_json({"ip": "h", "host": f"u:{SECRET}@h"})},
        "NUKE_COMFYUI_SERVERS: host",
    ),
]


@pytest.mark.parametrize(("variables", "where"), ADDRESS_CREDENTIALS)
def test_credentials_in_any_address_are_refused_unquoted(
    monkeypatch, capsys, env, variables, where
):
    result = cli_servers(monkeypatch, capsys, env, variables)
    assert_one_config_error(result, where, "credentials", "'token' or 'headers'")


@pytest.mark.parametrize(
    "address",
    [f"http://h:8188/?token={SECRET}", f"http://h:8188#{SECRET}", f"h:8188/{SECRET}/x"],
)
def test_query_path_or_fragment_of_an_address_is_not_quoted(monkeypatch, capsys, env, address):
    result = cli_servers(monkeypatch, capsys, env, {"NUKE_COMFYUI_URL": address})
    assert_one_config_error(result, "NUKE_COMFYUI_URL: url: ", "without a path")


def test_json_syntax_error_near_a_token_quotes_no_text(monkeypatch, capsys, env, tmp_path):
    text = '[{"name": "a", "ip": "h", "token": "' + SECRET + '",}]'
    inline = cli_servers(monkeypatch, capsys, env, {"NUKE_COMFYUI_SERVERS": text})
    assert_one_config_error(inline, "NUKE_COMFYUI_SERVERS: malformed JSON at line 1, column")
    path = tmp_path / "servers.json"
    path.write_text(text.replace(", ", ",\n"), encoding="utf-8")
    in_file = cli_servers(monkeypatch, capsys, env, {"NUKE_COMFYUI_SERVERS": str(path)})
    assert_one_config_error(in_file, str(path), "malformed JSON at line 3, column")


def test_servers_value_quoted_by_mistake_is_not_echoed(monkeypatch, capsys, env):
    # A shell quoting slip makes inline JSON look like a path (it no longer starts with '[').
    value = "'" + servers_json({"ip": "h", "token": SECRET}) + "'"
    result = cli_servers(monkeypatch, capsys, env, {"NUKE_COMFYUI_SERVERS": value})
    assert_one_config_error(result, "NUKE_COMFYUI_SERVERS: ", "no such file")


def test_user_file_secret_errors_are_not_quoted(monkeypatch, capsys, env, tmp_path):
    user = tmp_path / "user.json"
    user.write_text(json.dumps({"added": {"mine": {"host": "h", "token": [SECRET]}}}))
    result = cli_servers(monkeypatch, capsys, env, {})
    assert_one_config_error(result, f"user file {user}: token: ", "'mine'")


# --- item 10: values that cannot be sent are refused at load -------------------------------

UNSENDABLE = [
    # (server object, field, words)
    ({"name": "a", "ip": "h", "token": f"{SECRET}\nX-Evil: 1"}, "token", "line break"),
    ({"name": "a", "ip": "h", "token": f"{SECRET}\r"}, "token", "line break"),
    ({"name": "a", "ip": "h", "token": f"{SECRET}\x00"}, "token", "control character"),
    ({"name": "a", "ip": "h", "token": f"{SECRET}\u20ac"}, "token", "non-ASCII"),
    ({"name": "a", "ip": "h", "token": f"{SECRET}\u00e9"}, "token", "non-ASCII"),
    ({"name": "a", "ip": "h", "headers": {"X-Key": f"{SECRET}\n"}}, "headers", "line break"),
    ({"name": "a", "ip": "h", "headers": {"X-Key": f"\u2603{SECRET}"}}, "headers", "non-ASCII"),
    ({"name": "a", "ip": "h", "headers": {"X-Key": f"{SECRET}\x7f"}}, "headers", "control"),
    (
        {"name": "a", "ip": "h", "headers": {f"Authorization: Bearer {SECRET}": "x"}},
        "headers",
        "name",
    ),
    ({"name": "a", "ip": "h", "headers": {f"X {SECRET}": "x"}}, "headers", "name"),
    ({"name": "a", "ip": "h", "headers": {f"X\n{SECRET}": "x"}}, "headers", "name"),
    ({"name": "a", "ip": "h", "headers": {f"X-\u00e9{SECRET}": "x"}}, "headers", "name"),
    ({"name": "a", "ip": "h", "headers": {"": SECRET}}, "headers", "name"),
    ({"name": "a", "ip": "h", "headers": {"X-Key": "1", "x-key": SECRET}}, "headers", "twice"),
]


@pytest.mark.parametrize(("item", "field", "words"), UNSENDABLE)
def test_unsendable_token_or_header_fails_servers_command(
    monkeypatch, capsys, env, item, field, words
):
    result = cli_servers(monkeypatch, capsys, env, {"NUKE_COMFYUI_SERVERS": servers_json(item)})
    assert_one_config_error(result, f"NUKE_COMFYUI_SERVERS: {field}: ", "'a'", words)


@pytest.mark.parametrize(("item", "field", "words"), UNSENDABLE)
def test_unsendable_value_error_names_server_and_field(item, field, words):
    with pytest.raises(ConfigError) as info:
        parse_server_dict(item, "src")
    assert (info.value.source, info.value.field, info.value.server) == ("src", field, "a")
    assert SECRET not in str(info.value) and SECRET not in repr(info.value.args)


def test_unsendable_token_in_the_user_file_is_refused(env, tmp_path):
    user = tmp_path / "user.json"
    user.write_text(json.dumps({"added": {"mine": {"host": "h", "token": f"{SECRET}\n"}}}))
    with pytest.raises(ConfigError) as info:
        load_servers(env)
    assert (info.value.field, info.value.server) == ("token", "mine")
    assert SECRET not in str(info.value)


def test_adding_a_server_with_an_unsendable_header_is_refused():
    server = ServerConfig(name="mine", host="h", headers={"X-Key": f"{SECRET}\r\n"})
    with pytest.raises(ConfigError) as info:
        UserConfig().add_server(server)
    assert (info.value.field, info.value.server) == ("headers", "mine")
    assert SECRET not in str(info.value)


def test_sendable_values_still_load(env):
    item = {
        "name": "a",
        "ip": "h",
        "token": f"  {SECRET}  ",
        "headers": {"X-Api-Key": f"{SECRET} with\tspace", "Cookie": "a=b; c=d", "X-Empty": ""},
    }
    (server,) = load_base_servers({**env, "NUKE_COMFYUI_SERVERS": servers_json(item)})
    assert server.token == SECRET
    assert server.headers == {
        "X-Api-Key": f"{SECRET} with\tspace",
        "Cookie": "a=b; c=d",
        "X-Empty": "",
    }
    assert server.secret_values() == (SECRET, f"{SECRET} with\tspace", "a=b; c=d")


def test_servers_command_masks_loaded_secrets(monkeypatch, capsys, env):
    item = {"name": "a", "ip": "h", "token": SECRET, "headers": {"X-Key": SECRET}}
    for argv in (("servers",), ("servers", "--json")):
        result = run_cli(
            monkeypatch, capsys, {**env, "NUKE_COMFYUI_SERVERS": servers_json(item)}, *argv
        )
        assert result.code == 0 and result.err == ""
        assert SECRET not in result.out


def test_a_header_value_problem_names_its_character_counting_from_one() -> None:
    """The position helps a user find the stray character; the value itself is never shown."""
    from comfy_cluster.core.config.credentials import parse_token

    with pytest.raises(ConfigError) as caught:
        parse_token("\nabc", "servers.json", "", "a")
    assert "(character 1)" in str(caught.value) and "abc" not in str(caught.value)


def test_a_tilde_is_printable_ascii_and_may_be_sent() -> None:
    from comfy_cluster.core.config.credentials import parse_token

    assert parse_token("abc~def", "servers.json", "", "a") == "abc~def"
