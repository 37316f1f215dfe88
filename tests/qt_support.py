"""Set-up shared by the ui tests: offscreen Qt of the binding the matching Nuke ships, a fake
cluster service with canned health, and the scripts of ``tools/`` as modules.

Nuke 16 ships PySide6 on Python 3.11; Nuke 14 and 15 ship PySide2 on 3.9 and 3.10. Call
:func:`require_nuke_binding` at the top of a ui test module, before importing Qt (nothing here
imports Qt at import time).
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Optional

import pytest

from comfy_cluster.core.health_status import HealthSnapshot, ServerState, ServerStatus

EXPECTED_BINDING = "PySide6" if sys.version_info >= (3, 11) else "PySide2"


def require_nuke_binding(*, needs_pytest_qt: bool = False) -> str:
    """Pin ``QT_API`` to this Python's Nuke binding and skip the module only if that binding (or
    pytest-qt, when asked) is missing; anything else fails loudly. Returns the binding's name."""
    if not os.environ.get("QT_QPA_PLATFORM"):  # unset or empty: no display here
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    os.environ.setdefault("QT_API", EXPECTED_BINDING.lower())
    try:
        __import__(f"{EXPECTED_BINDING}.QtWidgets")
    except ImportError as exc:
        version = f"{sys.version_info[0]}.{sys.version_info[1]}"
        pytest.skip(
            f"{EXPECTED_BINDING} (Nuke's Qt for Python {version}) is not importable: {exc}",
            allow_module_level=True,
        )
    if needs_pytest_qt:
        pytest.importorskip(
            "pytestqt", reason="pytest-qt is not installed (pip install -e '.[test]')"
        )
    return EXPECTED_BINDING


GIB = 1 << 30


def status(name: str, state: ServerState = ServerState.READY, **kw: Any) -> ServerStatus:
    """A polled server's status with plausible live values; ``kw`` overrides any field."""
    values: dict[str, Any] = dict(
        name=name,
        url=f"http://{name}:8188",
        state=state,
        queue_running=0,
        queue_pending=0,
        latency_ms=12.0,
        device="cuda:0 NVIDIA RTX 4090",
        vram_free=20 * GIB,
        vram_total=24 * GIB,
        os="posix",
        comfyui_version="0.3.10",
        last_error=None,
        since=1_700_000_000.0,
        reason=None,
        checked_at=1_700_000_001.0,
    )
    values.update(kw)
    return ServerStatus(**values)


def snapshot(*statuses: ServerStatus) -> HealthSnapshot:
    """A snapshot of ``statuses`` taken now."""
    return HealthSnapshot(statuses={s.name: s for s in statuses}, taken_at=time.time())


class FakeService:
    """A ClusterServiceProtocol with canned snapshots; records calls and the calling thread."""

    def __init__(self, snap: HealthSnapshot, servers: tuple = ()) -> None:
        self.snap = snap
        self.configs = tuple(servers)
        self.jobs: dict[str, str] = {}
        self.calls: list = []
        self.threads: set = set()
        self.fail_with: Optional[Exception] = None

    def _record(self, *call: Any) -> None:
        self.threads.add(threading.current_thread())
        self.calls.append(call)
        if self.fail_with is not None and call[0] not in ("snapshot", "servers", "active_jobs"):
            raise self.fail_with

    def snapshot(self) -> HealthSnapshot:
        self._record("snapshot")
        return self.snap

    def servers(self) -> tuple:
        self._record("servers")
        return self.configs

    def active_jobs(self) -> dict[str, str]:
        self._record("active_jobs")
        return dict(self.jobs)

    def poll_now(self) -> None:
        self._record("poll_now")

    def set_active(self, active: bool) -> None:
        self._record("set_active", active)

    def set_enabled(self, name: str, enabled: bool) -> None:
        self._record("set_enabled", name, enabled)

    def set_priority(self, name: str, priority: int) -> None:
        self._record("set_priority", name, priority)

    def add_server(self, config: Any) -> None:
        self._record("add_server", config)

    def remove_server(self, name: str) -> None:
        self._record("remove_server", name)

    def named(self, method: str) -> list:
        """The recorded calls of ``method``."""
        return [c for c in self.calls if c[0] == method]

    def edits(self) -> list:
        """The recorded calls that change the cluster (not reads, polls or watching)."""
        quiet = ("snapshot", "servers", "active_jobs", "poll_now", "set_active")
        return [c for c in self.calls if c[0] not in quiet]


def tools_module(name: str) -> ModuleType:
    """A script of ``tools/`` as a module: ``panel_pictures`` (the docs' fake cluster and
    pictures) or ``nuke_palette`` (a dark palette like Nuke's)."""
    tools = str(Path(__file__).resolve().parent.parent / "tools")
    if tools not in sys.path:
        sys.path.insert(0, tools)
    return importlib.import_module(name)
