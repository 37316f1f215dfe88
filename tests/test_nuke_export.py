"""Issue 12, point 10: the input export is one cancellable task, leaves no undo entries, runs no
studio Write hooks, and blocks the GUI as few times as the chunking allows."""

from __future__ import annotations

from typing import Any, Callable

import pytest
from fixtures_nuke import TIMEOUT, Rig

from comfy_cluster.host import knobs as K
from comfy_cluster.host.export import EXPORT_NODE_NAME, PROGRESS_TITLE, batch_sizes
from comfy_cluster.host.jobs import RunningJob


def _export_calls(nuke: Any) -> list[tuple[int, ...]]:
    return [frames for name, frames, _ in nuke._fake.executions() if EXPORT_NODE_NAME in name]


def test_one_block_per_chunk_one_task_no_undo_no_studio_hooks(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory({}, export_batch=1)
    nuke = rig.nuke
    calls: list[str] = []
    nuke._fake.main_namespace()["calls"] = calls
    # A studio's Write hooks, as knob defaults (they would publish our temporary input).
    nuke.knobDefault("Write.beforeRender", "calls.append('before ' + nuke.thisNode().name())")
    nuke.knobDefault("Write.afterRender", "calls.append('after ' + nuke.thisNode().name())")
    node = rig.create_node()
    node[K.CHUNK_SIZE].setValue(3)
    undo_before = list(nuke._fake.undo_log())

    nuke._fake.press(node[K.RENDER])
    rig.wait_status(node, "Done")
    rig.assert_inverted()

    assert _export_calls(nuke) == [(1, 2, 3), (4, 5, 6)]  # a chunk's inputs per UI block
    tasks = [t for t in nuke._fake.progress_tasks() if t.title == PROGRESS_TITLE]
    assert len(tasks) == 1
    assert tasks[0].progress[-1] == 100
    assert nuke._fake.undo_log() == undo_before  # no create/delete entries for the Write
    assert calls == []
    assert nuke.allNodes("Write") == []


def test_automatic_chunking_grows_the_batches(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory({}, export_batch=1, frames=range(1, 11))
    nuke = rig.nuke
    node = rig.create_node()
    nuke._fake.press(node[K.RENDER])
    rig.wait_status(node, "Done")
    sizes = [len(frames) for frames in _export_calls(nuke)]
    assert sizes == [1, 2, 4, 3]


def test_cancel_on_the_export_task_cancels_the_render(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory({"node_seconds": 0.05}, export_batch=1, frames=range(1, 41))
    nuke = rig.nuke
    node = rig.create_node()
    nuke._fake.press(node[K.RENDER])
    nuke._fake.pump_until(
        lambda: any(t.title == PROGRESS_TITLE for t in nuke._fake.progress_tasks()), TIMEOUT
    )
    (task,) = [t for t in nuke._fake.progress_tasks() if t.title == PROGRESS_TITLE]
    nuke._fake.cancel_progress(task)
    rig.wait_status(node, "Cancelled")
    assert len(_export_calls(nuke)) < 8  # it stopped writing inputs
    assert nuke.allNodes("Write") == []
    assert nuke._fake.messages() == []
    nuke._fake.pump_until(lambda: rig.prompts_left() == [], 5.0)


def test_terminal_export_shows_no_progress_task(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory({}, gui=False, export_batch=2)
    nuke = rig.nuke
    node = rig.create_node()
    undo_before = list(nuke._fake.undo_log())
    node[K.RENDER].execute()
    assert rig.status(node).startswith("Done")
    assert nuke._fake.progress_tasks() == []
    assert nuke._fake.undo_log() == undo_before


@pytest.mark.parametrize(
    ("total", "first", "chunk", "sizes"),
    [
        (10, 2, 0, [2, 4, 4]),
        (40, 4, 0, [4, 8, 16, 12]),
        (100, 1, 0, [1, 2, 4, *[8] * 11, 5]),
        (10, 2, 3, [3, 3, 3, 1]),
        (0, 4, 0, []),
    ],
)
def test_batch_sizes(total: int, first: int, chunk: int, sizes: list[int]) -> None:
    assert list(batch_sizes(total, first, chunk)) == sizes


def test_a_user_cancel_after_the_scheduler_started_cancels_its_handle() -> None:
    class Handle:
        cancelled = False

        def cancel(self) -> None:
            self.cancelled = True

    class Exporter:
        cancelled_by_user = True

        def stop(self) -> None:
            pass

    class Monitor:
        def cancelled(self) -> None:  # pragma: no cover - must not be called
            raise AssertionError("the scheduler reports the cancel itself")

    handle = Handle()
    record = RunningJob("N", None, Monitor(), Exporter(), None, None, handle=handle)  # type: ignore[arg-type]
    record.inputs_finished(None, True)
    assert handle.cancelled
