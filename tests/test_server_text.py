"""Server text made safe (core/server_text.py) and applied where server data becomes our events,
errors and health values (core/protocol.py): no control characters, no secrets, a sane length."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from comfy_cluster.core import protocol as p
from comfy_cluster.core.limits import MAX_TEXT_CHARS
from comfy_cluster.core.server import ServerConfig
from comfy_cluster.core.server_text import ELLIPSIS, PLAIN, SEPARATOR, ServerText, secret_forms

TOKEN = "tok-SECRET-1234567890"
API_KEY = 'key "quoted"/&=value'
SERVER = ServerConfig(
    name="gpu1", host="127.0.0.1", port=1, token=TOKEN, headers={"X-Api-Key": API_KEY}
)
TEXT = ServerText.of(SERVER)

#: Everything a terminal would act on: clear screen, title, bell, cursor moves, C1 CSI, bidi.
HOSTILE = (
    "\x1b[2J\x1b[H\x1b]0;owned\x07\x07boom\r\nfake line\x1b[31mred\x1b[0m\x9b2J\x1bc"
    "\x00nul\x7fdel\u202eevil\u2028next\tcol"
)
CONTROL_CHARS = [chr(c) for c in range(0x20)] + [chr(c) for c in range(0x7F, 0xA0)]


def assert_safe(text: str, longest: int = MAX_TEXT_CHARS) -> None:
    """One cleaned piece (``longest`` more for a message built around one)."""
    bad = [c for c in text if c in CONTROL_CHARS or c in "\u202e\u2028\u2029"]
    assert not bad, f"control characters left: {bad!r} in {text!r}"
    assert TOKEN not in text and API_KEY not in text
    assert len(text) <= longest


def test_control_characters_and_escape_sequences_are_removed() -> None:
    cleaned = PLAIN.clean(HOSTILE)
    assert_safe(cleaned)
    assert "owned" not in cleaned  # the window title went with its escape sequence
    assert cleaned == f"boom{SEPARATOR}fake linered2Jnuldelevil{SEPARATOR}next col"


def test_line_breaks_become_one_visible_separator() -> None:
    assert PLAIN.clean("a\r\nb\n\n\nc\rd") == f"a{SEPARATOR}b{SEPARATOR}c{SEPARATOR}d"


def test_long_text_is_cut_with_an_ellipsis() -> None:
    cleaned = PLAIN.clean("x" * 100_000)
    assert len(cleaned) == MAX_TEXT_CHARS and cleaned.endswith(ELLIPSIS)
    assert ServerText(limit=10).clean("abcdefghijklmnop") == "abcdefghi" + ELLIPSIS


@pytest.mark.parametrize(
    "echoed",
    [
        f"Authorization: Bearer {TOKEN}",
        f"X-Api-Key: {API_KEY}",
        json.dumps({"headers": {"X-Api-Key": API_KEY}}),  # JSON-escaped quotes
        "GET /x?key=key%20%22quoted%22%2F%26%3Dvalue",  # percent-encoded
        f"tok-SECRET-\x1b[0m1234567890 hidden by an escape sequence: {TOKEN[:4]}",
    ],
)
def test_every_configured_secret_is_masked_in_every_form(echoed: str) -> None:
    cleaned = TEXT.clean(echoed)
    assert_safe(cleaned)
    assert "***" in cleaned
    assert "SECRET" not in cleaned and "quoted" not in cleaned


def test_secret_forms_cover_raw_json_and_url_encodings_longest_first() -> None:
    forms = secret_forms([API_KEY])
    assert API_KEY in forms and json.dumps(API_KEY)[1:-1] in forms
    assert "key%20%22quoted%22%2F%26%3Dvalue" in forms
    assert list(forms) == sorted(forms, key=len, reverse=True)
    assert secret_forms(["", ""]) == ()


def test_ordinary_text_is_returned_as_it_is_and_cheaply() -> None:
    for value in ("5", "prompt-1234", "cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync", "é ü"):
        assert TEXT.clean(value) is value
    start = time.perf_counter()
    for _ in range(20_000):
        TEXT.clean("12")
    assert time.perf_counter() - start < 1.0  # about 1 µs each; generous for a shared CI


def test_a_huge_non_string_value_becomes_a_short_repr_quickly() -> None:
    body: Any = {"k": ["v" * 1000] * 100_000, "n": TOKEN}
    start = time.perf_counter()
    cleaned = TEXT.clean(body)
    assert time.perf_counter() - start < 0.5
    assert_safe(cleaned)


# --- applied where server data becomes events, errors and health values --------------------------


def test_execution_error_event_texts_are_cleaned_and_masked() -> None:
    frame = json.dumps(
        {
            "type": "execution_error",
            "data": {
                "prompt_id": "p1",
                "node_id": "5\x1b[2J",
                "node_type": "KSampler\r\nINJECTED",
                "exception_type": "RuntimeError\x07",
                "exception_message": f"{HOSTILE} token={TOKEN} " + "y" * 5000,
                "traceback": [f"line {i}\n" for i in range(1000)] + [f"Bearer {TOKEN}"],
                "executed": ["1\x1b]0;t\x07"],
            },
        }
    )
    event = p.parse_message(frame, text=TEXT)
    assert isinstance(event, p.ExecutionErrorEvent)
    for value in (event.node_id, event.node_type, event.exception_type, event.exception_message):
        assert_safe(value or "")
    assert event.node_id == "5" and event.node_type == f"KSampler{SEPARATOR}INJECTED"
    assert len(event.traceback) == 40 and all("\n" not in line for line in event.traceback)
    assert event.traceback[-1] == "Bearer ***"
    assert event.executed == ("1",)
    assert_safe(str(event.to_error("gpu1")), 4 * MAX_TEXT_CHARS)


def test_history_errors_are_cleaned_too() -> None:
    entry = {
        "outputs": {},
        "status": {
            "status_str": "error",
            "completed": False,
            "messages": [
                [
                    "execution_error",
                    {"prompt_id": "p1", "node_id": "3", "exception_message": f"\x1b[2J{TOKEN}"},
                ]
            ],
        },
    }
    result = p.parse_history_entry("p1", entry, text=TEXT)
    assert result.error is not None and result.error.exception_message == "***"


def test_node_errors_of_a_rejected_workflow_are_cleaned() -> None:
    body = {
        "error": {"type": "prompt_outputs_failed_validation", "message": f"bad\x1b[2J{TOKEN}"},
        "node_errors": {
            "7\r\nX": {
                "class_type": "Load\x07Image",
                "errors": [
                    {
                        "type": "value_not_valid",
                        "message": "Value not in list\x1b]0;pwned\x07",
                        "details": f"image: {API_KEY}",
                        "extra_info": {"input_name": "image\x1b[1m"},
                    }
                ],
            }
        },
    }
    rejected = p.parse_node_errors(body, server="gpu1", text=TEXT)
    (err,) = rejected.node_errors
    assert (err.node_id, err.class_type, err.input_name) == (f"7{SEPARATOR}X", "LoadImage", "image")
    assert err.message == "Value not in list" and err.details == "image: ***"
    assert_safe(str(rejected), 4 * MAX_TEXT_CHARS)
    text_body = p.parse_node_errors("<html>\x1b[2J" + "z" * 10_000, text=TEXT)
    assert_safe(str(text_body), MAX_TEXT_CHARS + 30)


def test_system_stats_strings_are_cleaned() -> None:
    body = {
        "system": {"os": "posix\x1b[2J", "comfyui_version": "0.3\r\n64", "python_version": TOKEN},
        "devices": [{"name": "cuda:0 \x1b]0;x\x07RTX" + "!" * 2000, "type": "cuda\x07"}],
    }
    info = p.parse_system_stats(body, text=TEXT)
    assert (info.os, info.python_version, info.device_type) == ("posix", "***", "cuda")
    assert info.comfyui_version == f"0.3{SEPARATOR}64"
    assert info.device is not None and info.device.startswith("cuda:0 RTX!")
    assert_safe(info.device)


def test_queue_ids_are_cleaned() -> None:
    body = {"queue_running": [[0, "p\x1b[2J1", {}, {"client_id": "c\x07"}]], "queue_pending": []}
    state = p.parse_queue(body, text=TEXT)
    assert state.running == ("p1",) and state.owners == {"p1": "c"}


def test_protocol_errors_quote_server_data_cleaned() -> None:
    with pytest.raises(p.ProtocolError) as info:
        p.parse_message(f"not json \x1b[2J {TOKEN} " + "q" * 10_000, text=TEXT)
    assert_safe(str(info.value), 200)
    with pytest.raises(p.ProtocolError) as info:
        p.parse_message(json.dumps({"type": "status", "data": {"x": f"\x1b[2J{TOKEN}"}}), text=TEXT)
    assert_safe(str(info.value), 200)


def test_what_a_real_server_sends_is_unchanged() -> None:
    """Recorded ComfyUI 0.3.64 frames: ids and node names come through exactly as sent."""
    from pathlib import Path

    path = Path(__file__).parent / "fixtures" / "ws_transcripts.json"
    seen = 0
    for frames in json.loads(path.read_text())["scenarios"].values():
        for item in frames:
            if item["kind"] != "text" or not isinstance(item["msg"].get("data"), dict):
                continue
            data = item["msg"]["data"]
            event = p.parse_message(json.dumps(item["msg"]), text=TEXT)
            assert event.prompt_id == data.get("prompt_id")
            if isinstance(event, p.Executing):
                assert event.node == data.get("node")
                seen += 1
    assert seen > 0
