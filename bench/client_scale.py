"""Benchmark what the client costs the artist's machine at scale (it runs inside Nuke).

Servers are ``comfy-cluster sim`` subprocesses on 127.0.0.1 (``python -m comfy_cluster.cli sim``),
so the CPU this process uses is the client's alone: the scheduler, its workers and websocket
listeners, and a health monitor started as ``comfy-cluster render`` starts it. Measured:

- ``cpu_fraction_30``: client CPU seconds / wall seconds while 30 servers render frames of about
  2 s each (three nodes of ``--node-seconds`` 0.667, the sims sleeping), over the steady part of
  the job (from the 30th frame written to the 30th before the last); ``cpu_ms_per_frame``: client
  CPU per frame written in that window. The same job run ``--rounds`` times: min/median/max.
- ``idle_ms_between_frames``: on each server, from the end of one of our prompts to the start of
  the next (``execution_success`` and ``execution_start`` timestamps in the sim's ``/history``);
  the median per server, then the median over the 30.
- ``plan_seconds_1m``: from ``Scheduler.start`` to the first ``POST /prompt`` for
  ``--frames 1-1000000`` into an empty folder; ``mem_bytes_per_frame``: the growth of this
  process's resident memory (``/proc/self/statm``) from before the start to that first prompt,
  per frame. Measured in a fresh child process (so its memory is the plan's), then cancelled;
  ``--plan-timeout`` (20 s) bounds the wait (the figure is then the timeout, flagged on the info
  line) and the child is killed if it does not end soon after.
- ``plan_seconds_resume_20k``: the same for a resume (``existing="resume"``) of 20,000 frames, the
  even half of them already on disk.
- ``throughput_ratio``: tiny prompts (``--node-seconds 0``) on ``--tiny-servers`` sims: frames/s
  through the scheduler over frames/s of a minimal direct loop (per server as many threads as
  our default ``max_in_flight``, each: POST /prompt, wait for ``executing`` null on its own
  websocket, GET /view, write the file), interleaved rounds on the same servers; median of the
  per-round ratios.

Last line::

    RESULT cpu_fraction_30=a cpu_ms_per_frame=f idle_ms_between_frames=b plan_seconds_1m=c
    plan_seconds_resume_20k=d mem_bytes_per_frame=g throughput_ratio=e

(one line). Usage: ``python bench/client_scale.py [--servers 30] [--frames-per-server 8]
[--rounds 1] [--tiny-rounds 7] [--in-flight N]``. About 60-90 s on a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Callable, Optional

import requests
from direct_loop import direct_loop

from comfy_cluster.commands.render import start_health
from comfy_cluster.core.client import ComfyClient
from comfy_cluster.core.engine import events as ev
from comfy_cluster.core.engine.job import RenderJob
from comfy_cluster.core.engine.scheduler import Scheduler
from comfy_cluster.core.server import ServerConfig
from comfy_cluster.core.transfer import frame_path

#: No input image: an 8x8 image made on the server, inverted, saved (three nodes).
TINY: dict[str, Any] = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
    },
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "t"}},
}
DEFAULT_IN_FLIGHT = next(f.default for f in fields(ServerConfig) if f.name == "max_in_flight")


# --- sims in their own processes ------------------------------------------------------------------


class Sim:
    """One ``comfy-cluster sim`` subprocess."""

    def __init__(self, name: str, port: int, node_seconds: float, root: Path) -> None:
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/ws"
        cmd = [sys.executable, "-m", "comfy_cluster.cli", "sim", "--port", str(port)]
        cmd += ["--name", name, "--node-seconds", str(node_seconds), "--root", str(root)]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy()
        )

    @property
    def config(self) -> ServerConfig:
        return ServerConfig(name=self.name, host="127.0.0.1", port=self.port)

    def stop(self) -> None:
        self.proc.terminate()

    def wait_stopped(self) -> None:
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@contextlib.contextmanager
def sims_running(specs: Sequence[tuple[str, float]], root: Path) -> Iterator[list[Sim]]:
    """Start one sim per (name, node_seconds); wait until every one answers."""
    sims = [
        Sim(name, port, secs, root / name)
        for (name, secs), port in zip(specs, free_ports(len(specs)))
    ]
    try:
        deadline = time.monotonic() + 90.0
        with requests.Session() as session:
            session.trust_env = False
            for sim in sims:
                while True:
                    if sim.proc.poll() is not None:
                        raise RuntimeError(f"sim {sim.name} exited ({sim.proc.returncode})")
                    with contextlib.suppress(requests.RequestException):
                        if session.get(f"{sim.url}/system_stats", timeout=2).ok:
                            break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"sim {sim.name} did not start")
                    time.sleep(0.1)
        yield sims
    finally:
        for sim in sims:
            sim.stop()
        for sim in sims:
            sim.wait_stopped()


# --- measuring ---------------------------------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def mmm(values: Sequence[float], fmt: str = "{:.3f}") -> str:
    """min/median/max."""
    if not values:
        return "n/a"
    return "/".join(fmt.format(v) for v in (min(values), statistics.median(values), max(values)))


@contextlib.contextmanager
def cluster(servers: Sequence[ServerConfig], job: RenderJob) -> Iterator[Scheduler]:
    """A health monitor and scheduler as ``comfy-cluster render`` makes them."""
    monitor = start_health(servers, job)
    try:
        with Scheduler(servers, health=monitor) as scheduler:
            yield scheduler
    finally:
        monitor.close()


def steady_render(sims: Sequence[Sim], frames_per_server: int, out: Path) -> dict[str, float]:
    """Every sim renders ~2 s frames; client CPU over the steady window, idle gaps per server."""
    servers = [s.config for s in sims]
    n = len(servers) * frames_per_server
    job = RenderJob(TINY, f"1-{n}", str(out / "f.####.png"), overrides=("1.color={frame}",))
    marks: dict[int, tuple[float, float]] = {}
    written = [0]
    lo, hi = len(servers), n - len(servers)
    if hi <= lo:  # too few frames for a steady part: first to last frame
        lo, hi = 1, n

    def on_event(event: ev.JobEvent) -> None:
        if isinstance(event, ev.FrameWritten):
            written[0] += 1
            if written[0] in (lo, hi):
                marks[written[0]] = (time.monotonic(), time.process_time())

    with cluster(servers, job) as scheduler:
        t0, c0 = time.monotonic(), time.process_time()
        result = scheduler.run(job, on_event)
        t1, c1 = time.monotonic(), time.process_time()
    if not result.ok:
        raise RuntimeError(f"render failed: {result.message}")
    (wa, ca), (wb, cb) = marks[lo], marks[hi]
    return {
        "cpu_fraction": (cb - ca) / (wb - wa),
        "cpu_ms_per_frame": (cb - ca) * 1000.0 / (hi - lo),
        "cpu_fraction_whole_job": (c1 - c0) / (t1 - t0),
        "wall": t1 - t0,
        "idle_ms": idle_between_frames(sims),
    }


def idle_between_frames(sims: Sequence[Sim]) -> float:
    """Median over servers of the median gap between one prompt's end and the next's start."""
    per_server = []
    with requests.Session() as session:
        session.trust_env = False
        for sim in sims:
            history = session.get(f"{sim.url}/history?max_items=100000", timeout=10).json()
            spans = []
            for entry in history.values():
                stamps = {m[0]: m[1].get("timestamp") for m in entry["status"]["messages"]}
                if "execution_start" in stamps and "execution_success" in stamps:
                    spans.append((stamps["execution_start"], stamps["execution_success"]))
            spans.sort()
            gaps = [b[0] - a[1] for a, b in zip(spans, spans[1:])]
            if gaps:
                per_server.append(statistics.median(gaps))
    return statistics.median(per_server) if per_server else float("nan")


def time_to_first_prompt(
    servers: Sequence[ServerConfig],
    job: RenderJob,
    timeout: float,
    measured: Callable[[tuple[float, int, bool]], None] = lambda result: None,
) -> tuple[float, int, bool]:
    """(seconds from start to the first POST /prompt, RSS growth until then, in time).

    Runs in this process; :func:`plan_in_child` runs it in a fresh one (bounded, killable).
    """
    first: list[tuple[float, int]] = []
    seen = threading.Event()
    original: Callable[..., str] = ComfyClient.submit

    def submit(self: ComfyClient, *args: Any, **kwargs: Any) -> str:
        if not seen.is_set():
            first.append((time.monotonic(), rss_bytes()))
            seen.set()
        return original(self, *args, **kwargs)

    with cluster(servers, job) as scheduler:
        gc.collect()
        rss0 = rss_bytes()
        ComfyClient.submit = submit  # type: ignore[method-assign]
        try:
            t0 = time.monotonic()
            handle = scheduler.start(job)
            in_time = seen.wait(timeout)
            took = first[0][0] - t0 if in_time else timeout
            grown = first[0][1] - rss0 if in_time else rss_bytes() - rss0
            measured((took, grown, in_time))  # before a cancel that may wait for planning
            handle.cancel()
            handle.wait(30)
        finally:
            ComfyClient.submit = original  # type: ignore[method-assign]
    return took, grown, in_time


def plan_in_child(
    servers: Sequence[ServerConfig], frames: str, pattern: str, existing: str, timeout: float
) -> tuple[float, int, bool]:
    """:func:`time_to_first_prompt` in a fresh process (its memory is the plan's alone), killed
    if it has not ended ``timeout`` + 20 s later (a cancel may wait for planning to end; the
    figures are printed before it). Timed out, the growth is the plan's so far."""
    spec = {
        "servers": [[s.name, s.port] for s in servers],
        "frames": frames,
        "pattern": pattern,
        "existing": existing,
        "timeout": timeout,
    }
    cmd = [sys.executable, __file__, "--plan-child", json.dumps(spec)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        out, _ = proc.communicate(timeout=timeout + 20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    for line in out.splitlines():
        if line.startswith("PLAN "):
            took, grown, in_time = json.loads(line[5:])
            return float(took), int(grown), bool(in_time)
    return timeout, 0, False


def plan_child(spec_text: str) -> int:
    spec = json.loads(spec_text)
    servers = [ServerConfig(name=n, host="127.0.0.1", port=p) for n, p in spec["servers"]]
    job = RenderJob(TINY, spec["frames"], spec["pattern"], existing=spec["existing"])

    def report(result: tuple[float, int, bool]) -> None:
        print("PLAN " + json.dumps(result), flush=True)

    time_to_first_prompt(servers, job, spec["timeout"], report)
    os._exit(0)  # do not wait for a planning thread that ignores the cancel


def resume_folder(out: Path, frames: int, sample: Path) -> str:
    """An output folder holding the even half of ``frames`` frames (copies of a real PNG)."""
    pattern = str(out / "r.####.png")
    data = sample.read_bytes()
    out.mkdir(parents=True, exist_ok=True)
    for f in range(2, frames + 1, 2):
        frame_path(pattern, f).write_bytes(data)
    return pattern


# --- throughput: scheduler vs a minimal direct loop -------------------------------------------


def scheduler_loop(sims: Sequence[Sim], frames: int, out: Path, in_flight: int) -> float:
    servers = [replace(s.config, max_in_flight=in_flight) for s in sims]
    job = RenderJob(TINY, f"1-{frames}", str(out / "t.####.png"), overrides=("1.color={frame}",))
    with cluster(servers, job) as scheduler:
        t0 = time.monotonic()
        result = scheduler.run(job)
        elapsed = time.monotonic() - t0
    if not result.ok:
        raise RuntimeError(f"tiny render failed: {result.message}")
    return elapsed


def throughput(
    sims: Sequence[Sim], frames: int, rounds: int, work: Path, in_flight: int
) -> list[float]:
    """Per-round ratios (our frames/s over the direct loop's), both with ``in_flight`` prompts
    per server; rounds interleaved, and which of the two goes first alternates, so a slow
    spell on the shared machine does not always fall on the same side."""
    direct_loop(sims, TINY, len(sims) * 2, work / "warm_direct", in_flight=in_flight)
    scheduler_loop(sims, len(sims) * 2, work / "warm_sched", in_flight)
    ratios = []
    for i in range(rounds):
        timed = {}
        for side in ("scheduler", "direct") if i % 2 == 0 else ("direct", "scheduler"):
            out = work / f"{side}{i}"
            if side == "scheduler":
                timed[side] = scheduler_loop(sims, frames, out, in_flight)
            else:
                timed[side] = direct_loop(sims, TINY, frames, out, in_flight=in_flight)
        ours, direct = timed["scheduler"], timed["direct"]
        print(f"  tiny round {i + 1}: scheduler {ours:.2f} s, direct {direct:.2f} s")
        ratios.append(direct / ours)
    return ratios


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=int, default=30)
    parser.add_argument("--frames-per-server", type=int, default=8)
    parser.add_argument("--node-seconds", type=float, default=0.667, help="3 nodes: ~2 s frames")
    parser.add_argument("--rounds", type=int, default=1, help="repeats of the 30-server render")
    parser.add_argument("--plan-frames", type=int, default=1_000_000)
    parser.add_argument("--resume-frames", type=int, default=20_000)
    parser.add_argument("--plan-timeout", type=float, default=20.0)
    parser.add_argument("--plan-child", help=argparse.SUPPRESS)
    parser.add_argument("--tiny-servers", type=int, default=4)
    parser.add_argument("--tiny-frames", type=int, default=400)
    parser.add_argument("--tiny-rounds", type=int, default=7)
    parser.add_argument(
        "--in-flight",
        type=int,
        default=DEFAULT_IN_FLIGHT,
        help="prompts per server for the tiny rounds, ours and the direct loop's (default: "
        "our max_in_flight default)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    if args.plan_child:
        return plan_child(args.plan_child)

    bench_start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="client-scale-"))
    specs = [(f"s{i:02d}", args.node_seconds) for i in range(args.servers)]
    specs += [(f"tiny{i}", 0.0) for i in range(args.tiny_servers)]
    try:
        with sims_running(specs, work / "sims") as sims:
            slow, tiny = sims[: args.servers], sims[args.servers :]
            print(f"{len(sims)} sim processes up in {time.monotonic() - bench_start:.1f} s")
            runs = []
            for r in range(args.rounds):
                run = steady_render(slow, args.frames_per_server, work / f"render{r}")
                print(
                    f"render {r + 1}: {args.servers} servers x {args.frames_per_server} frames "
                    f"in {run['wall']:.1f} s; steady window: "
                    f"cpu_fraction={run['cpu_fraction']:.3f} "
                    f"cpu_ms_per_frame={run['cpu_ms_per_frame']:.1f}; whole job "
                    f"cpu_fraction={run['cpu_fraction_whole_job']:.3f}; "
                    f"idle between frames {run['idle_ms']:.1f} ms"
                )
                runs.append(run)
            servers = [s.config for s in slow]
            plan_pattern = str(work / "plan" / "p.####.png")
            plan_s, grown, ok = plan_in_child(
                servers, f"1-{args.plan_frames}", plan_pattern, "error", args.plan_timeout
            )
            per_frame = grown / args.plan_frames
            print(
                f"plan {args.plan_frames} frames: first prompt after {plan_s:.2f} s"
                f"{'' if ok else ' (TIMED OUT)'}; "
                f"RSS +{grown / 1e6:.1f} MB = {per_frame:.1f} B/frame"
            )
            sample = next((work / "render0").glob("f.*.png"))
            pattern = resume_folder(work / "resume", args.resume_frames, sample)
            resume_s, _, ok = plan_in_child(
                servers, f"1-{args.resume_frames}", pattern, "resume", args.plan_timeout
            )
            print(
                f"resume {args.resume_frames} frames (half on disk): first prompt after "
                f"{resume_s:.2f} s{'' if ok else ' (TIMED OUT)'}"
            )
            ratios = throughput(
                tiny, args.tiny_frames, args.tiny_rounds, work / "tiny", args.in_flight
            )
            print(
                f"throughput ratio over {len(ratios)} rounds (min/median/max): {mmm(ratios)} "
                f"({args.tiny_servers} servers, max_in_flight {args.in_flight})"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    fractions = [r["cpu_fraction"] for r in runs]
    per_frame_ms = [r["cpu_ms_per_frame"] for r in runs]
    idle = [r["idle_ms"] for r in runs]
    if len(runs) > 1:
        print(
            f"over {len(runs)} renders (min/median/max): cpu_fraction {mmm(fractions)}, "
            f"cpu_ms_per_frame {mmm(per_frame_ms, '{:.1f}')}, idle_ms {mmm(idle, '{:.1f}')}"
        )
    print(f"bench took {time.monotonic() - bench_start:.1f} s")
    print(
        f"RESULT cpu_fraction_30={statistics.median(fractions):.3f} "
        f"cpu_ms_per_frame={statistics.median(per_frame_ms):.2f} "
        f"idle_ms_between_frames={statistics.median(idle):.1f} "
        f"plan_seconds_1m={plan_s:.2f} plan_seconds_resume_20k={resume_s:.3f} "
        f"mem_bytes_per_frame={per_frame:.1f} "
        f"throughput_ratio={statistics.median(ratios):.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
