"""Every "must be a ..." message of a server object, pinned word for word.

The type checks of ``server_json.py`` and ``credentials.py`` share one validator; these messages
are what users read (naming the entry, the server and the key, never a secret's value), so the
sharing must not change a word of them, nor the ``field`` and ``server`` the error carries.
"""

from __future__ import annotations

from typing import Any, Optional

import pytest

from comfy_cluster.core.config.server_json import parse_server_dict
from comfy_cluster.core.config.values import require_type
from comfy_cluster.core.errors import ConfigError

CASES = [
    ({"ip": 10}, 2, "server #2: ip must be a string, got number", "ip", None),
    ({"host": ["h"]}, 2, "server #2: host must be a string, got array", "host", None),
    (
        {"name": "a", "ip": "h", "ca_bundle": True},
        2,
        "server #2 ('a'): ca_bundle must be a string (the path of a PEM file), got boolean",
        "ca_bundle",
        "a",
    ),
    (
        {"name": "a", "ip": "h", "ca_bundle": "ca.pem"},
        2,
        "server #2 ('a'): ca_bundle must be an absolute path (or start with ~), got 'ca.pem'",
        "ca_bundle",
        "a",
    ),
    (
        {"name": "a", "ip": "h", "ca_bundle": "/nonexistent/ca.pem"},
        2,
        "server #2 ('a'): ca_bundle '/nonexistent/ca.pem': no such file",
        "ca_bundle",
        "a",
    ),
    ({"name": "a", "url": 5}, 2, "server #2 ('a'): url must be a string, got number", "url", None),
    ({"name": 5, "ip": "h"}, 2, "server #2: name must be a string, got number 5", "name", None),
    (
        {"name": "a", "ip": "h", "scheme": 1},
        2,
        "server #2 ('a'): scheme must be a string, got number 1",
        "scheme",
        None,
    ),
    (
        {"name": "a", "ip": "h", "dir_local": 1},
        2,
        "server #2 ('a'): dir_local must be a string, got number 1",
        "dir_local",
        None,
    ),
    (
        {"name": "a", "ip": "h", "priority": 1.5},
        2,
        "server #2 ('a'): priority must be an integer, got number 1.5",
        "priority",
        None,
    ),
    (
        {"name": "a", "ip": "h", "max_in_flight": True},
        2,
        "server #2 ('a'): max_in_flight must be an integer, got boolean True",
        "max_in_flight",
        None,
    ),
    (
        {"name": "a", "ip": "h", "max_download_bytes": "big"},
        2,
        "server #2 ('a'): max_download_bytes must be an integer, got string 'big'",
        "max_download_bytes",
        None,
    ),
    (
        {"name": "a", "ip": "h", "enabled": "yes"},
        2,
        "server #2 ('a'): enabled must be true or false, got string 'yes'",
        "enabled",
        None,
    ),
    (
        {"name": "a", "ip": "h", "verify_tls": 0},
        2,
        "server #2 ('a'): verify_tls must be true or false, got number 0",
        "verify_tls",
        None,
    ),
    (
        {"name": "a", "ip": "h", "tags": "gpu"},
        2,
        "server #2 ('a'): tags must be an array of strings, got string 'gpu'",
        "tags",
        None,
    ),
    (
        {"name": "a", "ip": "h", "tags": [1]},
        2,
        "server #2 ('a'): tags must be an array of strings",
        "tags",
        None,
    ),
    (
        {"name": "a", "ip": "h", "token": 12},
        2,
        "server #2 ('a'): token must be a string, got number (the value is not shown)",
        "token",
        "a",
    ),
    (
        {"name": "a", "ip": "h", "headers": ["X"]},
        2,
        "server #2 ('a'): headers must be an object of strings, got array (the value is not shown)",
        "headers",
        "a",
    ),
    (
        {"name": "a", "ip": "h", "headers": {"X-Key": 1}},
        2,
        "server #2 ('a'): header 'X-Key' must be a string, got number",
        "headers",
        "a",
    ),
    (
        {"name": "a", "ip": "h", "headers": {"X Key": "v"}},
        2,
        "server #2 ('a'): header #1 has an invalid name (HTTP header names are letters, "
        "digits and !#$%&'*+-.^_`|~ only, no spaces or ':'); the name is not shown",
        "headers",
        "a",
    ),
    (
        {"name": "a", "ip": "h", "headers": {"X-Key": "v", "x-key": "w"}},
        2,
        "server #2 ('a'): header 'x-key' is given twice (header names ignore case)",
        "headers",
        "a",
    ),
    ({"ip": 10}, None, "ip must be a string, got number", "ip", None),
    (
        {"name": "a", "ip": "h", "priority": 1.5},
        None,
        "'a': priority must be an integer, got number 1.5",
        "priority",
        None,
    ),
    (
        {"name": "a", "ip": "h", "token": 12},
        None,
        "'a': token must be a string, got number (the value is not shown)",
        "token",
        "a",
    ),
]


@pytest.mark.parametrize(("item", "position", "message", "field", "server"), CASES)
def test_type_messages_are_unchanged(
    item: dict[str, Any],
    position: Optional[int],
    message: str,
    field: str,
    server: Optional[str],
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_server_dict(item, "NUKE_COMFYUI_SERVERS", position=position)
    error = info.value
    assert str(error) == f"NUKE_COMFYUI_SERVERS: {field}: {message}"
    assert (error.field, error.server) == (field, server)


@pytest.mark.parametrize("secret", ["s3cr3t-token", 12345678])
def test_type_messages_never_quote_a_secret(secret: Any) -> None:
    for key, value in (("token", [secret]), ("headers", [secret]), ("url", [secret])):
        with pytest.raises(ConfigError) as info:
            parse_server_dict({"name": "a", "ip": "h", key: value}, "SRC")
        assert str(secret) not in str(info.value)


def test_require_type_refuses_true_as_an_integer_but_takes_it_as_a_flag() -> None:
    assert require_type(3, int, "n", "an integer", source="S", field="n") == 3
    assert require_type(True, bool, "f", "true or false", source="S", field="f") is True
    with pytest.raises(ConfigError) as info:
        require_type(True, int, "'a': n", "an integer", source="S", field="n", server="a")
    assert (info.value.message, info.value.server) == (
        "'a': n must be an integer, got boolean",
        "a",
    )


def test_require_type_accepts_any_of_several_types_and_adds_the_callers_words() -> None:
    assert require_type([1], (list, tuple), "x", "an array", source="S", field="x") == [1]
    with pytest.raises(ConfigError, match=r"^S: x: x must be an array, got null \(not shown\)$"):
        require_type(
            None, (list, tuple), "x", "an array", source="S", field="x", after=" (not shown)"
        )
