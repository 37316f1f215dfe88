"""The prompt queue and the executor: one prompt at a time, events as ComfyUI 0.3.64 sends them.

Ports the parts of ``execution.py`` / ``comfy_execution/graph.py`` / ``main.prompt_worker`` that
decide what a client sees: queue order (a heap on number, prompt_id), the classic signature cache
(an identical resubmission runs nothing and repeats the old outputs), the staging order of ready
nodes, ``progress_state`` snapshots, and the history entry written before ``executing{node:null}``.

Threads: everything here runs on the server's event loop thread, except node bodies, which run on
the server's single work thread (like ComfyUI's worker thread) and talk back through ``loop``.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, Optional

from .nodes import Interrupted, NodeContext, NodeDef, NodeFailure, random_letters

if TYPE_CHECKING:
    from .app import SimState

#: extra_data keys ComfyUI removes before the item goes into history.
SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")
MAXIMUM_HISTORY_SIZE = 10000


class ServerStopping(Exception):
    """The server is stopping; abandon the prompt without any event."""


def now_ms() -> int:
    return int(time.time() * 1000)


class PromptQueue:
    """Pending heap, running items and history. Thread-safe: the harness reads it from tests."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.heap: list[tuple[Any, str, int, list]] = []
        self.running: dict[int, list] = {}
        self.history: dict[str, dict] = {}
        self._seq = 0

    def put(self, item: list) -> None:
        with self.lock:
            self._seq += 1
            heapq.heappush(self.heap, (item[0], item[1], self._seq, item))

    def get(self) -> Optional[tuple[int, list]]:
        with self.lock:
            if not self.heap:
                return None
            _, _, seq, item = heapq.heappop(self.heap)
            self.running[seq] = item
            return seq, item

    def task_done(self, item_id: int, history_result: dict, status: dict) -> None:
        with self.lock:
            item = self.running.pop(item_id)
            if len(self.history) > MAXIMUM_HISTORY_SIZE:
                self.history.pop(next(iter(self.history)))
            extra = {k: v for k, v in item[3].items() if k not in SENSITIVE_EXTRA_DATA_KEYS}
            prompt = [item[0], item[1], item[2], extra, item[4]]
            entry = {"prompt": prompt, "outputs": {}, "status": status}
            entry.update(history_result)
            self.history[item[1]] = entry

    def remaining(self) -> int:
        with self.lock:
            return len(self.heap) + len(self.running)

    def snapshot(self) -> tuple[list[list], list[list]]:
        """(running items, pending items in heap-array order), like GET /queue."""
        with self.lock:
            return list(self.running.values()), [entry[3] for entry in self.heap]

    def delete(self, prompt_id: str) -> bool:
        with self.lock:
            for i, entry in enumerate(self.heap):
                if entry[1] == prompt_id:
                    self.heap.pop(i)
                    heapq.heapify(self.heap)
                    return True
            return False

    def wipe(self) -> None:
        with self.lock:
            self.heap = []

    def get_history(
        self, prompt_id: Optional[str] = None, max_items: Optional[int] = None, offset: int = -1
    ) -> dict:
        with self.lock:
            if prompt_id is not None:
                entry = self.history.get(prompt_id)
                return {prompt_id: json.loads(json.dumps(entry))} if entry is not None else {}
            out = {}
            if offset < 0 and max_items is not None:
                offset = len(self.history) - max_items
            for i, key in enumerate(self.history):
                if i >= offset:
                    out[key] = self.history[key]
                    if max_items is not None and len(out) >= max_items:
                        break
            return json.loads(json.dumps(out))

    def delete_history(self, prompt_id: str) -> None:
        with self.lock:
            self.history.pop(prompt_id, None)

    def wipe_history(self) -> None:
        with self.lock:
            self.history.clear()


def _links(inputs: dict[str, Any]) -> list[tuple[str, str, int]]:
    return [
        (name, value[0], value[1])
        for name, value in inputs.items()
        if isinstance(value, list) and len(value) == 2
    ]


class ExecutionList:
    """comfy_execution.graph.ExecutionList: pending nodes, block counts, UX-friendly staging."""

    def __init__(self, prompt: dict[str, Any], classes: dict[str, NodeDef], is_cached) -> None:
        self.prompt = prompt
        self.classes = classes
        self.is_cached = is_cached
        self.pending: dict[str, bool] = {}
        self.block_count: dict[str, int] = {}
        self.blocking: dict[str, dict[str, dict[int, bool]]] = {}
        self.staged: Optional[str] = None

    def add_node(self, node_id: str) -> None:
        stack = [node_id]
        links: list[tuple[str, int, str]] = []
        while stack:
            uid = stack.pop()
            if uid in self.pending:
                continue
            self.pending[uid] = True
            self.block_count[uid] = 0
            self.blocking[uid] = {}
            for _, src, slot in _links(self.prompt[uid]["inputs"]):
                if not self.is_cached(src):
                    stack.append(src)
                links.append((src, slot, uid))
        for src, slot, dst in links:
            if not self.is_cached(src):
                self.add_node(src)
                if dst not in self.blocking[src]:
                    self.blocking[src][dst] = {}
                    self.block_count[dst] += 1
                self.blocking[src][dst][slot] = True

    def _is_output(self, node_id: str) -> bool:
        return self.classes[self.prompt[node_id]["class_type"]].output_node

    def stage(self) -> str:
        ready = [n for n in self.pending if self.block_count[n] == 0]
        if not ready:
            raise RuntimeError("graph.DependencyCycleError")
        pick = None
        for n in ready:
            if self._is_output(n):
                pick = n
                break
        if pick is None:
            for n in ready:
                if any(self._is_output(b) for b in self.blocking[n]):
                    pick = n
                    break
        if pick is None:
            for n in ready:
                if any(self._is_output(b2) for b in self.blocking[n] for b2 in self.blocking[b]):
                    pick = n
                    break
        self.staged = pick if pick is not None else ready[0]
        return self.staged

    def complete(self) -> None:
        node_id = self.staged
        assert node_id is not None
        del self.pending[node_id]
        for blocked in self.blocking[node_id]:
            self.block_count[blocked] -= 1
        del self.blocking[node_id]
        self.staged = None

    def empty(self) -> bool:
        return not self.pending


class Executor:
    """Runs one prompt; owned by ``SimState``. Node bodies run on ``pool`` (one thread)."""

    def __init__(self, state: SimState) -> None:
        self.state = state
        #: signature -> {"outputs": tuple, "ui": dict | None, "meta": dict | None}
        self.cache: dict[str, dict[str, Any]] = {}
        self.pool: Optional[ThreadPoolExecutor] = None
        self.stop_event = threading.Event()
        self.progress_nodes: dict[str, dict] = {}
        self.prompt_id: Optional[str] = None

    # --- helpers on the loop thread -----------------------------------------------------------

    def _signatures(self, prompt: dict[str, Any], ctx_factory) -> dict[str, str]:
        sigs: dict[str, str] = {}
        fail = self.state.options.fail_node

        def sig(node_id: str, seen: tuple[str, ...] = ()) -> str:
            if node_id in sigs:
                return sigs[node_id]
            if node_id in seen:
                raise RuntimeError("graph.DependencyCycleError")
            node = prompt[node_id]
            node_def = self.state.classes[node["class_type"]]
            parts: list[Any] = [node["class_type"]]
            if node_def.always_run or fail in (node_id, node["class_type"]):
                parts.append(("always", time.time(), id(parts)))
            if node_def.is_changed is not None:
                parts.append(("changed", node_def.is_changed(ctx_factory(node_id), node["inputs"])))
            if "unique_id" in node_def.info.get("input", {}).get("hidden", {}):
                parts.append(("id", node_id))
            for name in sorted(node["inputs"]):
                value = node["inputs"][name]
                if isinstance(value, list) and len(value) == 2:
                    parts.append((name, "link", sig(value[0], (*seen, node_id)), value[1]))
                else:
                    parts.append((name, json.dumps(value, sort_keys=True, default=repr)))
            sigs[node_id] = json.dumps(parts, default=repr)
            return sigs[node_id]

        for node_id in prompt:
            sig(node_id)
        return sigs

    def _progress_state(self, client_id: Optional[str]) -> None:
        self.state.send(
            "progress_state",
            {"prompt_id": self.prompt_id, "nodes": json.loads(json.dumps(self.progress_nodes))},
            client_id,
            prompt_id=self.prompt_id,
        )

    def _node_state(self, node_id: str, value: Any, maximum: Any, state: str) -> None:
        self.progress_nodes[node_id] = {
            "value": value,
            "max": maximum,
            "state": state,
            "node_id": node_id,
            "prompt_id": self.prompt_id,
            "display_node_id": node_id,
            "parent_node_id": None,
            "real_node_id": node_id,
        }

    def _finish(self, node_id: str, client_id: Optional[str]) -> None:
        entry = self.progress_nodes.get(node_id)
        if entry is None:
            self._node_state(node_id, 0, 1, "running")
            entry = self.progress_nodes[node_id]
        entry["state"] = "finished"
        entry["value"] = entry["max"]
        self._progress_state(client_id)

    def on_progress(
        self, node_id: str, value: int, maximum: int, preview: Optional[bytes], client_id
    ) -> None:
        """ProgressBar hook, on the loop thread: progress_state (+type 4), progress (+type 1)."""
        state = self.state
        self._node_state(node_id, value, maximum, "running")
        self._progress_state(client_id)
        meta_ok = state.supports_preview_metadata(client_id)
        if preview is not None and meta_ok:
            meta = json.dumps(
                {
                    "node_id": node_id,
                    "prompt_id": self.prompt_id,
                    "display_node_id": node_id,
                    "parent_node_id": None,
                    "real_node_id": node_id,
                    "image_type": "image/png",
                }
            ).encode()
            frame = (4).to_bytes(4, "big") + len(meta).to_bytes(4, "big") + meta + preview
            state.send_binary(frame, client_id, prompt_id=self.prompt_id)
        state.send(
            "progress",
            {"value": value, "max": maximum, "prompt_id": self.prompt_id, "node": node_id},
            client_id,
            prompt_id=self.prompt_id,
        )
        if preview is not None and not meta_ok:
            frame = (1).to_bytes(4, "big") + (2).to_bytes(4, "big") + preview
            state.send_binary(frame, client_id, prompt_id=self.prompt_id)

    # --- the run ------------------------------------------------------------------------------

    async def execute(self, item: list) -> tuple[bool, list[list], dict]:
        """Run one queue item; returns (success, status messages, history_result)."""
        state = self.state
        loop = asyncio.get_running_loop()
        _number, prompt_id, prompt, extra_data, outputs = item[:5]
        client_id = extra_data.get("client_id")
        state.client_id = client_id
        state.interrupted = False
        self.prompt_id = prompt_id
        self.progress_nodes = {}
        messages: list[list] = []
        options = state.options

        def add_message(event: str, data: dict, broadcast: bool) -> None:
            data = {**data, "timestamp": now_ms()}
            messages.append([event, data])
            if client_id is not None or broadcast:
                state.send(event, data, client_id, prompt_id=prompt_id)

        def make_ctx(node_id: str) -> NodeContext:
            def progress(value: int, maximum: int, preview: Optional[bytes]) -> None:
                if state.interrupted:
                    raise Interrupted()
                loop.call_soon_threadsafe(
                    self.on_progress, node_id, value, maximum, preview, client_id
                )

            def send_text(text: str) -> None:
                node_bytes = str(node_id).encode()
                frame = (
                    (3).to_bytes(4, "big")
                    + len(node_bytes).to_bytes(4, "big")
                    + node_bytes
                    + text.encode()
                )
                loop.call_soon_threadsafe(state.send_binary, frame, None)

            def work(seconds: float) -> None:
                delay = state.options.scaled(seconds)
                if delay > 0 and self.stop_event.wait(delay):
                    raise ServerStopping()
                if self.stop_event.is_set():
                    raise ServerStopping()

            return NodeContext(
                node_id=node_id,
                prompt=prompt,
                extra_pnginfo=extra_data.get("extra_pnginfo"),
                input_dir=state.dirs.input_dir,
                output_dir=state.dirs.output_dir,
                temp_dir=state.dirs.temp_dir,
                default_steps=options.steps,
                node_seconds=options.node_seconds,
                progress=progress,
                send_text=send_text,
                work=work,
                random_letters=lambda n: random_letters(state.rng, n),
            )

        add_message("execution_start", {"prompt_id": prompt_id}, False)
        sigs = self._signatures(prompt, make_ctx)
        used = set(sigs.values())
        for key in [k for k in self.cache if k not in used]:  # classic cache: clean_unused()
            del self.cache[key]
        cached = [n for n in prompt if sigs[n] in self.cache]
        add_message("execution_cached", {"nodes": cached, "prompt_id": prompt_id}, False)

        results: dict[str, tuple] = {}
        executed: list[str] = []
        elist = ExecutionList(prompt, state.classes, lambda n: sigs[n] in self.cache)
        for node_id in outputs:
            elist.add_node(node_id)
        success = True
        while not elist.empty():
            node_id = elist.stage()
            node = prompt[node_id]
            node_def = state.classes[node["class_type"]]
            hit = self.cache.get(sigs[node_id])
            if hit is not None:
                if client_id is not None:
                    ui = hit["ui"]
                    state.send(
                        "executed",
                        {
                            "node": node_id,
                            "display_node": node_id,
                            "output": ui,
                            "prompt_id": prompt_id,
                        },
                        client_id,
                        prompt_id=prompt_id,
                    )
                self._finish(node_id, client_id)
                results[node_id] = hit["outputs"]
                elist.complete()
                continue
            self._node_state(node_id, 0.0, 1.0, "running")
            self._progress_state(client_id)
            if client_id is not None:
                state.last_node_id = node_id
                state.send(
                    "executing",
                    {"node": node_id, "display_node": node_id, "prompt_id": prompt_id},
                    client_id,
                    prompt_id=prompt_id,
                )
            args: dict[str, Any] = {}
            try:
                args = self._gather(node, results, sigs)
                if state.interrupted:
                    raise Interrupted()
                if options.fail_node in (node_id, node["class_type"]):
                    raise NodeFailure(
                        f"SimFault: node {node_id} ({node['class_type']}) failed on purpose"
                    )
                out, ui = await loop.run_in_executor(
                    self._pool(), self._run_node, node_def, make_ctx(node_id), args
                )
            except Interrupted:
                add_message(
                    "execution_interrupted",
                    {
                        "prompt_id": prompt_id,
                        "node_id": node_id,
                        "node_type": node["class_type"],
                        "executed": list(executed),
                    },
                    True,
                )
                success = False
                break
            except ServerStopping:
                raise
            except Exception as ex:
                add_message(
                    "execution_error",
                    {
                        "prompt_id": prompt_id,
                        "node_id": node_id,
                        "node_type": node["class_type"],
                        "executed": list(executed),
                        "exception_message": f"{ex}\n",
                        "exception_type": "Exception"
                        if type(ex) is NodeFailure
                        else _type_name(ex),
                        "traceback": traceback.format_tb(ex.__traceback__),
                        "current_inputs": _format_inputs(node_def, args, prompt, extra_data),
                        "current_outputs": list(prompt),
                    },
                    False,
                )
                success = False
                break
            meta = None
            if ui:
                meta = {
                    "node_id": node_id,
                    "display_node": node_id,
                    "parent_node": None,
                    "real_node_id": node_id,
                }
                if client_id is not None:
                    state.send(
                        "executed",
                        {
                            "node": node_id,
                            "display_node": node_id,
                            "output": ui,
                            "prompt_id": prompt_id,
                        },
                        client_id,
                        prompt_id=prompt_id,
                    )
            self.cache[sigs[node_id]] = {"outputs": out, "ui": ui or None, "meta": meta}
            results[node_id] = out
            self._finish(node_id, client_id)
            executed.append(node_id)
            elist.complete()
        else:
            add_message("execution_success", {"prompt_id": prompt_id}, False)

        ui_outputs: dict[str, Any] = {}
        meta_outputs: dict[str, Any] = {}
        for node_id in prompt:
            hit = self.cache.get(sigs[node_id])
            if hit is not None and hit["ui"]:
                ui_outputs[node_id] = hit["ui"]
                meta_outputs[node_id] = hit["meta"]
        state.last_node_id = None
        return success, messages, {"outputs": ui_outputs, "meta": meta_outputs}

    def _gather(
        self, node: dict[str, Any], results: dict[str, tuple], sigs: dict[str, str]
    ) -> dict[str, Any]:
        args: dict[str, Any] = {}
        for name, value in node["inputs"].items():
            if isinstance(value, list) and len(value) == 2:
                src = value[0]
                outs = results[src] if src in results else self.cache[sigs[src]]["outputs"]
                args[name] = outs[value[1]]
            else:
                args[name] = value
        return args

    def _run_node(self, node_def: NodeDef, ctx: NodeContext, args: dict[str, Any]):
        """On the work thread: the node's time, then its body."""
        if not node_def.own_timing:
            ctx.work(ctx.node_seconds)
        return node_def.run(ctx, args)

    def _pool(self) -> ThreadPoolExecutor:
        if self.pool is None:
            self.pool = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=f"comfy-sim-work-{self.state.options.name}"
            )
        return self.pool

    def close(self) -> None:
        """Stop node work quickly and join the work thread (any thread but the work thread)."""
        self.stop_event.set()
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = None

    def free(self) -> None:
        self.cache.clear()


def _type_name(ex: BaseException) -> str:
    cls = type(ex)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


def _format_inputs(
    node_def: NodeDef, args: dict[str, Any], prompt: dict, extra_data: dict
) -> dict[str, list[str]]:
    out = {name: [_short_repr(value)] for name, value in args.items()}
    hidden = node_def.info.get("input", {}).get("hidden", {})
    for name, kind in hidden.items():
        if kind == "PROMPT":
            out[name] = [_short_repr(prompt)]
        elif kind == "EXTRA_PNGINFO":
            out[name] = [_short_repr(extra_data.get("extra_pnginfo"))]
    return out


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


Callback = Callable[..., None]
