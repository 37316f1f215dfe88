"""``comfy-cluster render``: render a frame range of a workflow across the configured servers.

Everything that can be wrong with the arguments or the configuration is checked *before* a
server is contacted, and reported in one line naming the field, server, node or frames at fault
(exit status 2). Then the job runs on the engine's ``Scheduler`` while a
view from :mod:`comfy_cluster.commands.progress` shows its events. Exit status:

- 0: every requested frame is on disk;
- 1: the job could not be done: no server can run it (down, authentication refused, a node
  class or model missing), or frames failed on every server that tried them (the summary says
  why and which frames are missing);
- 2: the workflow, arguments or configuration are wrong: found before any server does work, or
  a prompt rejected by every server for the same validation reason (the node and input named);
- 130: interrupted (Ctrl-C): the job is cancelled and our prompts removed from every server
  that answers within 3 s; a server that does not is named (it may still hold a prompt of ours).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, TextIO

from comfy_cluster.commands.common import CommandIO, ExitCode, server_command
from comfy_cluster.core.server import ServerConfig

#: How long Ctrl-C waits for the cancel sweep (interrupt + delete on every server): the command
#: exits within 3 s, naming the servers that did not answer in time.
CANCEL_TIMEOUT = 2.5
#: A job that failed with one of these errors is a bad workflow, argument or configuration.
USAGE_ERRORS = frozenset(
    {"WorkflowInvalid", "WorkflowError", "ConfigError", "FrameRangeError", "OutputLocked"}
)
#: Seconds per health poll of one server.
HEALTH_TIMEOUT = 2.0

__all__ = ["UsageError", "build_job", "execute", "exit_code", "register", "run"]

EXAMPLES = """
comfy-cluster render shot.json --frames 1001-1100 --output out/shot.####.png
comfy-cluster render comp.json --frames 1-100 --input plates/bg.####.png \\
    --output out/comp.####.png --set KSampler.seed={frame}
comfy-cluster render shot.json --frames 1001-1100 --output out/shot.####.png --resume
comfy-cluster render shot.json --frames 1-10 --output out/t.####.png --server gpu1 --json
"""


class UsageError(ValueError):
    """Bad arguments or configuration: the message names what to fix (exit status 2)."""


def register(subparsers: Any) -> None:
    """Add the ``render`` sub-command to the CLI."""
    from comfy_cluster.commands.common import add_command

    parser = add_command(
        subparsers,
        "render",
        examples=EXAMPLES,
        help="render a frame range of a workflow on the cluster",
        description=(
            "Render WORKFLOW (ComfyUI API-format JSON) for every frame of --frames across the "
            "configured servers, writing --output. Exit status: 0 every frame on disk; 1 the job "
            "could not be done (no server can run it: down, authentication refused, a missing "
            "node class or model; or frames failed on every server that tried them); 2 the "
            "workflow, arguments or configuration are wrong (found before any server does work, "
            "or a prompt rejected by every server for the same validation reason); 130 "
            "interrupted."
        ),
    )
    parser.add_argument("workflow", metavar="WORKFLOW.json", help="workflow in API format")
    parser.add_argument(
        "--frames", required=True, metavar="RANGE", help="Nuke frame range: 1-100, 1-99x2, 5 7 9"
    )
    parser.add_argument(
        "--output", required=True, metavar="PATTERN", help="output frames, e.g. out/shot.####.png"
    )
    parser.add_argument(
        "--input", metavar="PATTERN", default=None, help="input frames bound to the image loader"
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=0,
        metavar="N",
        help="frames per chunk; 0 picks a size for you",
    )
    parser.add_argument(
        "--strategy",
        default="fastest",
        metavar="NAME",
        help="balancer: fastest, least_loaded, round_robin, priority",
    )
    parser.add_argument(
        "--server",
        action="append",
        default=None,
        metavar="NAME",
        help="only use this server (repeatable)",
    )
    parser.add_argument(
        "--mode",
        default="frame",
        metavar="frame|batch",
        help="frame: one prompt per frame; batch: one prompt per chunk",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        dest="overrides",
        metavar="NODE.INPUT=VALUE",
        help="override a node input (repeatable; VALUE may use {frame})",
    )
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument("--resume", action="store_true", help="skip frames already on disk")
    existing.add_argument("--overwrite", action="store_true", help="replace frames on disk")
    parser.add_argument(
        "--break-lock",
        action="store_true",
        help="write the output even if a lock file says another job holds it (a job on "
        "another host that is gone)",
    )
    parser.add_argument(
        "--order",
        default="sequential",
        choices=("sequential", "preview"),
        help="preview: a spread of the shot first (first, last, middle, then halving the gaps), "
        "so the look can be judged early",
    )
    parser.add_argument(
        "--wait-for-servers",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="how long a job waits for a server to come (back) up, at the start or when every "
        "server is down mid-job, before it fails",
    )
    parser.add_argument(
        "--no-speculation",
        action="store_true",
        help="never copy a slow server's last chunk to an idle one (by default an idle server "
        "runs a copy when it would clearly finish sooner; the first result wins)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="check every server (reachable, authenticated, node classes, models) and stop: "
        "no prompt is sent and nothing is written; exit 0 when at least one server can run it",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON event per line")
    parser.set_defaults(func=run)


@server_command("render")
def run(args: argparse.Namespace, io: CommandIO, servers: tuple[ServerConfig, ...]) -> int:
    """Check everything, render, summarise; returns the exit status. Main thread."""
    from comfy_cluster.commands.progress import make_view

    out, err = io.out, io.err
    if getattr(args, "check", False):
        return run_check(args, servers, out, err)
    try:
        job = build_job(args)
        servers = select_servers(servers, args.server)
    except UsageError as exc:
        print(f"comfy-cluster render: {exc}", file=err)
        return ExitCode.USAGE
    from comfy_cluster.commands.next_steps import frames_location
    from comfy_cluster.commands.override_warnings import ignored_override_warnings

    for warning in ignored_override_warnings(job):
        print(f"comfy-cluster render: warning: {warning}", file=err)
    view = make_view(out, json_lines=bool(args.json))
    wait = float(getattr(args, "wait_for_servers", 120.0))
    if not wait > 0:
        print("comfy-cluster render: --wait-for-servers must be > 0", file=err)
        return ExitCode.USAGE
    code = execute(
        job,
        servers,
        view,
        err=err,
        command_line=getattr(args, "command_line", None),
        scheduler_options={
            "no_server_timeout": wait,
            "speculation": not getattr(args, "no_speculation", False),
        },
    )
    where = frames_location(job.output_pattern, job.frame_range.frames)
    if where and not args.json and code != ExitCode.INTERRUPTED:
        view.write_line(where)
    return code


def run_check(args: argparse.Namespace, servers: Sequence[Any], out: TextIO, err: TextIO) -> int:
    """``--check``: one verdict line per server; sends no prompt and writes nothing."""
    from comfy_cluster.commands.check_view import check_exit_code, print_verdicts
    from comfy_cluster.core.client import ComfyClient
    from comfy_cluster.core.errors import WorkflowError
    from comfy_cluster.core.preflight import check_cluster
    from comfy_cluster.core.workflow import Workflow, validate_workflow

    path = Path(args.workflow)
    try:
        workflow = Workflow.load(path)
        targets = validate_workflow(workflow, needs_image_input=bool(args.input))
    except WorkflowError as exc:
        print(f"comfy-cluster render: {path}: {exc}", file=err)
        return ExitCode.USAGE
    # The loader's image is replaced by our uploads, so its placeholder value is not checked.
    skip = {(targets.image_loader, "image")} if targets.image_loader else set()
    try:
        allowed = select_servers(servers, args.server)
    except UsageError as exc:
        print(f"comfy-cluster render: {exc}", file=err)
        return ExitCode.USAGE
    verdicts = check_cluster(
        workflow,
        allowed,
        lambda server, timeouts: ComfyClient(server, timeouts=timeouts),
        timeout=HEALTH_TIMEOUT * 5,
        skip_inputs=skip,
    )
    print_verdicts(verdicts, out, color=bool(getattr(out, "isatty", lambda: False)()))
    return check_exit_code(verdicts)


def build_job(args: argparse.Namespace) -> Any:
    """A checked ``RenderJob`` from the arguments. Raises :class:`UsageError` naming the culprit."""
    from comfy_cluster.core.balance import STRATEGIES
    from comfy_cluster.core.engine.job import MODES, RenderJob
    from comfy_cluster.core.errors import ConfigError, FrameRangeError, WorkflowError
    from comfy_cluster.core.frames import FrameRange, frames_text
    from comfy_cluster.core.transfer import existing_frames, frame_path, frames_on_disk
    from comfy_cluster.core.workflow import (
        Override,
        Workflow,
        build_frame_prompt,
        validate_workflow,
    )

    try:
        frames = FrameRange.parse(args.frames)
    except FrameRangeError as exc:
        raise UsageError(f"--frames: {exc}") from None
    if args.mode not in MODES:
        raise UsageError(f"--mode must be one of {', '.join(MODES)}, not {args.mode!r}")
    if args.strategy not in STRATEGIES:
        raise UsageError(
            f"--strategy: unknown strategy {args.strategy!r}; choose one of {', '.join(STRATEGIES)}"
        )
    if args.chunk_size < 0:
        raise UsageError(f"--chunk-size must be >= 0, not {args.chunk_size}")
    for option, pattern in (("--output", args.output), ("--input", args.input)):
        if pattern is None:
            continue
        try:
            frame_path(pattern, frames.first)
        except ConfigError as exc:
            raise UsageError(f"{option}: {exc}") from None
    path = Path(args.workflow)
    if not path.is_file():
        raise UsageError(f"workflow file not found: {path}")
    try:
        workflow = Workflow.load(path)
        overrides = tuple(Override.parse(text) for text in args.overrides)
        targets = validate_workflow(workflow, needs_image_input=bool(args.input))
        # Build one prompt now so a bad --set (unknown node or input) fails before any work.
        build_frame_prompt(
            workflow,
            frames.first,
            image_value="check.png" if targets.image_loader else None,
            overrides=overrides,
            output_prefix="check",
            loader=targets.image_loader,
            output_node=targets.output_node,
        )
    except WorkflowError as exc:
        node = f" (node {exc.node_id})" if getattr(exc, "node_id", None) else ""
        raise UsageError(f"{path}: {exc}{node}") from None
    if args.input:
        present = set(frames_on_disk(args.input, frames.frames))
        missing = [f for f in frames.frames if f not in present]
        if missing:
            raise UsageError(
                f"--input: {len(missing)} input frame(s) missing ({frames_text(missing)} of "
                f"{args.input})"
            )
    _check_output(args, workflow, targets.output_node, frames)
    existing_mode = "resume" if args.resume else "overwrite" if args.overwrite else "error"
    if existing_mode == "error":
        found = existing_frames(args.output, frames.frames)
        if found:
            raise UsageError(
                f"{len(found)} output frame(s) already exist: {frames_text(found)} "
                f"({args.output}); use --resume to skip them or --overwrite to replace them"
            )
    try:
        return RenderJob(
            workflow,
            frames,
            args.output,
            input_pattern=args.input,
            mode=args.mode,
            chunk_size=args.chunk_size,
            strategy=args.strategy,
            servers=tuple(args.server) if args.server else None,
            overrides=overrides,
            existing=existing_mode,
            break_lock=bool(getattr(args, "break_lock", False)),
            order=getattr(args, "order", "sequential"),
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _check_output(args: argparse.Namespace, workflow: Any, output_node: str, frames: Any) -> None:
    """The output set-up, before any server works (exit 2): the save node's image kind
    against the extension, input and output naming the same files, a folder that cannot be
    written, and another live job holding the output (``--break-lock`` to take it anyway).
    The engine checks all of these again (and takes the lock), for Nuke and for races."""
    from comfy_cluster.core.errors import ConfigError, OutputLocked
    from comfy_cluster.core.output_checks import check_output_setup, probe_output_folder
    from comfy_cluster.core.output_lock import check_output_lock

    try:
        check_output_setup(
            workflow, output_node, args.output, args.input, frames.frames, frames.frames
        )
        probe_output_folder(args.output, frames.first)
        check_output_lock(args.output, break_lock=bool(getattr(args, "break_lock", False)))
    except (ConfigError, OutputLocked) as exc:
        raise UsageError(f"--output: {exc}") from None


def select_servers(servers: Sequence[Any], allow: Optional[Sequence[str]]) -> tuple[Any, ...]:
    """The configured servers the job may use; unknown or only-disabled names are usage errors."""
    known = {srv.name: srv for srv in servers}
    if allow:
        unknown = [name for name in allow if name not in known]
        if unknown:
            names = ", ".join(sorted(known)) or "none"
            raise UsageError(
                f"--server: unknown server(s) {', '.join(unknown)} (configured: {names})"
            )
        chosen = tuple(srv for srv in servers if srv.name in set(allow))
    else:
        chosen = tuple(servers)
    if not any(srv.enabled for srv in chosen):
        which = ", ".join(srv.name for srv in chosen) or "none configured"
        raise UsageError(f"no enabled server to render on ({which} disabled)")
    return chosen


def execute(
    job: Any,
    servers: Sequence[Any],
    view: Any,
    *,
    err: Optional[TextIO] = None,
    scheduler_options: Optional[Mapping[str, Any]] = None,
    health: bool = True,
    command_line: Optional[Sequence[str]] = None,
) -> int:
    """Run ``job`` on ``servers`` with ``view`` showing events; 0, 1, 2 or 130 (see module doc).

    With ``health`` a :class:`HealthMonitor` polls the servers during the job, so a server that
    is down (or lacks one of the workflow's node classes) gets no work instead of failing it.
    Ctrl-C (KeyboardInterrupt on this, the main, thread) cancels the job and waits up to
    ``CANCEL_TIMEOUT`` for the scheduler's sweep, names each server that may still hold a prompt
    of ours (it did not answer in time), then says how many frames are done and, given the
    ``command_line`` that started the job, how to finish it.
    """
    from comfy_cluster.core.engine.scheduler import Scheduler

    err = sys.stderr if err is None else err
    options = dict(scheduler_options or {})
    monitor = None
    if health and "health" not in options:
        monitor = start_health(servers, job)
        options["health"] = monitor
    scheduler = Scheduler(servers, **options)
    handle = None
    deadline = None
    try:
        handle = scheduler.start(job, view)
        result = None
        while result is None:
            result = handle.wait(0.2)  # short waits: Ctrl-C is handled promptly everywhere
    except KeyboardInterrupt:
        deadline = time.monotonic() + CANCEL_TIMEOUT
        holding: tuple[str, ...] = ()
        if handle is not None:
            handle.cancel()
            handle.wait(CANCEL_TIMEOUT)
            holding = handle.servers_holding_prompts()
        view.close()
        for name in holding:
            print(
                f"comfy-cluster: {name} did not answer our cancel in time and may still hold a "
                "prompt of ours: check its queue",
                file=err,
            )
        from comfy_cluster.commands.next_steps import interrupted_lines

        for line in interrupted_lines(job, getattr(view, "progress", None), command_line):
            print(line, file=err)
        return ExitCode.INTERRUPTED
    finally:
        view.close()
        left = CANCEL_TIMEOUT if deadline is None else max(0.0, deadline - time.monotonic())
        scheduler.close(timeout=left)
        if monitor is not None:
            monitor.close(timeout=min(1.0, left))
    view.summary(result)
    return exit_code(job, result)


def exit_code(job: Any, result: Any) -> int:
    """0 every requested frame on disk; 2 the workflow, arguments or configuration are wrong;
    1 otherwise (see the module doc)."""
    from comfy_cluster.core.transfer import frame_path

    missing = [f for f in job.frame_range.frames if not frame_path(job.output_pattern, f).is_file()]
    if result.ok and not missing:
        return ExitCode.OK
    error = getattr(result, "error", None)
    if getattr(error, "kind", None) in USAGE_ERRORS or getattr(result, "existing", ()):
        return ExitCode.USAGE
    return ExitCode.FAILED


def start_health(servers: Sequence[Any], job: Any) -> Any:
    """A started health monitor that knows the workflow's node classes; first poll awaited
    (bounded), so the first chunks already avoid servers that are down."""
    from comfy_cluster.core.health import HealthMonitor
    from comfy_cluster.core.workflow import Workflow

    monitor = HealthMonitor([srv for srv in servers if srv.enabled], timeout=HEALTH_TIMEOUT)
    try:
        monitor.require_classes(Workflow.load(job.workflow).classes())
        monitor.start()
        monitor.wait_for_poll(HEALTH_TIMEOUT * 1.5 + 0.5)
    except BaseException:
        monitor.close()
        raise
    return monitor
