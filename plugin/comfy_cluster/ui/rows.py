"""One immutable row per server: what the panel's table and details area show, as plain text.

Pure Python (no Qt), so what the artist reads is testable without widgets: :func:`build_rows`
turns a health snapshot, the configured servers and the active jobs into :class:`ServerRow`
values; :meth:`ServerRow.text` is a table cell and :meth:`ServerRow.details` the lines of the
details area under the table. Secrets never reach a row: only header *names* and whether a token
is set are kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from comfy_cluster.core.formatting import gib_text

if TYPE_CHECKING:
    from comfy_cluster.core.health_status import HealthSnapshot, ServerStatus
    from comfy_cluster.core.server import ServerConfig

#: Shown for a configured server the poller has not reported on yet.
UNKNOWN = "UNKNOWN"

#: What a cell shows when there is no live value (offline, disabled, not polled yet).
NO_VALUE = "-"

#: States whose queue, latency, device and VRAM are not live: shown as :data:`NO_VALUE`.
NOT_LIVE_STATES = frozenset({"OFFLINE", "DISABLED", UNKNOWN})

#: Colour per state name; muted so white text on it stays readable in Nuke's dark theme.
STATE_COLOURS: Mapping[str, str] = {
    "READY": "#2e7d32",
    "BUSY": "#1f5fa8",
    "DEGRADED": "#b7791f",
    "OFFLINE": "#a12b2b",
    "DISABLED": "#4a4a4a",
    UNKNOWN: "#3a3a3a",
}


def state_colour(state: str) -> str:
    """The colour of ``state`` (``#rrggbb``); unknown names get the UNKNOWN grey."""
    return STATE_COLOURS.get(state, STATE_COLOURS[UNKNOWN])


@dataclass(frozen=True)
class ServerRow:
    """Everything the panel shows about one server, as plain values; compared to diff updates."""

    name: str
    url: str = ""
    state: str = UNKNOWN
    enabled: bool = True
    priority: Optional[int] = None
    queue_running: Optional[int] = None
    queue_pending: Optional[int] = None
    latency_ms: Optional[float] = None
    device: str = ""
    vram_free: Optional[int] = None
    vram_total: Optional[int] = None
    job: str = ""
    last_error: str = ""
    reason: str = ""
    #: Seconds the server has been in ``state`` when the snapshot was taken.
    state_age: Optional[float] = None
    #: Seconds since the last finished poll, when the snapshot was taken.
    checked_age: Optional[float] = None
    source: str = ""
    #: Models the server holds, when its status reports them (else empty, and not shown).
    models: tuple[str, ...] = ()
    max_in_flight: Optional[int] = None
    #: ``"dir_local -> dir_remote"`` when a path mapping is configured.
    path_map: str = ""
    #: How requests authenticate, without the secrets: ``"token, header X-Api-Key"``.
    auth: str = ""

    @property
    def live(self) -> bool:
        """False when queue, latency, device and VRAM are stale or unknown (offline, disabled)."""
        return self.state not in NOT_LIVE_STATES

    def text(self, key: str) -> str:
        """The display text of table column ``key``; ``-`` where there is no live value."""
        if key == "state":
            return self.state.lower()
        if key == "priority":
            return NO_VALUE if self.priority is None else str(self.priority)
        if key in ("queue", "latency", "vram", "device"):
            return self._live_text(key) if self.live else NO_VALUE
        if key == "last_error":
            return self.last_error.splitlines()[0] if self.last_error else ""
        return str(getattr(self, key))

    def _live_text(self, key: str) -> str:
        if key == "queue":
            if self.queue_running is None and self.queue_pending is None:
                return NO_VALUE
            return f"{self.queue_running or 0} run / {self.queue_pending or 0} wait"
        if key == "latency":
            return NO_VALUE if self.latency_ms is None else f"{self.latency_ms:.0f} ms"
        if key == "vram":
            return gib_text(self.vram_free, self.vram_total)  # "-" when unknown
        return self.device or NO_VALUE

    def state_text(self) -> str:
        """``"offline for 5 min"``: the state and, when known, how long it has lasted."""
        text = self.state.lower()
        if self.state_age is not None:
            text += f" for {format_age(self.state_age)}"
        return text

    def tooltip(self, key: str) -> str:
        """The hover tip of column ``key``: why a server is in its state; its URL and source."""
        if key == "state":
            return " - ".join(part for part in (self.state_text(), self.reason) if part)
        if key == "name":  # the URL has no column of its own
            text = f"{self.name} - {self.url}" if self.url else self.name
            return f"{text} (from {self.source})" if self.source else text
        if key == "last_error":
            return self.last_error
        return self.text(key)

    def details(self) -> tuple[tuple[str, str], ...]:
        """(label, text) lines for the details area, in reading order; empty ones are left out.

        The last error is given in full (every line). Live values are left out when the server
        is offline or disabled, where the table shows ``-``.
        """
        live = self.live
        lines = (
            ("State", self.state_text()),
            ("Reason", self.reason),
            ("Last error", self.last_error),
            ("URL", self.url),
            ("Device", self.device if live else ""),
            ("VRAM free", self._live_text("vram") if live else ""),
            ("Queue", self._live_text("queue") if live else ""),
            ("Latency", self._live_text("latency") if live else ""),
            ("Models", ", ".join(self.models)),
            ("Job / chunk", self.job),
            ("Priority", "" if self.priority is None else str(self.priority)),
            ("Max in flight", "" if self.max_in_flight is None else str(self.max_in_flight)),
            ("Paths", self.path_map),
            ("Auth", self.auth),
            ("Checked", "" if self.checked_age is None else f"{format_age(self.checked_age)} ago"),
            ("Source", self.source),
        )
        return tuple((label, text) for label, text in lines if text and text != NO_VALUE)


def format_age(seconds: float) -> str:
    """``42`` -> ``"42 s"``, ``300`` -> ``"5 min"``, ``3900`` -> ``"1 h 5 min"``."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def _state_name(state: Any) -> str:
    name = getattr(state, "name", None) or str(state or UNKNOWN)
    return name.upper()


def _models(status: object) -> tuple[str, ...]:
    """The status's ``models`` (names of the models the server holds), when it has any."""
    models = getattr(status, "models", None)
    if not models or isinstance(models, str):
        return ()
    return tuple(str(model) for model in models)


def _config_values(config: Optional[ServerConfig]) -> dict[str, Any]:
    """The row fields that come from the configuration (never a secret's value)."""
    if config is None:
        return {}
    auth = ["token"] if config.token else []
    auth += [f"header {name}" for name in sorted(config.headers)]
    if config.ca_bundle:
        auth.append(f"CA bundle {config.ca_bundle}")
    if config.scheme == "https" and not config.verify_tls:
        auth.append("TLS not verified")
    path_map = ""
    if config.dir_local or config.dir_remote:
        path_map = f"{config.dir_local or '?'} -> {config.dir_remote or '?'}"
    return {
        "enabled": config.enabled,
        "priority": config.priority,
        "source": config.source,
        "max_in_flight": config.max_in_flight,
        "path_map": path_map,
        "auth": ", ".join(auth),
    }


def _age(taken_at: Optional[float], since: Optional[float]) -> Optional[float]:
    if taken_at is None or not since:
        return None
    return float(round(taken_at - since))


def row_from_status(
    status: ServerStatus,
    config: Optional[ServerConfig] = None,
    job: str = "",
    taken_at: Optional[float] = None,
) -> ServerRow:
    """One row from a server's health status plus, when known, its configuration.

    ``taken_at`` is the snapshot's time, on the same clock as ``status.since``.
    """
    state = _state_name(status.state)
    values: dict[str, Any] = {"enabled": state != "DISABLED"}
    values.update(_config_values(config))
    return ServerRow(
        name=status.name,
        url=status.url or (config.url if config else ""),
        state=state,
        queue_running=status.queue_running,
        queue_pending=status.queue_pending,
        latency_ms=status.latency_ms,
        device=status.device or "",
        vram_free=status.vram_free,
        vram_total=status.vram_total,
        job=job,
        last_error=status.last_error or "",
        reason=status.reason or "",
        state_age=_age(taken_at, status.since),
        checked_age=_age(taken_at, status.checked_at),
        models=_models(status),
        **values,
    )


def row_from_config(config: ServerConfig, job: str = "") -> ServerRow:
    """A row for a configured server that no snapshot mentions yet (just added, not polled)."""
    return ServerRow(
        name=config.name,
        url=config.url,
        state=UNKNOWN if config.enabled else "DISABLED",
        job=job,
        **_config_values(config),
    )


def build_rows(
    snapshot: Optional[HealthSnapshot],
    servers: Sequence[ServerConfig] = (),
    jobs: Optional[Mapping[str, str]] = None,
) -> tuple[ServerRow, ...]:
    """The table's rows: configured servers in config order, then any others the snapshot has.

    Pure; any thread. A server in neither the snapshot nor the config has no row, so rows appear
    and disappear as servers are added to or removed from the cluster.
    """
    statuses: Mapping[str, ServerStatus] = snapshot.statuses if snapshot is not None else {}
    taken_at = snapshot.taken_at if snapshot is not None else None
    jobs = jobs or {}
    rows = []
    seen = set()
    for config in servers:
        if config.name in seen:
            continue
        seen.add(config.name)
        status = statuses.get(config.name)
        job = jobs.get(config.name, "")
        if status is not None:
            rows.append(row_from_status(status, config, job, taken_at))
        else:
            rows.append(row_from_config(config, job))
    for name in sorted(n for n in statuses if n not in seen):
        rows.append(row_from_status(statuses[name], None, jobs.get(name, ""), taken_at))
    return tuple(rows)


__all__ = [
    "NOT_LIVE_STATES",
    "NO_VALUE",
    "STATE_COLOURS",
    "UNKNOWN",
    "ServerRow",
    "build_rows",
    "format_age",
    "row_from_config",
    "row_from_status",
    "state_colour",
]
