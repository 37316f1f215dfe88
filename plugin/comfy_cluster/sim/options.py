"""Speed and fault settings of one simulated server (frozen; faults change by replacement)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

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
        if not isinstance(self.missing_classes, tuple):
            object.__setattr__(self, "missing_classes", tuple(self.missing_classes))

    def scaled(self, seconds: float) -> float:
        """Wall-clock seconds for ``seconds`` of work at speed 1."""
        return max(0.0, seconds) / self.speed

    def replace(self, **changes: Any) -> SimOptions:
        """A copy with some fields changed; unknown names raise ``TypeError``."""
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data["missing_classes"] = list(self.missing_classes)
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
        if "missing_classes" in out and out["missing_classes"] is not None:
            out["missing_classes"] = tuple(out["missing_classes"])
        return out
