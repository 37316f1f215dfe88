"""Start simulated ComfyUI servers inside a process (tests, benchmarks, the ``sim`` command).

Each ``SimServer`` runs its aiohttp app on its own daemon thread with its own event loop, on
127.0.0.1, with its own input/output/temp folders. ``stop()`` is graceful, ``kill()`` resets every
connection like a crashed process, ``restart()`` comes back on the same port with a fresh queue,
history and cache. All public methods may be called from any thread except the server's own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import shutil
import socket
import ssl
import tempfile
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, Union

from .nodes import Dirs
from .options import SimOptions

#: The default options (frozen, so sharing one instance is safe).
DEFAULT_OPTIONS = SimOptions()
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


def _bind(host: str, port: int, *, listen: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        if listen:
            sock.listen(128)
            sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class _Runtime:
    """One run of a server: loop, app, listener, state. Lives and dies with its thread."""

    def __init__(self, owner: SimServer) -> None:
        self.owner = owner
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.ready = threading.Event()
        self.error: Optional[BaseException] = None
        self.state: Any = None
        self.runner: Any = None
        self.server: Optional[asyncio.AbstractServer] = None
        self.placeholder: Optional[socket.socket] = None
        self.stop_future: Optional[asyncio.Future] = None
        self.abrupt = False
        #: Set once the run is ending; option changes no longer touch the listener.
        self.closing = False
        self.thread = threading.Thread(
            target=self._run, name=f"comfy-sim-{owner.options.name}-{owner.port}", daemon=True
        )

    # --- thread body --------------------------------------------------------------------------

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self.loop = loop
        try:
            try:
                loop.run_until_complete(self._setup())
            except BaseException as ex:
                self.error = ex
                loop.run_until_complete(self._teardown())
                return
            finally:
                self.ready.set()
            assert self.stop_future is not None
            loop.run_until_complete(self.stop_future)
            loop.run_until_complete(self._teardown())
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                loop.close()

    async def _setup(self) -> None:
        from aiohttp import web

        from .app import SimState, build_app

        owner = self.owner
        loop = asyncio.get_running_loop()
        self.stop_future = loop.create_future()
        shutil.rmtree(owner.temp_dir, ignore_errors=True)  # ComfyUI wipes temp at start
        for folder in (owner.input_dir, owner.output_dir, owner.temp_dir):
            folder.mkdir(parents=True, exist_ok=True)
        state = SimState(
            owner.options,
            Dirs(owner.input_dir, owner.output_dir, owner.temp_dir),
            get_options=lambda: owner.options,
            set_options=owner._store_options,
            on_prompt=owner._record_prompt,
            on_die=lambda: self.request_stop(abrupt=True, died=True),
            argv=["comfy-cluster", "sim", "--listen", owner.host, "--port", str(owner.port)],
        )
        self.state = state
        state.messages = asyncio.Queue()
        state.work_ready = asyncio.Event()
        app = build_app(state, self.apply_changes)
        self.runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self.runner.setup()
        await self._apply_listen()
        state.argv[-1] = str(owner.port)
        state.tasks = [
            loop.create_task(state.publisher(), name="sim-publisher"),
            loop.create_task(state.worker(), name="sim-worker"),
        ]

    async def _apply_listen(self) -> None:
        """Listen, or hold the port bound without listening (connections are refused)."""
        owner = self.owner
        refuse = owner.options.refuse_connections
        if refuse and self.placeholder is None:
            if self.server is not None:
                self.server.close()
                self.server = None
            self.placeholder = _bind(owner.host, owner.port, listen=False)
            owner._port = self.placeholder.getsockname()[1]
        elif not refuse and self.server is None:
            if self.placeholder is not None:
                self.placeholder.close()
                self.placeholder = None
            sock = _bind(owner.host, owner.port, listen=True)
            owner._port = sock.getsockname()[1]
            self.server = await asyncio.get_running_loop().create_server(
                self.runner.server, sock=sock, ssl=owner.ssl_context
            )

    async def apply_options(self) -> None:
        if self.closing:
            return
        await self._apply_listen()
        self.state.options_changed()

    def apply_changes(self, changes: dict[str, Any]) -> SimOptions:
        """From /sim/faults, on the loop thread."""
        new = self.owner._store_options(self.owner.options.replace(**changes))
        asyncio.get_running_loop().create_task(self.apply_options())
        return new

    def request_stop(self, *, abrupt: bool, died: bool = False) -> None:
        """On the loop thread: end the run; the thread tears down and exits."""
        self.abrupt = self.abrupt or abrupt
        self.closing = True
        if died:
            self.owner._died = True
            self._reset_all()  # a crash: connections drop now, before anything else is sent
        if self.stop_future is not None and not self.stop_future.done():
            self.stop_future.set_result(None)

    def _connections(self) -> list[Any]:
        server = getattr(self.runner, "server", None) if self.runner is not None else None
        return list(getattr(server, "connections", []) or [])

    def _reset_all(self) -> None:
        from .app import reset_transport

        if self.server is not None:
            self.server.close()
            self.server = None
        for conn in self._connections():
            reset_transport(getattr(conn, "transport", None))

    async def _teardown(self) -> None:
        from aiohttp import WSCloseCode

        state = self.state
        if state is not None:
            state.executor.stop_event.set()
            for task in state.tasks:
                task.cancel()
            for task in state.tasks:
                try:
                    await task
                except BaseException:
                    pass
        if self.placeholder is not None:
            self.placeholder.close()
            self.placeholder = None
        if self.abrupt:
            self._reset_all()
        else:
            if self.server is not None:
                self.server.close()
                self.server = None
            if state is not None:
                closing = [ws.close(code=WSCloseCode.GOING_AWAY) for ws in state.sockets.values()]
                if closing:
                    await asyncio.wait_for(asyncio.gather(*closing, return_exceptions=True), 2.0)
        if self.runner is not None:
            server = self.runner.server
            if server is not None:
                await server.shutdown(0.5)
            self._reset_all()
            await self.runner.cleanup()
        if state is not None:
            # The work thread may sit in Pillow; join it off the loop so nothing is left behind.
            await asyncio.get_running_loop().run_in_executor(None, state.executor.close)


class SimServer:
    """A simulated ComfyUI server on 127.0.0.1 (see module doc). A context manager."""

    def __init__(
        self,
        options: SimOptions = DEFAULT_OPTIONS,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        root: Optional[Path] = None,
        ssl_context: Optional[ssl.SSLContext] = None,
    ) -> None:
        if host not in ("127.0.0.1", "localhost"):
            raise ValueError("the sim only listens on 127.0.0.1")
        self._options = options
        self._lock = threading.Lock()
        #: Serve https/wss with this context (a certificate the tests make), plain http when None.
        self.ssl_context = ssl_context
        self.host = "127.0.0.1"
        self._port = port
        if root is None:
            root = Path(tempfile.mkdtemp(prefix=f"comfy-sim-{options.name}-"))
            self._cleanup = weakref.finalize(self, shutil.rmtree, str(root), True)
        self.root = Path(root).resolve()
        self.input_dir = self.root / "input"
        self.output_dir = self.root / "output"
        self.temp_dir = self.root / "temp"
        self._runtime: Optional[_Runtime] = None
        self._prompts_seen: list[str] = []
        self._died = False

    # --- properties ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context is not None else "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self._port}"

    @property
    def ws_url(self) -> str:
        ws = "wss" if self.ssl_context is not None else "ws"
        return f"{ws}://{self.host}:{self._port}/ws"

    @property
    def options(self) -> SimOptions:
        with self._lock:
            return self._options

    @property
    def prompts_seen(self) -> list[str]:
        """Ids of prompts this server accepted (200), across restarts, in order."""
        with self._lock:
            return list(self._prompts_seen)

    @property
    def running(self) -> bool:
        rt = self._runtime
        return rt is not None and rt.thread.is_alive()

    @property
    def died(self) -> bool:
        """True once the ``die_after_prompts`` fault has killed this server."""
        return self._died

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> SimServer:
        self._begin_start()
        return self._finish_start()

    def _begin_start(self) -> None:
        if self.running:
            raise RuntimeError(f"{self.options.name} is already running on {self.url}")
        self._died = False
        self._runtime = _Runtime(self)
        self._runtime.thread.start()

    def _finish_start(self) -> SimServer:
        rt = self._runtime
        assert rt is not None
        if not rt.ready.wait(START_TIMEOUT):
            raise RuntimeError(f"sim {self.options.name} did not start in {START_TIMEOUT} s")
        if rt.error is not None:
            rt.thread.join(STOP_TIMEOUT)
            self._runtime = None
            raise RuntimeError(f"sim {self.options.name} failed to start: {rt.error}") from rt.error
        return self

    def _end(self, abrupt: bool) -> None:
        rt = self._runtime
        if rt is None:
            return
        if rt.thread.is_alive() and rt.loop is not None:
            try:
                rt.loop.call_soon_threadsafe(lambda: rt.request_stop(abrupt=abrupt))
            except RuntimeError:  # loop already closed
                pass
        rt.thread.join(STOP_TIMEOUT)
        if rt.thread.is_alive():
            raise RuntimeError(f"sim {self.options.name} did not stop in {STOP_TIMEOUT} s")
        self._runtime = None

    def stop(self) -> None:
        """Graceful: close websockets (1001), finish responses, free the port, join the thread."""
        self._end(abrupt=False)

    def kill(self) -> None:
        """Abrupt: stop listening and reset every connection and websocket, no goodbye."""
        self._end(abrupt=True)

    def restart(self) -> SimServer:
        """Stop if needed, then start on the same port with a fresh queue, history and cache."""
        self.stop()
        return self.start()

    def set_faults(self, **changes: Any) -> SimOptions:
        """Replace option fields at run time (thread-safe); returns the new options."""
        changes = SimOptions.coerce_changes(changes)
        new = self._store_options(self.options.replace(**changes))
        rt = self._runtime
        if rt is not None and rt.thread.is_alive() and rt.loop is not None:
            if threading.current_thread() is rt.thread:
                rt.loop.create_task(rt.apply_options())
            elif not rt.closing:
                self._wait_applied(
                    rt, asyncio.run_coroutine_threadsafe(rt.apply_options(), rt.loop)
                )
        return new

    @staticmethod
    def _wait_applied(rt: _Runtime, fut: Any) -> None:
        """Wait for the loop to apply options, unless the run ends first (then it never will)."""
        deadline = time.monotonic() + STOP_TIMEOUT
        while True:
            try:
                fut.result(0.05)
                return
            except concurrent.futures.TimeoutError:
                if rt.closing or not rt.thread.is_alive():
                    fut.cancel()
                    return
                if time.monotonic() > deadline:
                    raise

    def queue_snapshot(self) -> tuple[list[str], list[str]]:
        """(running prompt ids, pending prompt ids in run order)."""
        rt = self._runtime
        if rt is None or rt.state is None:
            return [], []
        running, pending = rt.state.queue.snapshot()
        pending = sorted(pending, key=lambda item: (item[0], item[1]))
        return [item[1] for item in running], [item[1] for item in pending]

    # --- callbacks from the loop thread -------------------------------------------------------

    def _store_options(self, new: SimOptions) -> SimOptions:
        with self._lock:
            self._options = new
        return new

    def _record_prompt(self, prompt_id: str) -> None:
        with self._lock:
            self._prompts_seen.append(prompt_id)

    def __enter__(self) -> SimServer:
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<SimServer {self.options.name} {self.url} {state}>"


def start_sims(
    n: int, options: Union[SimOptions, Sequence[SimOptions]] = DEFAULT_OPTIONS
) -> list[SimServer]:
    """Start ``n`` servers in parallel (each on its own free port); all or none are running."""
    if isinstance(options, SimOptions):
        opts = [options.replace(name=f"{options.name}{i}") for i in range(n)]
    else:
        opts = list(options)
        if len(opts) != n:
            raise ValueError(f"got {len(opts)} options for {n} servers")
    servers = [SimServer(o) for o in opts]
    try:
        for server in servers:
            server._begin_start()
        for server in servers:
            server._finish_start()
    except BaseException:
        stop_all(servers)
        raise
    return servers


def stop_all(servers: Sequence[SimServer]) -> None:
    """Stop several servers at once (their shutdowns overlap)."""
    for server in servers:
        rt = server._runtime
        if rt is not None and rt.loop is not None and rt.thread.is_alive():
            try:
                rt.loop.call_soon_threadsafe(lambda rt=rt: rt.request_stop(abrupt=False))
            except RuntimeError:
                pass
    for server in servers:
        server.stop()


class BlackHole:
    """A 127.0.0.1 listener that accepts (the kernel completes the handshake) and never answers.

    No thread: connections wait in the backlog forever; ``close()`` resets them.
    """

    def __init__(self) -> None:
        self._sock = _bind("127.0.0.1", 0, listen=True)
        self.port: int = self._sock.getsockname()[1]
        self.host = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> BlackHole:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def make_test_image(
    path: Union[str, Path],
    size: tuple[int, int] = (8, 8),
    color: tuple[int, int, int] = (200, 100, 50),
) -> Path:
    """Write a solid RGB PNG (for uploads and LoadImage tests) and return its path."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1 (for subprocess servers)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


__all__ = [
    "BlackHole",
    "SimOptions",
    "SimServer",
    "free_port",
    "make_test_image",
    "start_sims",
    "stop_all",
]
