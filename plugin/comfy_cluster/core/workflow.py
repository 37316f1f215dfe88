"""ComfyUI API-format workflows, and turning a chunk of frames into prompts.

A workflow is loaded and checked once (:meth:`Workflow.load`, :func:`validate_workflow`) before any
server sees it; every prompt is then built from a deep copy, so the loaded workflow never changes.

Three ways to render a chunk:

- per frame (default): :func:`build_frame_prompt`, one prompt per frame, the frame's image bound
  to the ``LoadImage`` node;
- batch: :func:`build_batch_prompt`, one prompt per chunk for temporal workflows, the loader
  expanded into one ``LoadImage`` per frame joined by core ``ImageBatch`` nodes; outputs come
  back with :func:`map_batch_outputs`;
- sequence loader: :func:`build_sequence_prompt`, a VideoHelperSuite-style loader that reads the
  frames itself from shared storage (``skip_first_images`` / ``image_load_cap``).

String inputs may carry ``{frame}`` or ``{frame:04d}``; only those tokens are replaced, every other
brace is left alone (prompts contain ``{red|blue}`` and JSON). Errors are :class:`WorkflowError`
(a ``ValueError``) with ``node_id`` set when one node is at fault.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Optional, Union

from comfy_cluster.core.errors import WorkflowError
from comfy_cluster.core.input_file import InputFileError, read_input_text
from comfy_cluster.core.input_json import JsonTextError, decode_json

__all__ = [
    "IMAGE_OUTPUT_CLASSES",
    "Override",
    "Workflow",
    "WorkflowTargets",
    "build_batch_prompt",
    "build_frame_prompt",
    "build_sequence_prompt",
    "expand_frame_tokens",
    "map_batch_outputs",
    "missing_classes",
    "validate_workflow",
]

#: Output classes always taken as the image output; other ``Save*`` classes count when they
#: have a ``filename_prefix`` input (so ``SaveImageWebsocket``, which writes no file, does not).
IMAGE_OUTPUT_CLASSES = frozenset({"SaveImage", "PreviewImage"})
LOADER_CLASS = "LoadImage"
BATCH_CLASS = "ImageBatch"
SEQUENCE_INPUTS = ("skip_first_images", "image_load_cap")

# {frame} or {frame:SPEC}; SPEC has no braces. Nothing else in braces is touched.
_FRAME_TOKEN = re.compile(r"\{frame(?::([^{}]*))?\}")

NodeRef = Union[str, int]
PathOrDict = Union[str, "os.PathLike[str]", Mapping[str, Any], "Workflow"]


def expand_frame_tokens(text: str, frame: int) -> str:
    """Replace ``{frame}`` and ``{frame:FORMAT}`` (Python format spec) with ``frame``.

    There is no escaping: ``{{frame}}`` becomes ``{1001}``. A bad format spec raises
    :class:`WorkflowError` quoting the token.
    """

    def sub(match: re.Match[str]) -> str:
        spec = match.group(1) or ""
        try:
            return format(frame, spec)
        except ValueError as exc:
            raise WorkflowError(f"bad frame token '{match.group(0)}': {exc}") from None

    return _FRAME_TOKEN.sub(sub, text)


def _has_frame_token(text: str) -> bool:
    return _FRAME_TOKEN.search(text) is not None


def _is_link(value: object) -> bool:
    # ComfyUI treats any JSON list as a link [source_node_id, output_index].
    return isinstance(value, list)


@dataclass(frozen=True)
class Workflow:
    """A validated API-format workflow: node id -> ``{"class_type", "inputs", "_meta"?}``.

    Immutable by contract: ``nodes`` is a read-only view of a private deep copy, and the builders
    copy again before changing anything. Safe to share between threads.
    """

    nodes: Mapping[str, Mapping[str, Any]]
    #: Where it came from (a file path or ``<dict>``), for messages.
    source: str = "<dict>"

    @classmethod
    def load(cls, path_or_dict: PathOrDict) -> Workflow:
        """Load from a JSON file path or a dict, validating the API format.

        Raises :class:`WorkflowError` for unreadable files, JSON syntax errors (file, line, column),
        the UI format (``nodes``/``links``: re-export with ComfyUI's "Export (API)"), or a malformed
        node or link (naming the node).
        """
        if isinstance(path_or_dict, Workflow):
            return path_or_dict
        if isinstance(path_or_dict, Mapping):
            return cls._from_data(copy.deepcopy(dict(path_or_dict)), "<dict>")
        if not isinstance(path_or_dict, (str, os.PathLike)):
            return cls._from_data(path_or_dict, "<data>")
        path = os.fspath(path_or_dict)
        try:
            text = read_input_text(path)
        except InputFileError as exc:
            raise WorkflowError(f"cannot read workflow {path}: it {exc.reason}") from None
        try:
            data = decode_json(text)
        except JsonTextError as exc:
            raise WorkflowError(f"{path}: {exc}") from None
        return cls._from_data(data, path)

    @classmethod
    def _from_data(cls, data: object, source: str) -> Workflow:
        _check_api_format(data, source)
        assert isinstance(data, dict)
        return cls(MappingProxyType(data), source)

    # -- lookups --------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.nodes)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self.nodes

    def to_dict(self) -> dict[str, Any]:
        """A deep, mutable copy: the prompt body to change and send."""
        return copy.deepcopy(dict(self.nodes))

    def classes(self) -> set[str]:
        """Every ``class_type`` used (the health module checks them against ``/object_info``)."""
        return {node["class_type"] for node in self.nodes.values()}

    def class_of(self, node_id: str) -> str:
        return str(self.nodes[node_id]["class_type"])

    def title(self, node_id: str) -> Optional[str]:
        """The node's ``_meta.title`` if it has one."""
        meta = self.nodes[node_id].get("_meta")
        title = meta.get("title") if isinstance(meta, Mapping) else None
        return title if isinstance(title, str) else None

    def describe(self, node_id: str) -> str:
        """``3 (SaveImage 'Final')`` for messages."""
        title = self.title(node_id)
        return f"{node_id} ({self.class_of(node_id)}" + (f" '{title}')" if title else ")")

    def resolve(self, ref: NodeRef) -> str:
        """A node id from an id or a unique ``_meta.title`` (an id wins over a title).

        Raises :class:`WorkflowError` if nothing matches or the title is ambiguous (listing ids).
        """
        key = str(ref)
        if key in self.nodes:
            return key
        matches = [node_id for node_id in self.nodes if self.title(node_id) == key]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise WorkflowError(
                f"title '{key}' is ambiguous: nodes {', '.join(matches)} all have it; use an id"
            )
        titles = sorted({t for t in map(self.title, self.nodes) if t})
        known = f"; titles: {', '.join(titles)}" if titles else ""
        raise WorkflowError(f"no node with id or title '{key}' in {self.source}{known}")

    def output_candidates(self) -> list[str]:
        """Ids of image outputs that write files: SaveImage, PreviewImage, Save* with a prefix."""
        return [node_id for node_id in self.nodes if self._is_image_output(node_id)]

    def _is_image_output(self, node_id: str) -> bool:
        cls = self.class_of(node_id)
        if cls in IMAGE_OUTPUT_CLASSES:
            return True
        return cls.startswith("Save") and "filename_prefix" in self.nodes[node_id]["inputs"]

    def output_node(self, name: Optional[NodeRef] = None) -> str:
        """The node whose images we collect: ``name`` resolved, or the single image output.

        A named node must be an image output too. Raises :class:`WorkflowError` when there is
        none, or several and no name (listing the candidates).
        """
        if name is not None:
            node_id = self.resolve(name)
            if not self._is_image_output(node_id):
                raise WorkflowError(
                    f"node {self.describe(node_id)} is not an image output node "
                    "(SaveImage, PreviewImage, or a Save* node with filename_prefix)",
                    node_id=node_id,
                )
            return node_id
        return self._single(self.output_candidates(), "image output node (SaveImage)", "output")

    def loader_candidates(self) -> list[str]:
        return [node_id for node_id in self.nodes if self.class_of(node_id) == LOADER_CLASS]

    def image_loader(self, name: Optional[NodeRef] = None) -> str:
        """The node that receives each frame's image: ``name`` resolved, or the single LoadImage.

        A named node may be any class with a literal ``image`` input (a custom loader).
        """
        if name is not None:
            node_id = self.resolve(name)
            inputs = self.nodes[node_id]["inputs"]
            if "image" not in inputs or _is_link(inputs["image"]):
                raise WorkflowError(
                    f"node {self.describe(node_id)} has no 'image' file input to bind frames to",
                    node_id=node_id,
                )
            return node_id
        return self._single(self.loader_candidates(), "LoadImage node", "loader")

    def _single(self, candidates: list[str], what: str, option: str) -> str:
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            raise WorkflowError(f"{self.source} has no {what}")
        listed = ", ".join(self.describe(node_id) for node_id in candidates)
        raise WorkflowError(
            f"{self.source} has several candidates for the {what}: {listed}; "
            f"name one (id or title) as the {option}"
        )


def _check_api_format(data: object, source: str) -> None:
    if not isinstance(data, dict):
        raise WorkflowError(
            f"{source}: a workflow must be a JSON object, not {type(data).__name__}"
        )
    if "nodes" in data and "links" in data:
        raise WorkflowError(
            f"{source} is a ComfyUI UI workflow (it has 'nodes' and 'links'); "
            "save it in API format with ComfyUI's Workflow > Export (API)"
        )
    if isinstance(data.get("prompt"), dict) and "class_type" not in data["prompt"]:
        raise WorkflowError(f"{source} looks like a /prompt request body; pass its 'prompt' value")
    if not data:
        raise WorkflowError(f"{source}: the workflow has no nodes")
    for node_id, node in data.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            raise WorkflowError(
                f"{source}: node {node_id} has no class_type; is this an API-format workflow "
                "(ComfyUI's Export (API))?",
                node_id=node_id,
            )
        if not node["class_type"]:
            raise WorkflowError(
                f"{source}: node {node_id} has an empty class_type", node_id=node_id
            )
        inputs = node.get("inputs")
        if not isinstance(inputs, dict):
            raise WorkflowError(
                f"{source}: node {node_id} ({node['class_type']}) has no 'inputs' object",
                node_id=node_id,
            )
        for name, value in inputs.items():
            if _is_link(value):
                _check_link(data, node_id, name, value, source)


def _check_link(
    nodes: Mapping[str, Any], node_id: str, name: str, value: list, source: str
) -> None:
    where = f"{source}: input '{name}' of node {node_id}"
    if len(value) != 2 or isinstance(value[1], bool) or not isinstance(value[1], int):
        raise WorkflowError(
            f"{where} is a list but not a link [node_id, output_index]; "
            'wrap a literal list as {"__value__": [...]}',
            node_id=node_id,
        )
    if str(value[0]) not in nodes:
        raise WorkflowError(f"{where} links to missing node {value[0]}", node_id=node_id)


# ---------------------------------------------------------------------------------------------
# Overrides


@dataclass(frozen=True)
class Override:
    """Set one input of one node: ``Override.parse("KSampler.seed=42")``.

    ``node`` is an id or a unique ``_meta.title``. From :meth:`parse`, VALUE is JSON when it
    parses (``42``, ``1.5``, ``true``, ``["4", 0]`` which ComfyUI reads as a link, ``"42"`` to
    force a string) and a plain string otherwise. ``{frame}`` tokens in VALUE are expanded per
    frame *before* the JSON reading, so ``Noise.seed={frame}`` gives an int.
    """

    node: str
    input: str
    value: Any
    #: The VALUE text as typed, when built by :meth:`parse`; re-read per frame if it has tokens.
    raw: Optional[str] = None

    @classmethod
    def parse(cls, text: str) -> Override:
        """Parse ``NODE.INPUT=VALUE``; NODE may contain dots (the last dot before ``=`` splits)."""
        target, sep, raw = text.partition("=")
        node, dot, name = target.rpartition(".")
        node, name = node.strip(), name.strip()
        if not sep or not dot or not node or not name:
            raise WorkflowError(f"override '{text}' must look like NODE.INPUT=VALUE")
        return cls(node, name, _parse_value(raw), raw)

    def value_for(self, frame: Optional[int]) -> Any:
        """The value to set when rendering ``frame`` (``None``: tokens left as written)."""
        if frame is None:
            return self.value
        if self.raw is not None:
            return (
                _parse_value(expand_frame_tokens(self.raw, frame))
                if _has_frame_token(self.raw)
                else self.value
            )
        if isinstance(self.value, str):
            return expand_frame_tokens(self.value, frame)
        return self.value


def _parse_value(raw: str) -> Any:
    """VALUE as JSON when it is JSON; too deep to be a sane input value is an error."""
    try:
        value = decode_json(raw)
    except JsonTextError as exc:
        if not exc.too_deep:
            return raw
        raise WorkflowError(f"override value: {exc}") from None
    # null has no meaning as an input value; keep the text.
    return raw if value is None else value


def _apply_overrides(
    workflow: Workflow,
    prompt: dict[str, Any],
    overrides: Iterable[Union[Override, str]],
    frame: Optional[int],
) -> None:
    for override in overrides:
        if isinstance(override, str):
            override = Override.parse(override)
        node_id = workflow.resolve(override.node)
        inputs = prompt[node_id]["inputs"]
        # Unknown inputs are refused: ComfyUI ignores them silently, so a typo would do nothing.
        if override.input not in inputs:
            known = ", ".join(sorted(inputs)) or "none"
            raise WorkflowError(
                f"override {override.node}.{override.input}: node {workflow.describe(node_id)} "
                f"has no input '{override.input}' (inputs: {known})",
                node_id=node_id,
            )
        value = override.value_for(frame)
        if _is_link(value):
            _check_link(prompt, node_id, override.input, value, "override")
        inputs[override.input] = value


# ---------------------------------------------------------------------------------------------
# Prompt building


@dataclass(frozen=True)
class WorkflowTargets:
    """The nodes a render drives, found once by :func:`validate_workflow`."""

    output_node: str
    image_loader: Optional[str]


def validate_workflow(
    workflow: Union[Workflow, Mapping[str, Any], str, os.PathLike],
    *,
    needs_image_input: bool,
    output_node: Optional[NodeRef] = None,
    loader: Optional[NodeRef] = None,
) -> WorkflowTargets:
    """Refuse a workflow before any work: not API format, no output node, or no image loader
    when an input sequence is given. Raises :class:`WorkflowError` naming the node.

    Whether each server knows the classes is the health module's check (:func:`missing_classes`).
    """
    wf = Workflow.load(workflow)
    out = wf.output_node(output_node)
    image_loader = wf.image_loader(loader) if needs_image_input or loader is not None else None
    return WorkflowTargets(out, image_loader)


def missing_classes(workflow: Workflow, object_info_keys: Iterable[str]) -> list[str]:
    """The workflow's classes a server does not have (sorted), from its ``/object_info`` keys."""
    return sorted(workflow.classes() - set(object_info_keys))


def _expand_all(prompt: dict[str, Any], frame: int) -> None:
    for node in prompt.values():
        inputs = node["inputs"]
        for name, value in inputs.items():
            if isinstance(value, str) and "{frame" in value:
                inputs[name] = expand_frame_tokens(value, frame)


def _set_prefix(
    workflow: Workflow,
    prompt: dict[str, Any],
    output_node: Optional[NodeRef],
    prefix: Optional[str],
) -> None:
    if prefix is None:
        return
    node_id = workflow.output_node(output_node)
    inputs = prompt[node_id]["inputs"]
    # PreviewImage has no filename_prefix (ComfyUI names temp files randomly, already unique).
    if "filename_prefix" in inputs:
        inputs["filename_prefix"] = prefix


def build_frame_prompt(
    workflow: Workflow,
    frame: int,
    *,
    image_value: Optional[str] = None,
    overrides: Iterable[Union[Override, str]] = (),
    output_prefix: Optional[str] = None,
    loader: Optional[NodeRef] = None,
    output_node: Optional[NodeRef] = None,
) -> dict[str, Any]:
    """The prompt that renders one frame; ``workflow`` is not changed.

    Order: ``{frame}`` tokens in string inputs, then ``image_value`` (an uploaded ``sub/name`` or
    a server-side path) on the loader's ``image``, then overrides, then ``output_prefix`` on the
    output node's ``filename_prefix`` (last, so our unique names always win).
    """
    prompt = workflow.to_dict()
    _expand_all(prompt, frame)
    if image_value is not None:
        prompt[workflow.image_loader(loader)]["inputs"]["image"] = image_value
    _apply_overrides(workflow, prompt, overrides, frame)
    _set_prefix(workflow, prompt, output_node, output_prefix)
    return prompt


def _new_ids(existing: Iterable[str], count: int) -> list[str]:
    """Fresh numeric ids above every numeric id in use (API exports use "1", "2"...)."""
    taken = set(existing)
    numbers = [int(node_id) for node_id in taken if node_id.isdigit()]
    next_id = max(numbers, default=0) + 1  # pragma: no mutate
    ids = []
    while len(ids) < count:
        if str(next_id) not in taken:
            ids.append(str(next_id))
        next_id += 1
    return ids


def build_batch_prompt(
    workflow: Workflow,
    frames: Any,
    *,
    image_values: Sequence[str],
    overrides: Iterable[Union[Override, str]] = (),
    output_prefix: Optional[str] = None,
    loader: Optional[NodeRef] = None,
    output_node: Optional[NodeRef] = None,
) -> dict[str, Any]:
    """One prompt for a whole chunk (temporal workflows); ``workflow`` is not changed.

    ``frames`` are the rendered frames (a sequence, or a ``Chunk`` whose ``all_frames`` is used),
    ``image_values`` one per frame in the same order. The loader becomes one ``LoadImage`` per
    frame (the original keeps the first, copies get fresh ids) joined by a chain of core
    ``ImageBatch`` nodes, ``ImageBatch(ImageBatch(a, b), c)``..., and every link to the loader's
    IMAGE output now comes from the last batch node. A link to its MASK output is refused:
    core ComfyUI has no node to batch masks. ``{frame}`` tokens expand to the first frame.
    """
    rendered = tuple(getattr(frames, "all_frames", frames))
    if not rendered:
        raise WorkflowError("a batch prompt needs at least one frame")
    if len(image_values) != len(rendered):
        raise WorkflowError(f"{len(image_values)} images given for {len(rendered)} frames")
    loader_id = workflow.image_loader(loader)
    for node_id, node in workflow.nodes.items():
        for name, value in node["inputs"].items():
            if _is_link(value) and str(value[0]) == loader_id and value[1] != 0:
                raise WorkflowError(
                    f"node {workflow.describe(node_id)} input '{name}' uses output {value[1]} "
                    f"(MASK) of loader {workflow.describe(loader_id)}; batch mode can only batch "
                    "the IMAGE output: use per-frame mode",
                    node_id=node_id,
                )

    prompt = workflow.to_dict()
    _expand_all(prompt, rendered[0])
    template = prompt[loader_id]
    template["inputs"]["image"] = image_values[0]
    count = len(rendered)
    new_ids = _new_ids(prompt, 2 * (count - 1))  # pragma: no mutate
    loader_ids, batch_ids = [loader_id, *new_ids[: count - 1]], new_ids[count - 1 :]
    title = workflow.title(loader_id) or LOADER_CLASS
    for node_id, frame, value in zip(loader_ids[1:], rendered[1:], image_values[1:]):
        node = copy.deepcopy(template)
        node["inputs"]["image"] = value
        node["_meta"] = {"title": f"{title} [{frame}]"}
        prompt[node_id] = node

    if batch_ids:
        consumers = [
            (inputs, name)
            for inputs in (node["inputs"] for node in prompt.values())
            for name, value in inputs.items()
            if _is_link(value) and str(value[0]) == loader_id and value[1] == 0
        ]
        previous = loader_id
        for batch_id, source in zip(batch_ids, loader_ids[1:]):
            prompt[batch_id] = {
                "class_type": BATCH_CLASS,
                "inputs": {"image1": [previous, 0], "image2": [source, 0]},
                "_meta": {"title": f"comfy_cluster batch {batch_id}"},
            }
            previous = batch_id
        for inputs, name in consumers:
            inputs[name] = [previous, 0]

    _apply_overrides(workflow, prompt, overrides, rendered[0])
    _set_prefix(workflow, prompt, output_node, output_prefix)
    return prompt


def build_sequence_prompt(
    workflow: Workflow,
    loader_ref: NodeRef,
    first_index: int,
    count: int,
    *,
    directory: Optional[str] = None,
    frame: Optional[int] = None,
    overrides: Iterable[Union[Override, str]] = (),
    output_prefix: Optional[str] = None,
    output_node: Optional[NodeRef] = None,
) -> dict[str, Any]:
    """One prompt per chunk for a loader that reads an image sequence itself (shared storage).

    Sets ``skip_first_images=first_index`` (0-based position in the directory's sorted listing)
    and ``image_load_cap=count`` on the named node (VideoHelperSuite ``VHS_LoadImagesPath``
    style), and ``directory`` when given. ``{frame}`` tokens expand to ``frame`` (the chunk's
    first rendered frame); with ``frame=None`` they are left as written.
    """
    for name, value, minimum in (("first_index", first_index, 0), ("count", count, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise WorkflowError(f"{name} must be a whole number >= {minimum}, not {value!r}")
    loader_id = workflow.resolve(loader_ref)
    inputs_needed = SEQUENCE_INPUTS + (("directory",) if directory is not None else ())
    inputs = workflow.nodes[loader_id]["inputs"]
    missing = [name for name in inputs_needed if name not in inputs]
    if missing:
        raise WorkflowError(
            f"node {workflow.describe(loader_id)} is not a sequence loader: it has no "
            f"{', '.join(repr(m) for m in missing)} input "
            "(expected VHS_LoadImagesPath-style inputs)",
            node_id=loader_id,
        )
    prompt = workflow.to_dict()
    if frame is not None:
        _expand_all(prompt, frame)
    target = prompt[loader_id]["inputs"]
    target["skip_first_images"] = first_index
    target["image_load_cap"] = count
    if directory is not None:
        target["directory"] = directory
    _apply_overrides(workflow, prompt, overrides, frame)
    _set_prefix(workflow, prompt, output_node, output_prefix)
    return prompt


def map_batch_outputs(
    images: Sequence[Any], frames_rendered: Sequence[int], frames_delivered: Iterable[int]
) -> dict[int, Any]:
    """Pair a batch's output images with frames, in order, and drop the handles.

    Raises :class:`WorkflowError` when the count differs from the frames rendered (the workflow
    changed the batch length, so images cannot be matched to frames) or a delivered frame was
    not rendered.
    """
    rendered = list(frames_rendered)
    if len(images) != len(rendered):
        raise WorkflowError(
            f"the workflow returned {len(images)} images for {len(rendered)} frames; "
            "batch mode needs exactly one output image per input frame"
        )
    by_frame = dict(zip(rendered, images))
    delivered = list(frames_delivered)
    absent = [f for f in delivered if f not in by_frame]
    if absent:
        raise WorkflowError(f"frames {absent} are delivered but were not rendered")
    return {frame: by_frame[frame] for frame in delivered}
