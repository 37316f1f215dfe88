"""ComfyUI's IMAGE and MASK values on Pillow, with ComfyUI's float32 0..1 arithmetic.

An IMAGE is a batch: a list of ``Frame`` (three Pillow "F" images, one per channel, values 0..1,
all frames the same size). A MASK is a list of "F" images. Pillow's ImageMath does its arithmetic
in float32, like torch, so results match ComfyUI bit for bit where it matters: saving multiplies by
255 in float32 and *truncates* (an inverted 200 is 54, not 55).
"""

from __future__ import annotations

import math
import random
from typing import Any, Callable

from PIL import Image, ImageMath

Frame = tuple[Image.Image, Image.Image, Image.Image]
ImageBatch = list[Frame]
MaskBatch = list[Image.Image]

_RESAMPLE = {
    "nearest-exact": Image.NEAREST,
    "bilinear": Image.BILINEAR,
    "area": Image.BOX,
    "bicubic": Image.BICUBIC,
    "lanczos": Image.LANCZOS,
}


def fmath(fn: Callable[..., Any], **images: Image.Image) -> Image.Image:
    """Evaluate ``fn(**operands)`` with ImageMath (float32 per pixel) on any Pillow >= 9."""
    if hasattr(ImageMath, "lambda_eval"):
        out = ImageMath.lambda_eval(lambda args: fn(**{k: args[k] for k in images}), **images)
    else:  # Pillow < 10.3: eval() accepts a lambda-free expression only, so build one
        out = ImageMath.eval("fn(" + ",".join(f"{k}={k}" for k in images) + ")", fn=fn, **images)
    if out.mode != "F":
        out = out.convert("F")
    return out


def channel_from_u8(band: Image.Image) -> Image.Image:
    """uint8 band -> float32 v/255.0, as ``np.array(i).astype(np.float32) / 255.0``."""
    return fmath(lambda a: a / 255.0, a=band.convert("F"))


def channel_to_u8(chan: Image.Image) -> Image.Image:
    """float32 0..1 -> uint8 like ``np.clip(255. * i, 0, 255).astype(np.uint8)`` (truncates)."""
    return fmath(lambda a: a * 255.0, a=chan).convert("L")  # F->L clips and truncates


def from_pil(img: Image.Image) -> Frame:
    rgb = img.convert("RGB")
    r, g, b = rgb.split()
    return (channel_from_u8(r), channel_from_u8(g), channel_from_u8(b))


def to_pil(frame: Frame) -> Image.Image:
    return Image.merge("RGB", [channel_to_u8(c) for c in frame])


def size_of(batch: ImageBatch) -> tuple[int, int]:
    return batch[0][0].size


def solid(width: int, height: int, color: int) -> Frame:
    """EmptyImage's fill: each channel is ``((color >> shift) & 0xFF) / 0xFF`` in float32."""
    values = (((color >> 16) & 0xFF) / 0xFF, ((color >> 8) & 0xFF) / 0xFF, (color & 0xFF) / 0xFF)
    return tuple(Image.new("F", (width, height), v) for v in values)  # type: ignore[return-value]


def map_frame(frame: Frame, fn: Callable[[Image.Image], Image.Image]) -> Frame:
    return (fn(frame[0]), fn(frame[1]), fn(frame[2]))


def invert(frame: Frame) -> Frame:
    return map_frame(frame, lambda c: fmath(lambda a: 1.0 - a, a=c))


def resize(frame: Frame, width: int, height: int, method: str) -> Frame:
    if method == "lanczos":  # comfy.utils.lanczos goes through uint8 PIL images
        pil = to_pil(frame).resize((width, height), resample=Image.LANCZOS)
        return from_pil(pil)
    resample = _RESAMPLE.get(method, Image.BILINEAR)
    return map_frame(frame, lambda c: c.resize((width, height), resample=resample))


def upscale(frame: Frame, width: int, height: int, method: str, crop: str) -> Frame:
    """comfy.utils.common_upscale: optional centre crop to the new aspect, then resample."""
    old_w, old_h = frame[0].size
    if crop == "center" and old_h and height:
        old_aspect = old_w / old_h
        new_aspect = width / height
        x = y = 0
        if old_aspect > new_aspect:
            x = round((old_w - old_w * (new_aspect / old_aspect)) / 2)
        elif old_aspect < new_aspect:
            y = round((old_h - old_h * (old_aspect / new_aspect)) / 2)
        box = (x, y, old_w - x, old_h - y)
        frame = map_frame(frame, lambda c: c.crop(box))
    return resize(frame, width, height, method)


def _reflect_pad(chan: Image.Image, r: int) -> Image.Image:
    """torch 'reflect' padding (the edge pixel is not repeated)."""
    w, h = chan.size
    out = Image.new("F", (w + 2 * r, h + 2 * r))
    out.paste(chan, (r, r))

    def src(i: int, n: int) -> int:
        period = 2 * (n - 1) if n > 1 else 1
        i = abs(i) % period if n > 1 else 0
        return period - i if i >= n else i

    for k in range(1, r + 1):  # columns first, then rows (rows copy the padded columns)
        out.paste(chan.crop((src(-k, w), 0, src(-k, w) + 1, h)), (r - k, r))
        out.paste(chan.crop((src(w - 1 + k, w), 0, src(w - 1 + k, w) + 1, h)), (r + w - 1 + k, r))
    for k in range(1, r + 1):
        top, bottom = src(-k, h) + r, src(h - 1 + k, h) + r
        out.paste(out.crop((0, top, w + 2 * r, top + 1)), (0, r - k))
        out.paste(out.crop((0, bottom, w + 2 * r, bottom + 1)), (0, r + h - 1 + k))
    return out


def _kernel(radius: int, sigma: float) -> list[float]:
    """ImageBlur's gaussian on linspace(-1, 1, 2r+1); separable, so one axis suffices."""
    size = radius * 2 + 1
    xs = [-1.0 + 2.0 * i / (size - 1) for i in range(size)] if size > 1 else [0.0]
    g = [math.exp(-(x * x) / (2 * sigma * sigma)) for x in xs]
    total = sum(g)
    return [v / total for v in g]


def blur(frame: Frame, radius: int, sigma: float) -> Frame:
    if radius <= 0:
        return frame
    weights = _kernel(radius, sigma)

    def one(chan: Image.Image) -> Image.Image:
        w, h = chan.size
        padded = _reflect_pad(chan, radius)
        pw = w + 2 * radius
        rows = Image.new("F", (pw, h))
        for i, wt in enumerate(weights):  # vertical pass over the padded width
            part = padded.crop((0, i, pw, i + h))
            rows = fmath(lambda a, b, k=wt: a + b * k, a=rows, b=part)
        out = Image.new("F", (w, h))
        for i, wt in enumerate(weights):
            part = rows.crop((i, 0, i + w, h))
            out = fmath(lambda a, b, k=wt: a + b * k, a=out, b=part)
        return out

    return map_frame(frame, one)


def add_noise(frame: Frame, seed: int, strength: float) -> Frame:
    """clip(image + strength * N(0,1)); seeded noise (Irwin-Hall of 4 uniforms), not torch's."""
    rng = random.Random(seed)
    w, h = frame[0].size

    def noise() -> Image.Image:
        parts = [
            Image.frombytes(
                "L", (w, h), rng.getrandbits(8 * w * h).to_bytes(w * h, "little")
            ).convert("F")
            for _ in range(4)
        ]
        return fmath(
            lambda a, b, c, d: ((a + b + c + d) / 255.0 - 2.0) * math.sqrt(3.0),
            a=parts[0],
            b=parts[1],
            c=parts[2],
            d=parts[3],
        )

    return tuple(  # type: ignore[return-value]
        _clip01(fmath(lambda a, b: a + b * strength, a=c, b=noise())) for c in frame
    )


def _clip01(chan: Image.Image) -> Image.Image:
    """torch.clip(x, 0, 1) in float32."""
    lo, hi = chan.getextrema()
    if lo >= 0.0 and hi <= 1.0:
        return chan
    if hasattr(ImageMath, "lambda_eval"):
        out = ImageMath.lambda_eval(
            lambda args: args["min"](args["max"](args["a"], 0.0), 1.0), a=chan
        )
    else:
        out = ImageMath.eval("min(max(a, 0.0), 1.0)", a=chan)
    return out.convert("F")


def mask_from_alpha(alpha: Image.Image) -> Image.Image:
    """LoadImage's mask: ``1. - alpha/255``."""
    a = channel_from_u8(alpha)
    return fmath(lambda x: 1.0 - x, a=a)


def empty_mask() -> Image.Image:
    return Image.new("F", (64, 64), 0.0)


def encode_png(img: Image.Image, compress_level: int = 4) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()
