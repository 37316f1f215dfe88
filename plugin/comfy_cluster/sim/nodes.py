"""The sim's node classes: ComfyUI's input names and behaviour on real pixels (see images.py).

``/object_info`` entries come from the recorded subset shipped in ``sim/data/object_info.json``;
test-only nodes (``Sim*``) describe themselves here. ``build_registry()`` makes a fresh mapping
per server so nothing is shared between servers.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from PIL import Image, ImageOps, ImageSequence
from PIL.PngImagePlugin import PngInfo

from . import images as im


class NodeFailure(Exception):
    """Raised by a node at run time; becomes ``execution_error`` (exception_type 'Exception')."""


class Interrupted(Exception):
    """Raised when /interrupt takes effect at a node start or progress update."""


@dataclass
class NodeContext:
    """What a running node may touch. Methods are called on the executor's work thread."""

    node_id: str
    prompt: Mapping[str, Any]
    extra_pnginfo: Optional[Mapping[str, Any]]
    input_dir: Path
    output_dir: Path
    temp_dir: Path
    default_steps: int
    node_seconds: float
    #: progress(value, max, preview_png_bytes_or_None); raises Interrupted when interrupted.
    progress: Callable[[int, int, Optional[bytes]], None]
    #: send_text(text): the binary TEXT frame (broadcast, as send_progress_text does).
    send_text: Callable[[str], None]
    #: work(seconds_at_speed_1): books the scaled time on the prompt clock and sleeps until it is
    #: due (the node's own work so far included); raises if the server stops.
    work: Callable[[float], None]
    random_letters: Callable[[int], str]
    #: load_checkpoint(name): marks the checkpoint used, booking its load time when not in memory.
    load_checkpoint: Optional[Callable[[str], None]] = None


NodeResult = tuple[tuple[Any, ...], Optional[dict[str, Any]]]


@dataclass(frozen=True)
class NodeDef:
    """One node class: its /object_info entry and what it does."""

    info: Mapping[str, Any]
    run: Callable[[NodeContext, dict[str, Any]], NodeResult]
    #: IS_CHANGED: a value folded into the cache signature (None: not defined).
    is_changed: Optional[Callable[[NodeContext, dict[str, Any]], Any]] = None
    #: VALIDATE_INPUTS for ``validated_inputs``: returns True or an error string.
    validate: Optional[Callable[[dict[str, Any], Dirs], Any]] = None
    validated_inputs: tuple[str, ...] = ()
    #: Never a cache hit (SaveImageWebsocket's IS_CHANGED returns time.time()).
    always_run: bool = False
    #: The node spends ``node_seconds`` itself (over its progress steps).
    own_timing: bool = False

    @property
    def name(self) -> str:
        return str(self.info["name"])

    @property
    def output_node(self) -> bool:
        return bool(self.info.get("output_node"))

    @property
    def return_types(self) -> list[Any]:
        return list(self.info.get("output", []))


@dataclass(frozen=True)
class Dirs:
    input_dir: Path
    output_dir: Path
    temp_dir: Path

    def by_type(self, kind: str) -> Optional[Path]:
        return {"input": self.input_dir, "output": self.output_dir, "temp": self.temp_dir}.get(kind)

    def annotated(self, name: str, default: str = "input") -> tuple[str, Path]:
        """folder_paths.annotated_filepath: a ' [output]' style suffix picks the folder."""
        for kind in ("output", "input", "temp"):
            suffix = f"[{kind}]"
            if name.endswith(suffix):
                return name[: -len(suffix)].strip(), self.by_type(kind)  # type: ignore[return-value]
        return name, self.by_type(default)  # type: ignore[return-value]

    def load_path(self, name: str) -> Optional[Path]:
        """The file LoadImage reads, or None when missing or outside the sim's folders."""
        rel, base = self.annotated(name)
        path = (base / rel).resolve()
        base = base.resolve()
        if os.path.commonpath([str(base), str(path)]) != str(base) or not path.is_file():
            return None
        return path


def _recorded_info() -> dict[str, Any]:
    data = Path(__file__).with_name("data") / "object_info.json"
    with open(data, encoding="utf-8") as fh:
        return json.load(fh)


# --- node bodies -----------------------------------------------------------------------------


def _empty_image(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    frame = im.solid(a["width"], a["height"], a["color"])
    return ([frame] * a["batch_size"],), None


def _load_image(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    dirs = Dirs(ctx.input_dir, ctx.output_dir, ctx.temp_dir)
    path = dirs.load_path(a["image"])
    if path is None:
        raise FileNotFoundError(f"Invalid image file: {a['image']}")
    frames: im.ImageBatch = []
    masks: im.MaskBatch = []
    with Image.open(path) as img:
        size = None
        for page in ImageSequence.Iterator(img):
            page = ImageOps.exif_transpose(page)
            if page.mode == "I":
                page = page.point(lambda v: v * (1 / 255))
            rgb = page.convert("RGB")
            if size is None:
                size = rgb.size
            if rgb.size != size:
                continue
            frames.append(im.from_pil(rgb))
            if "A" in page.getbands():
                masks.append(im.mask_from_alpha(page.getchannel("A")))
            elif page.mode == "P" and "transparency" in page.info:
                masks.append(im.mask_from_alpha(page.convert("RGBA").getchannel("A")))
            else:
                masks.append(im.empty_mask())
        if img.format == "MPO":
            frames, masks = frames[:1], masks[:1]
    return (frames, masks), None


def _load_image_changed(ctx: NodeContext, a: dict[str, Any]) -> Any:
    path = Dirs(ctx.input_dir, ctx.output_dir, ctx.temp_dir).load_path(a["image"])
    if path is None:
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _load_image_validate(a: dict[str, Any], dirs: Dirs) -> Any:
    if dirs.load_path(str(a.get("image"))) is None:
        return f"Invalid image file: {a.get('image')}"
    return True


def _invert(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    return ([im.invert(f) for f in a["image"]],), None


def _scale(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    batch = a["image"]
    width, height = a["width"], a["height"]
    if width == 0 and height == 0:
        return (batch,), None
    w0, h0 = im.size_of(batch)
    if width == 0:
        width = max(1, round(w0 * height / h0))
    elif height == 0:
        height = max(1, round(h0 * width / w0))
    out = [im.upscale(f, width, height, a["upscale_method"], a["crop"]) for f in batch]
    return (out,), None


def _scale_by(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    w0, h0 = im.size_of(a["image"])
    width, height = round(w0 * a["scale_by"]), round(h0 * a["scale_by"])
    out = [im.upscale(f, width, height, a["upscale_method"], "disabled") for f in a["image"]]
    return (out,), None


def _blur(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    return ([im.blur(f, a["blur_radius"], a["sigma"]) for f in a["image"]],), None


def _add_noise(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    out = [im.add_noise(f, a["seed"] + i, a["strength"]) for i, f in enumerate(a["image"])]
    return (out,), None


def _batch(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    one, two = a["image1"], a["image2"]
    w, h = im.size_of(one)
    if im.size_of(two) != (w, h):
        two = [im.upscale(f, w, h, "bilinear", "center") for f in two]
    return (list(one) + list(two),), None


def _from_batch(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    batch = a["image"]
    index = min(len(batch) - 1, a["batch_index"])
    length = min(len(batch) - index, a["length"])
    return (list(batch[index : index + length]),), None


def _repeat_batch(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    return (list(a["image"]) * a["amount"],), None


def _crop(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    w0, h0 = im.size_of(a["image"])
    x, y = min(a["x"], w0 - 1), min(a["y"], h0 - 1)
    box = (x, y, min(x + a["width"], w0), min(y + a["height"], h0))
    return ([im.map_frame(f, lambda c: c.crop(box)) for f in a["image"]],), None


def _image_size(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    width, height = im.size_of(a["image"])
    batch = len(a["image"])
    ctx.send_text(f"width: {width}, height: {height}\n batch size: {batch}")
    return (width, height, batch), None


def _preview_any(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    value = a.get("source")
    if isinstance(value, str):
        text = value
    elif isinstance(value, (int, float, bool)):
        text = str(value)
    else:
        try:
            text = json.dumps(value, indent=4)
        except (TypeError, ValueError):
            text = str(value)
    return (), {"text": [text]}


def save_path(prefix: str, output_dir: Path, width: int, height: int) -> tuple[Path, str, int, str]:
    """folder_paths.get_save_image_path: (folder, filename, next counter, subfolder).

    Raises ``NodeFailure`` with ComfyUI's message when the prefix escapes the output folder.
    """
    prefix = prefix.replace("%width%", str(width)).replace("%height%", str(height))
    norm = os.path.normpath(prefix)
    subfolder = os.path.dirname(norm)
    filename = os.path.basename(norm)
    out_dir = str(output_dir)
    full = os.path.join(out_dir, subfolder)
    common = os.path.commonpath((out_dir, os.path.abspath(full)))
    if common != out_dir:
        raise NodeFailure(
            "**** ERROR: Saving image outside the output folder is not allowed."
            + "\n full_output_folder: "
            + os.path.abspath(full)
            + "\n         output_dir: "
            + out_dir
            + "\n         commonpath: "
            + common
        )
    counter = 1
    try:
        found = []
        for name in os.listdir(full):
            head, rest = name[: len(filename) + 1], name[len(filename) + 1 :]
            if os.path.normcase(head[:-1]) == os.path.normcase(filename) and head[-1:] == "_":
                try:
                    found.append(int(rest.split("_")[0]))
                except ValueError:
                    found.append(0)
        if found:
            counter = max(found) + 1
    except FileNotFoundError:
        os.makedirs(full, exist_ok=True)
    return Path(full), filename, counter, subfolder


def _save(ctx: NodeContext, a: dict[str, Any], *, temp: bool) -> NodeResult:
    batch = a["images"]
    base = ctx.temp_dir if temp else ctx.output_dir
    prefix = a.get("filename_prefix", "ComfyUI")
    if temp:
        prefix = "ComfyUI" + "_temp_" + ctx.random_letters(5)
    width, height = im.size_of(batch)
    folder, filename, counter, subfolder = save_path(prefix, base, width, height)
    results = []
    for number, frame in enumerate(batch):
        meta = PngInfo()
        meta.add_text("prompt", json.dumps(ctx.prompt))
        for key, value in (ctx.extra_pnginfo or {}).items():
            meta.add_text(key, json.dumps(value))
        name = f"{filename.replace('%batch_num%', str(number))}_{counter:05}_.png"
        im.to_pil(frame).save(folder / name, pnginfo=meta, compress_level=1 if temp else 4)
        results.append(
            {"filename": name, "subfolder": subfolder, "type": "temp" if temp else "output"}
        )
        counter += 1
    return (), {"images": results}


def _save_ws(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    batch = a["images"]
    for step, frame in enumerate(batch):
        ctx.progress(step, len(batch), im.encode_png(im.to_pil(frame), compress_level=1))
    return (), None


def _slow_sampler(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    steps = a.get("steps") or ctx.default_steps
    per_step = a.get("seconds_per_step") or (ctx.node_seconds / steps)
    for step in range(steps):
        ctx.work(per_step)
        ctx.progress(step + 1, steps, None)
    return (a["image"],), None


def _sim_fail(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    raise NodeFailure(str(a.get("message") or "SimFail: failing on purpose"))


SIM_NODES_INFO: tuple[tuple[str, Mapping[str, Any]], ...] = (
    (
        "SimSlowSampler",
        {
            "input": {
                "required": {
                    "image": ["IMAGE"],
                    "seed": ["INT", {"default": 0, "min": 0, "max": 18446744073709551615}],
                },
                "optional": {
                    "steps": ["INT", {"default": 0, "min": 0, "max": 10000}],
                    "seconds_per_step": ["FLOAT", {"default": 0.0, "min": 0.0, "max": 3600.0}],
                },
            },
            "input_order": {
                "required": ["image", "seed"],
                "optional": ["steps", "seconds_per_step"],
            },
            "output": ["IMAGE"],
            "output_is_list": [False],
            "output_name": ["IMAGE"],
            "name": "SimSlowSampler",
            "display_name": "Sim Slow Sampler (test only)",
            "description": "TEST ONLY (comfy_cluster sim): passes its IMAGE through, sending "
            "'progress' over steps (0 = the server's default) that together take node_seconds.",
            "python_module": "comfy_cluster.sim.nodes",
            "category": "sim/testing",
            "output_node": False,
        },
    ),
    (
        "SimFail",
        {
            "input": {
                "required": {"image": ["IMAGE"]},
                "optional": {"message": ["STRING", {"default": ""}]},
            },
            "input_order": {"required": ["image"], "optional": ["message"]},
            "output": ["IMAGE"],
            "output_is_list": [False],
            "output_name": ["IMAGE"],
            "name": "SimFail",
            "display_name": "Sim Fail (test only)",
            "description": "TEST ONLY (comfy_cluster sim): always raises, giving execution_error.",
            "python_module": "comfy_cluster.sim.nodes",
            "category": "sim/testing",
            "output_node": False,
        },
    ),
)


def build_registry() -> dict[str, NodeDef]:
    """Fresh ``{class_name: NodeDef}`` for one server (recorded infos + the Sim* nodes)."""
    info = _recorded_info()
    for name, entry in SIM_NODES_INFO:
        info[name] = copy.deepcopy(dict(entry))

    def d(name: str, run: Callable[..., NodeResult], **kw: Any) -> tuple[str, NodeDef]:
        return name, NodeDef(info=info[name], run=run, **kw)

    return dict(
        [
            d("EmptyImage", _empty_image),
            d(
                "LoadImage",
                _load_image,
                is_changed=_load_image_changed,
                validate=_load_image_validate,
                validated_inputs=("image",),
            ),
            d("ImageInvert", _invert),
            d("ImageScale", _scale),
            d("ImageScaleBy", _scale_by),
            d("ImageBlur", _blur),
            d("ImageAddNoise", _add_noise),
            d("ImageBatch", _batch),
            d("ImageFromBatch", _from_batch),
            d("RepeatImageBatch", _repeat_batch),
            d("ImageCrop", _crop),
            d("GetImageSize", _image_size),
            d("PreviewAny", _preview_any),
            d("SaveImage", lambda ctx, a: _save(ctx, a, temp=False)),
            d("PreviewImage", lambda ctx, a: _save(ctx, a, temp=True)),
            d("SaveImageWebsocket", _save_ws, always_run=True),
            d("SimSlowSampler", _slow_sampler, own_timing=True),
            d("SimFail", _sim_fail),
        ]
    )


def random_letters(rng: Any, n: int) -> str:
    """PreviewImage's prefix letters (ComfyUI's alphabet, typo included)."""
    alphabet = "abcdefghijklmnopqrstupvxyz"
    return "".join(rng.choice(alphabet) for _ in range(n))


__all__ = ["Dirs", "Interrupted", "NodeContext", "NodeDef", "NodeFailure", "build_registry"]
