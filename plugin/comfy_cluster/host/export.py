"""Writing the render node's input frames to disk with a temporary Write node.

ComfyUI needs files; Nuke's images exist only inside Nuke. :func:`export_frames` renders the node
connected to the render node's input through a throw-away ``Write`` with ``nuke.execute``, which
must run on the main thread. :class:`InputExporter` drives it batch by batch from its own worker
thread through :meth:`Dispatcher.call_sync`, so the main thread stays responsive between batches
(and, in terminal mode, the blocked caller runs each batch while draining the dispatcher queue)
and so the frames of the first chunks exist before the later ones are exported.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any, Callable, Optional

from comfy_cluster.core.frames import format_frame_path
from comfy_cluster.host.dispatch import Dispatcher, DispatchTimeout

__all__ = ["ExportError", "InputExporter", "export_frames", "frame_runs"]

#: PNG keeps 8 bits per channel, which is what ComfyUI's LoadImage reads.
FILE_TYPE = "png"


class ExportError(RuntimeError):
    """The input frames could not be written (no input, node deleted, Nuke render error)."""


def frame_runs(frames: Iterable[int]) -> list[tuple[int, int, int]]:
    """Group sorted frames into ``(first, last, step)`` runs ``nuke.execute`` can render."""
    ordered = sorted(set(frames))
    runs: list[tuple[int, int, int]] = []
    i = 0
    while i < len(ordered):
        first = ordered[i]
        if i + 1 == len(ordered):
            runs.append((first, first, 1))
            break
        step = ordered[i + 1] - first
        j = i + 1
        while j + 1 < len(ordered) and ordered[j + 1] - ordered[j] == step:
            j += 1
        runs.append((first, ordered[j], step))
        i = j + 1
    return runs


def export_frames(nuke: Any, node_name: str, frames: Sequence[int], pattern: str) -> None:
    """Render ``node_name``'s input 0 for ``frames`` into ``pattern``. Main thread only.

    The temporary Write is created next to the render node (same group), connected to its input,
    executed, and deleted again even when the render fails. Raises :class:`ExportError`.
    """
    node = nuke.toNode(node_name)
    if node is None:
        raise ExportError(f"{node_name} was deleted")
    source = node.input(0)
    if source is None:
        raise ExportError(f"{node_name} has no input connected")
    parent_name, _, _ = node_name.rpartition(".")
    parent = nuke.toNode(parent_name) if parent_name else None
    if parent is not None:
        parent.begin()
    try:
        write = nuke.nodes.Write()
    finally:
        if parent is not None:
            parent.end()
    try:
        write.setInput(0, source)
        write["file"].setValue(pattern)
        write["file_type"].setValue(FILE_TYPE)
        for first, last, step in frame_runs(frames):
            nuke.execute(write, first, last, step)
    except ExportError:
        raise
    except Exception as exc:  # Nuke raises RuntimeError for render errors
        raise ExportError(f"writing input frames of {node_name} failed: {exc}") from exc
    finally:
        nuke.delete(write)


class InputExporter:
    """Exports a job's input frames in order, one batch per main-thread call, on its own thread.

    ``on_end(error, stopped)`` is called once on the exporter thread when it ends: ``error`` is
    the exception that stopped it (None when every frame is written), ``stopped`` whether
    :meth:`stop` ended it early. :meth:`wait_for` lets another thread block until a
    frame's file exists. :meth:`stop` ends the thread after the current batch. Any thread may call
    ``wait_for``, ``ready`` and ``stop``.
    """

    def __init__(
        self,
        nuke: Any,
        dispatcher: Dispatcher,
        node_name: str,
        frames: Sequence[int],
        pattern: str,
        *,
        batch_size: int = 4,
        on_end: Optional[Callable[[Optional[BaseException], bool], None]] = None,
    ) -> None:
        self._nuke = nuke
        self._dispatcher = dispatcher
        self._node_name = node_name
        self._frames = tuple(frames)
        self._pattern = pattern
        self._batch_size = max(1, batch_size)
        self._on_end = on_end
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._ready: set[int] = set()
        self._failed: Optional[BaseException] = None
        self._thread = threading.Thread(
            target=self._run, name=f"comfy-cluster-export-{node_name}", daemon=True
        )

    @property
    def pattern(self) -> str:
        return self._pattern

    def path(self, frame: int) -> str:
        return format_frame_path(self._pattern, frame)

    def rename(self, node_name: str) -> None:
        """The render node was renamed: later batches resolve ``node_name``. Main thread only
        (the batches that read the name run there too)."""
        self._node_name = node_name

    def start(self) -> InputExporter:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    def join(self, timeout: Optional[float] = None) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def done(self) -> bool:
        with self._cond:
            return len(self._ready) == len(set(self._frames))

    @property
    def error(self) -> Optional[BaseException]:
        with self._cond:
            return self._failed

    def ready(self, frame: int) -> bool:
        with self._cond:
            return frame in self._ready

    def wait_for(self, frame: int, timeout: Optional[float] = None) -> bool:
        """Block until ``frame`` is exported; False on timeout, stop, or export failure."""
        with self._cond:
            return self._cond.wait_for(
                lambda: frame in self._ready or self._failed is not None or self._stop.is_set(),
                timeout,
            ) and (frame in self._ready)

    def _run(self) -> None:
        error: Optional[BaseException] = None
        try:
            self._export_all()
        except DispatchTimeout:
            pass  # stopped while waiting for the main thread
        except BaseException as exc:
            error = exc
            with self._cond:
                self._failed = exc
                self._cond.notify_all()
        if self._on_end is not None:
            self._on_end(error, self._stop.is_set() and error is None)

    def _export_all(self) -> None:
        frames = self._frames
        for start in range(0, len(frames), self._batch_size):
            if self._stop.is_set():
                return
            batch = frames[start : start + self._batch_size]
            self._dispatcher.call_sync(self._export_batch, batch, cancel=self._stop)
            with self._cond:
                self._ready.update(batch)
                self._cond.notify_all()

    def _export_batch(self, batch: Sequence[int]) -> None:
        """Main thread: skip the batch if the job was cancelled while it waited in the queue."""
        if not self._stop.is_set():
            export_frames(self._nuke, self._node_name, batch, self._pattern)
