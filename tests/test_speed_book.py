"""Speeds are learnt per workflow shape: a scheduler that lives for a Nuke session renders a
colour transform and a 30-step sampler on the same servers, and one's speed must not plan the
other."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fake_comfy import FakeCluster, FakeServer
from test_engine_job_runs import scheduler_for
from workflows import invert_workflow

from comfy_cluster.core.balance import SpeedTracker
from comfy_cluster.core.engine.job import RenderJob
from comfy_cluster.core.engine.scheduler import Scheduler
from comfy_cluster.core.engine.speed_book import SpeedBook, workflow_signature


def sampler(steps: int, seed: int = 1, text: str = "a cat") -> dict[str, Any]:
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["4", 1]}},
        "3": {
            "class_type": "KSampler",
            "inputs": {"seed": seed, "steps": steps, "model": ["4", 0]},
        },
    }


def test_a_new_seed_or_prompt_text_is_the_same_shape_and_more_steps_is_not() -> None:
    assert workflow_signature(sampler(20)) == workflow_signature(sampler(20, seed=7, text="a dog"))
    assert workflow_signature(sampler(20)) != workflow_signature(sampler(30))
    assert workflow_signature(invert_workflow("a")) == workflow_signature(invert_workflow("b"))


def test_the_node_order_of_a_saved_file_is_not_a_new_shape() -> None:
    """A workflow saved again may list its nodes in another order: same work, same speed."""
    nodes = sampler(20)
    reordered = dict(reversed(list(nodes.items())))
    assert list(reordered) != list(nodes)
    assert workflow_signature(reordered) == workflow_signature(nodes)


def test_a_book_may_keep_a_single_shape() -> None:
    book = SpeedBook(keep=1)
    book.for_workflow(sampler(20))
    book.for_workflow(sampler(30))
    assert len(book) == 1
    with pytest.raises(ValueError, match="keep"):
        SpeedBook(keep=0)


def test_the_book_keeps_one_record_per_shape_and_only_the_latest_few() -> None:
    book = SpeedBook(keep=2)
    twenty = book.for_workflow(sampler(20))
    assert book.for_workflow(sampler(20, seed=9)) is twenty
    thirty = book.for_workflow(sampler(30))
    assert thirty is not twenty
    book.for_workflow(sampler(20))  # used again: the most recent
    forty = book.for_workflow(sampler(40))  # pushes out the least recent (30 steps)
    assert len(book) == 2
    assert book.for_workflow(sampler(40)) is forty  # the newest shape is kept
    assert book.for_workflow(sampler(20)) is twenty
    assert book.for_workflow(sampler(30)) is not thirty  # learnt again from scratch
    with pytest.raises(ValueError, match="keep"):
        SpeedBook(keep=0)


def test_a_record_passed_in_serves_every_workflow() -> None:
    shared = SpeedTracker()
    book = SpeedBook(fixed=shared)
    assert book.for_workflow(sampler(20)) is shared is book.for_workflow(invert_workflow())


def test_a_workflow_that_does_not_load_gets_a_record_of_its_own(tmp_path: Path) -> None:
    book = SpeedBook()
    assert book.for_workflow(tmp_path / "missing.json") is not book.for_workflow(sampler(20))
    assert len(book) == 1


@contextmanager
def on_one_fake_server() -> Iterator[Scheduler]:
    """A scheduler over one fake server "s" that retries at once."""
    with FakeCluster([FakeServer("s")]) as cluster, scheduler_for(cluster) as scheduler:
        yield scheduler


def two_frames(folder: Path, workflow: Any) -> RenderJob:
    """Frames 1-2 of ``workflow`` over two input frames written into ``folder``."""
    for f in (1, 2):
        (folder / f"in.{f:04d}.png").write_bytes(b"frame-%d" % f)
    return RenderJob(
        workflow,
        "1-2",
        str(folder / "out" / "shot.####.png"),
        input_pattern=str(folder / "in.####.png"),
    )


def test_a_job_learns_the_speed_of_its_own_workflow_only(tmp_path: Path) -> None:
    with on_one_fake_server() as scheduler:
        assert scheduler.run(two_frames(tmp_path, invert_workflow())).ok
        same_shape = scheduler.speeds.for_workflow(invert_workflow("other-prefix"))
        other_shape = scheduler.speeds.for_workflow(sampler(20))
    assert same_shape.seconds_per_frame("s") is not None
    assert other_shape.seconds_per_frame("s") is None


def test_a_job_reads_its_workflow_file_once(tmp_path: Path, monkeypatch: Any) -> None:
    """The plan, the speed record of the workflow's shape and the checkpoint it loads all come
    from one read: a file saved again mid-start cannot size chunks with another shape's speed."""
    import json

    from comfy_cluster.core import workflow as workflow_module

    path = tmp_path / "flow.json"
    path.write_text(json.dumps(invert_workflow()), encoding="utf-8")
    reads: list[str] = []
    real_read = workflow_module.read_input_text

    def counting_read(name: str, *args: Any, **kwargs: Any) -> str:
        reads.append(name)
        return real_read(name, *args, **kwargs)

    monkeypatch.setattr(workflow_module, "read_input_text", counting_read)
    with on_one_fake_server() as scheduler:
        assert scheduler.run(two_frames(tmp_path, str(path))).ok
    assert reads.count(str(path)) == 1, reads
