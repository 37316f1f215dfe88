"""What an idle worker slot does about its server coming and going: :func:`idle` probes a
suspended server (or notices one that refuses us) and :func:`second_chance` gives a server out
of the job for what it did its one probe, after ``rejoin_after``.
"""

from __future__ import annotations

import logging
from typing import Any

from comfy_cluster.core.engine.attempt import Aborted
from comfy_cluster.core.engine.blame import refusal, refused_by_health, why
from comfy_cluster.core.errors import ComfyClusterError

#: A worker slot (``worker.Worker``): its book, slot, server name, link, watch and tools.
Worker = Any

__all__ = ["idle", "probe", "second_chance"]

log = logging.getLogger(__name__)


def idle(worker: Worker) -> None:
    """No work for this slot: probe its suspended server when due; otherwise a server the
    health monitor saw refuse us (401/403) leaves the job at once, saying what to check,
    instead of being waited for."""
    if worker.book.probe_due(worker.slot):
        probe(worker)
        return
    error = refused_by_health(worker.tools.health, worker.name)
    if error is not None:
        worker.book.server_refused(worker.name, refusal(error))


def probe(worker: Worker) -> None:
    """Probe this slot's server once: does it answer ``/queue`` again?"""
    book, name = worker.book, worker.name
    try:
        worker.watch.listener = worker.link.connect()
        worker.link.ask(worker.link.client.queue, "/queue")
    except Aborted:
        return
    except ComfyClusterError as exc:
        book.probe_result(name, False, why(exc))
    except Exception as exc:  # a bug in a client: count it as a failed probe
        log.exception("%s: probe failed", worker.slot)
        book.probe_result(name, False, repr(exc))
    else:
        log.info("%s: answers again; resuming", name)
        book.probe_result(name, True)


def second_chance(worker: Worker) -> bool:
    """The slot's server is out of the job: wait for its one probe (if it has one) while the
    job runs. True when it is back in the job (the slot goes on), False: the slot stops."""
    book = worker.book
    while True:
        due = book.second_chance_due(worker.slot, worker.settings.wait_step)
        if due is None:
            return worker.name not in book.blocklist and not book.over()
        if due:
            probe(worker)
