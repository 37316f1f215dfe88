"""core/preflight.py and commands/check_view.py: the pure check with recorded ``/object_info``
answers, then whole clusters of simulated servers on 127.0.0.1."""

from __future__ import annotations

import copy
import io
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from fixtures_sim import INVERT_PROMPT

from comfy_cluster.commands.check_view import (
    check_exit_code,
    print_verdicts,
    verdict_line,
    verdicts_to_json,
)
from comfy_cluster.core.client import ComfyClient
from comfy_cluster.core.errors import (
    AuthenticationFailed,
    ProtocolError,
    ServerTimeout,
    ServerUnreachable,
)
from comfy_cluster.core.preflight import (
    AUTH_REASON,
    CheckRun,
    ServerVerdict,
    VerdictState,
    check_cluster,
    check_server,
    combo_choices,
    iter_checks,
)
from comfy_cluster.core.server import ServerConfig
from comfy_cluster.core.workflow import Workflow
from comfy_cluster.sim.harness import free_port

FIXTURES = Path(__file__).parent / "fixtures"
MODELS_INFO = json.loads((FIXTURES / "comfyui" / "object_info_models.json").read_text())
SUBSET_INFO = json.loads((FIXTURES / "object_info_subset.json").read_text())
MISSING_MODEL = json.loads((FIXTURES / "comfyui" / "prompt_missing_model_400.json").read_text())
IMG2IMG = MISSING_MODEL["request"]["prompt"]


def with_models(info: dict, class_type: str, name: str, models: list) -> dict:
    """A copy of ``info`` whose ``class_type.name`` list form offers ``models``."""
    info = copy.deepcopy(info)
    info[class_type]["input"]["required"][name][0] = list(models)
    return info


# -- combo specs -------------------------------------------------------------------------------


def test_combo_choices_reads_both_forms_and_ignores_other_types() -> None:
    assert combo_choices([["a", "b"], {"tooltip": "x"}]) == ["a", "b"]
    assert combo_choices([[]]) == []
    assert combo_choices(["COMBO", {"options": ["x", "y"]}]) == ["x", "y"]
    assert combo_choices(["COMBO", {}]) == []
    assert combo_choices(["COMBO"]) == []
    for spec in (["INT", {"min": 0}], ["MODEL"], [], None, "STRING", {"a": 1}):
        assert combo_choices(spec) is None


# -- the pure check ----------------------------------------------------------------------------


def test_the_400_fixture_is_predicted_with_node_input_and_value() -> None:
    """The server that answered 400 (empty checkpoint list) is found unusable before a prompt."""
    verdict = check_server(IMG2IMG, MODELS_INFO, server_name="gpu-a")
    assert not verdict.ok and verdict.state == VerdictState.UNUSABLE
    assert verdict.reasons == (
        "node 4 (CheckpointLoaderSimple) input ckpt_name: 'sd15.safetensors' is not on this "
        "server (it has none)",
    )
    expected = MISSING_MODEL["body"]["node_errors"]["4"]["errors"][0]["extra_info"]
    assert expected["input_name"] in verdict.reasons[0]
    assert repr(expected["received_value"]) in verdict.reasons[0]


def test_list_form_with_the_model_is_ok_and_accepts_a_workflow_object() -> None:
    info = with_models(MODELS_INFO, "CheckpointLoaderSimple", "ckpt_name", ["sd15.safetensors"])
    assert check_server(IMG2IMG, info, server_name="a") == ServerVerdict("a", True)
    assert check_server(Workflow.load(IMG2IMG), info, server_name="a").ok


def test_list_form_without_the_model_names_what_the_server_has_clipped() -> None:
    models = [f"model_{i:02d}.safetensors" for i in range(12)]
    info = with_models(MODELS_INFO, "CheckpointLoaderSimple", "ckpt_name", models)
    (reason,) = check_server(IMG2IMG, info, server_name="a").reasons
    assert reason.startswith("node 4 (CheckpointLoaderSimple) input ckpt_name: 'sd15.safetensors'")
    assert "'model_00.safetensors'" in reason and "'model_04.safetensors'" in reason
    assert "model_05" not in reason and "and 7 more" in reason


def test_combo_form_is_checked_too() -> None:
    info = SUBSET_INFO
    assert info["ImageQuantize"]["input"]["required"]["dither"][0] == "COMBO"
    node = {"class_type": "ImageQuantize", "inputs": {"image": ["1", 0], "colors": 4}}
    good = {"1": {"class_type": "LoadImage", "inputs": {"image": "x.png"}}, "2": node}
    good["2"] = {**node, "inputs": {**node["inputs"], "dither": "bayer-4"}}
    verdict = check_server(good, info, server_name="a", skip_inputs=[("1", "image")])
    assert verdict.ok, verdict
    bad = copy.deepcopy(good)
    bad["2"]["inputs"]["dither"] = "blue-noise"
    verdict = check_server(bad, info, server_name="a", skip_inputs=[("1", "image")])
    assert verdict.reasons == (
        "node 2 (ImageQuantize) input dither: 'blue-noise' is not on this server (it has: "
        "'none', 'floyd-steinberg', 'bayer-2', 'bayer-4', 'bayer-8' and 1 more)",
    )


def test_combo_form_with_an_empty_options_list_means_none_available() -> None:
    info = {"Loader": {"input": {"required": {"lora": ["COMBO", {"options": []}]}}}}
    workflow = {"1": {"class_type": "Loader", "inputs": {"lora": "style.safetensors"}}}
    (reason,) = check_server(workflow, info, server_name="a").reasons
    assert (
        reason
        == "node 1 (Loader) input lora: 'style.safetensors' is not on this server (it has none)"
    )


def test_optional_combo_inputs_are_checked() -> None:
    info = {"N": {"input": {"required": {}, "optional": {"vae": [["a.pt"]]}}}}
    assert not check_server(
        {"1": {"class_type": "N", "inputs": {"vae": "b.pt"}}}, info, server_name="s"
    ).ok
    assert check_server(
        {"1": {"class_type": "N", "inputs": {"vae": "a.pt"}}}, info, server_name="s"
    ).ok


def test_missing_classes_are_one_reason_listed_first_and_sorted() -> None:
    workflow = {
        **copy.deepcopy(IMG2IMG),
        "20": {"class_type": "ImageInvert", "inputs": {"image": ["10", 0]}},
        "21": {"class_type": "AnotherCustomNode", "inputs": {"x": "whatever"}},
        "22": {"class_type": "ImageInvert", "inputs": {"image": ["20", 0]}},
    }
    verdict = check_server(workflow, MODELS_INFO, server_name="a")
    assert verdict.reasons[0] == "missing node classes: AnotherCustomNode, ImageInvert"
    assert len(verdict.reasons) == 2 and "ckpt_name" in verdict.reasons[1]
    assert verdict.text.startswith(
        "unusable: missing node classes: AnotherCustomNode, ImageInvert; node 4"
    )


def test_links_wrapped_values_and_frame_tokens_are_not_checked() -> None:
    info = {"N": {"input": {"required": {"a": [["x"]], "b": [["x"]], "c": [["x"]], "d": [["x"]]}}}}
    workflow = {
        "1": {
            "class_type": "N",
            "inputs": {"a": ["2", 0], "b": {"__value__": ["y"]}, "c": "shot_{frame:04d}", "d": "x"},
        },
        "2": {"class_type": "N", "inputs": {"a": "x"}},
    }
    assert check_server(workflow, info, server_name="a").ok


def test_non_combo_inputs_and_unknown_inputs_are_left_alone() -> None:
    workflow = copy.deepcopy(IMG2IMG)
    workflow["3"]["inputs"]["steps"] = 99999  # out of range: ComfyUI's business, not a model
    workflow["3"]["inputs"]["not_an_input"] = "zzz"
    info = with_models(MODELS_INFO, "CheckpointLoaderSimple", "ckpt_name", ["sd15.safetensors"])
    assert check_server(workflow, info, server_name="a").ok


def test_other_combos_are_checked_like_comfyui_does() -> None:
    workflow = copy.deepcopy(IMG2IMG)
    workflow["3"]["inputs"]["sampler_name"] = "euler_typo"
    info = with_models(MODELS_INFO, "CheckpointLoaderSimple", "ckpt_name", ["sd15.safetensors"])
    (reason,) = check_server(workflow, info, server_name="a").reasons
    assert reason.startswith("node 3 (KSampler) input sampler_name: 'euler_typo' is not on")


def test_skip_inputs_leaves_the_image_the_render_uploads() -> None:
    info = with_models(MODELS_INFO, "CheckpointLoaderSimple", "ckpt_name", ["sd15.safetensors"])
    workflow = copy.deepcopy(IMG2IMG)
    workflow["10"]["inputs"]["image"] = "not_uploaded_yet.png"
    assert "node 10 (LoadImage)" in check_server(workflow, info, server_name="a").reasons[0]
    assert check_server(workflow, info, server_name="a", skip_inputs=[("10", "image")]).ok


def test_long_values_are_clipped_in_the_message() -> None:
    info = {"N": {"input": {"required": {"m": [[]]}}}}
    (reason,) = check_server(
        {"1": {"class_type": "N", "inputs": {"m": "x" * 500}}}, info, server_name="a"
    ).reasons
    assert len(reason) < 200 and "..." in reason


def test_check_server_does_not_change_its_inputs() -> None:
    workflow, info = copy.deepcopy(IMG2IMG), copy.deepcopy(MODELS_INFO)
    check_server(workflow, info, server_name="a", skip_inputs=[("10", "image")])
    assert workflow == IMG2IMG and info == MODELS_INFO


# -- asking servers, with a fake client -----------------------------------------------------------


class FakeClient:
    """``system_stats`` / ``object_info`` answering from a plan; records that it was closed."""

    def __init__(self, info: Any = None, *, error: Any = None, delay: float = 0.0) -> None:
        self.info, self.error, self.delay = info, error, delay
        self.closed = False
        self.calls: list[str] = []

    def system_stats(self) -> dict:
        self.calls.append("system_stats")
        time.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return {"system": {}, "devices": []}

    def object_info(self) -> dict:
        self.calls.append("object_info")
        return self.info

    def close(self) -> None:
        self.closed = True


def servers(*names: str, **kw: Any) -> list[ServerConfig]:
    return [ServerConfig(name=n, host="127.0.0.1", port=1, **kw) for n in names]


GOOD_INFO = with_models(MODELS_INFO, "CheckpointLoaderSimple", "ckpt_name", ["sd15.safetensors"])


def test_errors_become_reasons_from_our_error_tree() -> None:
    clients = {
        "ok": FakeClient(GOOD_INFO),
        "model": FakeClient(MODELS_INFO),
        "down": FakeClient(error=ServerUnreachable("connection refused", server="down")),
        "slow": FakeClient(error=ServerTimeout("read timed out", server="slow")),
        "auth": FakeClient(error=AuthenticationFailed("401 Unauthorized", server="auth")),
        "odd": FakeClient(error=ProtocolError("GET /system_stats: not ComfyUI", server="odd")),
    }
    verdicts = check_cluster(IMG2IMG, servers(*clients), lambda s, t: clients[s.name], timeout=5)
    by = {v.name: v for v in verdicts}
    assert [v.name for v in verdicts] == list(clients)  # configured order
    assert by["ok"].ok and by["ok"].text == "ok"
    assert by["model"].state == "unusable" and "ckpt_name" in by["model"].text
    assert by["down"].reasons == ("unreachable: connection refused",)
    assert by["down"].state == VerdictState.UNREACHABLE
    assert by["slow"].reasons == ("unreachable: read timed out",)
    assert by["auth"].state == VerdictState.AUTH
    assert by["auth"].reasons == (AUTH_REASON,) and by["auth"].state == VerdictState.AUTH
    assert by["odd"].reasons == ("GET /system_stats: not ComfyUI",)
    assert by["odd"].state == VerdictState.ERROR
    assert all(c.closed for c in clients.values())
    assert clients["down"].calls == ["system_stats"]  # nothing more asked of a dead server


def test_disabled_servers_are_not_asked() -> None:
    asked: list[str] = []

    def factory(server: ServerConfig, timeouts: Any) -> FakeClient:
        asked.append(server.name)
        return FakeClient(GOOD_INFO)

    configs = servers("on") + servers("off", enabled=False)
    verdicts = check_cluster(IMG2IMG, configs, factory, timeout=5)
    assert asked == ["on"]
    assert verdicts[1] == ServerVerdict("off", False, ("disabled",), VerdictState.DISABLED)
    assert verdicts[1].text == "disabled"


def test_a_factory_that_raises_is_a_verdict_not_a_crash() -> None:
    def factory(server: ServerConfig, timeouts: Any) -> Any:
        raise ValueError("bad CA bundle")

    (verdict,) = check_cluster(IMG2IMG, servers("a"), factory, timeout=5)
    assert verdict.state == VerdictState.ERROR and verdict.reasons == ("bad CA bundle",)


def test_verdicts_come_as_they_are_known_not_after_the_slowest() -> None:
    clients = {"slow": FakeClient(GOOD_INFO, delay=1.0), "fast": FakeClient(GOOD_INFO)}
    start = time.monotonic()
    first = next(
        iter_checks(IMG2IMG, servers("slow", "fast"), lambda s, t: clients[s.name], timeout=5)
    )
    assert first.name == "fast" and time.monotonic() - start < 0.8


def test_a_render_worker_can_wait_for_its_own_server_only() -> None:
    clients = {"slow": FakeClient(GOOD_INFO, delay=1.0), "fast": FakeClient(MODELS_INFO)}
    seen: list[str] = []
    run = CheckRun(
        IMG2IMG,
        servers("slow", "fast"),
        lambda s, t: clients[s.name],
        timeout=5,
        on_verdict=lambda v: seen.append(v.name),
    ).start()
    start = time.monotonic()
    assert not run.verdict("fast").ok
    assert time.monotonic() - start < 0.8
    assert run.verdict("slow").ok
    assert seen == ["fast", "slow"]
    assert [v.name for v in run.results()] == ["slow", "fast"]


def test_a_server_silent_past_the_timeout_gets_a_verdict_at_the_deadline() -> None:
    release = threading.Event()

    class Stuck(FakeClient):
        def system_stats(self) -> dict:
            release.wait(10)
            return {}

    clients = {"stuck": Stuck(GOOD_INFO), "ok": FakeClient(GOOD_INFO)}
    start = time.monotonic()
    got = list(
        iter_checks(IMG2IMG, servers("stuck", "ok"), lambda s, t: clients[s.name], timeout=0.3)
    )
    release.set()
    assert time.monotonic() - start < 2
    assert [v.name for v in got] == ["ok", "stuck"]
    assert got[1].reasons == ("unreachable: no answer in 0.3 s",)


def test_the_timeout_reaches_the_client() -> None:
    seen: list[Any] = []

    def factory(server: ServerConfig, timeouts: Any) -> FakeClient:
        seen.append(timeouts)
        return FakeClient(GOOD_INFO)

    check_cluster(IMG2IMG, servers("a"), factory, timeout=1.5)
    assert seen[0].connect == 1.5 and seen[0].read == 1.5


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        CheckRun(IMG2IMG, servers("a", "a"), lambda s, t: None, timeout=1)
    with pytest.raises(ValueError):
        CheckRun(IMG2IMG, servers("a"), lambda s, t: None, timeout=0)


# -- the printed view ---------------------------------------------------------------------------


VERDICTS = [
    ServerVerdict("gpu-a", True),
    ServerVerdict("gpu-b", False, ("missing node classes: ImageInvert",), "unusable"),
    ServerVerdict("gpu-long", False, ("unreachable: connection refused",), "unreachable"),
]


def test_print_verdicts_one_aligned_line_per_server() -> None:
    out = io.StringIO()
    print_verdicts(VERDICTS, out, color=False)
    assert out.getvalue().splitlines() == [
        "gpu-a     ok",
        "gpu-b     unusable: missing node classes: ImageInvert",
        "gpu-long  unreachable: connection refused",
    ]


def test_print_verdicts_in_color_colours_the_verdict_word_only() -> None:
    out = io.StringIO()
    print_verdicts(VERDICTS[:2], out, color=True)
    lines = out.getvalue().splitlines()
    assert lines[0] == "gpu-a  \033[32mok\033[0m"
    assert lines[1] == "gpu-b  \033[31munusable\033[0m: missing node classes: ImageInvert"


def test_server_text_cannot_forge_a_line() -> None:
    verdict = ServerVerdict("a", False, ("boom\ngpu-z  ok",), "error")
    assert verdict_line(verdict) == "a  boom gpu-z ok"


def test_exit_code_is_zero_when_any_server_can_run_the_job() -> None:
    assert check_exit_code(VERDICTS) == 0
    assert check_exit_code(VERDICTS[1:]) == 1
    assert check_exit_code([]) == 1


def test_verdicts_to_json() -> None:
    assert verdicts_to_json(VERDICTS[1:2]) == [
        {
            "server": "gpu-b",
            "ok": False,
            "state": "unusable",
            "reasons": ["missing node classes: ImageInvert"],
        }
    ]


# -- against simulated servers --------------------------------------------------------------------

TIMEOUT = 2.0


def cfg(name: str, port: int, **kw: Any) -> ServerConfig:
    return ServerConfig(name=name, host="127.0.0.1", port=port, **kw)


def real_client(server: ServerConfig, timeouts: Any) -> ComfyClient:
    return ComfyClient(server, timeouts=timeouts)


def nothing_queued(sim: Any) -> bool:
    queue = requests.get(sim.url + "/queue", timeout=5).json()
    history = requests.get(sim.url + "/history", timeout=5).json()
    return not queue["queue_running"] and not queue["queue_pending"] and not history


def test_sims_all_good_and_nothing_sent_or_written(
    sim_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    sims = [sim_factory(), sim_factory()]
    configs = [cfg(f"gpu-{i}", s.port) for i, s in enumerate(sims)]
    verdicts = check_cluster(INVERT_PROMPT, configs, real_client, timeout=TIMEOUT)
    assert [v.text for v in verdicts] == ["ok", "ok"]
    assert check_exit_code(verdicts) == 0
    assert all(nothing_queued(s) for s in sims)
    assert os.listdir(tmp_path) == []


def test_sims_one_missing_a_class_one_unreachable(sim_factory: Any) -> None:
    good = sim_factory()
    lacking = sim_factory(missing_classes=("ImageInvert",))
    configs = [cfg("good", good.port), cfg("lacking", lacking.port), cfg("down", free_port())]
    verdicts = check_cluster(INVERT_PROMPT, configs, real_client, timeout=TIMEOUT)
    by = {v.name: v for v in verdicts}
    assert by["good"].ok
    assert by["lacking"].text == "unusable: missing node classes: ImageInvert"
    assert by["down"].state == VerdictState.UNREACHABLE
    assert by["down"].reasons[0].startswith("unreachable: connection refused")
    assert check_exit_code(verdicts) == 0
    out = io.StringIO()
    print_verdicts(verdicts, out, color=False)
    assert out.getvalue().splitlines()[1] == "lacking  unusable: missing node classes: ImageInvert"


def test_sims_all_unusable(sim_factory: Any, black_hole: Any) -> None:
    lacking = sim_factory(missing_classes=("ImageInvert",))
    locked = sim_factory(token="s3cret")
    refusing = sim_factory(refuse_connections=True)
    configs = [
        cfg("lacking", lacking.port),
        cfg("locked", locked.port),
        cfg("refusing", refusing.port),
        cfg("hole", black_hole.port),
        cfg("off", lacking.port, enabled=False),
    ]
    start = time.monotonic()
    verdicts = check_cluster(INVERT_PROMPT, configs, real_client, timeout=0.5)
    assert time.monotonic() - start < 3  # in parallel: about one timeout, not one per server
    assert [v.state for v in verdicts] == [
        "unusable",
        "auth",
        "unreachable",
        "unreachable",
        "disabled",
    ]
    assert verdicts[1].reasons == (AUTH_REASON,)
    assert verdicts[2].reasons[0].startswith("unreachable: connection refused")
    hole = verdicts[3].reasons[0]  # the client's timeout or the run's deadline, whichever is first
    assert hole.startswith(("unreachable: timed out", "unreachable: no answer in 0.5 s")), hole
    assert check_exit_code(verdicts) == 1
    assert nothing_queued(lacking)


def test_sims_the_token_lets_the_check_in(sim_factory: Any) -> None:
    locked = sim_factory(token="s3cret")
    (verdict,) = check_cluster(
        INVERT_PROMPT, [cfg("locked", locked.port, token="s3cret")], real_client, timeout=TIMEOUT
    )
    assert verdict.ok


def test_sim_with_a_model_list_monkeypatched(
    sim_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real client whose /object_info answer is the recorded model listing (no checkpoint)."""
    sim = sim_factory()
    monkeypatch.setattr(ComfyClient, "object_info", lambda self, **kw: MODELS_INFO)
    (verdict,) = check_cluster(IMG2IMG, [cfg("gpu", sim.port)], real_client, timeout=TIMEOUT)
    assert (
        verdict.state == "unusable" and "'sd15.safetensors' is not on this server" in verdict.text
    )
