"""End to end: the ComfyClusterRender gizmo in the fake Nuke, rendering on simulated servers.

The node is created through the Nodes menu, fed by a Read of a small PNG sequence, and rendered
with the real scheduler against 127.0.0.1 sims. Every worker-side touch of Nuke would raise
FakeThreadViolation; the tests record any such construction, so a violation swallowed by a
logging handler still fails them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import pytest
from fixtures_nuke import FRAMES, TIMEOUT, WORKFLOW, Rig

from comfy_cluster.core.server import ServerConfig
from comfy_cluster.host import knobs as K
from comfy_cluster.host.install import install_host, uninstall_host

ROOT = Path(__file__).resolve().parent.parent


def test_render_through_the_menu_writes_inverted_frames(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory({}, {})
    nuke = rig.nuke
    node = rig.create_node()
    assert node.Class() == K.GIZMO_CLASS
    assert node[K.SERVER].values() == [K.AUTO, "sim1", "sim2"]

    nuke._fake.press(node[K.RENDER])
    rig.wait_status(node, "Done")

    rig.assert_inverted()
    assert node[K.PROGRESS].value() == 100
    status = rig.status(node)
    assert status.startswith(f"Done: {len(FRAMES)} frames"), status
    assert node[K.TILE_COLOR].value() == K.COLOR_GIZMO
    assert nuke._fake.messages() == []
    # The node's output is the rendered sequence: a Write downstream copies the inverted frames.
    assert node[K.FIRST].value() == FRAMES[0] and node[K.LAST].value() == FRAMES[-1]
    (rig.tmp / "check").mkdir()
    check = nuke.nodes.Write(file=str(rig.tmp / "check" / "c.####.png"))
    check.setInput(0, node)
    nuke.execute(check, FRAMES[0], FRAMES[-1])
    for frame in FRAMES:
        copied = (rig.tmp / "check" / f"c.{frame:04d}.png").read_bytes()
        assert copied == (rig.out / f"inv.{frame:04d}.png").read_bytes()
    # The temporary input Write and its frames are gone; nothing was left queued.
    assert [n.Class() for n in nuke.allNodes()].count("Write") == 1
    assert not any(p.name.startswith("comfy_cluster_in_") for p in rig.tmp.iterdir())
    assert rig.prompts_left() == []


def test_progress_updates_are_coalesced(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory({"node_seconds": 0.02, "steps": 8})
    nuke = rig.nuke
    node = rig.create_node()
    node[K.FRAMES].setValue("1-4")
    nuke._fake.press(node[K.RENDER])
    assert node[K.STATUS].value().startswith("0/4 frames")
    ran = nuke._fake.pump_until(lambda: rig.status(node).startswith("Done"), TIMEOUT)
    rig.assert_inverted(range(1, 5))
    assert not (rig.out / "inv.0005.png").exists()
    # 4 frames x (assign, 8 progress steps, write) events: far fewer main-thread calls.
    assert ran < 60, ran


def test_server_killed_mid_job_finishes_on_the_other(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory({"node_seconds": 0.05}, {"node_seconds": 0.05})
    nuke = rig.nuke
    node = rig.create_node()
    nuke._fake.press(node[K.RENDER])
    victim = rig.sims[1]  # type: ignore[attr-defined]
    nuke._fake.pump_until(lambda: len(victim.prompts_seen) >= 1, TIMEOUT)
    victim.kill()
    rig.wait_status(node, "Done")
    rig.assert_inverted()
    assert node[K.PROGRESS].value() == 100


def test_cancel_leaves_no_prompt_on_any_sim(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory({"node_seconds": 0.3}, {"node_seconds": 0.3})
    nuke = rig.nuke
    node = rig.create_node()
    nuke._fake.press(node[K.RENDER])
    nuke._fake.pump_until(
        lambda: any(s.prompts_seen for s in rig.sims),  # type: ignore[attr-defined]
        TIMEOUT,
    )
    nuke._fake.press(node[K.CANCEL])
    rig.wait_status(node, "Cancelled")
    # An interrupted prompt leaves the sim's "running" slot a moment after the interrupt.
    nuke._fake.pump_until(lambda: rig.prompts_left() == [], 5.0)
    assert node[K.TILE_COLOR].value() == K.COLOR_GIZMO
    assert nuke._fake.messages() == []


def test_deleting_the_node_mid_job_cancels_quietly(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory({"node_seconds": 0.3})
    nuke = rig.nuke
    node = rig.create_node()
    name = node.fullName()
    nuke._fake.press(node[K.RENDER])
    session = nuke._comfy_cluster_host
    nuke._fake.pump_until(lambda: bool(rig.sims[0].prompts_seen), TIMEOUT)  # type: ignore[attr-defined]
    nuke.delete(node)
    nuke._fake.pump_until(lambda: session.controller.jobs.get(name) is None, TIMEOUT)
    nuke._fake.pump_until(lambda: rig.prompts_left() == [], 5.0)
    assert nuke._fake.messages() == []


def test_error_lands_on_the_node_and_in_one_message(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory({"fail_node": "ImageInvert"})
    nuke = rig.nuke
    node = rig.create_node()
    nuke._fake.press(node[K.RENDER])
    rig.wait_status(node, "Error")
    assert node[K.TILE_COLOR].value() == K.COLOR_ERROR
    assert len(nuke._fake.messages()) == 1
    assert "ImageInvert" in rig.status(node) or "2" in rig.status(node)


@pytest.mark.parametrize(
    ("knob", "value", "expected"),
    [
        (K.WORKFLOW, "", "Workflow (cc_workflow) is empty"),
        (K.OUTPUT, "/tmp/no_frame_number.png", "no frame number"),
        (K.FRAMES, "1-x", "Error:"),
    ],
)
def test_bad_knobs_fail_before_anything_starts(
    rig_factory: Callable[..., Rig], knob: str, value: str, expected: str
) -> None:
    rig = rig_factory({})
    nuke = rig.nuke
    node = rig.create_node()
    node[knob].setValue(value)
    nuke._fake.press(node[K.RENDER])
    assert expected in rig.status(node)
    assert node[K.TILE_COLOR].value() == K.COLOR_ERROR
    assert len(nuke._fake.messages()) == 1
    assert rig.sims[0].prompts_seen == []  # type: ignore[attr-defined]


def test_terminal_render_blocks_and_prints_progress(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory({}, {}, gui=False)
    nuke = rig.nuke
    with pytest.raises(RuntimeError):
        nuke.menu("Nodes")  # no GUI: no menus, and the host install did not try
    node = nuke.createNode(K.GIZMO_CLASS)
    node.setInput(0, rig.read)
    node[K.WORKFLOW].setValue(str(WORKFLOW))
    node[K.OUTPUT].setValue(str(rig.out / "inv.####.png"))
    node[K.RENDER].execute()  # blocks until the job ends
    assert rig.status(node).startswith("Done"), rig.status(node)
    assert node[K.PROGRESS].value() == 100
    rig.assert_inverted()
    lines = [line for line in nuke._fake.tprints() if "comfy_cluster" in line]
    assert any("started" in line for line in lines)
    assert any("Done" in line for line in lines)
    assert len(lines) <= 12, lines  # per 10 %, never per frame
    assert nuke._fake.dropped() == []  # nothing went to executeInMainThread
    assert nuke._fake.queued() == 0


def test_terminal_render_error_is_printed_once(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory({"fail_node": "ImageInvert"}, gui=False)
    nuke = rig.nuke
    node = nuke.createNode(K.GIZMO_CLASS)
    node.setInput(0, rig.read)
    node[K.WORKFLOW].setValue(str(WORKFLOW))
    node[K.OUTPUT].setValue(str(rig.out / "inv.####.png"))
    node[K.RENDER].execute()
    assert rig.status(node).startswith("Error")
    errors = [line for line in nuke._fake.tprints() if "ERROR" in line]
    assert len(errors) == 1
    assert nuke._fake.messages() == []


def test_pinned_server_renders_only_there(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory({}, {})
    nuke = rig.nuke
    node = rig.create_node()
    nuke._fake.user_sets(node[K.SERVER], "sim2")
    assert node[K.SERVER_CHOICE].value() == "sim2"
    nuke._fake.press(node[K.RENDER])
    rig.wait_status(node, "Done")
    assert rig.sims[0].prompts_seen == []  # type: ignore[attr-defined]
    assert len(rig.sims[1].prompts_seen) == len(FRAMES)  # type: ignore[attr-defined]
    assert os.path.isfile(rig.out / "inv.0001.png")


def test_existing_frames_default_to_overwrite_and_resume_renders_only_missing(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory({})
    nuke = rig.nuke
    sim = rig.sims[0]  # type: ignore[attr-defined]
    node = rig.create_node()
    assert node[K.EXISTING].values() == list(K.EXISTING_MODES)
    assert node[K.EXISTING].value() == K.EXISTING_OVERWRITE  # the default
    nuke._fake.press(node[K.RENDER])
    rig.wait_status(node, "Done")
    assert len(sim.prompts_seen) == len(FRAMES)

    # Overwrite (the default): rendering again renders every frame again.
    nuke._fake.press(node[K.RENDER])
    rig.wait_status(node, "Done")
    assert len(sim.prompts_seen) == 2 * len(FRAMES)

    # Resume: only the deleted frame is rendered; the others are kept as they are.
    (rig.out / "inv.0003.png").unlink()
    kept = (rig.out / "inv.0002.png").stat().st_mtime_ns
    nuke._fake.user_sets(node[K.EXISTING], K.EXISTING_RESUME)
    nuke._fake.press(node[K.RENDER])
    rig.wait_status(node, "Done")
    assert len(sim.prompts_seen) == 2 * len(FRAMES) + 1
    assert rig.status(node).startswith("Done: 1 frames"), rig.status(node)
    assert (rig.out / "inv.0002.png").stat().st_mtime_ns == kept
    rig.assert_inverted()
    assert nuke._fake.messages() == []


class _StreamingScheduler:
    """A stand-in scheduler (the host's ``RenderScheduler`` seam): it 'renders' (copies) each
    frame as soon as its ``wait_for_input`` hook says the input is exported, to show the host
    starts the job before the export ends."""

    def __init__(self, servers: Any) -> None:
        self.started_before_export_done: list[bool] = []

    def start(self, job: Any, on_event: Any, wait_for_input: Any = None) -> Any:
        import shutil
        import threading

        from comfy_cluster.core.engine.events import FrameWritten, JobDone, JobStarted
        from comfy_cluster.core.frames import format_frame_path

        frames = tuple(job.frame_range)
        self.started_before_export_done.append(not wait_for_input(frames[-1], timeout=0))

        class Handle:
            def cancel(self) -> None:
                pass

        def run() -> None:
            on_event(JobStarted(job.job_id, 0.0, None, total_frames=len(frames), servers=("s",)))
            for i, frame in enumerate(frames, 1):
                assert wait_for_input(frame, timeout=10)
                dest = format_frame_path(job.output_pattern, frame)
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                shutil.copy(format_frame_path(job.input_pattern, frame), dest)
                on_event(FrameWritten(job.job_id, i / len(frames), None, frame, dest, "s"))
            on_event(JobDone(job.job_id, 1.0, 0.0, frames_written=len(frames)))

        threading.Thread(target=run, daemon=True).start()
        return Handle()


def test_scheduler_with_input_hook_starts_before_export_ends(
    fake_nuke: Any, tmp_path: Path, violations: list[str]
) -> None:
    fake_nuke.pluginAddPath(str(ROOT / "gizmos"))
    uninstall_host(fake_nuke)
    schedulers: list[_StreamingScheduler] = []

    def factory(servers: Any, health: Any) -> _StreamingScheduler:
        schedulers.append(_StreamingScheduler(servers))
        return schedulers[-1]

    rig = Rig(fake_nuke, tmp_path, [ServerConfig(name="s", host="127.0.0.1", port=1)])
    install_host(
        servers=lambda: rig.servers,
        scheduler_factory=factory,
        nuke=fake_nuke,
        temp_root=str(tmp_path),
        export_batch=1,
    )
    try:
        node = rig.create_node()
        fake_nuke._fake.press(node[K.RENDER])
        rig.wait_status(node, "Done")
        assert schedulers[0].started_before_export_done == [True]
        for frame in FRAMES:  # the stand-in copies the exported input: same bytes as the plate
            assert (rig.out / f"inv.{frame:04d}.png").is_file()
    finally:
        uninstall_host(fake_nuke)
    assert violations == []


@pytest.mark.parametrize("when", ["exporting", "rendering"])
def test_renaming_the_node_mid_render_follows_the_job(
    rig_factory: Callable[..., Rig], when: str
) -> None:
    """A rename (knobChanged on "name") moves the job to the new name: updates, the end, the
    input export and the Render/Cancel buttons all find it; Render never starts a second job."""
    rig = rig_factory({"node_seconds": 0.1})
    nuke = rig.nuke
    node = rig.create_node()
    old = node.fullName()
    session = nuke._comfy_cluster_host
    nuke._fake.press(node[K.RENDER])
    record = session.controller.jobs.get(old)
    assert record is not None
    if when == "rendering":
        nuke._fake.pump_until(lambda: rig.prompt_count() >= 2, TIMEOUT)
        assert not rig.status(node).startswith("Done")
    # else: no main-thread call ran yet, so no input frame was written under the old name.
    nuke._fake.user_sets(node["name"], "Hero")
    assert node.fullName() == "Hero" and nuke.toNode(old) is None
    assert session.controller.jobs.get("Hero") is record
    assert session.controller.jobs.get(old) is None
    assert record.monitor.node_name == "Hero"

    nuke._fake.press(node[K.RENDER])  # still rendering: refused, once, with a message
    assert session.controller.jobs.names() == ("Hero",)
    assert session.controller.jobs.get("Hero") is record
    (message,) = nuke._fake.messages()
    assert "already rendering" in message

    rig.wait_status(node, "Done")
    assert rig.status(node).startswith(f"Done: {len(FRAMES)} frames"), rig.status(node)
    assert node[K.PROGRESS].value() == 100
    assert node[K.TILE_COLOR].value() == K.COLOR_GIZMO
    assert session.controller.jobs.names() == ()
    rig.assert_inverted()
    assert rig.prompt_count() == len(FRAMES)  # one job: one prompt per frame, no second job
    assert len(nuke._fake.messages()) == 1


def test_renaming_onto_a_deleted_rendering_nodes_name(rig_factory: Callable[..., Rig]) -> None:
    """Node B is deleted mid-render (its cancel still running) and A is renamed to B: A's job
    takes the name, B's stale job still ends quietly and never touches the renamed node."""
    rig = rig_factory({"node_seconds": 0.1}, {"node_seconds": 0.1})
    nuke = rig.nuke
    first = rig.create_node()
    second = rig.create_node()
    second[K.OUTPUT].setValue(str(rig.tmp / "other" / "b.####.png"))
    session = nuke._comfy_cluster_host
    jobs = session.controller.jobs
    nuke._fake.press(first[K.RENDER])
    nuke._fake.press(second[K.RENDER])
    taken = second.fullName()
    kept, gone = jobs.get(first.fullName()), jobs.get(taken)
    nuke._fake.pump_until(lambda: rig.prompt_count() >= 2, TIMEOUT)
    nuke.delete(second)
    nuke._fake.user_sets(first["name"], taken)  # before the deleted node's end could run
    assert first.fullName() == taken
    assert jobs.get(taken) is kept and gone is not None and gone.node_gone
    rig.wait_status(first, "Done")
    nuke._fake.pump_until(lambda: jobs.names() == (), TIMEOUT)
    assert rig.status(first).startswith(f"Done: {len(FRAMES)} frames"), rig.status(first)
    assert first[K.PROGRESS].value() == 100
    assert first[K.TILE_COLOR].value() == K.COLOR_GIZMO
    rig.assert_inverted()
    assert nuke._fake.messages() == []


def test_a_rename_without_knob_changed_is_adopted_by_render(
    rig_factory: Callable[..., Rig],
) -> None:
    """``node.setName`` fires no knobChanged (the fake, like a rename of an enclosing Group in
    Nuke): pressing Render on the renamed node still finds its job, refuses, and re-keys it."""
    rig = rig_factory({"node_seconds": 0.1})
    nuke = rig.nuke
    node = rig.create_node()
    session = nuke._comfy_cluster_host
    nuke._fake.press(node[K.RENDER])
    nuke._fake.pump_until(lambda: rig.prompt_count() >= 1, TIMEOUT)
    node.setName("Quiet")
    nuke._fake.press(node[K.RENDER])
    assert session.controller.jobs.names() == ("Quiet",)
    (message,) = nuke._fake.messages()
    assert "already rendering" in message
    rig.wait_status(node, "Done")
    assert node[K.PROGRESS].value() == 100
    assert node[K.TILE_COLOR].value() == K.COLOR_GIZMO
    assert rig.prompt_count() == len(FRAMES)


def test_order_preview_on_the_node_renders_a_spread_of_the_shot_first(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory({})
    nuke = rig.nuke
    node = rig.create_node()
    assert node[K.ORDER].value() == "sequential"  # the default
    nuke._fake.user_sets(node[K.ORDER], "preview")
    nuke._fake.press(node[K.RENDER])
    rig.wait_status(node, "Done")
    rig.assert_inverted()
    # One server: the frames land in the order they were asked for. The last frame of the
    # shot is among the first three written (in order it would be the very last).
    written = sorted(FRAMES, key=lambda f: (rig.out / f"inv.{f:04d}.png").stat().st_mtime_ns)
    assert max(FRAMES) in written[:3], written
