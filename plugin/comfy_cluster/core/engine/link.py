"""One worker slot's connection to its server: :class:`ServerLink`.

It owns the slot's client and websocket listener and bounds every request whose answer the slot
waits for without end otherwise: checks of a silent prompt and probes go through
:meth:`ServerLink.ask` (abandoned after ``answer_timeout``), cleanup through
:meth:`ServerLink.cleanup` (abandoned after ``cleanup_timeout``). A client with an abandoned
request still running is never used again: the next :meth:`connect` replaces it (a
``requests.Session`` serves one thread at a time), and the old one is closed in the background.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from comfy_cluster.core.engine.settings import EngineSettings
from comfy_cluster.core.engine.tools import Bounded, ClientFactory, in_background
from comfy_cluster.core.protocol import JOB_UNUSED
from comfy_cluster.core.server import ServerConfig

__all__ = ["ServerLink"]

log = logging.getLogger(__name__)


class ServerLink:
    """The client, listener and bounded requests of one worker slot (the slot's thread).

    ``on_event`` receives the listener's events; ``over()`` says the job is over or cancelled (a
    bounded wait then stops early with ``Aborted``).
    """

    def __init__(
        self,
        server: ServerConfig,
        factory: ClientFactory,
        settings: EngineSettings,
        on_event: Callable[[Any], None],
        over: Callable[[], bool],
    ) -> None:
        self.server = server
        self.name = server.name
        self.factory = factory
        self.settings = settings
        self.on_event = on_event
        self.over = over
        self.client: Any = None
        self.listener: Any = None
        self.stop = threading.Event()
        self.runner = Bounded(self.name, over)
        #: A cleanup request on the client was abandoned: replace the client before its next use.
        self._tainted = False  # pragma: no mutate

    def connect(self) -> Any:
        """The listener (new when there was none, or the old client is tainted)."""
        if self.client is not None and (self.runner.busy or self._tainted):
            log.info("%s: replacing a client with an unanswered request", self.name)
            self.close()
        if self.client is not None:
            return self.listener
        self.stop = threading.Event()
        self.runner = Bounded(self.name, self.over)
        self._tainted = False
        self.client = self.factory(self.server)
        # The job reads a few message types: the rest are dropped before a full parse.
        self.listener = self.client.listen(self.on_event, self.stop, drop=JOB_UNUSED)
        wait = getattr(self.listener, "wait_connected", None)
        if wait is not None:
            # Events of a fast prompt can come before POST returns: listen first.
            wait(min(2.0, self.settings.stall_timeout))
        return self.listener

    def ask(self, fn: Callable[[], Any], what: str = "a request") -> Any:
        """``fn()`` (a request on :attr:`client`), abandoned after ``answer_timeout``:
        raises ``ServerSilent`` then, ``Aborted`` when the job ends meanwhile."""
        return self.runner(fn, self.settings.answer_timeout, what)

    def cleanup(self, fn: Callable[[Any], Any], *, wait: bool = True) -> bool:
        """``fn(client)`` for cleanup, on the slot's client unless it is tainted (then a fresh
        one); abandoned after ``cleanup_timeout`` (at once unless ``wait``). Returns whether it
        finished in time; errors are ``fn``'s to handle (logged and dropped here)."""
        own = self.client is not None and not self.runner.busy and not self._tainted

        def run() -> None:
            if own:
                fn(self.client)
                return
            client = self.factory(self.server)
            try:
                fn(client)
            finally:
                client.close()

        timeout = self.settings.cleanup_timeout if wait else 0.0
        done = in_background(run, timeout, f"comfy-cluster-{self.name}-cleanup")
        if not done and own:
            self._tainted = True
        return done

    def close(self) -> None:
        """Stop the listener and close the client, waiting at most ``cleanup_timeout``."""
        self.stop.set()
        listener, client = self.listener, self.client
        self.listener = self.client = None

        def run() -> None:
            if listener is not None:
                listener.close()
            if client is not None:
                client.close()

        if listener is not None or client is not None:  # pragma: no mutate
            in_background(run, self.settings.cleanup_timeout, f"comfy-cluster-{self.name}-close")
