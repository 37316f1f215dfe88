"""The engine gives up on bad servers fast and honestly (issue 11: items 2, 11, 13, 15, 16).

In-process fakes (tests/fake_comfy.py, wrapped here): a server that sends junk instead of our
image, one that refuses our token, one that rejects the workflow, one that freezes (accepts a
prompt, then answers neither HTTP nor websocket). Short timeouts are injected: no test waits
for a default.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
from fake_comfy import FakeClient, FakeCluster, FakeServer, invert
from workflows import invert_workflow

from comfy_cluster.core.engine import events as ev
from comfy_cluster.core.engine.job import JobStatus, RenderJob
from comfy_cluster.core.engine.scheduler import Scheduler
from comfy_cluster.core.errors import (
    AuthenticationFailed,
    DownloadRefused,
    NodeError,
    ResponseTooLarge,
    WorkflowRejected,
)
from comfy_cluster.core.health_facts import PollFacts
from comfy_cluster.core.health_status import ServerState, ServerStatus
from comfy_cluster.core.retry import retry_transient

WORKFLOW = invert_workflow()


def frame_bytes(frame: int) -> bytes:
    return b"frame-%d" % frame


@pytest.fixture
def shot(tmp_path: Path) -> dict[str, Any]:
    for f in range(1, 11):
        (tmp_path / f"in.{f:04d}.png").write_bytes(frame_bytes(f))
    return {
        "input": str(tmp_path / "in.####.png"),
        "output": str(tmp_path / "out" / "shot.####.png"),
        "dir": tmp_path / "out",
    }


def out_path(shot: dict[str, Any], frame: int) -> Path:
    return Path(shot["output"].replace("####", f"{frame:04d}"))


class Recorder:
    """on_event: every event with the time it came."""

    def __init__(self) -> None:
        self.events: list[tuple[float, ev.JobEvent]] = []

    def __call__(self, event: ev.JobEvent) -> None:
        self.events.append((time.monotonic(), event))

    def of(self, cls: type) -> list[Any]:
        return [e for _t, e in self.events if isinstance(e, cls)]

    def times(self, cls: type) -> list[float]:
        return [t for t, e in self.events if isinstance(e, cls)]


class WrappedClient(FakeClient):
    """A FakeClient with per-call hooks: ``before(name)`` runs before every call."""

    def __init__(self, server: FakeServer, before: Callable[[str], None]) -> None:
        super().__init__(server)
        self.before = before

    def submit(self, workflow: dict, *, prompt_id: Optional[str] = None) -> str:
        self.before("submit")
        pid = super().submit(workflow, prompt_id=prompt_id)
        self.before("submitted")
        return pid

    def history(self, prompt_id: str) -> Optional[dict]:
        self.before("history")
        return super().history(prompt_id)

    def queue(self) -> Any:
        self.before("queue")
        return super().queue()

    def interrupt(self, prompt_id: str) -> bool:
        self.before("interrupt")
        return super().interrupt(prompt_id)

    def delete_queued(self, prompt_ids: Any) -> None:
        self.before("delete")
        super().delete_queued(prompt_ids)

    def download(self, image_ref: Any, dest: Any) -> Path:
        self.before("download")
        return super().download(image_ref, dest)


def factory(cluster: FakeCluster, hooks: dict[str, Callable[[str], None]]) -> Callable:
    def make(config: Any) -> FakeClient:
        hook = hooks.get(config.name)
        server = cluster.servers[config.name]
        return FakeClient(server) if hook is None else WrappedClient(server, hook)

    return make


def scheduler(cluster: FakeCluster, client_factory: Callable, **kw: Any) -> Scheduler:
    options: dict[str, Any] = dict(
        client_factory=client_factory,
        stall_timeout=0.5,
        poll_interval=0.01,
        history_interval=0.1,
        retry=retry_transient(attempts=3, max_seconds=2.0, sleep=lambda s: None),
        join_timeout=5.0,
        probe_interval=0.05,
        answer_timeout=0.3,
        cleanup_timeout=0.3,
        no_server_timeout=30.0,
    )
    options.update(kw)
    return Scheduler(cluster.configs, **options)


def job(shot: dict[str, Any], frames: str = "1-6", **kw: Any) -> RenderJob:
    kw.setdefault("chunk_size", 1)
    return RenderJob(WORKFLOW, frames, shot["output"], input_pattern=shot["input"], **kw)


# -- item 2: junk instead of our image -----------------------------------------------------------


def junk(exc: type) -> Callable[[str], None]:
    def before(call: str) -> None:
        if call == "download":
            raise exc("/view: got text/html, not the PNG image named (nothing written)")

    return before


@pytest.mark.parametrize("error", [DownloadRefused, ResponseTooLarge])
def test_junk_download_moves_the_frame_and_the_sender_leaves_the_job(
    shot: dict[str, Any], error: type
) -> None:
    a, b = FakeServer("a"), FakeServer("b")
    with FakeCluster([a, b]) as cluster:
        rec = Recorder()
        with scheduler(cluster, factory(cluster, {"a": junk(error)})) as s:
            result = s.run(job(shot), rec)
    assert result.status is JobStatus.DONE, result.message
    assert dict(result.per_server) == {"b": 6}
    assert a.submits == 1  # one junk answer and it is out: never given another frame
    assert "sent junk" in result.blocklisted["a"]
    blocked = rec.of(ev.ServerBlocklisted)
    assert [e.server for e in blocked] == ["a"] and "sent junk" in blocked[0].why
    for f in range(1, 7):
        assert out_path(shot, f).read_bytes() == invert(frame_bytes(f))
    assert not list(shot["dir"].glob(".*"))  # nothing half-written


def test_junk_from_every_server_fails_the_job_at_once(shot: dict[str, Any]) -> None:
    a, b = FakeServer("a"), FakeServer("b")
    with FakeCluster([a, b]) as cluster:
        hooks = {"a": junk(DownloadRefused), "b": junk(DownloadRefused)}
        with scheduler(cluster, factory(cluster, hooks)) as s:
            started = time.monotonic()
            handle = s.start(job(shot, "1"))
            result = handle.wait(10)
    assert result is not None and result.status is JobStatus.FAILED
    assert time.monotonic() - started < 5
    assert a.submits == 1 and b.submits == 1  # each server tried the frame once
    assert "no eligible server left" in result.message and "sent junk" in result.message
    assert not shot["dir"].exists() or not list(shot["dir"].iterdir())


# -- item 11: a wrong token ----------------------------------------------------------------------


class RefusingHealth:
    """A health monitor that saw 401 from every server: OFFLINE, with the error in its facts."""

    def __init__(self, names: list[str]) -> None:
        self.names = names

    def snapshot(self) -> dict[str, ServerStatus]:
        return {
            n: ServerStatus(name=n, url="http://x", state=ServerState.OFFLINE, last_error="401")
            for n in self.names
        }

    def facts_of(self, name: str) -> PollFacts:
        message = "/system_stats: HTTP 401 (check the server's token and headers)"
        return PollFacts(http_error=AuthenticationFailed(message, server=name, status=401))

    def set_active(self, active: bool, who: str) -> None:
        pass


def test_servers_refusing_our_token_fail_the_job_at_once(shot: dict[str, Any]) -> None:
    a, b = FakeServer("a"), FakeServer("b")
    with FakeCluster([a, b]) as cluster:
        rec = Recorder()
        health = RefusingHealth(["a", "b"])
        with scheduler(cluster, cluster.client_factory, health=health) as s:
            started = time.monotonic()
            handle = s.start(job(shot), rec)
            result = handle.wait(10)  # no_server_timeout is 30 s: it must not be waited for
    assert result is not None, "the job waited for servers that refuse us"
    assert time.monotonic() - started < 5
    assert result.status is JobStatus.FAILED
    assert "authentication refused" in result.message and "token" in result.message
    assert set(result.blocklisted) == {"a", "b"}
    assert a.submits == 0 and b.submits == 0
    assert {e.server for e in rec.of(ev.ServerBlocklisted)} == {"a", "b"}


def test_a_refused_submit_names_what_to_check(shot: dict[str, Any]) -> None:
    a, b = FakeServer("a"), FakeServer("b")

    def refuse(call: str) -> None:
        if call == "submit":
            raise AuthenticationFailed("/prompt: HTTP 403", server="a", status=403)

    with FakeCluster([a, b]) as cluster, scheduler(cluster, factory(cluster, {"a": refuse})) as s:
        result = s.run(job(shot))
    assert result.ok and dict(result.per_server) == {"b": 6}
    assert "check the server's token and headers" in result.blocklisted["a"]


# -- item 13: the same validation error everywhere -----------------------------------------------


def rejecting(kind: str) -> Callable[[str], None]:
    def before(call: str) -> None:
        if call != "submit":
            return
        if kind == "missing":
            raise WorkflowRejected(
                "Cannot execute because node Foo does not exist.", error_type="invalid_prompt"
            )
        error = NodeError(
            "1", "LoadImage", "value_bigger_than_max", "Value 99999 bigger than max", "", "width"
        )
        raise WorkflowRejected(
            "Prompt outputs failed validation: " + error.describe(),
            error_type="prompt_outputs_failed_validation",
            node_errors=(error,),
        )

    return before


def test_the_same_validation_error_everywhere_is_a_workflow_error(shot: dict[str, Any]) -> None:
    from comfy_cluster.commands.render import exit_code

    a, b = FakeServer("a"), FakeServer("b")
    with FakeCluster([a, b]) as cluster:
        hooks = {"a": rejecting("range"), "b": rejecting("range")}
        with scheduler(cluster, factory(cluster, hooks)) as s:
            the_job = job(shot)
            result = s.run(the_job)
    assert result.status is JobStatus.FAILED
    assert result.error is not None and result.error.kind == "WorkflowInvalid"
    assert "node 1 (LoadImage) input 'width'" in result.message
    assert exit_code(the_job, result) == 2


def test_different_rejections_are_not_a_workflow_error(shot: dict[str, Any]) -> None:
    from comfy_cluster.commands.render import exit_code

    a, b = FakeServer("a"), FakeServer("b")
    with FakeCluster([a, b]) as cluster:
        hooks = {"a": rejecting("missing"), "b": rejecting("range")}
        with scheduler(cluster, factory(cluster, hooks)) as s:
            the_job = job(shot)
            result = s.run(the_job)
    assert result.status is JobStatus.FAILED
    assert result.error is None or result.error.kind != "WorkflowInvalid"
    assert exit_code(the_job, result) == 1


# -- item 15: a frozen server --------------------------------------------------------------------


class Freezer:
    """Server ``b`` freezes right after it accepted a prompt: every later call blocks until
    :meth:`thaw` (as a SIGSTOPped process: the connection is there, no answer comes)."""

    def __init__(self) -> None:
        self.frozen = threading.Event()
        self.frozen_at = 0.0
        self._thaw = threading.Event()

    def __call__(self, call: str) -> None:
        if call == "submitted" and not self.frozen.is_set():
            self.frozen_at = time.monotonic()
            self.frozen.set()
            return
        if self.frozen.is_set():
            self._thaw.wait(30)

    def thaw(self) -> None:
        self._thaw.set()


@pytest.fixture
def freezer() -> Any:
    f = Freezer()
    yield f
    f.thaw()


def test_a_frozen_server_is_given_up_after_the_stall_timeout(
    shot: dict[str, Any], freezer: Freezer
) -> None:
    # b takes its prompt and hangs silently (no websocket event), then answers no request.
    a, b = FakeServer("a", seconds=0.01), FakeServer("b", plan=["hang"])
    with FakeCluster([a, b]) as cluster:
        rec = Recorder()
        with scheduler(cluster, factory(cluster, {"b": freezer}), speculation=False) as s:
            handle = s.start(job(shot, strategy="round_robin"), rec)
            result = handle.wait(10)
            ended = time.monotonic()
            assert result is not None, "the job waited for a frozen server"
    assert result.ok, result.message
    assert freezer.frozen.is_set()
    retried = [e for e in rec.of(ev.ChunkRetried) if e.server == "b"]
    assert retried, "the frozen server's frame was never moved"
    given_up = rec.times(ev.ChunkRetried)[0] - freezer.frozen_at
    assert 0.5 <= given_up < 2.0  # stall_timeout 0.5 s + answer_timeout 0.3 s (+ load)
    # The message gives the real wait (not a figure from before a further wait).
    why = retried[0].why
    assert "stopped answering: no websocket event for" in why
    stated = float(why.split("no websocket event for ")[1].split(" s")[0])
    assert abs(stated - given_up) < 0.3, (stated, given_up)
    # The job ends as soon as every frame is on disk: no wait on the frozen server's cleanup.
    last_frame = rec.times(ev.FrameWritten)[-1]
    assert ended - last_frame < 2.0


def test_a_hung_prompt_message_gives_the_real_wait(shot: dict[str, Any]) -> None:
    # b answers HTTP but its prompt never ends and ignores interrupts.
    a, b = FakeServer("a", seconds=0.01), FakeServer("b", plan=["wedge"])
    with FakeCluster([a, b]) as cluster:
        rec = Recorder()
        opts = dict(first_prompt_timeout=0.3, stall_timeout=0.3, speculation=False)
        with scheduler(cluster, cluster.client_factory, **opts) as s:
            result = s.run(job(shot, strategy="round_robin"), rec)
    assert result.ok, result.message
    why = result.blocklisted["b"]
    assert "still running" in why and "after our interrupt" in why
    total = float(why.split("no event for ")[-1].split(" s")[0])
    assert total >= 0.6  # the stall before the interrupt plus the wait after it
