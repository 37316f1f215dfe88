"""The tiny API-format workflows that tests and benchmarks share, declared once.

Each is a function so a test that edits its workflow never changes another test's.
"""

from __future__ import annotations

from typing import Any

Workflow = dict[str, Any]


def _save(source: str, prefix: str) -> dict[str, Any]:
    return {"class_type": "SaveImage", "inputs": {"images": [source, 0], "filename_prefix": prefix}}


def _empty_image() -> dict[str, Any]:
    return {
        "class_type": "EmptyImage",
        "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
    }


def invert_workflow(prefix: str = "x") -> Workflow:
    """A plate in, inverted, saved: the shape of a typical per-frame comp workflow."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "placeholder.png"}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": _save("2", prefix),
    }


def generated_workflow(prefix: str = "t") -> Workflow:
    """No input image: an 8x8 image made on the server, inverted, saved."""
    return {
        "1": _empty_image(),
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": _save("2", prefix),
    }


def slow_workflow(prefix: str = "slow") -> Workflow:
    """Like :func:`generated_workflow`, through the sim's slow sampler (progress, cancellable)."""
    return {
        "1": _empty_image(),
        "2": {"class_type": "SimSlowSampler", "inputs": {"image": ["1", 0], "seed": 0}},
        "3": _save("2", prefix),
    }
