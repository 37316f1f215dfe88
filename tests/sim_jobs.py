"""Helpers for engine tests that render on simulated servers started on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

from comfy_cluster.core.server import ServerConfig
from comfy_cluster.core.transfer import frame_path
from comfy_cluster.sim.harness import SimServer, make_test_image


def configs(sims: list[SimServer], max_in_flight: int = 2) -> list[ServerConfig]:
    """One server entry per sim, named as the sim."""
    return [
        ServerConfig(
            name=s.options.name, host="127.0.0.1", port=s.port, max_in_flight=max_in_flight
        )
        for s in sims
    ]


def inputs(folder: Path, frames: int, size: tuple[int, int] = (8, 8)) -> str:
    """Input frames 1..``frames`` in ``folder``, each a different colour; their pattern."""
    pattern = str(folder / "in.####.png")
    for f in range(1, frames + 1):
        make_test_image(frame_path(pattern, f), size, (f, 2 * f, 100))
    return pattern
