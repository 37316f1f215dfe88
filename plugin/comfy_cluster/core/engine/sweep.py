"""The cancel sweep: :func:`sweep_prompts` leaves none of a job's prompts on any server.

Run by the job's controller after its workers stopped (cancel, failure, or the end): every
prompt the book still lists is deleted from its server's queue or interrupted while it runs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from comfy_cluster.core.engine.book import JobBook
from comfy_cluster.core.engine.cleanup import ignore_errors
from comfy_cluster.core.engine.tools import ClientFactory
from comfy_cluster.core.errors import ComfyClusterError
from comfy_cluster.core.server import ServerConfig

__all__ = ["sweep_prompts"]

log = logging.getLogger(__name__)


def sweep_prompts(
    book: JobBook, servers: Sequence[ServerConfig], client_factory: ClientFactory
) -> None:
    """Delete/interrupt every prompt of the job still on a server, with a fresh client per
    server (the workers' are closed). Best effort: a server that does not answer is logged."""
    by_name = {srv.name: srv for srv in servers}
    for name, ids in book.live_prompts().items():
        client = None
        try:
            client = client_factory(by_name[name])
            q = client.queue()
            pending = [pid for pid in ids if pid in q.pending]
            if pending:
                client.delete_queued(pending)
                q = client.queue()
            for pid in ids:
                if pid in q.running:
                    client.interrupt(pid)
                book.prompt_finished(name, pid)
        except ComfyClusterError as exc:
            log.info("%s: could not clean up prompts %s: %s", name, ids, exc)
        finally:
            if client is not None:
                ignore_errors(client.close)
