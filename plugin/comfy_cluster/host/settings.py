"""Reading a ComfyClusterRender node's knobs into checked render settings. Main thread.

Every check happens here, before anything starts (no temporary folder, no export, no prompt), and
each failure names the knob to fix, because the message is what the artist sees on the node.

Paths are read as Nuke reads them: studio templates put TCL in them
(``[file dirname [value root.name]]/comfy/[file rootname [file tail [value root.name]]].####.png``),
so a path with ``[`` or ``$`` is evaluated by its own knob (``knob.evaluate()``, which knows the
node it belongs to) instead of being used raw. The frame token must survive the evaluation: if a
Nuke ever substituted the current frame number into it, the render refuses with a message rather
than writing every frame to one file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from comfy_cluster.core.frames import FrameRange, has_frame_token
from comfy_cluster.host import knobs as K

__all__ = [
    "RenderSettings",
    "RenderSettingsError",
    "evaluated_path",
    "knob_text",
    "output_path",
    "read_settings",
]


class RenderSettingsError(ValueError):
    """A knob value that makes rendering impossible; the message names the knob."""


@dataclass(frozen=True)
class RenderSettings:
    """What one render of the node asks for (servers are chosen separately)."""

    workflow: str
    output: str
    frames: FrameRange
    mode: str
    chunk_size: int
    strategy: str
    #: The engine's name for the Existing frames choice ("overwrite", "resume", ...).
    existing: str
    #: Which frames render first: "sequential" or "preview".
    order: str = "sequential"


def read_settings(node: Any) -> RenderSettings:
    """The node's settings; raises :class:`RenderSettingsError` (or the frame parser's
    ``ValueError``) for the first value that cannot work."""
    workflow = _workflow(node)
    output = _output(node)
    source = node.input(0)
    if source is None:
        raise RenderSettingsError("Nothing is connected to the input")
    return RenderSettings(
        workflow=workflow,
        output=output,
        frames=_frames(node, source),
        mode=node.knob(K.MODE).value() or "frame",
        chunk_size=_chunk_size(node),
        strategy=node.knob(K.STRATEGY).value() or "fastest",
        existing=_existing(node),
        order=_order(node),
    )


def knob_text(node: Any, knob_name: str) -> str:
    """A knob's value as stripped text; "" when the node has no such knob."""
    knob = node.knob(knob_name)
    return str(knob.value()).strip() if knob is not None else ""


def evaluated_path(node: Any, knob_name: str, label: str) -> str:
    """The knob's text with its TCL evaluated (raw when it has none); stripped.

    Raises :class:`RenderSettingsError` naming ``label`` when the TCL does not evaluate or the
    evaluation lost the frame token the raw text has."""
    knob = node.knob(knob_name)
    raw = str(knob.value()).strip() if knob is not None else ""
    if "[" not in raw and "$" not in raw:
        return raw
    evaluate = getattr(knob, "evaluate", None)
    if evaluate is None:
        return raw
    try:
        text = str(evaluate()).strip()
    except Exception as exc:  # Nuke raises for a TCL error; the artist must see which knob
        raise RenderSettingsError(f"{label} ({knob_name}): cannot evaluate {raw}: {exc}") from exc
    if has_frame_token(raw) and not has_frame_token(text):
        raise RenderSettingsError(
            f"{label} ({knob_name}): evaluating {raw} replaced the frame number ({text})"
        )
    return text


def output_path(node: Any) -> str:
    """The node's Output as a render would use it; the raw text if it does not evaluate (for
    matching a running job to its node, never for rendering)."""
    try:
        return evaluated_path(node, K.OUTPUT, "Output")
    except RenderSettingsError:
        return knob_text(node, K.OUTPUT)


def _workflow(node: Any) -> str:
    workflow = evaluated_path(node, K.WORKFLOW, "Workflow")
    if not workflow:
        raise RenderSettingsError("Workflow (cc_workflow) is empty: pick a workflow JSON file")
    if not os.path.isfile(workflow):
        raise RenderSettingsError(f"Workflow file not found: {workflow}")
    return workflow


def _output(node: Any) -> str:
    output = evaluated_path(node, K.OUTPUT, "Output")
    if not output:
        raise RenderSettingsError("Output (cc_output) is empty: e.g. /renders/shot.####.png")
    if not has_frame_token(output):
        raise RenderSettingsError(f"Output (cc_output) has no frame number (####): {output}")
    return output


def _frames(node: Any, source: Any) -> FrameRange:
    """The Frames knob, or the input's own range when it is empty."""
    text = node.knob(K.FRAMES).value().strip()
    if text:
        return FrameRange.parse(text)
    return FrameRange.from_bounds(int(source.firstFrame()), int(source.lastFrame()))


def _chunk_size(node: Any) -> int:
    chunk_size = int(node.knob(K.CHUNK_SIZE).value())
    if chunk_size < 0:
        raise RenderSettingsError("Chunk size must be 0 (automatic) or more")
    return chunk_size


def _existing(node: Any) -> str:
    """The Existing frames menu item, as the engine's mode (scripts older than the knob have
    none: overwrite, as before it existed)."""
    existing_knob = node.knob(K.EXISTING)
    item = existing_knob.value() if existing_knob is not None else ""
    existing = K.EXISTING_MODES.get(item or K.EXISTING_OVERWRITE)
    if existing is None:
        raise RenderSettingsError(f"Existing frames (cc_existing) is unknown: {item}")
    return existing


def _order(node: Any) -> str:
    """The Order choice; a script saved before the knob existed renders in order."""
    order_knob = node.knob(K.ORDER)
    item = (order_knob.value() if order_knob is not None else "") or K.ORDERS[0]
    if item not in K.ORDERS:
        raise RenderSettingsError(f"Order (cc_order) is unknown: {item}")
    return item
