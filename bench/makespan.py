"""Benchmark the render engine's makespan on a heterogeneous simulated cluster, and its overhead.

Cluster: three in-process sims (``start_sims``) at speeds 1, 1 and 0.4, ``--frames`` frames of
LoadImage -> ImageInvert -> SaveImage on real 64x64 inputs, every server ``max_in_flight``
(default 2: one prompt runs while the next waits in the server's queue, so HTTP round trips
overlap with work; ``--max-in-flight 1`` shows the cost of not doing so). Fresh sims per run.

Runs (each makespan is wall time from ``Scheduler.start`` to the result):

- ``dynamic``: the scheduler with the ``fastest`` strategy (``--all-strategies`` adds the others).
- ``failover``: the same, and a fast server is killed (``SimServer.kill``: connections reset, port
  closed) when half of the frames are on disk.
- ``static_split``: the baseline most tools use: the range cut into one equal contiguous part per
  server, each part rendered serially on its server. Implemented with the same scheduler and
  client code, one job per part pinned by the job's server allow-list, all three running at once.
  (``--all-strategies`` also runs it with the failure; the dead server's frames are then lost.)

Ideal makespan, from the sim's cost model (``sim/executor.py``: every executed node sleeps
``node_seconds / speed``; each frame executes three nodes, none cached since every input
differs): server ``s`` needs ``W_s = 3 * node_seconds / speed_s`` per frame, the cluster renders
``R = sum(1 / W_s)`` frames per second, ideal = frames / R. With the failure at ``t_d`` (measured):
ideal = ``t_d + (frames - t_d * R) / R_left``. Efficiency = ideal / makespan; this cost-model
figure is what the RESULT line reports. A warm-up (a few frames per server, one at a time) also
measures each server's real seconds per frame including our HTTP and file overhead; the
``eff_meas`` column uses those measured rates instead (the fairer "how well is it balanced").

Lost = requested frames not on disk afterwards; duplicated = frames with more than one
``FrameWritten`` event (the ledger writes each frame once) plus stray files in the output folder.

Throughput: 60 tiny prompts (EmptyImage -> ImageInvert -> SaveImage, ``node_seconds=0``) on two
sims, through the scheduler vs a minimal direct loop (per server one thread: POST /prompt, wait
for ``executing`` node=null on its websocket, GET /view the ``executed`` image, write the file),
both one prompt in flight per server, best of ``--tiny-rounds`` (4) interleaved rounds each.
``throughput_ratio`` = direct time / scheduler time.

Last line (one line; wrapped here)::

    RESULT efficiency_dynamic=<x> efficiency_failover=<y> efficiency_static_split=<z>
    lost=<n> duplicated=<m>

(``lost``/``duplicated`` summed over the scheduler's dynamic and failover runs.)
Usage: ``python bench/makespan.py [--frames 120] [--node-seconds 0.06] [--all-strategies]``
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from direct_loop import direct_loop
from workflows import generated_workflow, invert_workflow

from comfy_cluster.core.balance import STRATEGIES
from comfy_cluster.core.engine import events as ev
from comfy_cluster.core.engine.job import RenderJob
from comfy_cluster.core.engine.scheduler import Scheduler
from comfy_cluster.core.server import ServerConfig
from comfy_cluster.core.transfer import frame_path
from comfy_cluster.sim.harness import SimServer, make_test_image, start_sims, stop_all
from comfy_cluster.sim.options import SimOptions

SPEEDS = (("fast1", 1.0), ("fast2", 1.0), ("slow", 0.4))
#: The server killed in the failover runs (a fast one: the worst case).
VICTIM = "fast2"
NODES_PER_FRAME = 3
WORKFLOW = invert_workflow("b")
TINY = generated_workflow()


@dataclass
class Run:
    """One measured render."""

    name: str
    makespan: float
    ideal: float
    ideal_measured: float
    lost: int
    duplicated: int
    retries: int
    per_server: dict[str, int] = field(default_factory=dict)
    note: str = ""

    @property
    def efficiency(self) -> float:
        return self.ideal / self.makespan if self.makespan > 0 else 0.0

    @property
    def efficiency_measured(self) -> float:
        return self.ideal_measured / self.makespan if self.makespan > 0 else 0.0


class Recorder:
    """Counts FrameWritten per frame; optionally kills a sim when half the frames are written."""

    def __init__(self, total: int, kill: Optional[SimServer] = None) -> None:
        self.total = total
        self.kill = kill
        self.written: Counter[int] = Counter()
        self.killed_at: Optional[float] = None
        self.t0 = time.monotonic()
        self.killer: Optional[threading.Thread] = None

    def __call__(self, event: ev.JobEvent) -> None:
        if isinstance(event, ev.FrameWritten):
            self.written[event.frame] += 1
            victim = self.kill
            if (
                victim is not None
                and self.killed_at is None
                and sum(self.written.values()) >= (self.total // 2)
            ):
                self.killed_at = time.monotonic() - self.t0
                # kill() joins the sim's thread: not on the scheduler's callback thread.
                self.killer = threading.Thread(target=victim.kill, name="bench-kill", daemon=True)
                self.killer.start()


def servers_for(sims: Sequence[SimServer], max_in_flight: int) -> list[ServerConfig]:
    return [
        ServerConfig(
            name=s.options.name, host="127.0.0.1", port=s.port, max_in_flight=max_in_flight
        )
        for s in sims
    ]


def start_cluster(node_seconds: float) -> list[SimServer]:
    return start_sims(
        len(SPEEDS),
        [SimOptions(name=n, speed=sp, node_seconds=node_seconds) for n, sp in SPEEDS],
    )


def cost_model_spf(node_seconds: float) -> dict[str, float]:
    return {name: NODES_PER_FRAME * node_seconds / speed for name, speed in SPEEDS}


def ideal_makespan(frames: int, spf: dict[str, float], killed_at: Optional[float] = None) -> float:
    rate = sum(1.0 / x for x in spf.values())
    if killed_at is None:
        return frames / rate
    left_rate = sum(1.0 / x for n, x in spf.items() if n != VICTIM)
    done = min(frames, killed_at * rate)
    return min(frames / rate, killed_at) + (frames - done) / left_rate


def check_output(out_dir: Path, pattern: str, frames: Sequence[int], in_pattern: str) -> tuple:
    """(lost, stray files, bad pixels): every frame once, inverted, nothing else in the folder."""
    from PIL import Image

    lost = [f for f in frames if not frame_path(pattern, f).is_file()]
    expected = {frame_path(pattern, f).name for f in frames}
    stray = (
        [p.name for p in out_dir.iterdir() if p.name not in expected] if out_dir.exists() else []
    )
    bad = 0
    for f in frames:
        path = frame_path(pattern, f)
        if not path.is_file():
            continue
        with Image.open(path) as got, Image.open(frame_path(in_pattern, f)) as src:
            a = got.convert("RGB").getpixel((0, 0))
            b = src.convert("RGB").getpixel((0, 0))
            # The sim (like ComfyUI) truncates float -> uint8, so 255 - v may come out 1 lower.
            if any(abs((255 - v) - w) > 1 for v, w in zip(b, a)):
                bad += 1
    return lost, stray, bad


def make_inputs(folder: Path, frames: int) -> str:
    pattern = str(folder / "in.####.png")
    for f in range(1, frames + 1):
        make_test_image(frame_path(pattern, f), (64, 64), (f % 256, (f * 7) % 256, 200))
    return pattern


def render_dynamic(
    name: str,
    strategy: str,
    args: argparse.Namespace,
    workdir: Path,
    in_pattern: str,
    spf_model: dict[str, float],
    spf_measured: dict[str, float],
    *,
    fail: bool,
) -> Run:
    sims = start_cluster(args.node_seconds)
    out_dir = workdir / f"out_{name}"
    pattern = str(out_dir / "o.####.png")
    frames = list(range(1, args.frames + 1))
    try:
        victim = next(s for s in sims if s.options.name == VICTIM) if fail else None
        rec = Recorder(args.frames, victim)
        with Scheduler(servers_for(sims, args.max_in_flight)) as scheduler:
            job = RenderJob(
                WORKFLOW, f"1-{args.frames}", pattern, input_pattern=in_pattern, strategy=strategy
            )
            rec.t0 = time.monotonic()
            result = scheduler.run(job, rec)
            makespan = time.monotonic() - rec.t0
        if rec.killer is not None:
            rec.killer.join(15)
    finally:
        stop_all(sims)
    lost, stray, bad = check_output(out_dir, pattern, frames, in_pattern)
    dup = sum(1 for c in rec.written.values() if c > 1) + len(stray)
    note = "" if result.ok else f"FAILED: {result.message}"
    if bad:
        note += f" {bad} frame(s) with wrong pixels"
    if fail:
        note += f" killed {VICTIM} at {rec.killed_at or 0:.2f} s"
    return Run(
        name,
        makespan,
        ideal_makespan(args.frames, spf_model, rec.killed_at if fail else None),
        ideal_makespan(args.frames, spf_measured, rec.killed_at if fail else None),
        len(lost),
        dup,
        result.retries,
        dict(result.per_server),
        note.strip(),
    )


def render_static(
    name: str,
    args: argparse.Namespace,
    workdir: Path,
    in_pattern: str,
    spf_model: dict[str, float],
    spf_measured: dict[str, float],
    *,
    fail: bool,
) -> Run:
    """Equal contiguous parts, one pinned job per server, all at once (the usual baseline)."""
    sims = start_cluster(args.node_seconds)
    out_dir = workdir / f"out_{name}"
    pattern = str(out_dir / "o.####.png")
    frames = list(range(1, args.frames + 1))
    n = len(sims)
    parts = [frames[i * len(frames) // n : (i + 1) * len(frames) // n] for i in range(n)]
    victim = next(s for s in sims if s.options.name == VICTIM) if fail else None
    rec = Recorder(args.frames, victim)
    per_server: dict[str, int] = {}
    retries = 0
    try:
        servers = servers_for(sims, args.max_in_flight)
        with Scheduler(servers, no_server_timeout=5.0) as scheduler:
            rec.t0 = time.monotonic()
            handles = [
                scheduler.start(
                    RenderJob(
                        WORKFLOW,
                        part,
                        pattern,
                        input_pattern=in_pattern,
                        servers=(srv.name,),
                        # A pinned part must not wait for other servers: no balancing at all.
                        strategy="round_robin",
                    ),
                    rec,
                )
                for srv, part in zip(servers, parts)
            ]
            results = [h.wait() for h in handles]
            makespan = time.monotonic() - rec.t0
        if rec.killer is not None:
            rec.killer.join(15)
    finally:
        stop_all(sims)
    for result in results:
        assert result is not None
        retries += result.retries
        for k, v in result.per_server.items():
            per_server[k] = per_server.get(k, 0) + v
    lost, stray, bad = check_output(out_dir, pattern, frames, in_pattern)
    dup = sum(1 for c in rec.written.values() if c > 1) + len(stray)
    note = f"parts of {', '.join(str(len(p)) for p in parts)} frames"
    if bad:
        note += f"; {bad} frame(s) with wrong pixels"
    if fail:
        note += f"; killed {VICTIM} at {rec.killed_at or 0:.2f} s, its part is lost"
    return Run(
        name,
        makespan,
        ideal_makespan(args.frames, spf_model, rec.killed_at if fail else None),
        ideal_makespan(args.frames, spf_measured, rec.killed_at if fail else None),
        len(lost),
        dup,
        retries,
        per_server,
        note,
    )


def warm_up(args: argparse.Namespace, workdir: Path, in_pattern: str) -> dict[str, float]:
    """Each server alone renders a few frames (same ``max_in_flight`` as the runs): measured
    seconds per frame including upload, submit, events, history and download."""
    sims = start_cluster(args.node_seconds)
    frames = args.warmup
    measured: dict[str, float] = {}
    try:
        servers = servers_for(sims, args.max_in_flight)
        with Scheduler(servers) as scheduler:
            handles = []
            for i, srv in enumerate(servers):
                first = 1 + i * frames
                job = RenderJob(
                    WORKFLOW,
                    list(range(first, first + frames)),
                    str(workdir / f"warm_{srv.name}" / "w.####.png"),
                    input_pattern=in_pattern,
                    servers=(srv.name,),
                )
                times: list[float] = []
                on_event = _stamp_frames(times)
                handles.append((srv.name, times, scheduler.start(job, on_event)))
            for name, times, handle in handles:
                result = handle.wait()
                assert result is not None and result.ok, result
                # Steady state: first to last frame, so connecting and the first upload don't count.
                measured[name] = (times[-1] - times[0]) / max(1, len(times) - 1)
    finally:
        stop_all(sims)
    return measured


def _stamp_frames(times: list[float]) -> ev.OnEvent:
    def on_event(event: ev.JobEvent) -> None:
        if isinstance(event, ev.FrameWritten):
            times.append(time.monotonic())

    return on_event


# --- throughput: scheduler vs a minimal direct loop ---------------------------------------------


def throughput(
    args: argparse.Namespace, workdir: Path, in_flight: int = 1
) -> tuple[float, float, float]:
    """(scheduler seconds, direct seconds, ratio) for ``--tiny`` frames on two sims, the
    scheduler's servers holding ``in_flight`` prompts each (the direct loop always one)."""
    sims = start_sims(2, SimOptions(name="tiny", node_seconds=0.0))
    try:
        servers = servers_for(sims, in_flight)
        # One short warm-up each way (connections, imports), then the timed runs.
        tag = f"tiny{in_flight}"
        direct_loop(sims, TINY, 4, workdir / f"{tag}_direct_warm")
        with Scheduler(servers) as scheduler:
            scheduler.run(RenderJob(TINY, "1-4", str(workdir / f"{tag}_warm" / "t.####.png")))
        best_sched = best_direct = float("inf")
        for i in range(args.tiny_rounds):
            with Scheduler(servers) as scheduler:
                job = RenderJob(
                    TINY,
                    f"1-{args.tiny}",
                    str(workdir / f"{tag}_sched{i}" / "t.####.png"),
                    overrides=("1.color={frame}",),
                )
                t0 = time.monotonic()
                result = scheduler.run(job)
                elapsed = time.monotonic() - t0
            assert result.ok, result.message
            best_sched = min(best_sched, elapsed)
            best_direct = min(
                best_direct, direct_loop(sims, TINY, args.tiny, workdir / f"{tag}_d{i}")
            )
    finally:
        stop_all(sims)
    return best_sched, best_direct, best_direct / best_sched


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--node-seconds", type=float, default=0.06)
    parser.add_argument("--max-in-flight", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=6, help="frames per server in the warm-up")
    parser.add_argument("--tiny", type=int, default=60, help="frames in the throughput test")
    # Best of 4: each round is ~0.5 s on a shared machine, and one slow second can cost either
    # side 15 %; both sides get the same number of interleaved rounds.
    parser.add_argument("--tiny-rounds", type=int, default=4, help="best of N throughput runs")
    parser.add_argument(
        "--all-strategies",
        action="store_true",
        help="also every other strategy, and the static split with the failure",
    )
    args = parser.parse_args(argv)
    # A killed sim makes aiohttp log each reset upload; that noise is expected here.
    logging.getLogger("aiohttp").setLevel(logging.CRITICAL)

    t_start = time.monotonic()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="comfy-bench-") as tmp:
        workdir = Path(tmp)
        in_pattern = make_inputs(workdir / "in", args.frames)
        spf_model = cost_model_spf(args.node_seconds)
        spf_measured = warm_up(args, workdir, in_pattern)
        print(
            f"cluster: {', '.join(f'{n} x{s:g}' for n, s in SPEEDS)}; {args.frames} frames; "
            f"node_seconds={args.node_seconds}; max_in_flight={args.max_in_flight}"
        )
        print(
            "seconds per frame, cost model: "
            + ", ".join(f"{n}={x:.3f}" for n, x in spf_model.items())
            + "; measured (warm-up, each alone, first to last frame): "
            + ", ".join(f"{n}={x:.3f}" for n, x in spf_measured.items())
        )
        strategies = ["fastest"] + (
            [s for s in STRATEGIES if s != "fastest"] if args.all_strategies else []
        )
        for strategy in strategies:
            runs.append(
                render_dynamic(
                    f"dynamic/{strategy}",
                    strategy,
                    args,
                    workdir,
                    in_pattern,
                    spf_model,
                    spf_measured,
                    fail=False,
                )
            )
        for strategy in strategies:
            runs.append(
                render_dynamic(
                    f"failover/{strategy}",
                    strategy,
                    args,
                    workdir,
                    in_pattern,
                    spf_model,
                    spf_measured,
                    fail=True,
                )
            )
        runs.append(
            render_static(
                "static_split", args, workdir, in_pattern, spf_model, spf_measured, fail=False
            )
        )
        if args.all_strategies:
            runs.append(
                render_static(
                    "static_split/failover",
                    args,
                    workdir,
                    in_pattern,
                    spf_model,
                    spf_measured,
                    fail=True,
                )
            )
        header = (
            f"{'run':<26}{'makespan':>9}{'ideal':>8}{'eff':>7}{'eff_meas':>9}{'lost':>6}"
            f"{'dup':>5}{'retry':>6}  per server / note"
        )
        print(header)
        for r in runs:
            per = " ".join(f"{k}={v}" for k, v in sorted(r.per_server.items()))
            print(
                f"{r.name:<26}{r.makespan:>8.2f}s{r.ideal:>7.2f}s{r.efficiency:>7.3f}"
                f"{r.efficiency_measured:>9.3f}{r.lost:>6}{r.duplicated:>5}{r.retries:>6}  "
                f"{per}  {r.note}"
            )
        sched_s, direct_s, ratio = throughput(args, workdir)
        print(
            f"throughput: {args.tiny} tiny prompts on 2 sims, one in flight per server: "
            f"scheduler {sched_s:.2f} s ({args.tiny / sched_s:.1f} frames/s), direct loop "
            f"{direct_s:.2f} s ({args.tiny / direct_s:.1f} frames/s)"
        )
        sched2, direct2, ratio2 = throughput(args, workdir, in_flight=2)
        print(
            f"throughput (info): scheduler with max_in_flight=2 {sched2:.2f} s vs direct loop "
            f"{direct2:.2f} s: ratio {ratio2:.3f}"
        )
    print(f"total bench time {time.monotonic() - t_start:.1f} s")
    print(f"throughput_ratio={ratio:.3f}")
    dynamic = next(r for r in runs if r.name == "dynamic/fastest")
    failover = next(r for r in runs if r.name == "failover/fastest")
    static = next(r for r in runs if r.name == "static_split")
    lost = dynamic.lost + failover.lost
    dup = dynamic.duplicated + failover.duplicated
    print(
        f"RESULT efficiency_dynamic={dynamic.efficiency:.3f} "
        f"efficiency_failover={failover.efficiency:.3f} "
        f"efficiency_static_split={static.efficiency:.3f} lost={lost} duplicated={dup}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
