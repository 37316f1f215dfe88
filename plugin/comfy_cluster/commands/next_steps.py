"""What to tell the user when a render stops: where the frames are, and how to finish the job.

Why: after a render the first question is "where did it write?"; after Ctrl-C it is "how do I
carry on without redoing what is done?". Render tools answer both on the spot, so we do too:
one line naming the output folder, and on interrupt the frames done and the exact command that
finishes the job (the user's own command line with ``--resume`` in place of ``--overwrite``,
quoted for a POSIX shell so it can be pasted as is).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

__all__ = ["PROGRAM", "frames_location", "interrupted_lines", "resume_command"]

#: The name the rerun command starts with (the installed entry point).
PROGRAM = "comfy-cluster"


def frames_location(pattern: str, frames: Sequence[int]) -> Optional[str]:
    """``frames are in /abs/out (shot.####.png, 24 of 24 on disk)``; None when none is on disk."""
    from comfy_cluster.core.transfer import existing_frames

    on_disk = existing_frames(pattern, frames)
    if not on_disk:
        return None
    path = Path(pattern).expanduser().absolute()
    return f"frames are in {path.parent} ({path.name}, {len(on_disk)} of {len(frames)} on disk)"


def _is_flag(token: str, flag: str, shortest: int) -> bool:
    """``token`` is ``flag`` or an abbreviation argparse accepts (at least ``shortest`` long)."""
    return len(token) >= shortest and flag.startswith(token)


def resume_command(argv: Sequence[str]) -> tuple[str, bool]:
    """The command line that finishes the job, and whether it replaced ``--overwrite``.

    ``argv`` is the sub-command and its arguments as typed (``["render", "shot.json", ...]``).
    ``--overwrite`` (or an abbreviation such as ``--over``) becomes ``--resume``; without
    either, ``--resume`` is added at the end. Everything else is kept, quoted with :mod:`shlex`.
    """
    tokens: list[str] = []
    has_resume = replaced = False
    for token in argv:
        if _is_flag(token, "--overwrite", len("--ov")):
            if not has_resume:
                tokens.append("--resume")
            has_resume = replaced = True
            continue
        if _is_flag(token, "--resume", len("--r")):
            has_resume = True
        tokens.append(token)
    if not has_resume:
        tokens.append("--resume")
    return f"{PROGRAM} {shlex.join(tokens)}", replaced


def interrupted_lines(
    job: Any, progress: Optional[Any], argv: Optional[Sequence[str]] = None
) -> list[str]:
    """What Ctrl-C prints: frames done of the job's total and, given the command line that
    started it, the command that finishes it.

    Done counts the frames this run wrote plus those it skipped as already on disk (from the
    view's :class:`~comfy_cluster.core.progress.JobProgress`), not every file on disk: with
    ``--overwrite``, frames of an earlier render are still there, and the line says that
    ``--resume`` would keep them.
    """
    from comfy_cluster.core.transfer import existing_frames

    frames = tuple(job.frame_range.frames)
    on_disk = len(existing_frames(job.output_pattern, frames))
    done = on_disk
    if progress is not None:
        done = min(len(frames), int(progress.done) + len(progress.skipped))
    lines = [f"interrupted: job cancelled; {done} of {len(frames)} frame(s) done"]
    if argv is None or done >= len(frames):
        return lines
    command, replaced = resume_command(argv)
    lines.append(f"to finish the job: {command}")
    older = on_disk - done
    if replaced and older > 0:
        lines.append(
            f"  (--resume keeps every frame on disk, also the {older} not rendered by this run)"
        )
    return lines
