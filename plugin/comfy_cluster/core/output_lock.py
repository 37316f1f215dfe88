"""One job per output pattern: :class:`OutputLock`.

Two jobs writing ``out/shot.####.png`` at once (two renders, two Nuke nodes, a node and the
CLI) would each replace the other's frames and both report success. So a job holds its output
pattern for its lifetime through a small JSON file beside the frames, named after the pattern
(``out/.shot.####.png.comfy-lock``), holding the holder's host, pid, job id and start time.

- The file is created atomically (``O_CREAT | O_EXCL``): of two jobs racing, exactly one wins.
- A lock of a process that is gone (same host, its pid no longer runs) is *stale*: taken over
  with a warning.
- A lock from another host (shared storage) cannot be checked from here: it is broken only on
  request (``render --break-lock``, ``RenderJob(break_lock=True)``).
- The holder removes its lock when the job ends, whatever the end (done, failed, cancelled,
  crashed); it never removes a lock that is not its own.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from comfy_cluster.core.errors import ConfigError, OutputLocked
from comfy_cluster.core.frames import has_frame_token

__all__ = ["LOCK_SUFFIX", "LockHolder", "OutputLock", "check_output_lock", "lock_path"]

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".comfy-lock"


def lock_path(pattern: str) -> Path:
    """The lock file of an output ``pattern``: hidden, beside the frames, named after it.

    ``out/shot.####.png`` -> ``<abs>/out/.shot.####.png.comfy-lock``. With per-frame folders
    (``out/####/shot.png``) it sits in the deepest folder without a frame token, named after
    the rest (``<abs>/out/.####_shot.png.comfy-lock``).
    """
    path = Path(pattern).expanduser().absolute()
    folder, rest = path.parent, [path.name]
    while has_frame_token(str(folder)) and folder.parent != folder:
        rest.insert(0, folder.name)
        folder = folder.parent
    return folder / f".{'_'.join(rest)}{LOCK_SUFFIX}"


def this_host() -> str:
    return socket.gethostname()


@dataclass(frozen=True)
class LockHolder:
    """Who holds an output pattern, as read from its lock file."""

    host: str
    pid: int
    job_id: str
    started: float

    def describe(self) -> str:
        """``job 3f2a... (pid 4711 on gpu-ws, started 2024-05-01 10:02:03)`` for messages."""
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"job {self.job_id[:12]} (pid {self.pid} on {self.host}, started {when})"

    def to_json(self) -> str:
        return json.dumps(
            {"host": self.host, "pid": self.pid, "job_id": self.job_id, "started": self.started}
        )

    @classmethod
    def read(cls, path: Path) -> Optional[LockHolder]:
        """The holder in ``path``; None when it is unreadable or not ours (then it is held by
        an unknown holder, never taken over silently). Raises FileNotFoundError if gone."""
        try:
            data: Any = json.loads(path.read_text(encoding="utf-8"))
            return cls(
                str(data["host"]), int(data["pid"]), str(data["job_id"]), float(data["started"])
            )
        except FileNotFoundError:
            raise
        except (OSError, ValueError, KeyError, TypeError):
            return None


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host. On doubt (no permission): alive."""
    if pid <= 0:
        return False
    if sys.platform == "win32":
        return _win_pid_alive(pid)
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except OSError:
        return True  # EPERM: it exists, owned by someone else
    return True


def _win_pid_alive(pid: int) -> bool:  # pragma: no cover - Windows only
    # os.kill(pid, 0) would *terminate* the process on Windows.
    import ctypes

    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return kernel32.GetLastError() == 5  # access denied: it exists
    try:
        code = ctypes.c_ulong()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True
        return code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


def _locked_error(
    pattern: str, path: Path, holder: Optional[LockHolder], host: str
) -> OutputLocked:
    who = holder.describe() if holder else "an unknown job (unreadable lock file)"
    if holder is not None and holder.host == host:
        how = "wait for it to end or cancel it"
    else:
        how = (
            "if that job is no longer running, use --break-lock (or the node's break-lock "
            f"option) or delete {path}"
        )
    return OutputLocked(
        f"output {pattern} is in use by {who}; {how}",
        holder=who,
        lock_path=str(path),
    )


def check_output_lock(pattern: str, *, break_lock: bool = False) -> Optional[str]:
    """Pre-flight look at the lock of ``pattern`` without taking it: raises
    :class:`OutputLocked` when another live job holds it; returns a warning when it is stale
    or would be broken, else None."""
    path = lock_path(pattern)
    try:
        holder = LockHolder.read(path)
    except FileNotFoundError:
        return None
    return _judge(pattern, path, holder, this_host(), os.getpid(), break_lock)


def _judge(
    pattern: str,
    path: Path,
    holder: Optional[LockHolder],
    host: str,
    pid: int,
    break_lock: bool,
) -> Optional[str]:
    """None/warning to take over the lock held by ``holder``; raises OutputLocked to refuse."""
    if break_lock:
        who = holder.describe() if holder else "an unknown job"
        return f"breaking the lock of {who} on {pattern} (--break-lock)"
    if holder is not None and holder.host == host and not pid_alive(holder.pid):
        return f"taking over the stale lock of {holder.describe()} on {pattern}: it is gone"
    raise _locked_error(pattern, path, holder, host)


class OutputLock:
    """The lock one job holds on its output pattern. :meth:`acquire` once, :meth:`release` at
    the end (idempotent). Not thread-safe: the job's controller thread uses it."""

    def __init__(self, pattern: str, job_id: str, *, break_lock: bool = False) -> None:
        self.pattern = pattern
        self.path = lock_path(pattern)
        self.break_lock = break_lock
        self.holder = LockHolder(this_host(), os.getpid(), job_id, time.time())
        self.held = False

    def acquire(self) -> Optional[str]:
        """Take the lock; return a warning when a stale (or broken) lock was replaced.

        Raises :class:`OutputLocked` (held by another live job) or :class:`ConfigError` (the
        output folder cannot take the file).
        """
        warning: Optional[str] = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the output folder {self.path.parent}: {exc.strerror or exc}",
                field="output",
            ) from None
        for _ in range(5):
            try:
                fd = os.open(str(self.path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                warning = self._take_over() or warning
                continue
            except OSError as exc:
                raise ConfigError(
                    f"cannot write to the output folder {self.path.parent}: {exc.strerror or exc}",
                    field="output",
                ) from None
            try:
                os.write(fd, self.holder.to_json().encode("utf-8"))
            finally:
                os.close(fd)
            self.held = True
            if warning:
                log.warning("%s", warning)
            return warning
        raise _locked_error(self.pattern, self.path, None, self.holder.host)

    def _take_over(self) -> Optional[str]:
        """Move an existing lock aside if it may be taken over (stale or breaking); raises
        OutputLocked otherwise. Moved by rename, then checked, so that of two jobs taking over
        the same stale lock only one removes it (the other finds it gone and retries)."""
        try:
            holder = LockHolder.read(self.path)
        except FileNotFoundError:
            return None
        if holder is None and not self.break_lock and self._young(self.path):
            # Probably being written this very moment by its creator: held.
            raise _locked_error(self.pattern, self.path, None, self.holder.host)
        warning = _judge(
            self.pattern, self.path, holder, self.holder.host, self.holder.pid, self.break_lock
        )
        aside = self.path.with_name(f"{self.path.name}.{uuid.uuid4().hex[:8]}.old")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return None
        try:
            again = LockHolder.read(aside)
        except FileNotFoundError:
            again = None
        if holder is not None and again != holder:
            # Someone replaced it between our read and rename: that fresh lock is theirs.
            try:
                os.rename(aside, self.path)
            except OSError:
                pass
            raise _locked_error(self.pattern, self.path, again, self.holder.host)
        try:
            os.unlink(aside)
        except OSError:
            pass
        return warning

    @staticmethod
    def _young(path: Path) -> bool:
        try:
            return time.time() - path.stat().st_mtime < 2.0
        except OSError:
            return False

    def release(self) -> None:
        """Remove the lock if it is still ours (never someone else's). Never raises."""
        if not self.held:
            return
        self.held = False
        try:
            if LockHolder.read(self.path) == self.holder:
                os.unlink(self.path)
        except OSError:
            log.debug("could not remove %s", self.path, exc_info=True)
