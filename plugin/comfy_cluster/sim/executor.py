"""The executor: one prompt at a time, events as ComfyUI 0.3.64 sends them.

Ports the parts of ``execution.py`` / ``main.prompt_worker`` that decide what a client sees: the
classic signature cache (an identical resubmission runs nothing and repeats the old outputs),
``executing`` / ``executed`` / ``execution_*`` messages, and the history result. Queue order lives
in :mod:`.prompt_queue`, staging and signatures in :mod:`.graph`, progress in :mod:`.progress`.

Threads: everything here runs on the server's event loop thread, except node bodies, which run on
the server's single work thread (like ComfyUI's worker thread) and talk back through ``loop``.
"""

from __future__ import annotations

import asyncio
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Optional

from .clock import PromptClock, ServerStopping
from .executor_host import ExecutorHost
from .graph import ExecutionList, node_signatures
from .nodes import Interrupted, NodeContext, NodeDef, NodeFailure, NodeResult, random_letters
from .options import SimOptions
from .progress import ProgressReporter


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class _PromptRun:
    """One queue item being executed: who asked, with which options, and its status messages.

    ``options`` is read once when the prompt starts, as the steps and failing node of a prompt
    must not change under it; node work reads the speed live (a fault may slow a running prompt).
    """

    host: ExecutorHost
    loop: asyncio.AbstractEventLoop
    options: SimOptions
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    client_id: Optional[str]
    #: The budget of wall time this prompt may take (see clock.py).
    clock: PromptClock
    #: Seconds each executed node costs at speed 1 (0 for a foreign prompt: its cost is booked
    #: whole on the clock).
    node_seconds: float
    #: [event, data] pairs kept for the history entry's status.
    messages: list[list] = field(default_factory=list)

    def add_message(self, event: str, data: dict, broadcast: bool) -> None:
        """Record a status message and send it to our client (or everyone, if ``broadcast``)."""
        data = {**data, "timestamp": now_ms()}
        self.messages.append([event, data])
        if self.client_id is not None or broadcast:
            self.host.send(event, data, self.client_id, prompt_id=self.prompt_id)

    def send_executing(self, node_id: str) -> None:
        if self.client_id is not None:
            self.host.last_node_id = node_id
            self.host.send(
                "executing",
                {"node": node_id, "display_node": node_id, "prompt_id": self.prompt_id},
                self.client_id,
                prompt_id=self.prompt_id,
            )

    def send_executed(self, node_id: str, ui: Any) -> None:
        if self.client_id is not None:
            self.host.send(
                "executed",
                {
                    "node": node_id,
                    "display_node": node_id,
                    "output": ui,
                    "prompt_id": self.prompt_id,
                },
                self.client_id,
                prompt_id=self.prompt_id,
            )


class Executor:
    """Runs one prompt; owned by the server state. Node bodies run on ``pool`` (one thread)."""

    def __init__(self, host: ExecutorHost) -> None:
        self.host = host
        #: signature -> {"outputs": tuple, "ui": dict | None, "meta": dict | None}
        self.cache: dict[str, dict[str, Any]] = {}
        self.pool: Optional[ThreadPoolExecutor] = None
        self.stop_event = threading.Event()
        self.progress = ProgressReporter(host)

    # --- the run ------------------------------------------------------------------------------

    async def execute(
        self, item: list, *, extra_seconds: float = 0.0, node_seconds: Optional[float] = None
    ) -> tuple[bool, list[list], dict]:
        """Run one queue item; returns (success, status messages, history_result).

        ``extra_seconds`` (wall time: a cold server's warm-up, a foreign prompt's work) is booked
        on the prompt's clock before any node runs; ``node_seconds`` overrides the options'.
        """
        host = self.host
        _number, prompt_id, prompt, extra_data, outputs = item[:5]
        clock = PromptClock(self.stop_event)
        clock.add(extra_seconds)
        options = host.options
        run = _PromptRun(
            host=host,
            loop=asyncio.get_running_loop(),
            options=options,
            prompt_id=prompt_id,
            prompt=prompt,
            extra_data=extra_data,
            client_id=extra_data.get("client_id"),
            clock=clock,
            node_seconds=options.node_seconds if node_seconds is None else node_seconds,
        )
        host.client_id = run.client_id
        host.interrupted = False
        self.progress.start(prompt_id)

        run.add_message("execution_start", {"prompt_id": prompt_id}, False)
        sigs = node_signatures(
            prompt, host.classes, run.options.fail_node, lambda n: self._node_context(run, n)
        )
        used = set(sigs.values())
        for key in [k for k in self.cache if k not in used]:  # classic cache: clean_unused()
            del self.cache[key]
        cached = [n for n in prompt if sigs[n] in self.cache]
        run.add_message("execution_cached", {"nodes": cached, "prompt_id": prompt_id}, False)

        success = await self._run_graph(run, outputs, sigs)
        if success:
            run.add_message("execution_success", {"prompt_id": prompt_id}, False)
        host.last_node_id = None
        return success, run.messages, self._history_result(prompt, sigs)

    async def _run_graph(self, run: _PromptRun, outputs: list, sigs: dict[str, str]) -> bool:
        """Run (or replay from cache) every node the outputs need; False once one fails."""
        results: dict[str, tuple] = {}
        executed: list[str] = []
        elist = ExecutionList(run.prompt, self.host.classes, lambda n: sigs[n] in self.cache)
        for node_id in outputs:
            elist.add_node(node_id)
        while not elist.empty():
            node_id = elist.stage()
            node_def = self.host.classes[run.prompt[node_id]["class_type"]]
            hit = self.cache.get(sigs[node_id])
            if hit is not None:
                run.send_executed(node_id, hit["ui"])
                self.progress.finish(node_id, run.client_id)
                results[node_id] = hit["outputs"]
                elist.complete()
                continue
            ran = await self._run_fresh(run, node_id, node_def, results, sigs, executed)
            if ran is None:
                return False
            out, ui = ran
            meta = None
            if ui:
                meta = {
                    "node_id": node_id,
                    "display_node": node_id,
                    "parent_node": None,
                    "real_node_id": node_id,
                }
                run.send_executed(node_id, ui)
            self.cache[sigs[node_id]] = {"outputs": out, "ui": ui or None, "meta": meta}
            results[node_id] = out
            self.progress.finish(node_id, run.client_id)
            executed.append(node_id)
            elist.complete()
        return True

    async def _run_fresh(
        self,
        run: _PromptRun,
        node_id: str,
        node_def: NodeDef,
        results: dict[str, tuple],
        sigs: dict[str, str],
        executed: list[str],
    ) -> Optional[NodeResult]:
        """Announce and run one uncached node; None after reporting why it did not finish."""
        node = run.prompt[node_id]
        self.progress.set_node(node_id, 0.0, 1.0, "running")
        self.progress.publish(run.client_id)
        run.send_executing(node_id)
        args: dict[str, Any] = {}
        try:
            args = self._gather(node, results, sigs)
            if self.host.interrupted:
                raise Interrupted()
            if run.options.fail_node in (node_id, node["class_type"]):
                raise NodeFailure(
                    run.options.fail_message
                    or f"SimFault: node {node_id} ({node['class_type']}) failed on purpose"
                )
            return await run.loop.run_in_executor(
                self._pool(), self._run_node, node_def, self._node_context(run, node_id), args
            )
        except Interrupted:
            run.add_message(
                "execution_interrupted",
                {
                    "prompt_id": run.prompt_id,
                    "node_id": node_id,
                    "node_type": node["class_type"],
                    "executed": list(executed),
                },
                True,
            )
        except ServerStopping:
            raise
        except Exception as ex:
            run.add_message(
                "execution_error", _error_details(run, node_id, node_def, args, executed, ex), False
            )
        return None

    def _history_result(self, prompt: dict[str, Any], sigs: dict[str, str]) -> dict:
        """The ``outputs`` / ``meta`` of every node whose cache entry has a UI result."""
        ui_outputs: dict[str, Any] = {}
        meta_outputs: dict[str, Any] = {}
        for node_id in prompt:
            hit = self.cache.get(sigs[node_id])
            if hit is not None and hit["ui"]:
                ui_outputs[node_id] = hit["ui"]
                meta_outputs[node_id] = hit["meta"]
        return {"outputs": ui_outputs, "meta": meta_outputs}

    def _node_context(self, run: _PromptRun, node_id: str) -> NodeContext:
        """What the node may touch; its callbacks run on the work thread and hop to the loop."""
        host = self.host
        client_id = run.client_id

        def progress(value: int, maximum: int, preview: Optional[bytes]) -> None:
            if host.interrupted:
                raise Interrupted()
            run.loop.call_soon_threadsafe(
                self.progress.on_progress, node_id, value, maximum, preview, client_id
            )

        def send_text(text: str) -> None:
            node_bytes = str(node_id).encode()
            frame = (
                (3).to_bytes(4, "big")
                + len(node_bytes).to_bytes(4, "big")
                + node_bytes
                + text.encode()
            )
            run.loop.call_soon_threadsafe(host.send_binary, frame, None)

        def work(seconds: float) -> None:
            run.clock.add(host.options.scaled(seconds))
            run.clock.wait()

        def load_checkpoint(name: str) -> None:
            options = host.options
            if host.models.use(name, options.models_in_memory):
                run.clock.add(options.load_seconds)  # disk-bound: not scaled by speed

        return NodeContext(
            node_id=node_id,
            prompt=run.prompt,
            extra_pnginfo=run.extra_data.get("extra_pnginfo"),
            input_dir=host.dirs.input_dir,
            output_dir=host.dirs.output_dir,
            temp_dir=host.dirs.temp_dir,
            default_steps=run.options.steps,
            node_seconds=run.node_seconds,
            progress=progress,
            send_text=send_text,
            work=work,
            random_letters=lambda n: random_letters(host.rng, n),
            load_checkpoint=load_checkpoint,
        )

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

    def _run_node(self, node_def: NodeDef, ctx: NodeContext, args: dict[str, Any]) -> NodeResult:
        """On the work thread: the node's body, then whatever is left of its time.

        The body's own time counts against ``node_seconds / speed`` (honest timing); a node with
        ``own_timing`` spends its time itself, over its progress steps.
        """
        result = node_def.run(ctx, args)
        if not node_def.own_timing:
            ctx.work(ctx.node_seconds)
        return result

    # --- the work thread ----------------------------------------------------------------------

    def _pool(self) -> ThreadPoolExecutor:
        if self.pool is None:
            self.pool = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=f"comfy-sim-work-{self.host.options.name}"
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


def _error_details(
    run: _PromptRun,
    node_id: str,
    node_def: NodeDef,
    args: dict[str, Any],
    executed: list[str],
    ex: Exception,
) -> dict[str, Any]:
    """The ``execution_error`` body for a node that raised ``ex``."""
    node = run.prompt[node_id]
    return {
        "prompt_id": run.prompt_id,
        "node_id": node_id,
        "node_type": node["class_type"],
        "executed": list(executed),
        "exception_message": f"{ex}\n",
        "exception_type": "Exception" if type(ex) is NodeFailure else _type_name(ex),
        "traceback": traceback.format_tb(ex.__traceback__),
        "current_inputs": _format_inputs(node_def, args, run.prompt, run.extra_data),
        "current_outputs": list(run.prompt),
    }


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
