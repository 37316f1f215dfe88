"""``Bounded`` and ``in_background``: the engine's guard against a server that never answers.
A request that hangs must cost the caller at most its timeout, must not block the next caller's
wait for long, and must never keep Nuke from quitting (daemon threads)."""

from __future__ import annotations

import re
import threading
import time

import pytest

from comfy_cluster.core.engine.attempt import Aborted
from comfy_cluster.core.engine.tools import Bounded, in_background
from comfy_cluster.core.errors import ServerSilent


def test_an_answer_or_an_error_comes_back_as_is() -> None:
    bounded = Bounded("s")
    assert bounded(lambda: 42, 1.0, "GET /queue") == 42
    with pytest.raises(KeyError, match="boom"):
        bounded(lambda: {}["boom"], 1.0, "GET /queue")
    assert not bounded.busy


def test_a_silent_server_costs_its_timeout_then_the_next_call_is_refused_at_once() -> None:
    release = threading.Event()
    bounded = Bounded("s")
    started = time.monotonic()
    with pytest.raises(ServerSilent, match=r"GET /queue: no answer in 0\.3 s") as info:
        bounded(release.wait, 0.3, "GET /queue")
    assert 0.25 <= time.monotonic() - started < 2.0
    assert info.value.server == "s"
    assert bounded.busy and bounded._thread is not None and bounded._thread.daemon
    started = time.monotonic()
    with pytest.raises(ServerSilent, match="an earlier request got no answer") as again:
        bounded(lambda: 1, 5.0, "GET /history")
    assert time.monotonic() - started < 0.5  # refused, not waited for
    waited = float(re.search(r"for ([\d.]+) s", str(again.value)).group(1))  # type: ignore[union-attr]
    assert 0.2 <= waited < 3.0  # how long the earlier request has been silent
    release.set()
    deadline = time.monotonic() + 5.0
    while bounded.busy and time.monotonic() < deadline:
        time.sleep(0.01)
    assert bounded(lambda: "back", 1.0, "GET /queue") == "back"


def test_abort_ends_the_wait_within_a_moment_not_at_the_timeout() -> None:
    release = threading.Event()
    asked = threading.Event()

    def abort() -> bool:
        return asked.is_set()

    bounded = Bounded("s", abort=abort)
    threading.Timer(0.1, asked.set).start()
    started = time.monotonic()
    with pytest.raises(Aborted):
        bounded(release.wait, 10.0, "POST /prompt")
    assert time.monotonic() - started < 1.0
    release.set()


def test_cleanup_in_the_background_says_whether_it_finished_in_time() -> None:
    done: list[str] = []
    assert in_background(lambda: done.append("x"), 1.0, "cleanup") is True
    assert done == ["x"]
    assert in_background(lambda: {}["error is dropped"], 1.0, "cleanup") is True
    release = threading.Event()
    started = time.monotonic()
    assert in_background(release.wait, 0.2, "cc-test-hung-cleanup") is False
    assert time.monotonic() - started < 2.0
    (hung,) = [t for t in threading.enumerate() if t.name == "cc-test-hung-cleanup"]
    assert hung.daemon  # never keeps the application from quitting
    release.set()
