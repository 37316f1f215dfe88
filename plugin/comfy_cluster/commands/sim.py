"""``comfy-cluster sim``: run one simulated ComfyUI server in the foreground (Ctrl-C stops it).

Two things a first try trips over are answered here rather than by a traceback or silence:
without the ``sim`` extra (aiohttp, Pillow) the command says in one line how to install it; and
nodes take :data:`DEFAULT_NODE_SECONDS` each unless told otherwise, so ``--speed`` alone has a
visible effect (with ``--node-seconds 0`` nodes take no time and ``--speed`` changes nothing,
which the command says).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any, Optional, TextIO

from comfy_cluster.commands.common import (
    ExitCode,
    add_command,
    missing_sim_extra,
    report_missing_sim_extra,
)

#: Seconds each executed node takes at speed 1: a three-node frame takes about a second, long
#: enough to watch progress and to see ``--speed`` act, short enough for trying things out.
DEFAULT_NODE_SECONDS = 0.3

EXAMPLES = """
comfy-cluster sim --port 8190
comfy-cluster sim --port 8191 --name slow --speed 0.5
comfy-cluster sim --port 8192 --node-seconds 0 --fail-node KSampler
comfy-cluster sim --port 8193 --die-after-prompts 3
comfy-cluster sim --port 8194 --models sd15.safetensors,sdxl.safetensors --load-seconds 10
comfy-cluster sim --port 8195 --warmup-seconds 20 --foreign-load 0.5 --foreign-seconds 2
"""


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "sim",
        examples=EXAMPLES,
        help="run a simulated ComfyUI server on 127.0.0.1 (tests, demos, benchmarks)",
        description=(
            "Run a ComfyUI-compatible simulator on 127.0.0.1 until Ctrl-C. Needs the sim extra "
            "(aiohttp, Pillow)."
        ),
    )
    parser.add_argument("--port", type=int, default=8188, help="port (0 = any free port)")
    parser.add_argument("--name", default="sim", help="label shown in /sim/state")
    parser.add_argument(
        "--root", default=None, help="folder for input/output/temp (default: a temporary folder)"
    )
    parser.add_argument(
        "--speed", type=float, default=1.0, help="all work takes 1/SPEED as long (0.5: half speed)"
    )
    parser.add_argument(
        "--node-seconds",
        type=float,
        default=DEFAULT_NODE_SECONDS,
        metavar="S",
        help="seconds each executed node takes at speed 1",
    )
    parser.add_argument(
        "--steps", type=int, default=4, help="progress steps of sampling-like nodes"
    )
    real = parser.add_argument_group("real cluster conditions")
    real.add_argument(
        "--models",
        default=None,
        metavar="NAME,...",
        help="checkpoint files the server has (default: sd15.safetensors and a few sim-*)",
    )
    real.add_argument("--loras", default=None, metavar="NAME,...", help="LoRA files it has")
    real.add_argument(
        "--load-seconds",
        type=float,
        default=0.0,
        metavar="S",
        help="loading a checkpoint not in memory takes S seconds (not scaled by --speed)",
    )
    real.add_argument(
        "--models-in-memory",
        type=int,
        default=1,
        metavar="N",
        help="checkpoints held in memory at once (LRU; loading another evicts)",
    )
    real.add_argument(
        "--warmup-seconds",
        type=float,
        default=0.0,
        metavar="S",
        help="the first prompt after start costs S more (not scaled by --speed)",
    )
    real.add_argument(
        "--foreign-load",
        type=float,
        default=0.0,
        metavar="F",
        help="another client's prompts take this share (0..1) of the busy time",
    )
    real.add_argument(
        "--foreign-seconds",
        type=float,
        default=2.0,
        metavar="S",
        help="seconds of work (at speed 1) of one foreign prompt",
    )
    faults = parser.add_argument_group("faults")
    faults.add_argument("--refuse-connections", action="store_true", help="refuse every connection")
    faults.add_argument(
        "--die-after-prompts",
        type=int,
        default=None,
        metavar="N",
        help="die abruptly when taking prompt N+1",
    )
    faults.add_argument(
        "--hang-prompts", action="store_true", help="accept prompts, then go silent"
    )
    faults.add_argument(
        "--drop-ws-after-events",
        type=int,
        default=None,
        metavar="N",
        help="reset the client's websocket after N events of a prompt",
    )
    faults.add_argument(
        "--fail-prompt-posts",
        type=int,
        default=0,
        metavar="N",
        help="answer 500 to the next N POST /prompt",
    )
    faults.add_argument(
        "--fail-node",
        default=None,
        metavar="CLASS_OR_ID",
        help="this node fails with execution_error",
    )
    faults.add_argument(
        "--upload-delay", type=float, default=0.0, metavar="S", help="seconds each upload waits"
    )
    faults.add_argument(
        "--missing-class",
        action="append",
        default=[],
        metavar="CLASS",
        help="pretend this node class is not installed (repeatable)",
    )
    faults.add_argument("--token", default=None, help="require 'Authorization: Bearer TOKEN'")
    parser.set_defaults(func=run)


def speed_warning(speed: float, node_seconds: float) -> Optional[str]:
    """Why ``--speed`` will change nothing, or None: only node time scales with the speed."""
    if node_seconds == 0 and speed != 1.0:
        return (
            f"--speed {speed:g} has no effect with --node-seconds 0 (nodes take no time); "
            "give --node-seconds a value to simulate slow work"
        )
    return None


def run(args: argparse.Namespace, err: Optional[TextIO] = None) -> int:
    from pathlib import Path

    err = sys.stderr if err is None else err
    missing = missing_sim_extra()
    if missing:
        return report_missing_sim_extra("sim", missing, err)
    from comfy_cluster.sim.harness import SimServer
    from comfy_cluster.sim.options import SimOptions

    warning = speed_warning(args.speed, args.node_seconds)
    if warning:
        print(f"comfy-cluster sim: warning: {warning}", file=err)

    lists = {}
    for name in ("models", "loras"):
        value = getattr(args, name, None)
        if value is not None:
            lists[name] = tuple(v.strip() for v in value.split(",") if v.strip())
    try:
        options = SimOptions(
            node_seconds=args.node_seconds,
            speed=args.speed,
            steps=args.steps,
            refuse_connections=args.refuse_connections,
            die_after_prompts=args.die_after_prompts,
            hang_prompts=args.hang_prompts,
            drop_ws_after_events=args.drop_ws_after_events,
            fail_prompt_posts=args.fail_prompt_posts,
            fail_node=args.fail_node,
            upload_delay=args.upload_delay,
            missing_classes=tuple(args.missing_class),
            token=args.token,
            name=args.name,
            load_seconds=args.load_seconds,
            models_in_memory=args.models_in_memory,
            warmup_seconds=args.warmup_seconds,
            foreign_load=args.foreign_load,
            foreign_seconds=args.foreign_seconds,
            **lists,
        )
    except ValueError as exc:  # --speed 0, --steps 0, ...
        print(f"comfy-cluster sim: {exc}", file=err)
        return ExitCode.USAGE
    server = SimServer(options, port=args.port, root=Path(args.root) if args.root else None)
    done = threading.Event()

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        server.start()
        print(
            f"comfy-cluster sim {options.name} listening on {server.url} "
            f"(folders under {server.root}); Ctrl-C stops it",
            flush=True,
        )
        while server.running:
            done.wait(0.2)  # short waits keep Ctrl-C responsive on every platform
        if server.died:
            print("sim died (die-after-prompts fault)", file=err)
            return ExitCode.FAILED
        return ExitCode.OK
    except KeyboardInterrupt:
        return ExitCode.OK
    finally:
        server.stop()
        signal.signal(signal.SIGTERM, previous)
        print("sim stopped", flush=True)
