"""Issue 13 item 4 in a render: each server's preflight check gates that server alone.

Real sims and the real scheduler: a server missing the workflow's checkpoint is named with its
reason and never gets a prompt while the other renders everything; with no usable server the job
fails at once naming each; a server whose ``/object_info`` hangs does not hold up the first
prompt of a server that passed.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from comfy_cluster.core.client import ComfyClient
from comfy_cluster.core.connection_settings import Timeouts
from comfy_cluster.core.engine import events as ev
from comfy_cluster.core.engine.job import JobStatus, RenderJob
from comfy_cluster.core.engine.scheduler import Scheduler
from comfy_cluster.core.server import ServerConfig
from comfy_cluster.core.transfer import frame_path
from comfy_cluster.sim.harness import make_test_image

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "comfyui"
CHECKPOINT = "sd15.safetensors"


def img2img() -> dict[str, Any]:
    """ComfyUI's img2img workflow (its checkpoint: ``sd15.safetensors``, node 4)."""
    return json.loads((FIXTURES / "workflow_img2img_api.json").read_text())


def configs(*sims: Any) -> list[ServerConfig]:
    return [ServerConfig(name=s.options.name, host="127.0.0.1", port=s.port) for s in sims]


def shot(tmp_path: Path, frames: int) -> tuple[str, str]:
    pattern = str(tmp_path / "in" / "p.####.png")
    for f in range(1, frames + 1):
        make_test_image(frame_path(pattern, f), (8, 8), (f, 40, 90))
    return pattern, str(tmp_path / "out" / "o.####.png")


class Recorder:
    """Every event of the job, with the time it arrived."""

    def __init__(self) -> None:
        self.events: list[tuple[float, ev.JobEvent]] = []
        self._lock = threading.Lock()

    def __call__(self, event: ev.JobEvent) -> None:
        with self._lock:
            self.events.append((time.monotonic(), event))

    def of(self, cls: type) -> list[Any]:
        return [e for _, e in self.events if isinstance(e, cls)]

    def first(self, cls: type, **fields: Any) -> tuple[int, float]:
        """(index, time) of the first event of ``cls`` with these field values."""
        for i, (at, e) in enumerate(self.events):
            if isinstance(e, cls) and all(getattr(e, k) == v for k, v in fields.items()):
                return i, at
        raise AssertionError(f"no {cls.__name__} {fields}: {[e for _, e in self.events]}")


def test_a_server_missing_the_model_gets_no_prompt_and_is_named(
    tmp_path: Path, sim_factory: Any
) -> None:
    good = sim_factory(name="good", node_seconds=0.01)
    nomodel = sim_factory(name="nomodel", node_seconds=0.01, models=("other.safetensors",))
    inputs, output = shot(tmp_path, 6)
    rec = Recorder()
    with Scheduler(configs(good, nomodel), no_server_timeout=20.0) as scheduler:
        result = scheduler.run(RenderJob(img2img(), "1-6", output, input_pattern=inputs), rec)
    assert result.ok, result.message
    assert result.per_server == {"good": 6}
    assert nomodel.prompts_seen == []  # never sent a prompt
    checked = {e.server: e for e in rec.of(ev.ServerChecked)}
    assert checked["good"].ok and checked["good"].state == "ok"
    bad = checked["nomodel"]
    assert not bad.ok and bad.state == "unusable"
    (reason,) = bad.reasons
    assert "node 4" in reason and "ckpt_name" in reason and CHECKPOINT in reason, reason
    assert "nomodel" in result.blocklisted and CHECKPOINT in result.blocklisted["nomodel"]
    # The verdicts are announced before the first chunk is handed out.
    first_chunk, _ = rec.first(ev.ChunkAssigned)
    assert rec.first(ev.ServerChecked, server="good")[0] < first_chunk


def test_no_usable_server_fails_at_once_naming_each(tmp_path: Path, sim_factory: Any) -> None:
    nomodel = sim_factory(name="nomodel", models=("other.safetensors",))
    noclass = sim_factory(name="noclass", missing_classes=("KSampler",))
    inputs, output = shot(tmp_path, 4)
    rec = Recorder()
    started = time.monotonic()
    with Scheduler(configs(nomodel, noclass), no_server_timeout=60.0) as scheduler:
        result = scheduler.run(RenderJob(img2img(), "1-4", output, input_pattern=inputs), rec)
    assert time.monotonic() - started < 15  # not the idle limit's "no server took work"
    assert result.status is JobStatus.FAILED
    assert "no server took work" not in result.message
    assert "nomodel" in result.message and CHECKPOINT in result.message, result.message
    assert "noclass" in result.message and "KSampler" in result.message, result.message
    assert nomodel.prompts_seen == [] and noclass.prompts_seen == []
    assert {e.server for e in rec.of(ev.ServerChecked) if not e.ok} == {"nomodel", "noclass"}


class HangingInfo:
    """A real client whose ``object_info`` waits for ``release`` (a server slow to answer)."""

    def __init__(self, client: ComfyClient, release: threading.Event) -> None:
        self.client = client
        self.release = release

    def system_stats(self) -> Any:
        return self.client.system_stats()

    def object_info(self) -> Any:
        self.release.wait(30)
        return self.client.object_info()

    def close(self) -> None:
        self.client.close()


def hanging_checks(release: threading.Event) -> Callable[[ServerConfig, Timeouts], Any]:
    """A check factory whose every ``/object_info`` waits for ``release``."""

    def check_factory(server: ServerConfig, timeouts: Timeouts) -> Any:
        return HangingInfo(ComfyClient(server, timeouts=timeouts), release)

    return check_factory


def test_a_slow_check_does_not_delay_another_servers_first_prompt(
    tmp_path: Path, sim_factory: Any
) -> None:
    fast = sim_factory(name="fast", node_seconds=0.01)
    slow = sim_factory(name="slow", node_seconds=0.01)
    release = threading.Event()

    def check_factory(server: ServerConfig, timeouts: Timeouts) -> Any:
        client = ComfyClient(server, timeouts=timeouts)
        return HangingInfo(client, release) if server.name == "slow" else client

    inputs, output = shot(tmp_path, 8)
    rec = Recorder()
    with Scheduler(
        configs(fast, slow), check_factory=check_factory, no_server_timeout=60.0
    ) as scheduler:
        handle = scheduler.start(RenderJob(img2img(), "1-8", output, input_pattern=inputs), rec)
        deadline = time.monotonic() + 20
        while not rec.of(ev.FrameWritten) and time.monotonic() < deadline:
            time.sleep(0.02)
        # A frame is on disk while the slow server's check still hangs.
        assert rec.of(ev.FrameWritten), "no frame while the other server's check hung"
        assert "slow" not in {e.server for e in rec.of(ev.ServerChecked)}
        assert slow.prompts_seen == []
        release.set()
        result = handle.wait(30)
    assert result is not None and result.ok, result and result.message
    written, _ = rec.first(ev.FrameWritten)
    assert rec.first(ev.ServerChecked, server="slow")[0] > written
    assert rec.first(ev.ServerChecked, server="slow")[1] - rec.first(ev.FrameWritten)[1] >= 0


def test_a_silent_check_is_given_up_within_the_jobs_idle_limit(
    tmp_path: Path, sim_factory: Any
) -> None:
    """The check may wait 30 s for a verdict, but a job whose idle limit is 4 s must not sit
    that long on a server whose check never answers: it waits half the limit, then treats the
    server like any that does not answer (it renders once it does)."""
    only = sim_factory(name="only", node_seconds=0.01)
    release = threading.Event()

    check_factory = hanging_checks(release)
    inputs, output = shot(tmp_path, 2)
    rec = Recorder()
    started = time.monotonic()
    try:
        with Scheduler(
            configs(only), check_factory=check_factory, check_timeout=30.0, no_server_timeout=4.0
        ) as scheduler:
            result = scheduler.run(RenderJob(img2img(), "1-2", output, input_pattern=inputs), rec)
    finally:
        release.set()
    assert result.ok, result.message
    _, checked_at = rec.first(ev.ServerChecked, server="only")
    assert checked_at - started < 10.0  # about 2 s; the check's own 30 s would be 30


def test_a_check_answering_within_half_the_idle_limit_is_waited_for(
    tmp_path: Path, sim_factory: Any
) -> None:
    """Half the idle limit is the check's budget, not less: with a 12 s limit, a server whose
    check answers after 4.5 s is judged on its answer (it passed), not given up as silent."""
    only = sim_factory(name="only", node_seconds=0.01)
    release = threading.Event()

    check_factory = hanging_checks(release)
    inputs, output = shot(tmp_path, 1)
    rec = Recorder()
    answer = threading.Timer(4.5, release.set)
    answer.start()
    try:
        with Scheduler(
            configs(only), check_factory=check_factory, check_timeout=30.0, no_server_timeout=12.0
        ) as scheduler:
            result = scheduler.run(RenderJob(img2img(), "1", output, input_pattern=inputs), rec)
    finally:
        answer.cancel()
        release.set()
    assert result.ok, result.message
    [verdict] = rec.of(ev.ServerChecked)
    assert verdict.ok and verdict.state == "ok", verdict


def refusal(sim: Any, job: RenderJob) -> str:
    """Run ``job`` on ``sim`` alone; it must fail at the check, before any prompt. The
    check's reasons, joined."""
    rec = Recorder()
    with Scheduler(configs(sim), no_server_timeout=20.0) as scheduler:
        result = scheduler.run(job, rec)
    assert not result.ok
    [verdict] = rec.of(ev.ServerChecked)
    assert not verdict.ok, verdict
    assert sim.prompts_seen == []
    return " ".join(verdict.reasons)


def test_a_named_loader_without_input_frames_keeps_its_image_checked(
    tmp_path: Path, sim_factory: Any
) -> None:
    """With ``--loader`` but no input frames, the loader's image is the workflow's own (a
    still): the check must hold it against the server, not skip it as an uploaded frame."""
    sim = sim_factory(name="nostill", node_seconds=0.01)
    job = RenderJob(img2img(), "1-2", str(tmp_path / "out" / "o.####.png"), image_loader="10")
    assert "plate.0001.png" in refusal(sim, job)


def test_a_one_frame_job_is_checked_with_its_overrides(tmp_path: Path, sim_factory: Any) -> None:
    """``--set 4.ckpt_name=...`` is what gets checked, for a job of a single frame too."""
    sim = sim_factory(name="one", node_seconds=0.01)
    inputs, output = shot(tmp_path, 1)
    job = RenderJob(
        img2img(), "1", output, input_pattern=inputs, overrides=["4.ckpt_name=absent.safetensors"]
    )
    assert "absent.safetensors" in refusal(sim, job)


def test_a_server_unreachable_at_check_time_still_takes_work_once_it_answers(
    tmp_path: Path, sim_factory: Any
) -> None:
    steady = sim_factory(name="steady", node_seconds=0.05)
    late = sim_factory(name="late", node_seconds=0.02)
    late.kill()  # down when the job starts
    inputs, output = shot(tmp_path, 40)
    rec = Recorder()
    restarted: list[threading.Thread] = []

    def on_event(event: ev.JobEvent) -> None:
        rec(event)
        if isinstance(event, ev.ServerChecked) and event.server == "late" and not restarted:
            restarted.append(threading.Thread(target=late.start, daemon=True))
            restarted[0].start()

    with Scheduler(configs(steady, late), no_server_timeout=30.0) as scheduler:
        result = scheduler.run(
            RenderJob(img2img(), "1-40", output, input_pattern=inputs, chunk_size=2), on_event
        )
    assert result.ok, result.message
    verdict = next(e for e in rec.of(ev.ServerChecked) if e.server == "late")
    assert not verdict.ok and verdict.state == "unreachable"
    assert "late" not in result.blocklisted
    assert result.per_server.get("late", 0) > 0  # not excluded: it worked once it answered


def test_a_check_timeout_under_a_second_is_fine() -> None:
    from comfy_cluster.core.engine.tools import Preflight

    assert Preflight(client_factory=ComfyClient, timeout=0.5).timeout == 0.5


def test_a_check_timeout_that_is_not_positive_is_refused_at_once() -> None:
    server = ServerConfig(name="a", host="127.0.0.1", port=1)
    with pytest.raises(ValueError, match="check_timeout"):
        Scheduler([server], check_timeout=0)
