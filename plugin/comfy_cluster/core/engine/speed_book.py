"""Seconds per frame per server *and per workflow*: one :class:`SpeedTracker` per workflow shape.

A scheduler lives for a whole Nuke session and renders many workflows; a server that takes 0.2 s
for a colour transform takes 20 s for a 30-step sampler. Speeds learnt on one workflow must not
plan another, so each job plans with the tracker of its workflow's signature: its node classes
and the inputs that change the work, without the ones that change only the result (seeds,
prompt text, file names). The book keeps the most recent few shapes only.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Callable, Optional

from comfy_cluster.core.balance import SpeedTracker
from comfy_cluster.core.engine.tools import SpeedRecord
from comfy_cluster.core.errors import WorkflowError
from comfy_cluster.core.workflow import Workflow

__all__ = ["SpeedBook", "workflow_signature"]

#: Inputs whose value changes what a node makes, not how long it takes.
RESULT_ONLY_INPUTS = frozenset({"seed", "noise_seed", "text", "filename_prefix", "image"})


def workflow_signature(nodes: Mapping[str, Mapping[str, Any]]) -> str:
    """A short digest of the workflow's shape: equal for renders whose frames cost the same."""
    shape = {
        node_id: {
            "class_type": node.get("class_type"),
            "inputs": {
                name: value
                for name, value in sorted((node.get("inputs") or {}).items())
                if name not in RESULT_ONLY_INPUTS
            },
        }
        for node_id, node in nodes.items()
    }
    text = json.dumps(shape, sort_keys=True, default=str)
    # Any digest length or flag names a shape as well: only equality of signatures matters.
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:16]  # pragma: no mutate


class SpeedBook:
    """One tracker per workflow signature, the ``keep`` most recently used. Any thread.

    ``fixed`` (a tracker the caller passed) serves every workflow, as before this book: tests and
    callers that share one record across schedulers keep that contract.
    """

    def __init__(
        self,
        fixed: Optional[SpeedRecord] = None,
        *,
        keep: int = 32,
        make: Callable[[], SpeedRecord] = SpeedTracker,
    ) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.fixed = fixed
        self.keep = keep
        self._make = make
        self._lock = threading.Lock()
        self._by_signature: OrderedDict[str, SpeedRecord] = OrderedDict()

    def for_signature(self, signature: str) -> SpeedRecord:
        if self.fixed is not None:
            return self.fixed
        with self._lock:
            record = self._by_signature.get(signature)
            if record is None:
                record = self._by_signature[signature] = self._make()
                while len(self._by_signature) > self.keep:
                    self._by_signature.popitem(last=False)
            else:
                self._by_signature.move_to_end(signature)
            return record

    def for_workflow(self, workflow: object) -> SpeedRecord:
        """The record for ``workflow`` (a ``Workflow``, an API dict or a path). One that does not
        load gets a fresh record: planning will refuse it and say why."""
        if self.fixed is not None:
            return self.fixed
        try:
            loaded = workflow if isinstance(workflow, Workflow) else Workflow.load(workflow)  # type: ignore[arg-type]
        except (WorkflowError, OSError, TypeError, ValueError):
            return self._make()
        return self.for_signature(workflow_signature(loaded.nodes))

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_signature)
