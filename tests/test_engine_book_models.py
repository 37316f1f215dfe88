"""The job book's model side (``book_models.py``), driven by hand with a fake clock: what a
slot reads of its server's queue reaches the dispatch at once, lost servers are kept from the
chooser, and our prompts' times feed the load estimate."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any, Optional

from test_engine_job_book import first_free

from comfy_cluster.core.engine import events as ev
from comfy_cluster.core.engine.attempt import Attempt
from comfy_cluster.core.engine.book import JobBook
from comfy_cluster.core.engine.job import RenderJob
from comfy_cluster.core.engine.model_names import QueueModels
from comfy_cluster.core.frames import Chunk, FixedChunker

CHECKPOINT_WORKFLOW = {
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "ours.safetensors"}},
    "9": {"class_type": "SaveImage", "inputs": {"images": ["4", 0]}},
}
THEIRS = frozenset({"theirs.safetensors"})


def book_of(
    servers: Sequence[str], chooser: Any = None, slots: Optional[Sequence[str]] = None
) -> JobBook:
    """A four-chunk job of the checkpoint workflow; one slot per server in ``slots``."""
    job = RenderJob(CHECKPOINT_WORKFLOW, "1-4", "o.####.png")
    book = JobBook(
        job,
        FixedChunker(1).split(job.frame_range),
        servers,
        frames_to_render=job.frame_range.frames,
        chooser=chooser or first_free,
        sink=ev.EventSink(lambda event: None),
        clock=lambda: 100.0,
    )
    for server in servers if slots is None else slots:
        book.add_slot(f"{server}-0", server)
    return book


def test_a_slot_waiting_for_work_gets_it_as_soon_as_its_servers_queue_is_read() -> None:
    """Dispatch waits for a server's first queue read (which model it holds); the read must
    hand the waiting slot its chunk at once, not after its wait times out."""
    book = book_of(["a"])
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(book.next_attempt("a-0", 10.0)))
    waiter.start()
    time.sleep(0.2)
    book.models_seen("a", QueueModels())
    waiter.join(3.0)
    assert not waiter.is_alive(), "the slot slept through the read"
    assert isinstance(got[0], Attempt)


def test_a_server_another_model_took_is_not_offered_to_the_chooser() -> None:
    seen: list[list[str]] = []

    def chooser(chunk: Chunk, free: Sequence[str], in_flight: Any, remaining: int, able: Any):
        seen.append(list(able))
        return free[0], "first free"

    book = book_of(["a", "b"], chooser)
    book.models_seen("b", QueueModels())  # a is not read yet: b takes a chunk
    book.model_submitted("b")
    book.models_seen("b", QueueModels(behind=(THEIRS,)))
    assert book.model_lost("b")
    seen.clear()
    book.models_seen("a", QueueModels())
    assert seen and all("b" not in able for able in seen), seen


def test_our_prompt_times_feed_the_load_estimate() -> None:
    book = book_of(["a", "b"], slots=["a"])  # b has no slot: it takes no chunk
    book.models_seen("a", QueueModels())
    book.models_seen("b", QueueModels(), THEIRS)
    book.model_submitted("a")
    book.model_prompt_done("a", 1.0, False)
    book.model_prompt_done("a", 11.0, True)  # a load costs about 10 s
    assert book.models.admit(["b"], ["a", "b"], 4) == []  # 4 s of work left: not worth it


def test_a_server_handed_our_chunk_counts_as_warm_before_its_prompt_is_sent() -> None:
    """Between handing a chunk out and sending its prompt, the server is already ours: the next
    chunk in line goes to its other slot, not to a cold server listed first (which, its load
    cost unknown, still gets the chunk after)."""
    book = book_of(["b", "a"], slots=["a"])  # only a works at first
    book.models_seen("a", QueueModels())
    book.models_seen("b", QueueModels())
    first = book.next_attempt("a-0", 0.0)
    assert isinstance(first, Attempt) and first.server == "a"
    book.add_slot("a-1", "a")
    book.add_slot("b-0", "b")
    cold = book.next_attempt("b-0", 0.0)
    second = book.next_attempt("a-1", 0.0)
    assert isinstance(second, Attempt) and second.chunk.index == first.chunk.index + 1
    assert isinstance(cold, Attempt) and cold.chunk.index == second.chunk.index + 1
