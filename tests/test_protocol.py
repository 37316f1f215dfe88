"""core/protocol.py: replay the recorded ComfyUI 0.3.64 transcripts and HTTP examples."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from comfy_cluster.core import protocol as p
from comfy_cluster.core.errors import ExecutionFailed, Interrupted, ProtocolError, WorkflowRejected

FIXTURES = Path(__file__).parent / "fixtures"
TRANSCRIPTS = json.loads((FIXTURES / "ws_transcripts.json").read_text())["scenarios"]
HTTP = json.loads((FIXTURES / "http_examples.json").read_text())


def _events(scenario: str) -> list[p.Event]:
    return [
        p.parse_message(json.dumps(item["msg"]))
        for item in TRANSCRIPTS[scenario]
        if item["kind"] == "text"
    ]


@pytest.mark.parametrize("scenario", sorted(TRANSCRIPTS))
def test_every_recorded_text_frame_parses_to_a_known_event(scenario: str) -> None:
    events = _events(scenario)
    assert events
    assert not [e for e in events if isinstance(e, p.UnknownEvent)]
    greeting = events[0]
    assert isinstance(greeting, p.StatusEvent) and greeting.sid and greeting.queue_remaining == 0


@pytest.mark.parametrize("scenario", sorted(TRANSCRIPTS))
def test_each_run_ends_with_executing_node_null_for_its_prompt(scenario: str) -> None:
    posted = next(i for i in TRANSCRIPTS[scenario] if i["kind"] == "http POST /prompt")
    prompt_id = posted["msg"]["body"]["prompt_id"]
    events = _events(scenario)
    last = events[-1]
    assert isinstance(last, p.Executing) and last.finished and last.prompt_id == prompt_id
    # every per-prompt event carries the id we can route by
    routed = [e for e in events if not isinstance(e, (p.StatusEvent, p.FeatureFlags))]
    assert all(e.prompt_id == prompt_id for e in routed)


def test_fresh_run_sequence_and_outputs() -> None:
    events = _events("fresh_run_EmptyImage_ImageInvert_SaveImage")
    kinds = [type(e).__name__ for e in events]
    assert kinds.index("ExecutionStart") < kinds.index("Executed") < kinds.index("ExecutionSuccess")
    executed = next(e for e in events if isinstance(e, p.Executed))
    images = p.output_images(executed)
    assert [i.filename for i in images] == ["probe_00001_.png"]
    assert images[0].type == "output" and images[0].node_id == executed.node
    state = next(e for e in events if isinstance(e, p.ProgressState))
    node = next(iter(state.nodes.values()))
    assert node.state in ("running", "finished") and node.max == 1.0
    with pytest.raises(TypeError):
        state.nodes["x"] = node  # type: ignore[index]  # read-only mapping


def test_cached_run_lists_cached_nodes() -> None:
    cached = next(
        e for e in _events("identical_resubmit_fully_cached") if isinstance(e, p.ExecutionCached)
    )
    assert cached.nodes == ("1", "2", "3")


def test_execution_error_event_becomes_execution_failed() -> None:
    events = _events("runtime_error_SaveImage_prefix_escape")
    err = next(e for e in events if isinstance(e, p.ExecutionErrorEvent))
    assert (err.node_id, err.node_type, err.exception_type) == ("2", "SaveImage", "Exception")
    assert "outside the output folder" in err.exception_message
    assert err.executed == ("1",)
    exc = err.to_error("render1")
    assert isinstance(exc, ExecutionFailed)
    assert (exc.node_id, exc.node_type, exc.prompt_id) == ("2", "SaveImage", err.prompt_id)
    assert str(exc).startswith("render1: node 2 (SaveImage) failed: Exception:")


def test_interrupted_event() -> None:
    events = _events("interrupt_with_prompt_id")
    ev = next(e for e in events if isinstance(e, p.ExecutionInterrupted))
    assert (ev.node_id, ev.node_type, ev.executed) == ("3", "ImageBlur", ("1", "2"))
    assert isinstance(ev.to_error("r"), Interrupted)


def test_progress_events_and_feature_flags() -> None:
    events = _events("SaveImageWebsocket_with_feature_flags")
    flags = next(e for e in events if isinstance(e, p.FeatureFlags))
    assert flags.flags["supports_preview_metadata"] is True
    progress = [e for e in events if isinstance(e, p.ProgressEvent)]
    assert progress and progress[0].max == 2.0 and progress[0].node == "2"


def test_executing_without_prompt_id_after_reconnect_is_not_finished() -> None:
    ev = p.parse_message('{"type":"executing","data":{"node":"5"}}')
    assert isinstance(ev, p.Executing) and ev.prompt_id is None and not ev.finished
    ev = p.parse_message('{"type":"executing","data":{"node":null}}')
    assert not ev.finished  # pre-2023 servers: no prompt id, cannot be routed


def test_unknown_types_are_kept_not_fatal() -> None:
    ev = p.parse_message('{"type":"logs","data":{"entries":[],"size":{}}}')
    assert isinstance(ev, p.UnknownEvent) and ev.type == "logs"
    ev = p.parse_message('{"type":"crystools.monitor","data":{"prompt_id":"x","gpu":1}}')
    assert isinstance(ev, p.UnknownEvent) and ev.prompt_id == "x"


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "[]",
        '{"data": {}}',
        '{"type": 5}',
        '{"type": "status", "data": {}}',
        '{"type": "status", "data": {"status": {"exec_info": {"queue_remaining": "x"}}}}',
        '{"type": "executed", "data": []}',
        '{"type": "execution_cached", "data": {"nodes": 3}}',
        '{"type": "progress", "data": {"value": "half"}}',
    ],
)
def test_malformed_frames_raise_protocol_error(frame: str) -> None:
    with pytest.raises(ProtocolError):
        p.parse_message(frame)


def test_binary_frames_are_described_safely() -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 20
    assert p.describe_binary(struct.pack(">II", 1, 2) + png).kind == p.PREVIEW_IMAGE
    meta = json.dumps({"node_id": "2", "prompt_id": "abc"}).encode()
    frame = p.describe_binary(struct.pack(">II", 4, len(meta)) + meta + png)
    assert (frame.kind, frame.prompt_id, frame.node_id) == (4, "abc", "2")
    text = p.describe_binary(struct.pack(">II", 3, 1) + b"7" + b"width: 40")
    assert (text.kind, text.node_id) == (3, "7")
    assert p.describe_binary(b"\x00").kind == -1
    broken = p.describe_binary(struct.pack(">II", 4, 999) + b"{not json")
    assert broken.kind == 4 and broken.prompt_id is None


def test_node_errors_become_node_error_tuples() -> None:
    body = HTTP["post_prompt_400_missing_input"]["body"]
    exc = p.parse_node_errors(body, server="render1", prompt_id="pid")
    assert isinstance(exc, WorkflowRejected)
    assert exc.error_type == "prompt_outputs_failed_validation"
    (err,) = exc.node_errors
    assert (err.node_id, err.class_type, err.type, err.input_name) == (
        "2",
        "ImageInvert",
        "required_input_missing",
        "image",
    )
    assert exc.node_ids == ("2",) and exc.prompt_id == "pid" and exc.server == "render1"
    assert "node 2 (ImageInvert) input 'image'" in str(exc)


def test_unknown_class_rejection_names_node_and_class() -> None:
    exc = p.parse_node_errors(HTTP["post_prompt_400_unknown_class"]["body"])
    assert exc.error_type == "invalid_prompt"
    assert exc.missing_classes == ("NoSuchNode",)
    (err,) = exc.node_errors
    assert (err.node_id, err.class_type) == ("1", "NoSuchNode")


@pytest.mark.parametrize("body", [None, "text", [], {"error": "boom"}, {"node_errors": {"1": 5}}])
def test_odd_rejection_bodies_still_give_workflow_rejected(body: object) -> None:
    assert isinstance(p.parse_node_errors(body), WorkflowRejected)


def test_queue_reads_positions_0_to_4_and_sorts_pending() -> None:
    q = p.parse_queue(HTTP["queue_running_and_pending"])
    assert q.running == ("slow-0",) and q.pending == ("slow-1",)
    assert q.owners["slow-0"] == "fixture-client" and q.depth == 2 and "slow-1" in q
    six = {
        "queue_running": [],
        "queue_pending": [
            [9, "b", {}, {"client_id": "x"}, ["3"], {"sensitive": 1}],
            [2, "a", {}, {}, ["3"], {}],
        ],
    }
    q = p.parse_queue(six)
    assert q.pending == ("a", "b") and q.owners["a"] is None
    with pytest.raises(ProtocolError):
        p.parse_queue({"queue_running": "nope"})


def test_history_entries() -> None:
    pid, entry = next(iter(HTTP["history_by_id"].items()))
    result = p.parse_history_entry(pid, entry)
    assert result.outcome == "success" and result.completed
    assert [i.relpath for i in result.images] == ["cluster/job42/shot.0001_00001_.png"]
    result.raise_for_outcome()
    pid, entry = next(iter(HTTP["history_interrupted"].items()))
    result = p.parse_history_entry(pid, entry)
    assert result.outcome == "interrupted" and not result.completed
    with pytest.raises(Interrupted):
        result.raise_for_outcome("r")
    scenario = TRANSCRIPTS["runtime_error_SaveImage_prefix_escape"]
    hist = next(i for i in scenario if i["kind"] == "http GET /history/{id}")["msg"]["body"]
    pid, entry = next(iter(hist.items()))
    result = p.parse_history_entry(pid, entry)
    assert result.outcome == "error" and result.error and result.error.node_id == "2"
    with pytest.raises(ExecutionFailed):
        result.raise_for_outcome()


def test_output_images_from_history_entry_filters_by_node() -> None:
    entry = {"outputs": {"3": {"images": [{"filename": "a.png"}]}, "9": {"text": ["hi"]}}}
    assert [i.filename for i in p.output_images(entry)] == ["a.png"]
    assert p.output_images(entry, node_id="9") == ()
    assert p.output_images(None) == ()


def test_system_stats() -> None:
    stats = json.loads((FIXTURES / "system_stats.json").read_text())
    info = p.parse_system_stats(stats)
    assert info.comfyui_version and info.os and info.device
    assert info.vram_total and info.vram_free is not None
    with pytest.raises(ProtocolError):
        p.parse_system_stats({"hello": "world"})


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity"])
def test_system_stats_with_non_finite_vram_parses_instead_of_raising(text: str) -> None:
    """Regression: json.loads accepts NaN/Infinity and int() raised ValueError/OverflowError,
    which escaped the client untranslated and made a health poll crash without a status."""
    device = f'{{"name": "cuda:0", "vram_total": {text}, "vram_free": 1024}}'
    body = json.loads(f'{{"system": {{"os": "posix"}}, "devices": [{device}]}}')
    info = p.parse_system_stats(body)
    assert (info.vram_total, info.vram_free, info.device) == (None, 1024, "cuda:0")
