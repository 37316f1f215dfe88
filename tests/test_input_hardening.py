"""Issue 11 items 12 and 14, and the ``max_download_bytes`` key: input that used to end in a
traceback, a hang or a silently wrong server gives one clear error before any server does work.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from config_cli import (
    OUR_PREFIXES,
    CliResult,
    assert_one_config_error,
    finishes_within,
    run_cli,
)

from comfy_cluster.core.config.loading import (
    UserConfig,
    load_base_servers,
    load_servers,
    load_user_config,
    parse_server_dict,
    save_user_config,
    server_to_dict,
)
from comfy_cluster.core.errors import ConfigError, FrameRangeError, WorkflowError
from comfy_cluster.core.frames import MAX_FRAME_NUMBER, MAX_FRAMES, FrameRange
from comfy_cluster.core.input_file import MAX_INPUT_BYTES, InputFileError, read_input_text
from comfy_cluster.core.input_json import MAX_JSON_DEPTH, JsonTextError, decode_json
from comfy_cluster.core.server import DEFAULT_MAX_DOWNLOAD_BYTES, ServerConfig
from comfy_cluster.core.workflow import Override, Workflow

DEEP = "[" * 100_000 + "]" * 100_000
WORKFLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
}
needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"COMFY_CLUSTER_CONFIG": str(tmp_path / "user.json")}


@pytest.fixture
def fifo(tmp_path: Path):
    """A FIFO nobody writes to; afterwards a reader stuck on it (old code) is released."""
    path = tmp_path / "pipe.json"
    os.mkfifo(path)
    yield path
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass  # no reader waiting


@pytest.fixture
def too_big(tmp_path: Path) -> Path:
    path = tmp_path / "big.json"
    with open(path, "wb") as handle:
        handle.truncate(MAX_INPUT_BYTES + 1)  # sparse: instant
    return path


def deep_file(tmp_path: Path) -> Path:
    path = tmp_path / "deep.json"
    path.write_text(DEEP, encoding="utf-8")
    return path


# --- item 12: the safe reader and decoder ---------------------------------------------------


@needs_fifo
def test_reader_refuses_a_fifo_without_blocking(fifo):
    with pytest.raises(InputFileError, match="named pipe"):
        finishes_within(10, lambda: read_input_text(fifo))


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="no /dev/null")
def test_reader_refuses_a_device():
    with pytest.raises(InputFileError, match="device"):
        read_input_text("/dev/null")


def test_reader_refuses_directories_big_files_and_non_utf8(tmp_path, too_big):
    with pytest.raises(InputFileError, match="directory"):
        read_input_text(tmp_path)
    with pytest.raises(InputFileError, match="16 MiB"):
        read_input_text(too_big)
    bad = tmp_path / "latin1.json"
    bad.write_bytes(b'["caf\xe9"]')
    with pytest.raises(InputFileError, match="not UTF-8 text"):
        read_input_text(bad)
    with pytest.raises(InputFileError) as info:
        read_input_text(tmp_path / "nope.json")
    assert info.value.missing


def test_reader_reads_a_file_of_exactly_the_limit(tmp_path):
    path = tmp_path / "full.json"
    path.write_bytes(b" " * MAX_INPUT_BYTES)
    assert len(read_input_text(path)) == MAX_INPUT_BYTES


def test_decoder_caps_depth_and_long_numbers():
    assert decode_json("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH) is not None
    for text in (DEEP, "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1)):
        with pytest.raises(JsonTextError, match="nested more than") as info:
            decode_json(text)
        assert info.value.too_deep
    with pytest.raises(JsonTextError, match="too long"):
        decode_json("9" * 5000)


# --- item 12: every configuration and workflow file ---------------------------------------


def _limit_memory() -> None:
    import resource  # POSIX only, like /dev/zero

    resource.setrlimit(resource.RLIMIT_AS, (1024**3, 1024**3))


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_servers_variable_dev_zero_is_a_clear_error(env):
    # A subprocess with 1 GiB of memory and a timeout: reading /dev/zero must not take the
    # machine down when this regresses.
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(OUR_PREFIXES)}
    variables = {**inherited, **env, "NUKE_COMFYUI_SERVERS": "/dev/zero"}
    done = subprocess.run(
        [sys.executable, "-m", "comfy_cluster.cli", "servers"],
        env=variables,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_limit_memory,
    )
    result = CliResult(done.returncode, done.stdout, done.stderr)
    assert_one_config_error(result, "NUKE_COMFYUI_SERVERS: ", "/dev/zero", "not a regular file")


@needs_fifo
def test_servers_variable_fifo_is_a_clear_error(env, fifo):
    with pytest.raises(ConfigError, match="named pipe") as info:
        finishes_within(10, lambda: load_base_servers({**env, "NUKE_COMFYUI_SERVERS": str(fifo)}))
    assert info.value.source == "NUKE_COMFYUI_SERVERS"


@needs_fifo
def test_user_file_fifo_is_a_clear_error(fifo):
    with pytest.raises(ConfigError, match="named pipe") as info:
        finishes_within(10, lambda: load_user_config(fifo))
    assert str(fifo) in str(info.value)


@needs_fifo
def test_workflow_fifo_is_a_clear_error(fifo):
    with pytest.raises(WorkflowError, match="named pipe"):
        finishes_within(10, lambda: Workflow.load(fifo))


def test_oversized_files_are_refused_by_size(env, too_big):
    with pytest.raises(ConfigError, match="16 MiB"):
        load_base_servers({**env, "NUKE_COMFYUI_SERVERS": str(too_big)})
    with pytest.raises(ConfigError, match="16 MiB"):
        load_user_config(too_big)
    with pytest.raises(WorkflowError, match="16 MiB"):
        Workflow.load(too_big)


def test_deep_json_inline_servers_variable(monkeypatch, capsys, env):
    result = run_cli(monkeypatch, capsys, {**env, "NUKE_COMFYUI_SERVERS": DEEP}, "servers")
    assert_one_config_error(result, "NUKE_COMFYUI_SERVERS: JSON nested more than")


def test_deep_json_servers_file(monkeypatch, capsys, env, tmp_path):
    path = deep_file(tmp_path)
    result = run_cli(monkeypatch, capsys, {**env, "NUKE_COMFYUI_SERVERS": str(path)}, "servers")
    assert_one_config_error(result, f"NUKE_COMFYUI_SERVERS ({path}): JSON nested more than")


def test_deep_json_user_file(monkeypatch, capsys, tmp_path):
    path = deep_file(tmp_path)
    result = run_cli(monkeypatch, capsys, {"COMFY_CLUSTER_CONFIG": str(path)}, "servers")
    assert_one_config_error(result, f"user file {path}: JSON nested more than")


@pytest.mark.parametrize("deep_legacy", ["NUKE_COMFYUI_URL", "NUKE_COMFYUI_DIR"])
def test_deep_json_in_legacy_list_variables(env, deep_legacy):
    with pytest.raises(ConfigError, match="nested more than") as info:
        load_base_servers({**env, deep_legacy: DEEP})
    assert info.value.source == deep_legacy


def test_deep_json_workflow_names_the_file(tmp_path):
    path = deep_file(tmp_path)
    with pytest.raises(WorkflowError, match="nested more than") as info:
        Workflow.load(path)
    assert str(path) in str(info.value)


def test_workflow_nested_just_under_the_interpreter_limit_is_refused_at_load(tmp_path):
    # json.loads accepts 500 levels; copying such a workflow for a prompt then overflowed.
    deep_input = {**WORKFLOW, "3": {"class_type": "Note", "inputs": {"v": []}}}
    text = json.dumps(deep_input).replace("[]", "[" * 500 + "]" * 500)
    path = tmp_path / "wf.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(WorkflowError, match="nested more than"):
        Workflow.load(path)


def test_deep_override_value_is_a_workflow_error():
    with pytest.raises(WorkflowError, match="nested more than"):
        Override.parse("KSampler.seed=" + DEEP)
    assert Override.parse("KSampler.seed=[1, 2").value == "[1, 2"  # not JSON: a string


def test_render_with_deep_workflow_exits_2(monkeypatch, capsys, env, tmp_path):
    path = deep_file(tmp_path)
    argv = ("render", str(path), "--frames", "1", "--output", str(tmp_path / "o.####.png"))
    result = run_cli(monkeypatch, capsys, env, *argv)
    assert result.code == 2 and "Traceback" not in result.err
    assert result.err.count("\n") == 1 and "nested more than" in result.err


# --- item 12: frame ranges ----------------------------------------------------------------

ABSURD_FRAMES = [
    "1-9999999999999999999999",
    "9999999999999999999999",
    "-9999999999999999999999-1",
    "1-10x9999999999999999999999",
    "1-" + "9" * 5000,
    f"{MAX_FRAME_NUMBER + 1}",
    f"-{MAX_FRAME_NUMBER + 1}",
]


@pytest.mark.parametrize("text", ABSURD_FRAMES)
def test_absurd_frame_numbers_quote_the_part(text):
    with pytest.raises(FrameRangeError) as info:
        FrameRange.parse(f"1 {text}")
    assert info.value.part == text
    assert "frame numbers and steps go up to" in str(info.value)


def test_frame_limits_kept():
    assert len(FrameRange.parse(f"1-{MAX_FRAMES}")) == MAX_FRAMES == 1_000_000
    assert FrameRange.parse(f"{MAX_FRAME_NUMBER}").frames == (MAX_FRAME_NUMBER,)
    assert FrameRange.parse(f"-{MAX_FRAME_NUMBER}").frames == (-MAX_FRAME_NUMBER,)
    assert FrameRange.parse("0001-0003").frames == (1, 2, 3)
    with pytest.raises(FrameRangeError, match="more than"):
        FrameRange.parse(f"1-{MAX_FRAMES + 1}")


def test_render_with_absurd_frames_exits_2(monkeypatch, capsys, env, tmp_path):
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(WORKFLOW), encoding="utf-8")
    argv = ("render", str(path), "--frames", ABSURD_FRAMES[0], "--output", "o.####.png")
    result = run_cli(monkeypatch, capsys, env, *argv)
    assert result.code == 2 and "Traceback" not in result.err
    assert result.err.count("\n") == 1 and f"'{ABSURD_FRAMES[0]}'" in result.err


# --- item 14: hosts -------------------------------------------------------------------------


def one_server(env: dict[str, str], *items: Any) -> tuple[ServerConfig, ...]:
    return load_base_servers({**env, "NUKE_COMFYUI_SERVERS": json.dumps(list(items))})


@pytest.mark.parametrize(
    ("ip", "words"),
    [
        ("[::1]:80", "contains a port"),
        ("10.0.0.5:80", "contains a port"),
        ("[10.0.0.5]", "only for IPv6"),
        ("[::1", "unbalanced"),
        ("::1]", "not an IPv6 address"),
        ("1:2:3", "not an IPv6 address"),
        ("host name", "not a valid host name"),
        ("h?x=1", "not a valid host name"),
    ],
)
def test_json_ip_refuses_ports_and_bad_hosts(env, ip, words):
    with pytest.raises(ConfigError, match=words.replace("?", r"\?")) as info:
        one_server(env, {"name": "a", "ip": ip})
    assert info.value.field == "ip"


def test_json_ip_takes_ipv6_bare_or_bracketed(env):
    servers = one_server(
        env,
        {"name": "a", "ip": "[::1]"},
        {"name": "b", "ip": "::1"},
        {"name": "c", "ip": "fe80::1%eth0"},
    )
    assert [s.url for s in servers] == [
        "http://[::1]:8188",
        "http://[::1]:8188",
        "http://[fe80::1%eth0]:8188",
    ]
    (server,) = one_server(env, {"name": "a", "ip": "[::1]", "host": "::1", "port": 80})
    assert server.url == "http://[::1]:80"


@pytest.mark.parametrize(
    "variables",
    [
        {"NUKE_COMFYUI_URL": "127.0.0.1:8188:9"},
        {"NUKE_COMFYUI_URL": "http://127.0.0.1:8188:9"},
        {"NUKE_COMFYUI_HOST": "127.0.0.1:8188:9"},
        {"NUKE_COMFYUI_IP": "127.0.0.1:8188:9"},
        {"NUKE_COMFYUI_IP_1": "127.0.0.1:8188:9"},
        {"NUKE_COMFYUI_SERVERS": json.dumps([{"url": "127.0.0.1:8188:9"}])},
    ],
)
def test_two_ports_are_refused_everywhere(monkeypatch, capsys, env, variables):
    result = run_cli(monkeypatch, capsys, {**env, **variables}, "servers")
    line = assert_one_config_error(result, next(iter(variables)), "not an IPv6 address")
    assert "'127.0.0.1:8188:9'" in line


@pytest.mark.parametrize(
    ("address", "url"),
    [
        ("[::1]:80", "http://[::1]:80"),
        ("[::1]", "http://[::1]:8188"),
        ("https://[::1]:8443/", "https://[::1]:8443"),
        ("::1", "http://[::1]:8188"),
        ("GPU1.Studio.lan:81", "http://gpu1.studio.lan:81"),
    ],
)
@pytest.mark.parametrize("variable", ["NUKE_COMFYUI_URL", "NUKE_COMFYUI_IP_1"])
def test_url_style_addresses_take_bracketed_ipv6_with_port(env, variable, address, url):
    (server,) = load_base_servers({**env, variable: address})
    assert server.url == url


@pytest.mark.parametrize(
    ("variables", "culprit", "hint"),
    [
        ({"NUKE_COMFYUI_IP_01": "a", "NUKE_COMFYUI_IP_1": "b"}, "NUKE_COMFYUI_IP_01", "_IP_1"),
        ({"NUKE_COMFYUI_IP_01": "a"}, "NUKE_COMFYUI_IP_01", "NUKE_COMFYUI_IP_1"),
        ({"NUKE_COMFYUI_IP_1": "a", "NUKE_COMFYUI_PORT_01": "81"}, "NUKE_COMFYUI_PORT_01", "_1"),
        ({"NUKE_COMFYUI_IP_0": "a"}, "NUKE_COMFYUI_IP_0", "count from 1"),
    ],
)
def test_numbered_variables_with_leading_zeros_are_errors(
    monkeypatch, capsys, env, variables, culprit, hint
):
    result = run_cli(monkeypatch, capsys, {**env, **variables}, "servers")
    assert_one_config_error(result, f"{culprit}: ", hint)


# --- max_download_bytes ---------------------------------------------------------------------


def test_max_download_bytes_in_json_round_trips_and_shows(env):
    (server,) = one_server(env, {"name": "a", "ip": "h", "max_download_bytes": 1000})
    assert server.max_download_bytes == 1000
    assert server.masked()["max_download_bytes"] == 1000
    assert server_to_dict(server)["max_download_bytes"] == 1000
    assert parse_server_dict(server_to_dict(server), server.source) == server
    (default,) = one_server(env, {"name": "a", "ip": "h"})
    assert default.max_download_bytes == DEFAULT_MAX_DOWNLOAD_BYTES
    assert "max_download_bytes" not in server_to_dict(default)  # follows the default
    assert default.masked()["max_download_bytes"] == DEFAULT_MAX_DOWNLOAD_BYTES


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (0, "1 or more"),
        (-1, "1 or more"),
        (True, "must be an integer, got boolean"),
        ("1000", "must be an integer, got string"),
        (1.5, "must be an integer, got number"),
    ],
)
def test_bad_max_download_bytes_in_json(env, value, words):
    with pytest.raises(ConfigError, match=words) as info:
        one_server(env, {"name": "a", "ip": "h", "max_download_bytes": value})
    assert (info.value.source, info.value.field) == ("NUKE_COMFYUI_SERVERS", "max_download_bytes")


def test_max_download_bytes_numbered(env):
    servers = load_base_servers(
        {
            **env,
            "NUKE_COMFYUI_IP_1": "a",
            "NUKE_COMFYUI_MAX_DOWNLOAD_BYTES_1": "1000",
            "NUKE_COMFYUI_IP_2": "b",
        }
    )
    assert [s.max_download_bytes for s in servers] == [1000, DEFAULT_MAX_DOWNLOAD_BYTES]


@pytest.mark.parametrize("text", ["0", "-5", "x", "1.5"])
def test_bad_max_download_bytes_numbered(monkeypatch, capsys, env, text):
    variables = {"NUKE_COMFYUI_IP_1": "a", "NUKE_COMFYUI_MAX_DOWNLOAD_BYTES_1": text}
    result = run_cli(monkeypatch, capsys, {**env, **variables}, "servers")
    assert_one_config_error(result, "NUKE_COMFYUI_MAX_DOWNLOAD_BYTES_1: max_download_bytes: ")


@pytest.mark.parametrize(
    "address", [{}, {"NUKE_COMFYUI_URL": '["a", "b"]'}, {"NUKE_COMFYUI_IP": "h"}]
)
def test_max_download_bytes_for_single_server_variables_and_default(env, address):
    servers = load_base_servers({**env, **address, "NUKE_COMFYUI_MAX_DOWNLOAD_BYTES": "4096"})
    assert servers and all(s.max_download_bytes == 4096 for s in servers)


def test_bad_max_download_bytes_for_single_server_variables(env):
    with pytest.raises(ConfigError) as info:
        load_base_servers({**env, "NUKE_COMFYUI_MAX_DOWNLOAD_BYTES": "0"})
    assert (info.value.source, info.value.field) == (
        "NUKE_COMFYUI_MAX_DOWNLOAD_BYTES",
        "max_download_bytes",
    )


def test_max_download_bytes_in_the_user_file(env, tmp_path):
    user = tmp_path / "user.json"
    server = ServerConfig(name="mine", host="h", max_download_bytes=5000)
    save_user_config(UserConfig().add_server(server), user)
    assert json.loads(user.read_text())["added"]["mine"]["max_download_bytes"] == 5000
    (loaded,) = [s for s in load_servers(env) if s.name == "mine"]
    assert loaded.max_download_bytes == 5000
    user.write_text(json.dumps({"added": {"mine": {"host": "h", "max_download_bytes": False}}}))
    with pytest.raises(ConfigError) as info:
        load_servers(env)
    assert info.value.field == "max_download_bytes" and str(user) in str(info.value)


def test_servers_json_shows_max_download_bytes(monkeypatch, capsys, env):
    variables = {"NUKE_COMFYUI_IP_1": "a", "NUKE_COMFYUI_MAX_DOWNLOAD_BYTES_1": "1000"}
    result = run_cli(monkeypatch, capsys, {**env, **variables}, "servers", "--json")
    assert result.code == 0
    assert json.loads(result.out)[0]["max_download_bytes"] == 1000
