"""``comfy-cluster servers [--json]``: servers with sources, secrets masked, exit 2 on errors."""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys

import pytest

from comfy_cluster.commands import servers as servers_command
from comfy_cluster.core.config.loading import UserConfig, save_user_config
from comfy_cluster.core.server import ServerConfig

DONE_EXAMPLE = (
    '[{"name":"a","ip":"10.0.0.5","port":8188,"dir_local":"U:/","dir_remote":"/srv/comfy/",'
    '"priority":1,"enabled":true}]'
)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the servers command touched the network")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture
def env(tmp_path):
    return {"COMFY_CLUSTER_CONFIG": str(tmp_path / "user.json")}


def run(environ, *argv):
    """Parse ``argv`` with the real sub-parser and run the command in-process."""
    parser = argparse.ArgumentParser(prog="comfy-cluster")
    servers_command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["servers", *argv])
    out, err = io.StringIO(), io.StringIO()
    code = args.func(args, environ=environ, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_json_output_of_the_done_example(env):
    code, out, err = run({**env, "NUKE_COMFYUI_SERVERS": DONE_EXAMPLE}, "--json")
    assert (code, err) == (0, "")
    assert json.loads(out) == [
        {
            "name": "a",
            "host": "10.0.0.5",
            "port": 8188,
            "scheme": "http",
            "url": "http://10.0.0.5:8188",
            "dir_local": "U:/",
            "dir_remote": "/srv/comfy/",
            "priority": 1,
            "enabled": True,
            "headers": {},
            "token": None,
            "verify_tls": True,
            "max_in_flight": 1,
            "max_download_bytes": 2 * 1024**3,
            "tags": [],
            "source": "NUKE_COMFYUI_SERVERS",
        }
    ]


@pytest.mark.parametrize(
    ("variables", "source"),
    [
        (
            {
                "NUKE_COMFYUI_IP_1": "10.0.0.5",
                "NUKE_COMFYUI_PORT_1": "8188",
                "NUKE_COMFYUI_NAME_1": "a",
                "NUKE_COMFYUI_DIR_LOCAL_1": "U:/",
                "NUKE_COMFYUI_DIR_REMOTE_1": "/srv/comfy/",
            },
            "NUKE_COMFYUI_IP_1",
        ),
        (
            {
                "NUKE_COMFYUI_IP": "10.0.0.5",
                "NUKE_COMFYUI_PORT": "8188",
                "NUKE_COMFYUI_DIR_LOCAL": "U:/",
                "NUKE_COMFYUI_DIR_REMOTE": "/srv/comfy/",
            },
            "NUKE_COMFYUI_IP",
        ),
        (
            {
                "NUKE_COMFYUI_URL": "10.0.0.5",
                "NUKE_COMFYUI_DIR": "U:/",
                "NUKE_COMFYUI_DIR_REMOTE": "/srv/comfy/",
            },
            "NUKE_COMFYUI_URL",
        ),
    ],
)
def test_numbered_and_legacy_forms_print_the_same_server(env, variables, source):
    code, out, _ = run({**env, **variables}, "--json")
    (server,) = json.loads(out)
    assert code == 0
    assert server["source"] == source
    assert (server["url"], server["dir_local"], server["dir_remote"]) == (
        "http://10.0.0.5:8188",
        "U:/",
        "/srv/comfy/",
    )


def test_text_output_one_line_per_server_with_source(env):
    servers = json.dumps(
        [
            {"name": "a", "ip": "10.0.0.5", "dir_local": "U:/", "dir_remote": "/srv/comfy/"},
            {"name": "b", "url": "https://gpu:8443", "enabled": False, "priority": 3},
        ]
    )
    code, out, _ = run({**env, "NUKE_COMFYUI_SERVERS": servers})
    lines = out.splitlines()
    assert code == 0 and len(lines) == 3
    assert lines[0].split() == ["NAME", "URL", "PRI", "ENABLED", "MAX", "DIRS", "AUTH", "SOURCE"]
    assert lines[1].split() == [
        "a",
        "http://10.0.0.5:8188",
        "1",
        "yes",
        "1",
        "U:/",
        "->",
        "/srv/comfy/",
        "-",
        "NUKE_COMFYUI_SERVERS",
    ]
    assert lines[2].split()[:4] == ["b", "https://gpu:8443", "3", "no"]


@pytest.mark.parametrize("as_json", [True, False])
def test_secrets_are_masked(env, as_json):
    servers = json.dumps(
        [{"name": "a", "ip": "h", "token": "s3cret-token", "headers": {"X-Api-Key": "k3y-value"}}]
    )
    code, out, _ = run({**env, "NUKE_COMFYUI_SERVERS": servers}, *(["--json"] if as_json else []))
    assert code == 0
    assert "s3cret-token" not in out and "k3y-value" not in out
    assert "***" in out
    if as_json:
        (server,) = json.loads(out)
        assert (server["token"], server["headers"]) == ("***", {"X-Api-Key": "***"})
    else:
        assert "token=***,X-Api-Key=***" in out


def test_user_file_edits_are_shown(env):
    user = UserConfig().remove_server("a").add_server(ServerConfig(name="mine", host="10.0.0.9"))
    save_user_config(user, env["COMFY_CLUSTER_CONFIG"])
    code, out, _ = run({**env, "NUKE_COMFYUI_SERVERS": DONE_EXAMPLE}, "--json")
    assert code == 0
    assert [(s["name"], s["source"]) for s in json.loads(out)] == [
        ("mine", f"user file {env['COMFY_CLUSTER_CONFIG']}")
    ]
    code, out, _ = run({**env, "NUKE_COMFYUI_SERVERS": DONE_EXAMPLE})
    assert "mine" in out


def test_every_server_removed(env):
    save_user_config(UserConfig().remove_server("local"), env["COMFY_CLUSTER_CONFIG"])
    code, out, _ = run(env)
    assert code == 0 and out.startswith("no servers")
    assert json.loads(run(env, "--json")[1]) == []


@pytest.mark.parametrize(
    ("variables", "words"),
    [
        (
            {"NUKE_COMFYUI_SERVERS": '[{"name": "a",, }]'},
            "NUKE_COMFYUI_SERVERS: malformed JSON at line 1, column 15",
        ),
        ({"NUKE_COMFYUI_SERVERS": "[]"}, "NUKE_COMFYUI_SERVERS: the server list is empty"),
        ({"NUKE_COMFYUI_PORT_1": "1"}, "NUKE_COMFYUI_PORT_1: ip: server 1 has no host"),
        ({"NUKE_COMFYUI_URL": "h:0"}, "NUKE_COMFYUI_URL: port:"),
    ],
)
@pytest.mark.parametrize("as_json", [True, False])
def test_bad_configuration_exits_2_with_the_message(env, variables, words, as_json):
    code, out, err = run({**env, **variables}, *(["--json"] if as_json else []))
    assert code == 2
    assert out == ""
    assert words in err


def test_bad_user_file_exits_2(env):
    with open(env["COMFY_CLUSTER_CONFIG"], "w") as handle:
        handle.write('{"removed": [1]}')
    code, _, err = run(env)
    assert code == 2 and "removed" in err and env["COMFY_CLUSTER_CONFIG"] in err


def _clean_environ(tmp_path, **variables):
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("NUKE_COMFYUI") and k != "COMFY_CLUSTER_CONFIG"
    }
    environ["COMFY_CLUSTER_CONFIG"] = str(tmp_path / "user.json")
    environ.update(variables)
    return environ


def _cli(tmp_path, *argv, **variables):
    return subprocess.run(
        [sys.executable, "-m", "comfy_cluster.cli", "servers", *argv],
        env=_clean_environ(tmp_path, **variables),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_end_to_end_done_criterion(tmp_path):
    """The exact command of the issue, through the real CLI dispatcher, in a fresh process."""
    ok = _cli(tmp_path, "--json", NUKE_COMFYUI_SERVERS=DONE_EXAMPLE)
    assert ok.returncode == 0, ok.stderr
    (server,) = json.loads(ok.stdout)
    assert (server["name"], server["host"], server["source"]) == (
        "a",
        "10.0.0.5",
        "NUKE_COMFYUI_SERVERS",
    )
    bad = _cli(tmp_path, "--json", NUKE_COMFYUI_SERVERS=DONE_EXAMPLE[:-1])
    assert bad.returncode == 2
    assert "NUKE_COMFYUI_SERVERS" in bad.stderr and "line 1, column" in bad.stderr


def test_import_stays_cheap():
    code = (
        "import sys, comfy_cluster.commands.servers; "
        "heavy = {'rich', 'requests', 'websocket', 'aiohttp', 'tenacity'} & set(sys.modules); "
        "print(sorted(heavy))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert result.stdout.strip() == "[]"


def test_a_server_disabled_from_the_panel_names_the_user_file_as_the_source_of_that_edit(env):
    """The panel writes its enable/disable switch to the user file; the row must say so."""
    path = env["COMFY_CLUSTER_CONFIG"]
    save_user_config(UserConfig().set_enabled("a", False).set_priority("a", 5), path)
    code, out, _ = run({**env, "NUKE_COMFYUI_SERVERS": DONE_EXAMPLE})
    header, row = out.splitlines()
    assert code == 0 and row.split()[:4] == ["a", "http://10.0.0.5:8188", "5", "no"]
    assert row[header.index("SOURCE") :] == (
        f"NUKE_COMFYUI_SERVERS; disabled, priority 5 in user file {path}"
    )
    (server,) = json.loads(run({**env, "NUKE_COMFYUI_SERVERS": DONE_EXAMPLE}, "--json")[1])
    assert server["source"] == "NUKE_COMFYUI_SERVERS" and server["enabled"] is False
    assert server["edits"] == {"enabled": False, "priority": 5, "source": f"user file {path}"}
