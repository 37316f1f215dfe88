"""``comfy-cluster sim``: run one simulated ComfyUI server in the foreground (Ctrl-C stops it)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sim",
        help="run a simulated ComfyUI server on 127.0.0.1 (tests, demos, benchmarks)",
        description="Run a ComfyUI-compatible simulator on 127.0.0.1 until Ctrl-C.",
    )
    parser.add_argument("--port", type=int, default=8188, help="port (0 = any free port)")
    parser.add_argument("--name", default="sim", help="label shown in /sim/state")
    parser.add_argument("--root", default=None, help="folder for input/output/temp (default: temp)")
    parser.add_argument("--speed", type=float, default=1.0, help="all work scales as 1/SPEED")
    parser.add_argument("--node-seconds", type=float, default=0.0, help="seconds per executed node")
    parser.add_argument(
        "--steps", type=int, default=4, help="progress steps of sampling-like nodes"
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


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from comfy_cluster.sim.harness import SimServer
    from comfy_cluster.sim.options import SimOptions

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
    )
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
            print("sim died (die-after-prompts fault)", file=sys.stderr)
            return 1
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()
        signal.signal(signal.SIGTERM, previous)
        print("sim stopped", flush=True)
