"""Warm-model affinity: which checkpoint each server holds, read from our prompts and from the
loader inputs of other clients' prompts (never their ``extra_data``), and two jobs with
different checkpoints partitioning a cluster instead of thrashing it."""

from __future__ import annotations

import copy
import io
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from sim_jobs import configs, inputs

from comfy_cluster.core.engine import events as ev
from comfy_cluster.core.engine.affinity import CONTEST_MEMORY, ModelAffinity
from comfy_cluster.core.engine.job import RenderJob
from comfy_cluster.core.engine.model_names import history_models, prompt_models, queue_models
from comfy_cluster.core.engine.scheduler import Scheduler
from comfy_cluster.core.server import ServerConfig
from comfy_cluster.sim.harness import start_sims, stop_all
from comfy_cluster.sim.models import foreign_prompt
from comfy_cluster.sim.options import SimOptions

FIXTURES = Path(__file__).parent / "fixtures" / "comfyui"
IMG2IMG = json.loads((FIXTURES / "workflow_img2img_api.json").read_text(encoding="utf-8"))
SECRET = "comfyorg-SECRET-KEY-do-not-show"
SIZE = (16, 16)


def img2img(ckpt: str) -> dict[str, Any]:
    workflow = copy.deepcopy(IMG2IMG)
    workflow["4"]["inputs"]["ckpt_name"] = ckpt
    return workflow


def item(number: int, pid: str, ckpt: str, extra: Any = None) -> list:
    return [number, pid, foreign_prompt(ckpt, number), extra or {}, ["9"]]


# -- reading loader inputs ------------------------------------------------------------------


def test_the_checkpoint_comes_from_the_loader_input_only() -> None:
    assert prompt_models(img2img("sim-a.safetensors")) == {"sim-a.safetensors"}
    assert prompt_models({"1": {"class_type": "LoadImage", "inputs": {"image": "x.png"}}}) == set()
    assert prompt_models("not a prompt") == set()
    junk_first = {"0": "not a node", "1": {"class_type": "UNETLoader"}, **img2img("x.safetensors")}
    assert prompt_models(junk_first) == {"x.safetensors"}  # a server's junk hides nothing after it


def test_a_loader_input_that_is_not_a_name_is_no_model() -> None:
    """A checkpoint fed by a link (a primitive node) or left empty names no model: it must not
    be taken for one, nor break the read of the rest of the prompt."""
    for value in (["7", 0], "", 3):
        prompt = img2img("x.safetensors")
        prompt["4"]["inputs"]["ckpt_name"] = value
        assert prompt_models(prompt) == set(), value


def test_foreign_prompts_are_told_ahead_of_and_behind_ours() -> None:
    body = {
        "queue_running": [item(1, "f1", "a.safetensors")],
        "queue_pending": [
            item(2, "f2", "b.safetensors"),
            item(3, "ours", "mine.safetensors"),
            item(4, "f3", "c.safetensors"),
        ],
    }
    view = queue_models(body, {"ours"})
    assert view.running == {"a.safetensors"}
    assert view.ahead == ({"b.safetensors"},)
    assert view.behind == ({"c.safetensors"},)
    assert view.ours_pending == {"ours"} and not view.ours_running


def test_queue_items_are_read_in_run_order_and_junk_is_skipped() -> None:
    body = {
        "queue_running": [],
        "queue_pending": [
            item(5, "late", "c.safetensors"),
            "abc",  # three characters, not an item
            [4, "short"],
            item(3, "ours", "mine.safetensors"),
            item(1, "early", "a.safetensors")[:3],  # number, id and prompt are enough
            item(4, "b2", "b.safetensors"),
            ["first", "junk", foreign_prompt("junk.safetensors", 0)],  # no place in the run
        ],
    }
    view = queue_models(body, {"ours"})
    assert view.ahead == ({"a.safetensors"},)
    assert view.behind == ({"b.safetensors"}, {"c.safetensors"})
    assert view.ours_pending == {"ours"}


def test_a_queue_is_idle_only_with_nothing_of_anyones() -> None:
    theirs = frozenset({"theirs.safetensors"})
    assert queue_models({}, set()).idle
    for busy in (
        queue_models({"queue_running": [item(1, "p", "x.safetensors")]}, {"p"}),
        queue_models({"queue_pending": [item(1, "p", "x.safetensors")]}, {"p"}),
        queue_models({"queue_running": [item(1, "q", "theirs.safetensors")]}, set()),
    ):
        assert not busy.idle, busy
    assert queue_models({"queue_pending": [item(1, "q", "theirs.safetensors")]}, set()).ahead == (
        theirs,
    )


def test_a_secret_in_foreign_extra_data_is_never_read() -> None:
    class Trap(dict):
        def __getitem__(self, key: Any) -> Any:
            raise AssertionError("extra_data was read")

        get = __getitem__

    body = {
        "queue_running": [item(1, "f1", "a.safetensors", Trap(api_key_comfy_org=SECRET))],
        "queue_pending": [item(2, "f2", "b.safetensors", Trap(api_key_comfy_org=SECRET))],
    }
    view = queue_models(body, set())
    assert SECRET not in repr(view)
    history = {"f0": {"prompt": item(0, "f0", "z.safetensors", Trap(k=SECRET)), "outputs": {}}}
    assert history_models(history) == {"z.safetensors"}


def test_the_newest_history_entry_with_a_model_says_what_a_server_holds() -> None:
    def entry(number: Any, ckpt: str) -> dict:
        return {"prompt": item(number, f"p{number}", ckpt), "outputs": {}}

    older_first = {"p3": entry(3, "old.safetensors"), "p7": entry(7, "new.safetensors")}
    newer_first = {"p7": entry(7, "new.safetensors"), "p3": entry(3, "old.safetensors")}
    assert history_models(older_first) == history_models(newer_first) == {"new.safetensors"}
    junk = {"x": "junk", "y": {"prompt": [1]}, "p2": entry("two", "junk.safetensors")}
    assert history_models(junk) is None  # an entry without a number is not placed in the run
    assert history_models({**junk, "p1": entry(1, "any.safetensors")}) == {"any.safetensors"}
    assert history_models({}) is None and history_models(["not", "a", "map"]) is None


def test_a_newer_history_entry_without_a_model_hides_nothing() -> None:
    """A server's newest prompt may load no checkpoint (an upscale, say): the model it holds
    is still the one the newest entry *with* a model loaded. Ids sort against the numbers."""
    upscale = {"1": {"class_type": "LoadImage", "inputs": {"image": "x.png"}}}
    history = {
        "a-newest": {"prompt": [9, "a-newest", upscale, {}, []], "outputs": {}},
        "b-new": {"prompt": item(7, "b-new", "new.safetensors"), "outputs": {}},
        "c-old": {"prompt": item(3, "c-old", "old.safetensors"), "outputs": {}},
    }
    assert history_models(history) == {"new.safetensors"}


# -- the rules ----------------------------------------------------------------------------


def affinity(servers: str = "abcd") -> ModelAffinity:
    return ModelAffinity(frozenset({"ours.safetensors"}), list(servers), clock=time.monotonic)


def test_a_newcomer_takes_over_only_its_share_of_busy_servers() -> None:
    aff = affinity()
    busy = queue_models({"queue_running": [item(1, "x", "theirs.safetensors")]}, set())
    for name in "abcd":
        aff.observe(name, busy)
    assert aff.admit(list("abcd"), list("abcd"), 40) == list("abcd")  # share 2, none held yet
    aff.assigned("a")
    aff.assigned("b")
    assert aff.admit(list("cd"), list("abcd"), 40) == []  # two of four: its share


def test_a_busy_server_read_empty_between_two_of_their_prompts_stays_theirs() -> None:
    """Another job's warm prompts are short: a read may find its server's queue empty between
    two of them. That server is still the other job's for a while, not free for the taking."""
    now = [100.0]
    aff = ModelAffinity(frozenset({"ours.safetensors"}), ["a", "b"], clock=lambda: now[0])
    busy = queue_models({"queue_running": [item(1, "x", "theirs.safetensors")]}, set())
    for name in "ab":
        aff.observe(name, busy)
    aff.assigned("a")
    aff.observe("b", queue_models({}, set()), held=frozenset({"theirs.safetensors"}))
    assert aff.admit(["b"], ["a", "b"], 40) == []  # one of two: its share
    now[0] += 6.0  # nothing of theirs seen on b for longer than a few reads: they are gone
    aff.observe("b", queue_models({}, set()), held=frozenset({"theirs.safetensors"}))
    assert aff.admit(["b"], ["a", "b"], 40) == ["b"]


def test_a_server_whose_model_another_job_queued_behind_ours_is_lost_once_loaded() -> None:
    aff = affinity("ab")
    for name in "ab":
        aff.observe(name, queue_models({}, set()))
        assert aff.submitted(name)  # our first prompt loads our model there
    assert not aff.submitted("a")  # warm: no second load
    ours = item(1, "p1", "ours.safetensors")
    behind = {"queue_running": [ours], "queue_pending": [item(2, "q", "theirs.safetensors")]}
    aff.observe("a", queue_models(behind, {"p1"}))
    assert aff.lost("a") and not aff.lost("b")
    assert aff.admit(["a", "b"], ["a", "b"], 10) == ["b"]
    aff.observe("b", queue_models(behind, {"p1"}))
    assert not aff.lost("a")  # every server lost: loading again beats never finishing


def test_a_prompt_of_ours_sent_behind_another_model_loses_the_server() -> None:
    """Our model ran on ``a``; before our next read of its queue another client's prompt came in
    and we sent one more behind it. Once theirs runs, ours would load our model there a second
    time: the server is lost and our pending prompt goes back. The newcomer, whose model runs,
    keeps the server although our stray prompt waits ahead of its next one."""
    aff = affinity("ab")
    for name in "ab":
        aff.observe(name, queue_models({}, set()))
        aff.submitted(name)
    ours_running = {
        "queue_running": [item(1, "p1", "ours.safetensors")],
        "queue_pending": [item(2, "q1", "theirs.safetensors"), item(3, "p2", "ours.safetensors")],
    }
    aff.observe("a", queue_models(ours_running, {"p1", "p2"}))
    assert not aff.lost("a")  # ours is loaded now: theirs has not taken it yet
    theirs_running = {
        "queue_running": [item(2, "q1", "theirs.safetensors")],
        "queue_pending": [item(3, "p2", "ours.safetensors")],
    }
    aff.observe("a", queue_models(theirs_running, {"p2"}))
    assert aff.lost("a") and aff.pending_here("a", "p2")

    newcomer = ModelAffinity(frozenset({"theirs.safetensors"}), ["a"], clock=time.monotonic)
    newcomer.observe("a", queue_models(ours_running, {"q1"}))
    newcomer.submitted("a")
    theirs_running["queue_pending"].append(item(4, "q2", "theirs.safetensors"))
    newcomer.observe("a", queue_models(theirs_running, {"q1", "q2"}))
    assert not newcomer.lost("a")


def test_a_cold_server_gets_work_only_when_its_load_pays() -> None:
    aff = affinity("ab")
    for name in "ab":
        aff.observe(name, queue_models({}, set()), held=frozenset({"theirs.safetensors"}))
    aff.submitted("a")
    aff.prompt_done("a", 1.0, loaded=False)
    aff.prompt_done("a", 11.0, loaded=True)  # a load costs about 10 s
    assert aff.admit(["b"], ["a", "b"], remaining=4) == []  # 4 s of work left: not worth 10 s
    assert aff.admit(["b"], ["a", "b"], remaining=100) == ["b"]


def test_a_workflow_without_a_checkpoint_is_left_alone() -> None:
    aff = ModelAffinity(frozenset(), "ab", clock=time.monotonic)
    assert aff.admit(["a", "b"], ["a", "b"], 3) == ["a", "b"]  # not even read yet
    assert not aff.submitted("a") and not aff.lost("a")


def test_each_server_is_read_once_per_interval_and_only_for_a_checkpoint() -> None:
    now = [100.0]
    aff = ModelAffinity(frozenset({"ours.safetensors"}), ["a", "b"], clock=lambda: now[0])
    assert aff.poll_due("a", 0.5)
    assert not aff.poll_due("a", 0.5)  # the other slots of that server skip this round
    assert aff.poll_due("b", 0.5)  # each server has its own round
    now[0] += 0.5
    assert aff.poll_due("a", 0.5) and not aff.poll_due("a", 0.5)
    plain = ModelAffinity(frozenset(), ["a"], clock=lambda: now[0])
    assert not plain.poll_due("a", 0.5)  # no checkpoint: nothing to read


def test_what_a_server_holds_comes_from_its_queue_then_its_history() -> None:
    """``submitted`` says whether our prompt will load our model there."""
    theirs = frozenset({"theirs.safetensors"})
    ours = frozenset({"ours.safetensors"})
    aff = affinity("abcd")
    aff.observe("a", queue_models({"queue_running": [item(1, "x", "theirs.safetensors")]}, set()))
    assert aff.submitted("a")  # theirs runs there: ours loads
    running_ours = {"queue_running": [item(1, "p1", "ours.safetensors")]}
    aff.observe("b", queue_models(running_ours, {"p1"}), held=theirs)
    assert not aff.submitted("b")  # ours runs there, whatever the history said
    aff.observe("c", queue_models({}, set()), held=ours)
    assert not aff.submitted("c")  # idle, and our model ran last
    aff.observe("d", queue_models({"queue_running": [item(1, "x", "theirs.safetensors")]}, set()))
    pending = {"queue_pending": [item(2, "y", "theirs.safetensors")]}
    aff.observe("d", queue_models(pending, set()), held=ours)  # history is stale with a queue
    assert aff.submitted("d")  # theirs waits there: ours loads after it
    aff.observe("c", queue_models({}, set()))  # the history was not read this time
    assert not aff.submitted("c")  # what we knew stays


def test_a_server_we_sent_to_stays_in_our_share_when_its_history_shows_theirs() -> None:
    """Their prompt ran there between two reads; a server keeping two models in memory still
    holds ours, so it stays our share (it is lost only when theirs waits in its queue)."""
    busy = queue_models({"queue_running": [item(1, "x", "theirs.safetensors")]}, set())
    aff = affinity("ab")
    for name in "ab":
        aff.observe(name, busy)
    aff.submitted("a")
    aff.observe("a", queue_models({}, set()), held=frozenset({"theirs.safetensors"}))
    assert not aff.lost("a")
    assert aff.admit(["b"], ["a", "b"], 40) == []  # a is our share of two servers, two models


def test_a_server_where_our_prompt_finished_unseen_counts_as_loaded() -> None:
    """A warm prompt may run between two reads: its end alone says our model was loaded."""
    aff = affinity("ab")
    for name in "ab":
        aff.observe(name, queue_models({}, set()))
        aff.submitted(name)
    aff.prompt_done("a", 1.0, loaded=True)
    their_turn = {
        "queue_running": [item(2, "q1", "theirs.safetensors")],
        "queue_pending": [item(3, "p2", "ours.safetensors")],
    }
    aff.observe("a", queue_models(their_turn, {"p2"}))
    assert aff.lost("a")


def cold_server_admitted(prompts: list[tuple[float, bool]], remaining: int) -> bool:
    """With warm ``a`` whose prompts took ``prompts`` (seconds, loaded), is the cold ``b``
    worth its load for ``remaining`` frames?"""
    aff = affinity("ab")
    aff.observe("a", queue_models({}, set()))
    aff.observe("b", queue_models({}, set()), held=frozenset({"theirs.safetensors"}))
    aff.submitted("a")
    for seconds, loaded in prompts:
        aff.prompt_done("a", seconds, loaded=loaded)
    return aff.admit(["b"], ["a", "b"], remaining) == ["b"]


@pytest.mark.parametrize(
    ("prompts", "remaining", "admitted"),
    [
        ([(1.0, False)], 1, True),  # the load is not known yet: try it
        ([(1.0, False), (3.0, False), (11.0, True)], 10, False),  # load 10 s vs 10 s of work
        ([(1.0, False), (11.0, True)], 13, True),  # 13 s of work: (13 + 10) / 2 < 0.9 * 13
        ([(1.0, False), (9.0, True)], 10, False),  # exactly the gain asked: not enough
        ([(1.0, False), (11.0, True)], 100, True),
        ([(11.0, True), (1.0, False)], 5, False),  # a loading prompt first: load 11 s at most
        ([(2.0, False), (22.0, True)], 20, True),  # 40 s of work at 2 s a frame
    ],
)
def test_a_load_is_weighed_against_the_work_left(
    prompts: list[tuple[float, bool]], remaining: int, admitted: bool
) -> None:
    assert cold_server_admitted(prompts, remaining) is admitted


@pytest.mark.parametrize(("remaining", "admitted"), [(10, False), (40, True)])
def test_with_two_warm_servers_a_load_must_beat_their_shared_finish(
    remaining: int, admitted: bool
) -> None:
    """Warm ``a`` and ``c`` share the work (1 s a frame); cold ``b`` loads in 10 s. Two warm
    servers finish ``W`` frames in ``W / 2``: a third is worth its load only when
    ``(W + 10) / 3 < 0.9 W / 2``, i.e. for more than about 28.6 s of work."""
    aff = affinity("abc")
    for name in "ac":
        aff.observe(name, queue_models({}, set()))
        aff.submitted(name)
    aff.observe("b", queue_models({}, set()), held=frozenset({"theirs.safetensors"}))
    aff.prompt_done("a", 1.0, loaded=False)
    aff.prompt_done("a", 11.0, loaded=True)
    assert (aff.admit(["b"], ["a", "b", "c"], remaining) == ["b"]) is admitted


def test_other_models_keep_a_server_contested_for_exactly_the_memory() -> None:
    now = [100.0]
    aff = ModelAffinity(frozenset({"ours.safetensors"}), list("abcd"), clock=lambda: now[0])
    busy = queue_models({"queue_running": [item(1, "x", "theirs.safetensors")]}, set())
    for name in "abcd":
        aff.observe(name, busy)
    aff.assigned("a")
    assert aff.admit(["c"], list("abcd"), 40) == ["c"]  # one held, share two of four
    aff.assigned("b")
    now[0] += CONTEST_MEMORY
    assert aff.admit(["c"], list("abcd"), 40) == []  # seen just now, at the memory's edge


# -- end to end against the sim ----------------------------------------------------------------


def test_two_jobs_with_different_models_partition_the_cluster(tmp_path: Path) -> None:
    """Each server loads each model at most once within a job: the second job takes its share,
    the first gives those servers up instead of loading its model there again. A load is long
    against the half-second reads of each server's queue, as a real checkpoint's is: with
    0.6 s loads a loaded CI machine once saw a server switch back before the read came."""
    opts = [
        SimOptions(name=f"m{i}", node_seconds=0.01, load_seconds=2.0, models_in_memory=1, steps=2)
        for i in range(2)
    ]
    sims = start_sims(2, opts)
    pattern = inputs(tmp_path / "in", 16, SIZE)
    servers = configs(sims)
    jobs = [
        RenderJob(
            img2img(ckpt), "1-16", str(tmp_path / f"out{k}" / "o.####.png"), input_pattern=pattern
        )
        for k, ckpt in enumerate(("sim-a.safetensors", "sim-b.safetensors"))
    ]
    try:
        with Scheduler(servers) as first, Scheduler(servers) as second:
            h1 = first.start(jobs[0])
            deadline = time.monotonic() + 30
            while not all(s.queue_snapshot()[0] for s in sims) and time.monotonic() < deadline:
                time.sleep(0.01)
            h2 = second.start(jobs[1])
            results = [h1.wait(60), h2.wait(60)]
        stats = [requests.get(f"{s.url}/sim/stats", timeout=5).json() for s in sims]
    finally:
        stop_all(sims)
    for result in results:
        assert result is not None and result.ok, result
    loads = [st["models"]["loads_by_model"] for st in stats]
    assert all(count <= 1 for by_model in loads for count in by_model.values()), loads
    assert results[1].per_server, "the second job rendered nothing"


def test_a_secret_in_a_foreign_prompt_is_in_no_event_log_or_output(
    tmp_path: Path, sim_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from comfy_cluster.cli import build_parser
    from comfy_cluster.commands import render

    sim = sim_factory(name="a", node_seconds=0.01, load_seconds=0.3, steps=2)
    for n in range(3):  # another artist's prompts, with their key in extra_data
        body = {
            "prompt": foreign_prompt("sim-b.safetensors", n),
            "prompt_id": uuid.uuid4().hex,
            "client_id": "someone-else",
            "extra_data": {"api_key_comfy_org": SECRET},
        }
        requests.post(f"{sim.url}/prompt", json=body, timeout=5).raise_for_status()
    pattern = inputs(tmp_path / "in", 4, SIZE)
    workflow = tmp_path / "wf.json"
    workflow.write_text(json.dumps(img2img("sim-a.safetensors")))
    servers = [{"name": "a", "ip": "127.0.0.1", "port": sim.port}]
    env = {
        "NUKE_COMFYUI_SERVERS": json.dumps(servers),
        "COMFY_CLUSTER_CONFIG": str(tmp_path / "user.json"),
    }
    argv = ["render", str(workflow), "--frames", "1-4", "--output", str(tmp_path / "o.####.png")]
    argv += ["--input", pattern, "--json"]
    out, err = io.StringIO(), io.StringIO()
    with caplog.at_level(logging.DEBUG):
        code = render.run(build_parser().parse_args(argv), environ=env, out=out, err=err)
    assert code == 0, err.getvalue()
    assert SECRET not in out.getvalue() + err.getvalue()
    assert SECRET not in caplog.text
    assert all(SECRET not in json.dumps(json.loads(line)) for line in out.getvalue().splitlines())
    stats = requests.get(f"{sim.url}/sim/stats", timeout=5).json()
    assert stats["models"]["loads_by_model"].get("sim-b.safetensors") == 1


def test_events_of_a_model_job_carry_no_foreign_extra_data(tmp_path: Path) -> None:
    sims = start_sims(1, [SimOptions(name="e", node_seconds=0.01, load_seconds=0.2, steps=2)])
    try:
        body = {
            "prompt": foreign_prompt("sim-b.safetensors", 7),
            "client_id": "someone-else",
            "extra_data": {"api_key_comfy_org": SECRET},
        }
        requests.post(f"{sims[0].url}/prompt", json=body, timeout=5).raise_for_status()
        events: list[ev.JobEvent] = []
        server = ServerConfig(name="e", host="127.0.0.1", port=sims[0].port)
        with Scheduler([server]) as scheduler:
            job = RenderJob(
                img2img("sim-a.safetensors"),
                "1-3",
                str(tmp_path / "out" / "o.####.png"),
                input_pattern=inputs(tmp_path / "in", 3, SIZE),
            )
            result = scheduler.run(job, events.append)
    finally:
        stop_all(sims)
    assert result.ok, result.message
    assert events and all(SECRET not in repr(vars(e)) for e in events)
