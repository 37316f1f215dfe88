"""The prompt queue and history, as ``execution.PromptQueue`` keeps them in ComfyUI 0.3.64.

Queue order is a heap on (number, prompt_id); the history entry is written when a prompt
finishes, with the secret ``extra_data`` keys removed first.
"""

from __future__ import annotations

import heapq
import json
import threading
from typing import Any, Optional

#: extra_data keys ComfyUI removes before the item goes into history.
SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")
MAXIMUM_HISTORY_SIZE = 10000


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
