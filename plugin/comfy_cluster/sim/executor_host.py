"""What the executor needs from the server it runs in, as a structural type.

The executor is owned by the server state (``app.SimState``) yet must call back into it: send
events, read options and node classes, flag interrupts. Naming those needs here, below both,
lets ``executor`` depend on this small contract instead of on ``app``, so neither module
imports the other.
"""

from __future__ import annotations

import random
from typing import Any, Optional, Protocol

from .models import ModelMemory
from .nodes import Dirs, NodeDef
from .options import SimOptions


class ExecutorHost(Protocol):
    """The server state as the executor sees it; every member is used on the loop thread.

    ``interrupted`` is also read on the work thread (a plain flag, as in ComfyUI).
    """

    dirs: Dirs
    rng: random.Random
    #: The client of the prompt that runs (ComfyUI's ``server.client_id``).
    client_id: Optional[str]
    #: The node whose ``executing`` was sent last (ComfyUI's ``server.last_node_id``).
    last_node_id: Optional[str]
    interrupted: bool
    #: The checkpoints in memory (an LRU of ``options.models_in_memory``).
    models: ModelMemory

    @property
    def options(self) -> SimOptions: ...

    @property
    def classes(self) -> dict[str, NodeDef]: ...

    def supports_preview_metadata(self, sid: Optional[str]) -> bool: ...

    def send(
        self, event: str, data: Any, sid: Optional[str], *, prompt_id: Optional[str] = None
    ) -> Any: ...

    def send_binary(
        self, frame: bytes, sid: Optional[str], prompt_id: Optional[str] = None
    ) -> Any: ...
