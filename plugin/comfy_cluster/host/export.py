"""Writing the render node's input frames to disk with a temporary Write node.

ComfyUI needs files; Nuke's images exist only inside Nuke. A throw-away ``Write`` next to the
render node renders the node's input with ``nuke.execute``, which must run on the main thread.
:class:`InputExporter` drives it batch by batch from its own worker thread through
:meth:`Dispatcher.call_sync`, so the first chunks render while later input frames are still being
exported and, in the GUI, Nuke stays responsive between batches.

What the artist sees and what the script keeps (:class:`ExportSession`, main thread):

* **one** ``nuke.ProgressTask`` for the whole export (GUI only), with a Cancel button that
  cancels the render; every ``nuke.execute`` call is also a modal progress dialog of Nuke's own,
  so batches are as large as the chunking allows: a chunk's worth of frames when the node's
  Chunk size is set, else a first small batch (the first chunk starts early) followed by batches
  that double up to :data:`MAX_BATCH_FACTOR` times it;
* **one** temporary Write per job, made in the render node's own group (explicitly, not in
  whatever group is the current context) and deleted at the end, both with undo disabled
  (``nuke.Undo.disable()``), so the artist's undo history gets no entries. Its own Python render
  callbacks (``beforeRender`` ... ``afterRender``, which studios fill through
  ``nuke.knobDefault``) are emptied, so a studio's Write hooks (publish, version checks) do not
  run on it. Callbacks registered with ``nuke.addBeforeRender`` & co. cannot be skipped from
  Python: they see a node named ``ComfyClusterExport...``, which studio hooks can recognise.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Callable, Optional

from comfy_cluster.core.frames import format_frame_path
from comfy_cluster.host.dispatch import Dispatcher, DispatchTimeout
from comfy_cluster.host.graph import find_node, inside

__all__ = [
    "EXPORT_NODE_NAME",
    "ExportCancelled",
    "ExportError",
    "ExportSession",
    "InputExporter",
    "batch_sizes",
    "frame_runs",
]

#: PNG keeps 8 bits per channel, which is what ComfyUI's LoadImage reads.
FILE_TYPE = "png"
#: Name of the temporary Write (Nuke appends a number when it is taken).
EXPORT_NODE_NAME = "ComfyClusterExport"
#: The Write's own render callback knobs, emptied on the temporary Write.
WRITE_CALLBACK_KNOBS = (
    "beforeRender",
    "beforeFrameRender",
    "afterFrameRender",
    "afterRender",
    "renderProgress",
)
#: Automatic chunking: later batches grow up to this many times the first one.
MAX_BATCH_FACTOR = 8
PROGRESS_TITLE = "ComfyUI Cluster: writing input frames"


class ExportError(RuntimeError):
    """The input frames could not be written (no input, node deleted, Nuke render error)."""


class ExportCancelled(ExportError):
    """The artist pressed Cancel on the export's progress task."""


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


def batch_sizes(total: int, first: int, chunk_size: int = 0) -> Iterator[int]:
    """How many frames each main-thread block writes: ``chunk_size`` when the node has one (a
    chunk's inputs in one block), else ``first`` and then doubling up to
    ``first * MAX_BATCH_FACTOR``. Sums to ``total``."""
    first = max(1, first)
    size = chunk_size if chunk_size > 0 else first
    cap = chunk_size if chunk_size > 0 else first * MAX_BATCH_FACTOR
    left = total
    while left > 0:
        step = min(size, left)
        yield step
        left -= step
        size = min(size * 2, cap)


class ExportSession:
    """One job's export state on the main thread: the temporary Write and the progress task.

    Every method runs on the main thread (the exporter calls them through the dispatcher); the
    worker thread never touches this object's nodes. :meth:`close` is idempotent.
    """

    def __init__(self, nuke: Any, *, total: int, gui: bool) -> None:
        self._nuke = nuke
        self._total = max(1, total)
        self._gui = gui
        self._written = 0
        self._write: Optional[Any] = None
        self._task: Optional[Any] = None
        self.closed = False

    def write(self, node_name: str, frames: Sequence[int], pattern: str) -> None:
        """Render ``node_name``'s input 0 for ``frames`` into ``pattern``. Raises
        :class:`ExportError` (:class:`ExportCancelled` when the artist cancelled)."""
        if self.closed:
            raise ExportCancelled("the export was closed")
        self._check_cancel()
        node = find_node(self._nuke, node_name)
        if node is None:
            raise ExportError(f"{node_name} was deleted")
        source = node.input(0)
        if source is None:
            raise ExportError(f"{node_name} has no input connected")
        write = self._write_node(node, source, pattern)
        if self._gui and self._task is None:
            self._task = self._nuke.ProgressTask(PROGRESS_TITLE)
        try:
            for first, last, step in frame_runs(frames):
                self._nuke.execute(write, first, last, step)
        except ExportError:
            raise
        except Exception as exc:  # Nuke raises RuntimeError for render errors
            raise ExportError(f"writing input frames of {node_name} failed: {exc}") from exc
        self._written += len(frames)
        self._show_progress(node_name)
        self._check_cancel()

    def close(self) -> None:
        """Delete the temporary Write (no undo entry) and close the progress task."""
        self.closed = True
        write, self._write = self._write, None
        self._task = None  # Nuke closes a ProgressTask when it is released
        if write is None:
            return
        nuke = self._nuke
        nuke.Undo.disable()
        try:
            nuke.delete(write)
        except ValueError:  # already deleted (the artist, or the node's group was)
            pass
        finally:
            nuke.Undo.enable()

    # -- internals -------------------------------------------------------------------------------

    def _write_node(self, node: Any, source: Any, pattern: str) -> Any:
        """The job's temporary Write, made on first use in ``node``'s group, wired to
        ``source``; all of it with undo disabled."""
        nuke = self._nuke
        nuke.Undo.disable()
        try:
            write = self._write
            if write is None or not _alive(write):
                with inside(node.parent()):
                    write = nuke.nodes.Write()
                self._write = write
                write.setName(EXPORT_NODE_NAME)
                for name in WRITE_CALLBACK_KNOBS:
                    knob = write.knob(name)
                    if knob is not None and knob.value():
                        knob.setValue("")
                write["file"].setValue(pattern)
                write["file_type"].setValue(FILE_TYPE)
            if write.input(0) is not source and not write.setInput(0, source):
                raise ExportError(f"cannot connect the temporary Write to {source.fullName()}")
            return write
        finally:
            nuke.Undo.enable()

    def _show_progress(self, node_name: str) -> None:
        if self._task is None:
            return
        self._task.setMessage(f"{node_name}: {self._written}/{self._total} frames")
        self._task.setProgress(int(100 * self._written / self._total))

    def _check_cancel(self) -> None:
        if self._task is not None and self._task.isCancelled():
            raise ExportCancelled("cancelled while writing the input frames")


def _alive(node: Any) -> bool:
    try:
        node.name()
    except ValueError:  # "A PythonObject is not attached to a node"
        return False
    return True


class InputExporter:
    """Exports a job's input frames in order, one batch per main-thread call, on its own thread.

    ``on_end(error, stopped)`` is called once on the exporter thread when it ends: ``error`` is
    the exception that stopped it (None when every frame is written), ``stopped`` whether it
    ended early (:meth:`stop`, or the artist's Cancel: then :attr:`cancelled_by_user` is set).
    :meth:`wait_for` lets another thread block until a frame's file exists. Any thread may call
    ``wait_for``, ``ready`` and ``stop``; :meth:`close` and :meth:`rename` run on the main thread.
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
        chunk_size: int = 0,
        on_end: Optional[Callable[[Optional[BaseException], bool], None]] = None,
    ) -> None:
        self._dispatcher = dispatcher
        self._node_name = node_name
        self._frames = tuple(frames)
        self._pattern = pattern
        self._batches = list(batch_sizes(len(self._frames), batch_size, chunk_size))
        self._on_end = on_end
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._ready: set[int] = set()
        self._failed: Optional[BaseException] = None
        self.cancelled_by_user = False
        self._session = ExportSession(nuke, total=len(self._frames), gui=dispatcher.gui)
        self._thread = threading.Thread(
            target=self._run, name=f"comfy-cluster-export-{node_name}", daemon=True
        )

    @property
    def pattern(self) -> str:
        return self._pattern

    @property
    def batches(self) -> list[int]:
        """The size of each main-thread batch, in order."""
        return list(self._batches)

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

    def close(self) -> None:
        """Main thread: stop, and remove the temporary Write and the progress task now."""
        self.stop()
        self._session.close()

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
        except ExportCancelled:
            self.cancelled_by_user = True
            self.stop()
        except BaseException as exc:
            error = exc
            with self._cond:
                self._failed = exc
                self._cond.notify_all()
        if self._on_end is not None:
            self._on_end(error, self._stop.is_set() and error is None)

    def _export_all(self) -> None:
        start = 0
        for size in self._batches:
            if self._stop.is_set():
                return
            batch = self._frames[start : start + size]
            start += size
            last = start >= len(self._frames)
            self._dispatcher.call_sync(self._export_batch, batch, last, cancel=self._stop)
            with self._cond:
                self._ready.update(batch)
                self._cond.notify_all()

    def _export_batch(self, batch: Sequence[int], last: bool) -> None:
        """Main thread: skip the batch if the job was cancelled while it waited in the queue;
        close the session after the last batch or a failure."""
        if self._stop.is_set():
            return
        try:
            self._session.write(self._node_name, batch, self._pattern)
        except BaseException:
            self._session.close()
            raise
        if last:
            self._session.close()
