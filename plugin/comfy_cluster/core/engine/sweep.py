"""The cancel sweep: :func:`sweep_prompts` leaves none of a job's prompts on any server.

Run by the job's controller after its workers stopped (cancel, failure, or the end): every
prompt the book still lists is deleted from its server's queue or interrupted while it runs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from comfy_cluster.core.engine.book import JobBook
from comfy_cluster.core.engine.cleanup import ignore_errors
from comfy_cluster.core.engine.tools import ClientFactory
from comfy_cluster.core.errors import ComfyClusterError
from comfy_cluster.core.server import ServerConfig

__all__ = ["sweep_prompts"]

log = logging.getLogger(__name__)


def sweep_prompts(
    book: JobBook,
    servers: Sequence[ServerConfig],
    client_factory: ClientFactory,
    timeout: float = 1.0,
) -> None:
    """Delete/interrupt every prompt of the job still on a server, with a fresh client per
    server (the workers' are closed), every server at once on its own daemon thread. Best
    effort: a server that does not answer within ``timeout`` is abandoned (and logged); its
    prompts stay listed in the book (``live_prompts``) so the caller can name it."""
    by_name = {srv.name: srv for srv in servers}
    threads = []
    for name, ids in book.live_prompts().items():
        thread = threading.Thread(
            target=_sweep_server,
            args=(book, by_name[name], ids, client_factory),
            name=f"comfy-cluster-{name}-sweep",
            daemon=True,
        )
        thread.start()
        threads.append((name, thread))
    deadline = time.monotonic() + timeout
    for name, thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            log.warning("%s: no answer to the clean-up within %.1f s; abandoned", name, timeout)


def _sweep_server(
    book: JobBook, server: ServerConfig, ids: tuple[str, ...], client_factory: ClientFactory
) -> None:
    name = server.name
    client = None
    try:
        client = client_factory(server)
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
    except Exception:
        log.exception("%s: clean-up failed", name)
    finally:
        if client is not None:
            ignore_errors(client.close)
