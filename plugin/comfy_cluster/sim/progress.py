"""Progress reporting for the prompt that runs: ``progress_state``, ``progress`` and previews.

ComfyUI 0.3.64 sends a ``progress_state`` snapshot of every node touched so far whenever one
changes, then the legacy ``progress`` message; previews go as binary frames, with metadata
(type 4) to clients that announced ``supports_preview_metadata`` and bare (type 1) otherwise.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from .executor_host import ExecutorHost


class ProgressReporter:
    """Per-node progress of one prompt at a time; used on the loop thread only."""

    def __init__(self, host: ExecutorHost) -> None:
        self.host = host
        self.prompt_id: Optional[str] = None
        #: node id -> its entry in the next progress_state message.
        self.nodes: dict[str, dict] = {}

    def start(self, prompt_id: str) -> None:
        """Forget the last prompt's nodes: progress_state covers the running prompt only."""
        self.prompt_id = prompt_id
        self.nodes = {}

    def publish(self, client_id: Optional[str]) -> None:
        """Send the progress_state snapshot (a deep copy: later changes must not leak into it)."""
        self.host.send(
            "progress_state",
            {"prompt_id": self.prompt_id, "nodes": json.loads(json.dumps(self.nodes))},
            client_id,
            prompt_id=self.prompt_id,
        )

    def set_node(self, node_id: str, value: Any, maximum: Any, state: str) -> None:
        self.nodes[node_id] = {
            "value": value,
            "max": maximum,
            "state": state,
            "node_id": node_id,
            "prompt_id": self.prompt_id,
            "display_node_id": node_id,
            "parent_node_id": None,
            "real_node_id": node_id,
        }

    def finish(self, node_id: str, client_id: Optional[str]) -> None:
        """Mark a node finished (value = max) and publish."""
        entry = self.nodes.get(node_id)
        if entry is None:
            self.set_node(node_id, 0, 1, "running")
            entry = self.nodes[node_id]
        entry["state"] = "finished"
        entry["value"] = entry["max"]
        self.publish(client_id)

    def on_progress(
        self,
        node_id: str,
        value: int,
        maximum: int,
        preview: Optional[bytes],
        client_id: Optional[str],
    ) -> None:
        """ProgressBar hook, on the loop thread: progress_state (+type 4), progress (+type 1)."""
        host = self.host
        self.set_node(node_id, value, maximum, "running")
        self.publish(client_id)
        meta_ok = host.supports_preview_metadata(client_id)
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
            host.send_binary(frame, client_id, prompt_id=self.prompt_id)
        host.send(
            "progress",
            {"value": value, "max": maximum, "prompt_id": self.prompt_id, "node": node_id},
            client_id,
            prompt_id=self.prompt_id,
        )
        if preview is not None and not meta_ok:
            frame = (1).to_bytes(4, "big") + (2).to_bytes(4, "big") + preview
            host.send_binary(frame, client_id, prompt_id=self.prompt_id)
