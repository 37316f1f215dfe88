"""Output set-ups refused before any server does work.

Each of these used to be found only after the servers had rendered, or never:

- :func:`probe_output_folder`: the output folder cannot be written (read-only, a file where a
  folder should be): found by creating and removing a hidden file there.
- :func:`same_files_problem`: the input and output patterns name the same files for some
  frame, so the render would replace its own plates.
- :func:`output_kind_problem`: the workflow's save node writes one image kind (core
  ``SaveImage``: always PNG) and the output's extension asks for another. Only core save nodes
  are known; a custom save node may write anything, so it is checked per frame at transfer
  time instead (``transfer.check_output_kind``).

Both the engine (``engine/plan.py``: Nuke and CLI alike) and the CLI's pre-flight
(``commands/render.py``, exit status 2) call them. All raise or return plain messages; none
imports the engine.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Optional

from comfy_cluster.core.errors import ConfigError
from comfy_cluster.core.frames import format_frame_path, has_frame_token
from comfy_cluster.core.image_check import image_kind
from comfy_cluster.core.transfer import frame_name_formatter, frame_path
from comfy_cluster.core.workflow import Workflow

__all__ = [
    "SAVE_NODE_KINDS",
    "check_output_setup",
    "output_kind_problem",
    "probe_output_folder",
    "same_files_problem",
]

#: Core ComfyUI save nodes and the one image kind each writes, whatever their inputs.
SAVE_NODE_KINDS: Mapping[str, str] = MappingProxyType(
    {
        "SaveImage": "PNG",
        "PreviewImage": "PNG",
        "SaveAnimatedPNG": "PNG",
        "SaveAnimatedWEBP": "WebP",
    }
)


def probe_output_folder(pattern: str, frame: int) -> None:
    """Make sure frames of ``pattern`` can be written: create the folder of ``frame`` if
    needed, then create and remove a hidden probe file in it. Raises :class:`ConfigError`
    naming the folder. Leaves nothing behind but the folder."""
    folder = frame_path(pattern, frame).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(
            f"cannot create the output folder {folder}: a file is in the way "
            f"({_blocking_file(folder)} is a file, not a folder)",
            field="output",
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot create the output folder {folder}: {exc.strerror or exc}", field="output"
        ) from None
    probe = folder / f".comfy-probe-{uuid.uuid4().hex[:8]}"
    try:
        fd = os.open(str(probe), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except OSError as exc:
        raise ConfigError(
            f"cannot write to the output folder {folder}: {exc.strerror or exc}", field="output"
        ) from None
    os.close(fd)
    try:
        os.unlink(probe)
    except OSError:
        pass


def _blocking_file(folder: Path) -> Path:
    """The nearest of ``folder`` and its parents that exists (the file in the way)."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            return candidate
    return folder


def same_files_problem(
    input_pattern: Optional[str],
    output_pattern: str,
    input_frames: Iterable[int],
    output_frames: Iterable[int],
) -> Optional[str]:
    """Why writing ``output_frames`` would replace input frames the job reads, or None.

    Paths are compared resolved (symlinks, ``..``, case on case-insensitive disks via
    ``samefile`` of the folders), and for every frame: ``p.#.png`` and ``p.####.png`` collide
    from frame 1000 on, ``p.####.png`` and ``p.%04d.png`` always. Costs one ``stat`` per folder
    unless the folders are the same.
    """
    if not input_pattern:
        return None
    in_full = str(Path(input_pattern).expanduser().absolute())
    out_full = str(Path(output_pattern).expanduser().absolute())
    in_dir, in_name = os.path.split(in_full)
    out_dir, out_name = os.path.split(out_full)
    if has_frame_token(in_dir) or has_frame_token(out_dir):
        # Per-frame folders: compare whole resolved paths (rare, so simple).
        reads = {
            os.path.normcase(os.path.realpath(format_frame_path(in_full, f))) for f in input_frames
        }
        hits = sorted(
            f
            for f in output_frames
            if os.path.normcase(os.path.realpath(format_frame_path(out_full, f))) in reads
        )
    else:
        if not _same_folder(in_dir, out_dir):
            return None
        in_fmt, out_fmt = frame_name_formatter(in_name), frame_name_formatter(out_name)
        reads = {os.path.normcase(in_fmt(f)) for f in input_frames}
        hits = sorted(f for f in output_frames if os.path.normcase(out_fmt(f)) in reads)
    if not hits:
        return None
    from comfy_cluster.core.frames import frames_text

    return (
        f"the output {output_pattern} would overwrite the input {input_pattern} "
        f"(same files for frame(s) {frames_text(hits)}): write the output somewhere else"
    )


def _same_folder(a: str, b: str) -> bool:
    if os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b)):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def output_kind_problem(workflow: Workflow, node_id: str, output_pattern: str) -> Optional[str]:
    """Why the output's extension cannot hold what the save node ``node_id`` writes, or None
    (also None when the node is not a core save node: its kind is not knowable up front)."""
    wanted = image_kind(output_pattern)
    cls = workflow.class_of(node_id)
    writes = SAVE_NODE_KINDS.get(cls)
    suffix = Path(output_pattern).suffix or "(none)"
    if wanted is None:
        from comfy_cluster.core.image_check import kind_problem

        return f"the output {output_pattern}: {kind_problem(output_pattern)}"
    if writes is None or writes == wanted:
        return None
    return (
        f"the output {output_pattern} asks for {wanted} ({suffix}) but node "
        f"{workflow.describe(node_id)} always writes {writes}: change the output's extension "
        f"or use a save node that writes {wanted}"
    )


def check_output_setup(
    workflow: Workflow,
    output_node: str,
    output_pattern: str,
    input_pattern: Optional[str],
    input_frames: Iterable[int],
    output_frames: Iterable[int],
) -> None:
    """The kind and same-files checks above; raises ConfigError with the first problem
    (``field="output"``). The folder probe is separate: the engine probes before it takes the
    output lock, ahead of everything else."""
    output_frames = tuple(output_frames)
    problem = output_kind_problem(workflow, output_node, output_pattern) or same_files_problem(
        input_pattern, output_pattern, input_frames, output_frames
    )
    if problem:
        raise ConfigError(problem, field="output")
