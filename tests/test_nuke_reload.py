"""Issue 12, point 5: frames come back as they land.

The internal Read looks at its files again (its Reload) at every job end, done, failed or
cancelled, and, throttled, while frames land.
"""

from __future__ import annotations

from typing import Any, Callable

from fixtures_nuke import TIMEOUT, Rig

from comfy_cluster.core.engine.events import FrameWritten, JobDone
from comfy_cluster.host import knobs as K
from comfy_cluster.host.jobs import JobMonitor


def _reloads(nuke: Any, node: Any) -> int:
    return nuke._fake.reloads().count(f"{node.fullName()}.{K.INTERNAL_READ}")


def test_frames_come_back_while_the_job_runs(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory({"node_seconds": 0.15}, reload_interval=0.0)
    nuke = rig.nuke
    node = rig.create_node()
    nuke._fake.press(node[K.RENDER])
    nuke._fake.pump_until(lambda: _reloads(nuke, node) >= 1, TIMEOUT)
    assert not rig.status(node).startswith("Done"), "the first reload came before the end"
    assert (rig.out / "inv.0001.png").is_file()
    during = _reloads(nuke, node)
    rig.wait_status(node, "Done")
    assert _reloads(nuke, node) > during  # and once more at the end


def test_reloads_are_throttled(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory({}, reload_interval=3600.0)
    nuke = rig.nuke
    node = rig.create_node()
    nuke._fake.press(node[K.RENDER])
    rig.wait_status(node, "Done")
    assert _reloads(nuke, node) == 2  # the first frame that landed, then the end


def test_a_cancelled_job_reloads(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory({"node_seconds": 0.2}, reload_interval=3600.0)
    nuke = rig.nuke
    node = rig.create_node()
    nuke._fake.press(node[K.RENDER])
    # The file lands before the main thread hears of it: wait for the reload it brings.
    nuke._fake.pump_until(lambda: _reloads(nuke, node) >= 1, TIMEOUT)
    before = _reloads(nuke, node)
    nuke._fake.press(node[K.CANCEL])
    rig.wait_status(node, "Cancelled")
    assert _reloads(nuke, node) == before + 1
    nuke._fake.pump_until(lambda: rig.prompts_left() == [], 5.0)


def test_a_failed_job_reloads(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory({"fail_node": "ImageInvert"}, reload_interval=3600.0)
    nuke = rig.nuke
    node = rig.create_node()
    nuke._fake.press(node[K.RENDER])
    rig.wait_status(node, "Error")
    assert _reloads(nuke, node) == 1


class _Posts:
    """A dispatcher stand-in: posts are queued, knob updates dropped."""

    def __init__(self) -> None:
        self.posted: list[Any] = []

    def post(self, fn: Any, *args: Any) -> None:
        self.posted.append((fn, args))

    def set_knob_later(self, *args: Any) -> None:
        pass

    def run(self) -> None:
        posted, self.posted = self.posted, []
        for fn, args in posted:
            fn(*args)


def test_the_monitor_throttles_and_never_queues_two_reloads() -> None:
    now = [100.0]
    landed: list[str] = []
    posts = _Posts()
    monitor = JobMonitor(
        "R1", posts, 10, lambda *a: None, job_id="J",  # type: ignore[arg-type]
        on_frames=landed.append, reload_interval=5.0, clock=lambda: now[0],
    )  # fmt: skip

    def frame(n: int) -> FrameWritten:
        return FrameWritten("J", n / 10, None, n, f"/o.{n:04d}.png", "s")

    monitor.on_event(frame(1))
    monitor.on_event(frame(2))  # a reload is already queued
    posts.run()
    assert landed == ["R1"]
    now[0] += 1.0
    monitor.on_event(frame(3))  # too soon
    posts.run()
    assert landed == ["R1"]
    now[0] += 5.0
    monitor.on_event(frame(4))
    monitor.rename("R2")
    posts.run()
    assert landed == ["R1", "R2"]  # the name is read when it runs
    now[0] += 10.0
    monitor.on_event(frame(5))
    monitor.on_event(JobDone("J", 1.0, 0.0, frames_written=5))  # the end reloads by itself
    posts.run()
    assert landed == ["R1", "R2"]
