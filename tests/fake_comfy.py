"""An in-process fake ComfyUI server and a client with ComfyClient's interface (no HTTP).

``FakeServer`` keeps a queue, one worker thread, history, input and output files in memory, and
runs a tiny graph evaluator good enough for our test workflows: ``LoadImage`` returns the uploaded
bytes, ``ImageBatch`` concatenates, ``ImageInvert`` inverts every byte, ``EmptyImage`` makes
``b"color:<n>"``, other nodes pass their first image input through, ``SaveImage`` stores files.

Faults follow a per-server *plan*: the n-th ``submit`` takes the n-th action (``"ok"`` once the
plan is used up). Actions::

    ok          run normally
    lost        submit raises ServerUnreachable; nothing queued
    ambiguous   the prompt is queued, but submit raises ServerTimeout
    http500     submit raises UnexpectedStatus(500); nothing queued
    reject      submit raises WorkflowRejected (a node class missing on this server)
    exec_error  the prompt fails with execution_error (exception type unique to this server)
    hang        the worker takes it and is silent until interrupted
    vanish      the prompt silently disappears (as after a restart): no events, no history
    drop_ws     events of this prompt are lost (websocket drop); history is written normally
    die         the server dies when taking it: every later call raises ServerUnreachable
    slow        runs 20 times longer
    bad_download the result's download fails once with ServerUnreachable

Not in ``ACTIONS`` (the property test's pool), because they are aimed at one behaviour::

    http500_landed  the prompt is queued, but submit raises UnexpectedStatus(500) (a proxy
                    error after ComfyUI took it)
    lost_output     the result's download always answers 404 (the file is gone)

Not in ``ACTIONS`` (the property test's pool), because nothing can clean up after it::

    wedge       the worker takes it and never ends, ignoring interrupts, until the server closes

``FakeClient(server)`` is what ``client_factory`` returns. Time: ``seconds`` per prompt of real
time (tiny), with ``clock``/``sleep`` injectable. ``hold()`` keeps queued prompts waiting until
``release()``.

``SlotRig`` (at the end) runs the engine's worker slots (``core/engine/worker.py``) on fake
servers without the job's controller: a real plan and book, slots on threads the test starts.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Callable, Optional

from comfy_cluster.core import protocol
from comfy_cluster.core.balance import SpeedTracker
from comfy_cluster.core.engine.book import JobBook
from comfy_cluster.core.engine.events import EventSink, FrameWritten, JobEvent
from comfy_cluster.core.engine.inputs import InputHook, InputWaiter
from comfy_cluster.core.engine.job import RenderJob
from comfy_cluster.core.engine.plan import plan_job
from comfy_cluster.core.engine.settings import EngineSettings
from comfy_cluster.core.engine.sweep import sweep_prompts
from comfy_cluster.core.engine.tools import EngineTools, ServerCall
from comfy_cluster.core.engine.worker import Worker
from comfy_cluster.core.errors import (
    NodeError,
    ServerTimeout,
    ServerUnreachable,
    UnexpectedStatus,
    WorkflowRejected,
)
from comfy_cluster.core.protocol import QueueState
from comfy_cluster.core.retry import RetryPolicy, retry_transient
from comfy_cluster.core.server import ServerConfig
from comfy_cluster.core.transfer import Transfer, make_transfer

ACTIONS = (
    "ok",
    "lost",
    "ambiguous",
    "http500",
    "reject",
    "exec_error",
    "hang",
    "vanish",
    "drop_ws",
    "die",
    "slow",
    "bad_download",
)

_ports = itertools.count(20000)


def invert(data: bytes) -> bytes:
    return bytes(255 - b for b in data)


class _Item:
    __slots__ = ("action", "client_id", "interrupted", "prompt", "prompt_id")

    def __init__(self, prompt_id: str, prompt: dict, client_id: str, action: str) -> None:
        self.prompt_id = prompt_id
        self.prompt = prompt
        self.client_id = client_id
        self.action = action
        self.interrupted = False


class FakeServer:
    """One fake ComfyUI. Thread-safe; its worker is a daemon thread. ``close()`` stops it."""

    def __init__(
        self,
        name: str,
        *,
        seconds: float = 0.002,
        plan: Iterable[str] = (),
        steps: int = 2,
        max_in_flight: int = 1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        priority: int = 1,
        error_type: Optional[str] = None,
        reject_type: str = "invalid_prompt",
    ) -> None:
        self.name = name
        #: exception_type of ``exec_error`` (unique per server unless given).
        self.error_type = error_type or f"FakeError{name}"
        #: error.type of ``reject``: invalid_prompt (missing node) or e.g. prompt_no_outputs.
        self.reject_type = reject_type
        #: Most of our prompts ever queued or running here at once.
        self.max_depth = 0
        self.seconds = seconds
        self.plan = list(plan)
        self.steps = steps
        self.clock = clock
        self.sleep = sleep
        self.config = ServerConfig(
            name=name,
            host="127.0.0.1",
            port=next(_ports),
            max_in_flight=max_in_flight,
            priority=priority,
        )
        self._cond = threading.Condition()
        self.pending: list[_Item] = []
        self.running: Optional[_Item] = None
        self.history: dict[str, dict] = {}
        self.files: dict[tuple[str, str, str], bytes] = {}
        self.inputs: dict[str, bytes] = {}
        self.listeners: dict[str, list[Callable[[Any], None]]] = {}
        self.dead = False
        self.closed = False
        self.submits = 0
        #: Prompt ids of every POST /prompt, taken or not; ``received``: those queued.
        self.posted: list[str] = []
        self.received: list[str] = []
        self.uploads = 0
        self.bad_downloads: set[tuple[str, str, str]] = set()
        self.lost_outputs: set[tuple[str, str, str]] = set()
        #: When set to an Event, a prompt pauses after its first progress step until the event
        #: is set (at most 5 s): the test sees the prompt mid-run.
        self.gate: Optional[threading.Event] = None
        #: Every /queue and /history request, in order (("queue", None), ("history", pid)).
        self.requests: list[tuple[str, Optional[str]]] = []
        self.held = False
        self._counter = itertools.count(1)
        self._thread = threading.Thread(target=self._work, name=f"fake-{name}", daemon=True)
        self._thread.start()

    # -- control ---------------------------------------------------------------------------

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()
        self._thread.join(2.0)

    def hold(self) -> None:
        """Leave queued prompts waiting (as behind a long prompt of another client)."""
        with self._cond:
            self.held = True

    def release(self) -> None:
        with self._cond:
            self.held = False
            self._cond.notify_all()

    def kill(self) -> None:
        """Die now: queue lost, every call fails, listeners see a disconnect."""
        with self._cond:
            self._die_locked()

    def revive(self) -> None:
        """Come back after :meth:`kill` (a restart: empty queue, history kept)."""
        with self._cond:
            self.dead = False
            self._cond.notify_all()

    def _die_locked(self) -> None:
        self.dead = True
        self.pending.clear()
        if self.running is not None:
            self.running.interrupted = True
        self._cond.notify_all()
        for callbacks in self.listeners.values():
            for cb in callbacks:
                cb(protocol.Disconnected(reason="server died"))

    def our_prompts_left(self) -> list[str]:
        """Prompt ids still pending or running."""
        with self._cond:
            ids = [i.prompt_id for i in self.pending]
            if self.running is not None:
                ids.append(self.running.prompt_id)
            return ids

    # -- API used by FakeClient (all raise ServerUnreachable when dead) ---------------------

    def _alive(self) -> None:
        if self.dead or self.closed:
            raise ServerUnreachable("connection refused", server=self.name)

    def submit(self, prompt: dict, prompt_id: str, client_id: str) -> str:
        with self._cond:
            self._alive()
            action = self.plan[self.submits] if self.submits < len(self.plan) else "ok"
            self.submits += 1
            self.posted.append(prompt_id)
            if action == "lost":
                raise ServerUnreachable("connection reset", server=self.name)
            if action == "http500":
                raise UnexpectedStatus("POST /prompt: HTTP 500", server=self.name, status=500)
            if action == "reject":
                message = (
                    "Cannot execute because node FancyNode does not exist."
                    if self.reject_type == "invalid_prompt"
                    else "Prompt has no outputs"
                )
                raise WorkflowRejected(
                    message,
                    server=self.name,
                    error_type=self.reject_type,
                    node_errors=(NodeError("2", "FancyNode", self.reject_type, message),),
                    prompt_id=prompt_id,
                )
            self.received.append(prompt_id)
            self.pending.append(_Item(prompt_id, prompt, client_id, action))
            depth = len(self.pending) + (1 if self.running is not None else 0)
            self.max_depth = max(self.max_depth, depth)
            self._cond.notify_all()
            if action == "ambiguous":
                raise ServerTimeout("read timed out", server=self.name)
            if action == "http500_landed":
                raise UnexpectedStatus("POST /prompt: HTTP 500", server=self.name, status=500)
            return prompt_id

    def get_history(self, prompt_id: str) -> Optional[dict]:
        with self._cond:
            self.requests.append(("history", prompt_id))
            self._alive()
            return self.history.get(prompt_id)

    def get_queue(self) -> QueueState:
        with self._cond:
            self.requests.append(("queue", None))
            self._alive()
            running = (self.running.prompt_id,) if self.running is not None else ()
            return QueueState(running=running, pending=tuple(i.prompt_id for i in self.pending))

    def interrupt(self, prompt_id: str) -> bool:
        with self._cond:
            self._alive()
            if self.running is not None and self.running.prompt_id == prompt_id:
                self.running.interrupted = True
                self._cond.notify_all()
                return True
            return False

    def delete(self, prompt_ids: Iterable[str]) -> None:
        ids = set(prompt_ids)
        with self._cond:
            self._alive()
            self.pending = [i for i in self.pending if i.prompt_id not in ids]

    def upload(self, name: str, data: bytes) -> str:
        with self._cond:
            self._alive()
            self.uploads += 1
            stored = name
            n = 0
            while stored in self.inputs and self.inputs[stored] != data:
                n += 1
                stem, ext = os.path.splitext(name)
                stored = f"{stem} ({n}){ext}"
            self.inputs[stored] = data
            return stored

    def read_file(self, ref: Any) -> bytes:
        key = (ref.type, ref.subfolder, ref.filename)
        with self._cond:
            self._alive()
            if key in self.bad_downloads:
                self.bad_downloads.discard(key)
                raise ServerUnreachable("connection reset during download", server=self.name)
            if key not in self.files or key in self.lost_outputs:
                raise UnexpectedStatus("GET /view: HTTP 404", server=self.name, status=404)
            return self.files[key]

    def add_listener(self, client_id: str, callback: Callable[[Any], None]) -> None:
        with self._cond:
            self.listeners.setdefault(client_id, []).append(callback)

    def remove_listener(self, client_id: str, callback: Callable[[Any], None]) -> None:
        with self._cond:
            callbacks = self.listeners.get(client_id, [])
            if callback in callbacks:
                callbacks.remove(callback)

    # -- the worker ----------------------------------------------------------------------------

    def _emit(self, item: _Item, event: Any) -> None:
        if item.action == "drop_ws":
            return
        with self._cond:
            callbacks = list(self.listeners.get(item.client_id, ()))
        for cb in callbacks:
            cb(event)

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self.closed and (self.dead or self.held or not self.pending):
                    self._cond.wait(0.05)
                if self.closed:
                    return
                item = self.pending.pop(0)
                if item.action == "die":
                    self._die_locked()
                    continue
                if item.action == "vanish":
                    continue
                self.running = item
            try:
                self._execute(item)
            finally:
                with self._cond:
                    self.running = None
                    self._cond.notify_all()

    def _wait_interrupt(self, item: _Item, seconds: float) -> bool:
        deadline = self.clock() + seconds
        with self._cond:
            while not item.interrupted and not self.closed:
                left = deadline - self.clock()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def _finish(self, item: _Item, entry: dict) -> None:
        with self._cond:
            if self.dead:
                return
            self.history[item.prompt_id] = entry
        self._emit(item, protocol.Executing(prompt_id=item.prompt_id, node=None))
        if item.action == "drop_ws":
            with self._cond:
                callbacks = list(self.listeners.get(item.client_id, ()))
            for cb in callbacks:
                cb(protocol.Disconnected(reason="dropped"))
                cb(protocol.Connected(client_id=item.client_id, attempt=2))

    def _execute(self, item: _Item) -> None:
        pid = item.prompt_id
        self._emit(item, protocol.ExecutionStart(prompt_id=pid))
        if item.action == "hang":
            while not self._wait_interrupt(item, 3600.0):
                pass
        if item.action == "wedge":
            with self._cond:
                while not self.closed:
                    self._cond.wait(0.05)
            return
        seconds = self.seconds * (20 if item.action == "slow" else 1)
        nodes = list(item.prompt)
        for index, node in enumerate(nodes):
            if item.interrupted:
                break
            self._emit(item, protocol.Executing(prompt_id=pid, node=node))
            if index == len(nodes) // 2:
                for step in range(1, self.steps + 1):
                    if self._wait_interrupt(item, seconds / self.steps):
                        break
                    self._emit(
                        item,
                        protocol.ProgressEvent(
                            prompt_id=pid, node=node, value=step, max=self.steps
                        ),
                    )
                    gate = self.gate
                    if gate is not None and step == 1:
                        gate.wait(5.0)
        if item.interrupted:
            if self.dead:
                return
            self._emit(item, protocol.ExecutionInterrupted(prompt_id=pid, node_id=nodes[-1]))
            self._finish(item, _entry(item, {}, "interrupted"))
            return
        if item.action == "exec_error":
            node = nodes[-1]
            event = protocol.ExecutionErrorEvent(
                prompt_id=pid,
                node_id=node,
                node_type=item.prompt[node]["class_type"],
                exception_type=self.error_type,
                exception_message="out of fake memory",
            )
            self._emit(item, event)
            self._finish(item, _entry(item, {}, "error", event))
            return
        try:
            outputs = self._evaluate(item.prompt)
        except KeyError as exc:
            event = protocol.ExecutionErrorEvent(
                prompt_id=pid,
                node_id=None,
                node_type="",
                exception_type="KeyError",
                exception_message=str(exc),
            )
            self._emit(item, event)
            self._finish(item, _entry(item, {}, "error", event))
            return
        if item.action in ("bad_download", "lost_output"):
            broken = self.bad_downloads if item.action == "bad_download" else self.lost_outputs
            with self._cond:
                for ui in outputs.values():
                    for ref in ui["images"]:
                        broken.add(("output", ref["subfolder"], ref["filename"]))
        for node, ui in outputs.items():
            self._emit(item, protocol.Executed(prompt_id=pid, node=node, output=ui))
        self._emit(item, protocol.ExecutionSuccess(prompt_id=pid))
        self._finish(item, _entry(item, outputs, "success"))

    def _evaluate(self, prompt: dict) -> dict[str, dict]:
        memo: dict[str, list[bytes]] = {}

        def ev(node_id: str) -> list[bytes]:
            if node_id in memo:
                return memo[node_id]
            node = prompt[node_id]
            cls, inputs = node["class_type"], node["inputs"]
            if cls == "LoadImage":
                with self._cond:
                    out = [self.inputs[inputs["image"]]]
            elif cls == "ImageBatch":
                out = ev(str(inputs["image1"][0])) + ev(str(inputs["image2"][0]))
            elif cls == "EmptyImage":
                out = [f"color:{inputs.get('color', 0)}".encode()] * int(
                    inputs.get("batch_size", 1)
                )
            else:
                links = [v for v in inputs.values() if isinstance(v, list)]
                out = ev(str(links[0][0])) if links else []
                if cls == "ImageInvert":
                    out = [invert(x) for x in out]
            memo[node_id] = out
            return out

        outputs: dict[str, dict] = {}
        for node_id, node in prompt.items():
            if node["class_type"] != "SaveImage":
                continue
            images = ev(str(node["inputs"]["images"][0]))
            prefix = str(node["inputs"].get("filename_prefix", "ComfyUI"))
            subfolder, _, stem = prefix.rpartition("/")
            refs = []
            for data in images:
                filename = f"{stem}_{next(self._counter):05d}_.png"
                key = ("output", subfolder, filename)
                with self._cond:
                    self.files[key] = data
                refs.append({"filename": filename, "subfolder": subfolder, "type": "output"})
            outputs[node_id] = {"images": refs}
        return outputs


def _entry(item: _Item, outputs: dict, outcome: str, error: Any = None) -> dict:
    messages: list = [["execution_start", {"prompt_id": item.prompt_id}]]
    if outcome == "success":
        messages.append(["execution_success", {"prompt_id": item.prompt_id}])
    elif outcome == "interrupted":
        messages.append(["execution_interrupted", {"prompt_id": item.prompt_id, "node_id": None}])
    else:
        messages.append(
            [
                "execution_error",
                {
                    "prompt_id": item.prompt_id,
                    "node_id": error.node_id,
                    "node_type": error.node_type,
                    "exception_type": error.exception_type,
                    "exception_message": error.exception_message,
                },
            ]
        )
    return {
        "prompt": [0, item.prompt_id, item.prompt, {"client_id": item.client_id}, []],
        "outputs": outputs,
        "status": {
            "status_str": "success" if outcome == "success" else "error",
            "completed": outcome == "success",
            "messages": messages,
        },
    }


class FakeListener:
    """Stands in for EventListener: registered on the server until closed."""

    def __init__(self, server: FakeServer, client_id: str, on_event: Callable[[Any], None]):
        self.server = server
        self.client_id = client_id
        self.on_event = on_event
        #: Timeouts ``wait_connected`` was called with.
        self.waited: list[float] = []
        self.closed = False
        server.add_listener(client_id, on_event)
        on_event(protocol.Connected(client_id=client_id, attempt=1))

    @property
    def connected(self) -> bool:
        return not self.server.dead

    def wait_connected(self, timeout: float) -> bool:
        self.waited.append(timeout)
        return not self.server.dead

    def close(self, timeout: float = 1.0) -> None:
        self.closed = True
        self.server.remove_listener(self.client_id, self.on_event)


class FakeClient:
    """ComfyClient's interface over a FakeServer (one per worker thread, like the real one)."""

    #: Like ComfyClient, download() writes a temporary file and renames it onto ``dest``.
    downloads_atomically = True

    def __init__(self, server: FakeServer, *, client_id: Optional[str] = None) -> None:
        self.fake = server
        self.server = server.config
        self.client_id = client_id or uuid.uuid4().hex
        self._listeners: list[FakeListener] = []
        #: The ``stop`` events given to :meth:`listen` (the worker sets its own when it ends).
        self.listen_stops: list[Any] = []
        self.closed = False

    @property
    def name(self) -> str:
        return self.fake.name

    def submit(self, workflow: dict, *, prompt_id: Optional[str] = None) -> str:
        return self.fake.submit(dict(workflow), prompt_id or str(uuid.uuid4()), self.client_id)

    def history(self, prompt_id: str) -> Optional[dict]:
        return self.fake.get_history(prompt_id)

    def queue(self) -> QueueState:
        return self.fake.get_queue()

    def interrupt(self, prompt_id: str) -> bool:
        return self.fake.interrupt(prompt_id)

    def delete_queued(self, prompt_ids: Iterable[str]) -> None:
        self.fake.delete(prompt_ids)

    def cancel(self, prompt_id: str) -> None:
        state = self.queue()
        if prompt_id in state.pending:
            self.delete_queued([prompt_id])
        self.interrupt(prompt_id)

    def upload_image(self, path: Any, *, subfolder: str = "") -> str:
        path = Path(path)
        return self.fake.upload(path.name, path.read_bytes())

    def download(self, image_ref: Any, dest: Any) -> Path:
        if isinstance(image_ref, dict):
            image_ref = protocol.ImageRef(
                filename=image_ref["filename"],
                subfolder=image_ref.get("subfolder", ""),
                type=image_ref.get("type", "output"),
            )
        data = self.fake.read_file(image_ref)
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:6]}.dl")
        tmp.write_bytes(data)
        os.replace(tmp, dest)
        return dest

    def listen(
        self, on_event: Callable[[Any], None], stop: Any = None, **options: Any
    ) -> FakeListener:
        listener = FakeListener(self.fake, self.client_id, on_event)
        self._listeners.append(listener)
        self.listen_stops.append(stop)
        return listener

    def object_info(self) -> dict:
        return {}

    def close(self) -> None:
        self.closed = True
        for listener in self._listeners:
            listener.close()


class FakeCluster:
    """Several FakeServers and the ``client_factory`` for them. ``close()`` stops them all."""

    def __init__(self, servers: Iterable[FakeServer]) -> None:
        self.servers = {s.name: s for s in servers}
        #: Every client made, in order.
        self.clients: list[FakeClient] = []

    @property
    def configs(self) -> list[ServerConfig]:
        return [s.config for s in self.servers.values()]

    def client_factory(self, config: ServerConfig) -> FakeClient:
        client = FakeClient(self.servers[config.name])
        self.clients.append(client)
        return client

    def close(self) -> None:
        for s in self.servers.values():
            s.close()

    def __enter__(self) -> FakeCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


# -- worker slots without the job's controller ---------------------------------------------------


def _first_free(chunk: Any, free: Any, in_flight: Any, remaining: int, able: Any = ()) -> Any:
    """A chooser: the first free server in configuration order."""
    return free[0], "first free"


class SlotRig:
    """One job on fake servers, planned and booked as its controller would (a real plan and
    ``JobBook``), with worker slots the test makes (:meth:`slot`) and runs (:meth:`run`).

    ``events`` holds the job's events (``on_event`` is called too); ``sleeps`` the retry
    policy's backoff sleeps (never slept). Settings default to fast values; any
    ``EngineSettings`` field may be given.
    """

    def __init__(
        self,
        cluster: FakeCluster,
        job: RenderJob,
        *,
        wait_for_input: Optional[InputHook] = None,
        speed: Any = None,
        retry: Optional[RetryPolicy] = None,
        transfer: Optional[Transfer] = None,
        client_factory: Optional[Callable[[ServerConfig], Any]] = None,
        on_event: Optional[Callable[[JobEvent], None]] = None,
        chooser: Callable[..., Any] = _first_free,
        **settings: Any,
    ) -> None:
        values: dict[str, Any] = dict(
            stall_timeout=0.2,
            poll_interval=0.005,
            history_interval=0.2,
            probe_interval=0.01,
            input_poll=0.01,
            join_timeout=5.0,
        )
        values.update(settings)
        self.settings = EngineSettings(**values)
        self.cluster = cluster
        self.job = job
        self.speed = SpeedTracker() if speed is None else speed
        self.sleeps: list[float] = []
        policy = retry or retry_transient(attempts=3, max_seconds=5.0, sleep=self.sleeps.append)
        self.events: list[JobEvent] = []
        self._on_event = on_event
        self.wait_for_input = wait_for_input
        self.plan = plan_job(
            job,
            cluster.configs,
            speed=self.speed,
            settings=self.settings,
            inputs_arrive_later=wait_for_input is not None,
        )
        self.book = JobBook(
            job,
            self.plan.chunks,
            [srv.name for srv in self.plan.servers],
            frames_to_render=self.plan.to_render,
            skipped=self.plan.skipped,
            chooser=chooser,
            sink=EventSink(self._event),
            clock=time.monotonic,
            settings=self.settings,
        )
        self.tools = EngineTools(
            client_factory=client_factory or cluster.client_factory,
            clock=time.monotonic,
            call=ServerCall(policy),
            speed=self.speed,
            transfer_factory=make_transfer,
        )
        self.transfer = transfer or make_transfer(job.shared_storage)
        self.workers: list[Worker] = []

    def _event(self, event: JobEvent) -> None:
        self.events.append(event)
        if self._on_event is not None:
            self._on_event(event)

    def of(self, cls: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, cls)]

    def slot(self, server: str, n: int = 0) -> Worker:
        """A worker slot on ``server`` (not started)."""
        config = next(srv for srv in self.plan.servers if srv.name == server)
        name = f"comfy-cluster-{server}-{n}"
        self.book.add_slot(name, server)
        inputs = None
        if self.wait_for_input is not None:
            inputs = InputWaiter(
                self.wait_for_input,
                clock=time.monotonic,
                cancel=self.job.cancel_token,
                timeout=self.settings.input_timeout,
                poll=self.settings.input_poll,
            )
        worker = Worker(
            self.job,
            self.plan,
            self.book,
            config,
            name,
            settings=self.settings,
            tools=self.tools,
            transfer=self.transfer,
            inputs=inputs,
        )
        self.workers.append(worker)
        return worker

    def start(self, *workers: Worker) -> list[threading.Thread]:
        """Start ``workers`` (default: one new slot per server) on threads of their own."""
        if not workers:
            workers = tuple(self.slot(name) for name in self.cluster.servers)
        threads = [threading.Thread(target=w.main, name=w.slot, daemon=True) for w in workers]
        for thread in threads:
            thread.start()
        return threads

    def join(self, threads: list[threading.Thread], timeout: float = 10.0) -> None:
        """Wait until ``threads`` end (the job is over), turning a cancel into the job's end as
        the controller does. Fails the test after ``timeout`` seconds (ending the job so the
        threads stop)."""
        deadline = time.monotonic() + timeout
        while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
            if self.job.cancel_token.is_set():
                self.book.cancel()
            time.sleep(0.002)
        hung = [t.name for t in threads if t.is_alive()]
        if hung:
            self.job.cancel_token.set()
            self.book.cancel()
            raise AssertionError(f"worker slots still running after {timeout} s: {hung}")

    def run(self, *workers: Worker, timeout: float = 10.0, sweep: bool = False) -> None:
        """:meth:`start` then :meth:`join`; with ``sweep``, clean up as the controller does."""
        self.join(self.start(*workers), timeout)
        if sweep:
            sweep_prompts(self.book, self.plan.servers, self.tools.client_factory)

    def written(self) -> list[int]:
        """Frames the book recorded as written, in order of writing."""
        return [e.frame for e in self.of(FrameWritten)]
