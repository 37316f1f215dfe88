"""Model nodes (checkpoints, CLIP, VAE, sampler, LoRA) and the server's model memory.

The node infos are ComfyUI 0.3.64's own (``sim/data/object_info_models.json``); the file lists
(``ckpt_name``, ``lora_name``) are filled per request from ``SimOptions.models`` / ``loras``, as
the real server fills them from its folders, so a name it lacks is the real 400
``value_not_in_list``.

Values are stand-ins that keep outputs checkable: MODEL / CLIP / VAE are small dicts naming the
checkpoint (and LoRAs), CONDITIONING is ``[[text, {}]]``, LATENT is ``{"samples": IMAGE}`` at
pixel size. ``VAEEncode`` and ``VAEDecode`` pass pixels through, ``KSampler`` inverts them (a
deterministic transform: img2img output = 1 - input) while sending one ``progress`` per step.

``ModelMemory`` is the server's RAM/VRAM: an LRU of ``models_in_memory`` checkpoints. Loading one
that is not in memory costs ``load_seconds`` (disk-bound, not scaled by speed) and evicts the
least recently used one when full.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

from . import images as im
from .nodes import NodeContext, NodeDef, NodeResult

#: Node classes whose infos come from ``object_info_models.json``.
MODEL_NODES = (
    "CheckpointLoaderSimple",
    "CLIPTextEncode",
    "VAEEncode",
    "VAEDecode",
    "EmptyLatentImage",
    "KSampler",
    "LoraLoader",
)
#: The client id of the other artist whose prompts share a ``foreign_load`` server.
FOREIGN_CLIENT_ID = "sim-foreign-client"


class ModelMemory:
    """Which checkpoints a server holds, and how often it loaded each (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded: OrderedDict[str, None] = OrderedDict()
        self._loads: dict[str, int] = {}
        #: (monotonic time, name) of every load, oldest first.
        self.events: list[tuple[float, str]] = []

    def use(self, name: str, capacity: int) -> bool:
        """Mark ``name`` as used; True when it had to be loaded (evicting beyond ``capacity``)."""
        with self._lock:
            if name in self._loaded:
                self._loaded.move_to_end(name)
                return False
            self._loaded[name] = None
            while len(self._loaded) > max(1, capacity):
                self._loaded.popitem(last=False)
            self._loads[name] = self._loads.get(name, 0) + 1
            self.events.append((time.monotonic(), name))
            return True

    def clear(self) -> None:
        """``POST /free {"unload_models": true}``: nothing stays in memory."""
        with self._lock:
            self._loaded.clear()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "loaded": list(self._loaded),
                "loads": sum(self._loads.values()),
                "loads_by_model": dict(self._loads),
            }


def recorded_infos() -> dict[str, Any]:
    data = Path(__file__).with_name("data") / "object_info_models.json"
    with open(data, encoding="utf-8") as fh:
        return json.load(fh)


def with_files(
    classes: Mapping[str, NodeDef], models: tuple[str, ...], loras: tuple[str, ...]
) -> dict[str, NodeDef]:
    """``classes`` with the loaders' file lists set to ``models`` / ``loras``."""
    out = dict(classes)
    for cls, field, files in (
        ("CheckpointLoaderSimple", "ckpt_name", models),
        ("LoraLoader", "lora_name", loras),
    ):
        node = out.get(cls)
        if node is None:
            continue
        info = copy.deepcopy(dict(node.info))
        info["input"]["required"][field][0] = list(files)
        out[cls] = NodeDef(
            info=info,
            run=node.run,
            is_changed=node.is_changed,
            validate=node.validate,
            validated_inputs=node.validated_inputs,
            always_run=node.always_run,
            own_timing=node.own_timing,
        )
    return out


# --- node bodies -----------------------------------------------------------------------------


def _checkpoint(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    name = a["ckpt_name"]
    if ctx.load_checkpoint is not None:
        ctx.load_checkpoint(name)
    model = {"ckpt": name, "loras": []}
    return (model, dict(model), {"ckpt": name}), None


def _lora(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    lora = [a["lora_name"], a["strength_model"], a["strength_clip"]]
    model = {**a["model"], "loras": [*a["model"].get("loras", []), lora]}
    clip = {**a["clip"], "loras": [*a["clip"].get("loras", []), lora]}
    return (model, clip), None


def _encode_text(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    return ([[a["text"], {"clip": a["clip"].get("ckpt")}]],), None


def _vae_encode(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    return ({"samples": list(a["pixels"])},), None


def _vae_decode(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    return (list(a["samples"]["samples"]),), None


def _empty_latent(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    frame = im.solid(a["width"], a["height"], 0)
    return ({"samples": [frame] * a["batch_size"]},), None


def _ksampler(ctx: NodeContext, a: dict[str, Any]) -> NodeResult:
    """Invert the latent's pixels (first, so the pixel work is inside the node's time), then
    spend ``node_seconds`` over ``steps`` progress messages."""
    samples = [im.invert(f) for f in a["latent_image"]["samples"]]
    steps = int(a["steps"])
    for step in range(steps):
        ctx.work(ctx.node_seconds / steps)
        ctx.progress(step + 1, steps, None)
    return ({"samples": samples},), None


def model_nodes() -> dict[str, NodeDef]:
    """Fresh ``{class_name: NodeDef}`` for the model nodes (file lists empty until filled)."""
    info = recorded_infos()
    bodies: dict[str, Callable[[NodeContext, dict[str, Any]], NodeResult]] = {
        "CheckpointLoaderSimple": _checkpoint,
        "CLIPTextEncode": _encode_text,
        "VAEEncode": _vae_encode,
        "VAEDecode": _vae_decode,
        "EmptyLatentImage": _empty_latent,
        "KSampler": _ksampler,
        "LoraLoader": _lora,
    }
    return {
        name: NodeDef(info=info[name], run=bodies[name], own_timing=name == "KSampler")
        for name in MODEL_NODES
    }


def foreign_prompt(ckpt_name: str, seed: int) -> dict[str, Any]:
    """Another artist's txt2img prompt: its own checkpoint, a new seed each time (never cached)."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
        "5": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": 16, "height": 16, "batch_size": 1},
        },
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a forest", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": seed,
                "steps": 4,
                "cfg": 7.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
    }


__all__ = [
    "FOREIGN_CLIENT_ID",
    "MODEL_NODES",
    "ModelMemory",
    "foreign_prompt",
    "model_nodes",
    "with_files",
]
