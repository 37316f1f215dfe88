"""``comfy-cluster demo``: see the cluster work without any ComfyUI server of your own.

Starts three simulated ComfyUI servers on free 127.0.0.1 ports (two fast, one at 0.4x speed; one
fast server dies abruptly about half way through its share), draws a short input sequence with
Pillow (a moving gradient with the frame number), renders it with the shipped
LoadImage -> ImageInvert -> SaveImage workflow (``sim/data/demo_workflow.json``) through the real
scheduler with live progress, and says where the frames are. Exit status as ``render``: 0 when
every frame is on disk.

It never reads the user's server configuration, and its servers are stopped on every exit path
(Ctrl-C and SIGTERM included). Needs the ``sim`` extra (aiohttp, Pillow).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any, Optional, TextIO

from comfy_cluster.commands.common import (
    ExitCode,
    add_command,
    missing_sim_extra,
    report_missing_sim_extra,
)

#: (name, speed) of the demo servers; the second one dies half way.
SERVERS = (("fast-a", 1.0), ("fast-b", 1.0), ("slow", 0.4))
DYING = "fast-b"
DEFAULT_FRAMES = 24
#: Seconds per node at speed 1: 3 nodes per frame, ~13 s for 24 frames on this cluster.
DEFAULT_NODE_SECONDS = 0.4
IMAGE_SIZE = (256, 144)

EXAMPLES = """
comfy-cluster demo
comfy-cluster demo --frames 48 --out /tmp/cluster-demo
comfy-cluster demo --json > demo-events.jsonl
"""


def register(subparsers: Any) -> None:
    """Add the ``demo`` sub-command to the CLI."""
    parser = add_command(
        subparsers,
        "demo",
        examples=EXAMPLES,
        help="render a short sequence on three local simulated servers (one dies half way)",
        description=(
            "Start three simulated ComfyUI servers on 127.0.0.1 (one slow, one that dies half "
            "way), make a short input sequence and render it across them with live progress. "
            "Uses no server configuration."
        ),
    )
    parser.add_argument(
        "--frames", type=int, default=DEFAULT_FRAMES, metavar="N", help="frames to render"
    )
    parser.add_argument(
        "--out",
        default="comfy_cluster_demo",
        metavar="DIR",
        help="folder for input/ and output/",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON event per line")
    parser.add_argument(
        "--node-seconds",
        type=float,
        default=DEFAULT_NODE_SECONDS,
        metavar="S",
        help="simulated seconds per node at full speed",
    )
    parser.set_defaults(func=run)


def run(
    args: argparse.Namespace, out: Optional[TextIO] = None, err: Optional[TextIO] = None
) -> int:
    """Start the sims, make the inputs, render, report; the sims are always stopped. Main thread."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    if args.frames < 1:
        print(f"comfy-cluster demo: --frames must be >= 1, not {args.frames}", file=err)
        return ExitCode.USAGE
    if args.node_seconds < 0:
        print("comfy-cluster demo: --node-seconds must be >= 0", file=err)
        return ExitCode.USAGE
    missing = missing_sim_extra()
    if missing:
        return report_missing_sim_extra("demo", missing, err)
    from comfy_cluster.sim.harness import start_sims, stop_all
    from comfy_cluster.sim.options import SimOptions

    root = Path(args.out).expanduser().absolute()
    input_pattern = str(root / "input" / "demo.####.png")
    output_pattern = str(root / "output" / "demo.####.png")
    make_inputs(input_pattern, args.frames)

    # The dying server takes about 1/2.4 of the frames; it dies half way through its share.
    share = args.frames * SERVERS[1][1] / sum(speed for _name, speed in SERVERS)
    die_after = max(1, int(share / 2))
    options = [
        SimOptions(
            name=name,
            speed=speed,
            node_seconds=args.node_seconds,
            die_after_prompts=die_after if name == DYING else None,
        )
        for name, speed in SERVERS
    ]

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = _install(signal.SIGTERM, on_term)
    sims: list[Any] = []
    try:
        sims = start_sims(len(options), options)
        return _render(args, sims, input_pattern, output_pattern, root, die_after, out, err)
    finally:
        stop_all(sims)
        _install(signal.SIGTERM, previous)


def _render(
    args: argparse.Namespace,
    sims: list[Any],
    input_pattern: str,
    output_pattern: str,
    root: Path,
    die_after: int,
    out: TextIO,
    err: TextIO,
) -> int:
    from comfy_cluster.commands.progress import make_view
    from comfy_cluster.commands.render import execute
    from comfy_cluster.core.engine.job import RenderJob
    from comfy_cluster.core.server import ServerConfig

    servers = [
        ServerConfig(name=sim.options.name, host="127.0.0.1", port=sim.port, source="demo")
        for sim in sims
    ]
    view = make_view(out, json_lines=bool(args.json))
    if not args.json:
        speeds = ", ".join(f"{s.options.name} x{s.options.speed:g} at {s.url}" for s in sims)
        view.write_line(f"demo servers: {speeds}")
        view.write_line(f"{DYING} will die after {die_after} prompt(s); its frames move on")
    job = RenderJob(
        workflow_path(),
        f"1-{args.frames}",
        output_pattern,
        input_pattern=input_pattern,
        existing="overwrite",
        strategy="fastest",
    )
    code = execute(job, servers, view, err=err)
    if not args.json:
        if code == ExitCode.OK:
            view.write_line(f"frames: {output_pattern} (inputs: {input_pattern})")
        else:
            view.write_line(f"demo did not finish; output so far under {root}")
    return code


def workflow_path() -> Path:
    """The demo workflow shipped as package data (LoadImage -> ImageInvert -> SaveImage)."""
    import comfy_cluster.sim

    return Path(comfy_cluster.sim.__file__).resolve().parent / "data" / "demo_workflow.json"


def make_inputs(pattern: str, frames: int) -> list[Path]:
    """Draw ``frames`` input frames: a gradient that moves, a bar that sweeps, the frame number."""
    from PIL import Image, ImageDraw

    from comfy_cluster.core.transfer import frame_path

    width, height = IMAGE_SIZE
    paths = []
    for frame in range(1, frames + 1):
        t = (frame - 1) / max(1, frames - 1)
        shift = int(t * width)
        img = Image.new("RGB", IMAGE_SIZE)
        px = img.load()
        for x in range(width):
            v = ((x + shift) * 255 // width) % 256
            for y in range(height):
                px[x, y] = (v, (y * 255) // height, 255 - v)
        draw = ImageDraw.Draw(img)
        bar = int(t * (width - 24))
        draw.rectangle((bar, height - 30, bar + 24, height - 10), fill=(255, 255, 255))
        draw.text((10, 10), f"frame {frame}", fill=(255, 255, 255))
        path = frame_path(pattern, frame)
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path)
        paths.append(path)
    return paths


def _install(signum: int, handler: Any) -> Any:
    """Set a signal handler when possible (only the main thread may); returns the previous one."""
    try:
        return signal.signal(signum, handler)
    except (ValueError, TypeError):
        return None
