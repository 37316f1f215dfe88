"""The prompt as a graph: cache signatures and the order nodes run in.

Ports ``comfy_execution/graph.py``'s ExecutionList (UX-friendly staging: output nodes first,
then their direct and second-level inputs) and the classic cache's input signatures, which is
why an identical resubmission runs nothing.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Optional

from .nodes import NodeContext, NodeDef


def _links(inputs: dict[str, Any]) -> list[tuple[str, str, int]]:
    return [
        (name, value[0], value[1])
        for name, value in inputs.items()
        if isinstance(value, list) and len(value) == 2
    ]


def node_signatures(
    prompt: dict[str, Any],
    classes: dict[str, NodeDef],
    fail_node: Optional[str],
    ctx_factory: Callable[[str], NodeContext],
) -> dict[str, str]:
    """Each node's cache key: its class, constant inputs and its inputs' keys, recursively.

    Always-run nodes and the node set to fail get a unique part so they are never cache hits;
    ``IS_CHANGED`` values and hidden ``unique_id`` inputs are folded in as ComfyUI does.
    """
    sigs: dict[str, str] = {}

    def sig(node_id: str, seen: tuple[str, ...] = ()) -> str:
        if node_id in sigs:
            return sigs[node_id]
        if node_id in seen:
            raise RuntimeError("graph.DependencyCycleError")
        node = prompt[node_id]
        node_def = classes[node["class_type"]]
        parts: list[Any] = [node["class_type"]]
        if node_def.always_run or fail_node in (node_id, node["class_type"]):
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


class ExecutionList:
    """comfy_execution.graph.ExecutionList: pending nodes, block counts, UX-friendly staging."""

    def __init__(
        self,
        prompt: dict[str, Any],
        classes: dict[str, NodeDef],
        is_cached: Callable[[str], bool],
    ) -> None:
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
