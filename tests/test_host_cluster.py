"""The host session's one ClusterService: health for the scheduler, panel edits, the Job column.

The render node runs in the fake Nuke against 127.0.0.1 sims, with the session's service built
from an environment naming those sims (and a user file in tmp), its health monitor polling fast.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
from PIL import Image

from comfy_cluster.core.cluster import ClusterService
from comfy_cluster.core.engine.events import (
    ChunkAssigned,
    ChunkRetried,
    FrameWritten,
    JobDone,
    ServerBlocklisted,
)
from comfy_cluster.core.engine.scheduler import Scheduler
from comfy_cluster.core.health import HealthMonitor, ServerState
from comfy_cluster.core.retry import retry_transient
from comfy_cluster.host import knobs as K
from comfy_cluster.host.install import current_session, install_host, uninstall_host
from comfy_cluster.host.jobs import JobMonitor

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / "tests" / "fixtures" / "workflows" / "invert.json"
FRAMES = range(1, 5)
TIMEOUT = 20.0


def health_threads() -> list[str]:
    return sorted(
        t.name for t in threading.enumerate() if t.name.startswith("comfy-cluster-health-")
    )


class RecordingService(ClusterService):
    """The real service, also remembering every Job-column report (any thread)."""

    def __init__(self, **kwargs: Any) -> None:
        self.reports: list[tuple[str, str]] = []
        super().__init__(**kwargs)

    def report_job(self, server: str, text: Optional[str], *, job: str = "") -> None:
        self.reports.append((server, text or ""))
        super().report_job(server, text, job=job)


def fast_monitor(servers: Any) -> HealthMonitor:
    return HealthMonitor(servers, interval_busy=0.05, interval_idle=0.2, timeout=0.3)


def fast_scheduler(servers: Any, health: Any = None) -> Scheduler:
    return Scheduler(
        servers,
        health=health,
        retry=retry_transient(attempts=2, max_seconds=2.0, initial=0.05, maximum=0.2),
        stall_timeout=2.0,
        no_server_timeout=10.0,
        join_timeout=5.0,
    )


class Rig:
    """Fake Nuke + sims + the host installed with a service over them."""

    def __init__(self, nuke: Any, tmp: Path, endpoints: list[tuple[str, int]]) -> None:
        self.nuke = nuke
        self.tmp = tmp
        self.out = tmp / "out"
        plate = tmp / "plate"
        plate.mkdir()
        for frame in FRAMES:
            Image.new("RGB", (8, 8), (frame * 40, 90, 10)).save(plate / f"p.{frame:04d}.png")
        self.read = nuke.nodes.Read(file=str(plate / "p.####.png"))
        self.read["first"].setValue(FRAMES[0])
        self.read["last"].setValue(FRAMES[-1])
        self.environ = {
            "NUKE_COMFYUI_SERVERS": json.dumps(
                [{"name": n, "host": "127.0.0.1", "port": p} for n, p in endpoints]
            )
        }
        self.user_file = tmp / "servers.json"
        self.built: list[RecordingService] = []
        self.session = install_host(
            service_factory=self.make_service,
            scheduler_factory=fast_scheduler,
            nuke=nuke,
            temp_root=str(tmp),
            export_batch=2,
        )

    def make_service(self) -> RecordingService:
        self.built.append(
            RecordingService(
                environ=self.environ,
                user_path=self.user_file,
                monitor_factory=fast_monitor,
                start=False,
            )
        )
        return self.built[-1]

    @property
    def service(self) -> RecordingService:
        return self.session.cluster()

    def create_node(self, frames: str = "") -> Any:
        node = self.nuke.createNode(K.GIZMO_CLASS)
        node.setInput(0, self.read)
        node[K.WORKFLOW].setValue(str(WORKFLOW))
        node[K.OUTPUT].setValue(str(self.out / f"{node.name()}.####.png"))
        if frames:
            node[K.FRAMES].setValue(frames)
        return node

    def render(self, node: Any) -> str:
        """Press Render and pump until the node says Done; returns the status."""
        self.nuke._fake.press(node[K.RENDER])
        self.nuke._fake.pump_until(lambda: node[K.STATUS].value().startswith("Done"), TIMEOUT)
        return node[K.STATUS].value()


@pytest.fixture
def rig_factory(
    fake_nuke: Any, tmp_path: Path, sim_factory: Callable[..., Any]
) -> Iterator[Callable[..., Rig]]:
    fake_nuke.pluginAddPath(str(ROOT / "gizmos"))
    uninstall_host(fake_nuke)

    def make(endpoints: list[tuple[str, int]]) -> Rig:
        return Rig(fake_nuke, tmp_path, endpoints)

    yield make
    uninstall_host(fake_nuke)


def test_dead_and_black_holed_servers_get_no_work(
    rig_factory: Callable[..., Rig], sim_factory: Callable[..., Any], black_hole: Any
) -> None:
    sim1, sim2, dead = (sim_factory(name=n) for n in ("sim1", "sim2", "dead"))
    dead.kill()  # before the render
    rig = rig_factory(
        [("sim1", sim1.port), ("sim2", sim2.port), ("hole", black_hole.port), ("dead", dead.port)]
    )
    node = rig.create_node()
    assert node[K.SERVER].values() == [K.AUTO, "sim1", "sim2", "hole", "dead"]
    assert health_threads() == []  # a knob refresh builds the service, starts no thread

    status = rig.render(node)

    # The scheduler ran with the session's health monitor: the bad servers were never chosen.
    scheduler = rig.session.controller.schedulers.current
    assert scheduler.health is rig.service.monitor
    # No chunk went to a bad server; the Job text may say why one did nothing.
    chunks = {server for server, text in rig.service.reports if text and "chunk" in text}
    assert chunks <= {"sim1", "sim2"}
    assert all("chunk" not in text for s, text in rig.service.reports if s in ("hole", "dead"))
    assert "hole" not in status and "dead" not in status, status
    assert status.startswith(f"Done: {len(FRAMES)} frames"), status
    for frame in FRAMES:
        assert (rig.out / f"{node.name()}.{frame:04d}.png").is_file()
    snap = rig.service.snapshot()
    assert snap["hole"].state is ServerState.OFFLINE
    assert snap["dead"].state is ServerState.OFFLINE
    # The job no longer holds the monitor active, and requires no classes any more.
    rig.nuke._fake.pump_until(lambda: not rig.service.monitor.active, TIMEOUT)
    assert rig.service.monitor._required == frozenset()


def test_job_column_shows_the_chunk_while_it_runs_and_clears_after(
    rig_factory: Callable[..., Rig], sim_factory: Callable[..., Any]
) -> None:
    sim = sim_factory(name="sim1", node_seconds=0.2)
    rig = rig_factory([("sim1", sim.port)])
    node = rig.create_node(frames="1-2")
    node[K.CHUNK_SIZE].setValue(1)
    name = node.fullName()
    rig.nuke._fake.press(node[K.RENDER])

    def showing() -> bool:
        return rig.service.active_jobs().get("sim1", "").startswith(f"{name} chunk ")

    rig.nuke._fake.pump_until(showing, TIMEOUT)
    text = rig.service.active_jobs()["sim1"]
    assert text in (f"{name} chunk 1 (1)", f"{name} chunk 2 (2)"), text
    # While it runs the job holds the monitor active (fast polls) and requires its classes.
    assert rig.service.monitor.active
    assert {"LoadImage", "ImageInvert", "SaveImage"} <= rig.service.monitor._required

    rig.nuke._fake.pump_until(lambda: node[K.STATUS].value().startswith("Done"), TIMEOUT)
    assert rig.service.active_jobs() == {}
    texts = [text for server, text in rig.service.reports if text]
    assert f"{name} chunk 1 (1)" in texts and f"{name} chunk 2 (2)" in texts


def test_a_panel_edit_applies_to_the_next_render(
    rig_factory: Callable[..., Rig], sim_factory: Callable[..., Any]
) -> None:
    sim1, sim2 = sim_factory(name="sim1"), sim_factory(name="sim2")
    rig = rig_factory([("sim1", sim1.port), ("sim2", sim2.port)])
    node = rig.create_node()
    rig.render(node)
    assert sim1.prompts_seen or sim2.prompts_seen

    rig.service.set_enabled("sim2", False)  # what the panel's checkbox does
    seen_on_sim2 = len(sim2.prompts_seen)
    status = rig.render(node)

    assert len(sim2.prompts_seen) == seen_on_sim2
    assert "sim2" not in status and "sim1" in status, status
    assert node[K.SERVER].values() == [K.AUTO, "sim1"]
    assert json.loads(rig.user_file.read_text())["edits"] == {"sim2": {"enabled": False}}
    assert len(rig.built) == 1  # the same service throughout


def test_a_hand_edit_of_the_user_file_applies_to_the_next_render(
    rig_factory: Callable[..., Rig], sim_factory: Callable[..., Any]
) -> None:
    sim1, sim2 = sim_factory(name="sim1"), sim_factory(name="sim2")
    rig = rig_factory([("sim1", sim1.port), ("sim2", sim2.port)])
    node = rig.create_node()
    assert rig.service is not None
    rig.user_file.write_text(json.dumps({"version": 1, "edits": {"sim1": {"enabled": False}}}))
    status = rig.render(node)
    assert sim1.prompts_seen == [] and "sim2" in status, status


def test_uninstall_closes_the_service_and_its_threads(
    rig_factory: Callable[..., Rig], sim_factory: Callable[..., Any]
) -> None:
    sim = sim_factory(name="sim1")
    rig = rig_factory([("sim1", sim.port)])
    rig.render(rig.create_node(frames="1"))
    service = rig.service
    assert health_threads() == ["comfy-cluster-health-sim1"]

    uninstall_host(rig.nuke)

    assert service.closed
    assert current_session(rig.nuke) is None
    rig.nuke._fake.pump_until(lambda: health_threads() == [], 5.0)


def test_shutdown_closes_the_service_and_builds_no_new_one(
    rig_factory: Callable[..., Rig], sim_factory: Callable[..., Any]
) -> None:
    sim = sim_factory(name="sim1")
    rig = rig_factory([("sim1", sim.port)])
    service = rig.session.cluster()
    assert service.started and health_threads() == ["comfy-cluster-health-sim1"]

    rig.session.shutdown()  # what Nuke's quit (aboutToQuit / atexit) runs

    assert service.closed
    assert rig.session.cluster() is None
    rig.nuke._fake.pump_until(lambda: health_threads() == [], 5.0)
    rig.session.shutdown()  # idempotent


def test_a_broken_configuration_fails_the_render_with_its_message(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory([("sim1", 1)])
    rig.environ["NUKE_COMFYUI_SERVERS"] = "[not json"
    node = rig.create_node()
    assert node[K.SERVER].values() == [K.AUTO]  # the refresh reports no servers, no exception
    rig.nuke._fake.press(node[K.RENDER])
    assert node[K.STATUS].value().startswith("Error:")
    assert "NUKE_COMFYUI_SERVERS" in node[K.STATUS].value()
    assert node[K.TILE_COLOR].value() == K.COLOR_ERROR
    assert len(rig.nuke._fake.messages()) == 1
    assert rig.built == []  # retried on the next use, never half-built


class _Dispatcher:
    """Just enough of the Dispatcher for JobMonitor: records, touches no Nuke."""

    def __init__(self) -> None:
        self.posted: list[Any] = []

    def post(self, fn: Any, *args: Any) -> None:
        self.posted.append((fn, args))

    def set_knob_later(self, *args: Any) -> None:
        pass


def test_job_monitor_tracks_chunks_per_server() -> None:
    class Service:
        def __init__(self) -> None:
            self.jobs: dict[str, str] = {}

        def report_job(self, server: str, text: str, *, job: str = "") -> None:
            assert job == "J"
            if text:
                self.jobs[server] = text
            else:
                self.jobs.pop(server, None)

        def clear_job(self, job: str) -> None:
            assert job == "J"
            self.jobs.clear()

    service = Service()
    monitor = JobMonitor("Render1", _Dispatcher(), 12, lambda *a: None, job_id="J", cluster=service)
    e = {"job_id": "J", "progress": 0.0, "eta_seconds": None}
    monitor.on_event(ChunkAssigned(**e, chunk_index=0, frames=(1, 2, 3), server="a", reason=""))
    monitor.on_event(ChunkAssigned(**e, chunk_index=1, frames=(4, 5, 6), server="a", reason=""))
    monitor.on_event(ChunkAssigned(**e, chunk_index=2, frames=(7, 8, 9), server="b", reason=""))
    assert service.jobs == {
        "a": "Render1 chunk 1 (1-3), chunk 2 (4-6)",
        "b": "Render1 chunk 3 (7-9)",
    }
    for frame in (1, 2, 3):
        monitor.on_event(FrameWritten(**e, frame=frame, path="x", server="a"))
    assert service.jobs["a"] == "Render1 chunk 2 (4-6)"
    monitor.on_event(ChunkRetried(**e, chunk_index=1, server="a", why="boom", frames=(4, 5, 6)))
    assert "a" not in service.jobs
    monitor.on_event(ServerBlocklisted(**e, server="b", why="dead"))
    assert service.jobs == {"b": "Render1: out: dead"}  # its chunk is gone; why it is idle
    monitor.on_event(ChunkAssigned(**e, chunk_index=1, frames=(4, 5, 6), server="c", reason=""))
    assert service.jobs == {"b": "Render1: out: dead", "c": "Render1 chunk 2 (4-6)"}
    # The end clears what is left.
    monitor.on_event(JobDone(**e, frames_written=9))
    assert service.jobs == {}
    monitor.on_event(ChunkAssigned(**e, chunk_index=9, frames=(1,), server="c", reason=""))
    assert service.jobs == {}  # nothing after the end
