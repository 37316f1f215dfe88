"""Speed and fault settings of one simulated server (frozen; faults change by replacement)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

#: Checkpoints a sim has unless told otherwise (``--models``).
DEFAULT_MODELS = (
    "sd15.safetensors",
    "sim-a.safetensors",
    "sim-b.safetensors",
    "sim-other.safetensors",
)
#: LoRAs a sim has unless told otherwise (``--loras``).
DEFAULT_LORAS = ("sim-detail.safetensors",)

#: The answers ``view_fault`` can give instead of the file.
VIEW_FAULTS = ("html", "empty", "truncated", "jpeg", "endless")


@dataclass(frozen=True)
class SimOptions:
    """How fast a sim works and which faults it shows. All fields are deterministic.

    Time: every executed node takes ``node_seconds / speed``; ``SimSlowSampler`` spreads its
    time over ``steps`` progress messages. Faults (what a client sees is in docs/simulator.md):
    """

    #: Seconds each executed node takes at speed 1 (cached nodes take nothing).
    node_seconds: float = 0.0
    #: All work scales as 1/speed.
    speed: float = 1.0
    #: Default number of ``progress`` messages a sampling-like node sends.
    steps: int = 4
    #: Nothing listens on the port (connect gets ECONNREFUSED); the port stays reserved.
    refuse_connections: bool = False
    #: After this many prompts have started, taking the next one kills the server abruptly.
    die_after_prompts: Optional[int] = None
    #: Prompts are accepted (200) and taken by the worker, which then sends nothing, ever.
    hang_prompts: bool = False
    #: The client's websocket is reset after this many prompt events of a prompt.
    drop_ws_after_events: Optional[int] = None
    #: The next N ``POST /prompt`` calls answer a plain-text 500 (counts down).
    fail_prompt_posts: int = 0
    #: A node class name or node id that fails with ``execution_error`` when it runs.
    fail_node: Optional[str] = None
    #: Seconds ``POST /upload/image`` waits before storing the file.
    upload_delay: float = 0.0
    #: Node classes this server pretends not to have (400 ``invalid_prompt``).
    missing_classes: tuple[str, ...] = ()
    #: When set, every route except ``/sim/*`` needs ``Authorization: Bearer <token>`` (else 401).
    token: Optional[str] = None
    # --- a hostile or broken server (see sim/hostile.py) ---
    #: ``/view`` answers 200 with this instead of the file: "html" (an error page), "empty",
    #: "truncated" (the file's first half), "jpeg" (a JPEG, whatever was asked) or "endless".
    view_fault: Optional[str] = None
    #: This GET route (e.g. "/system_stats") answers 200 with a JSON body that never ends.
    endless_route: Optional[str] = None
    #: Each new websocket first gets a text message announced as this many bytes (at most 1 MiB
    #: of it is sent; a client that waits for the rest waits forever).
    ws_message_bytes: Optional[int] = None
    #: Every ComfyUI route answers 302 to this base URL plus the request's path and query.
    redirect_to: Optional[str] = None
    #: A 401 (see ``token``) echoes the request's headers in its body, as a naive proxy would.
    echo_401: bool = False
    #: Every ComfyUI route answers 500 with this text.
    error_text: Optional[str] = None
    #: The ``exception_message`` of the ``fail_node`` fault (default: "SimFault: ...").
    fail_message: Optional[str] = None
    #: A label for logs and ``/sim/state``.
    name: str = "sim"
    # --- real cluster conditions (see sim/models.py and docs/simulator.md) ---
    #: Checkpoint files the server has (``CheckpointLoaderSimple.ckpt_name``'s list).
    models: tuple[str, ...] = DEFAULT_MODELS
    #: LoRA files the server has (``LoraLoader.lora_name``'s list).
    loras: tuple[str, ...] = DEFAULT_LORAS
    #: Seconds to load a checkpoint that is not in memory (disk-bound: not scaled by speed).
    load_seconds: float = 0.0
    #: Checkpoints held in memory at once (LRU; loading one more evicts the oldest).
    models_in_memory: int = 1
    #: Extra seconds the first prompt after a start costs (not scaled by speed).
    warmup_seconds: float = 0.0
    #: Share (0..1) of busy time taken by another client's prompts.
    foreign_load: float = 0.0
    #: Seconds of work (at speed 1) of one foreign prompt.
    foreign_seconds: float = 2.0
    #: The checkpoint foreign prompts load (None: the last of ``models``).
    foreign_model: Optional[str] = None

    def __post_init__(self) -> None:
        if self.speed <= 0:
            raise ValueError(f"speed must be > 0, got {self.speed!r}")
        if self.node_seconds < 0:
            raise ValueError(f"node_seconds must be >= 0, got {self.node_seconds!r}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps!r}")
        if self.fail_prompt_posts < 0:
            raise ValueError("fail_prompt_posts must be >= 0")
        if self.view_fault not in (None, *VIEW_FAULTS):
            raise ValueError(f"view_fault must be one of {VIEW_FAULTS}, got {self.view_fault!r}")
        if self.ws_message_bytes is not None and self.ws_message_bytes < 1:
            raise ValueError("ws_message_bytes must be >= 1")
        for name in ("missing_classes", "models", "loras"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = tuple(v.strip() for v in value.split(",") if v.strip())
            if not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))
            elif value is not getattr(self, name):
                object.__setattr__(self, name, value)
        for name in ("load_seconds", "warmup_seconds", "foreign_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.models_in_memory < 1:
            raise ValueError(f"models_in_memory must be >= 1, got {self.models_in_memory!r}")
        if not 0.0 <= self.foreign_load < 1.0:
            raise ValueError(f"foreign_load must be in [0, 1), got {self.foreign_load!r}")

    @property
    def foreign_checkpoint(self) -> str:
        """The checkpoint another client's prompts load."""
        if self.foreign_model:
            return self.foreign_model
        return self.models[-1] if self.models else "sim-other.safetensors"

    def scaled(self, seconds: float) -> float:
        """Wall-clock seconds for ``seconds`` of work at speed 1."""
        return max(0.0, seconds) / self.speed

    def replace(self, **changes: Any) -> SimOptions:
        """A copy with some fields changed; unknown names raise ``TypeError``."""
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        for name in ("missing_classes", "models", "loras"):
            data[name] = list(getattr(self, name))
        if self.token:
            data["token"] = "***"
        return data

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def coerce_changes(cls, changes: Mapping[str, Any]) -> dict:
        """Validate JSON-ish changes (from ``/sim/faults``): names must be fields."""
        names = set(cls.field_names())
        unknown = sorted(set(changes) - names)
        if unknown:
            raise TypeError(f"unknown SimOptions fields: {', '.join(unknown)}")
        out = dict(changes)
        for name in ("missing_classes", "models", "loras"):
            if name in out and out[name] is not None:
                value = out[name]
                out[name] = tuple(value) if not isinstance(value, str) else value
        return out
