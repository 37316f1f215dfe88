"""Benchmark the scheduler under real cluster conditions (simulated): cold servers, model loads,
servers shared with another artist, a whole cluster restarting, a server slowing down.

Fresh in-process sims per scenario (``comfy_cluster.sim``), driven by the real ``Scheduler``; every
server holds ``max_in_flight`` 2. Frame workflow (except ``models``): LoadImage -> ImageInvert ->
SaveImage on real 32x32 inputs, 3 executed nodes per frame, so the sim's cost model gives
``t_i = 3 * node_seconds / speed_i`` per frame on server ``i`` (the sim keeps to it: its own work is
inside that time, see ``sim/clock.py``), ``r_i = 1 / t_i`` and ``R = sum r_i``. Each efficiency is
ideal / makespan (makespan: from starting the job to its result):

- ``cold``: speeds 1, 1, 0.4, every server cold (``warmup_seconds`` w = 20 speed-1 frames).
  Ideal ``T`` solves ``sum r_i * max(0, T - w) = N``: ``T = w + N / R``.
- ``models``: 4 servers of speed 1 holding one checkpoint each (``models_in_memory`` 1), a load
  costs ``L`` = 10 frames; the img2img workflow (``tests/fixtures/comfyui``; 5 executed nodes per
  frame once the loader and text encoders are cached). Two clients (two ``Scheduler`` instances,
  each its own client id and connections, as two ``render`` processes would be) render N frames
  each with different checkpoints; the second starts once the first has a prompt running on every
  server. Ideal ``(6 L + 2 N t) / 4``, where ``L`` also counts the three nodes that run again
  after a load (the loader and two text encoders); makespan until both are done. That work bound
  cannot be met: the second job arrives while the first is loading on all four servers, and a
  load cannot be interrupted, so the best schedule ends at ``2 (L + t) + (N/2 - 1) t`` (printed
  beside it; at N = 40 that caps the efficiency near 0.85, hence N = 80 by default). Also
  reported: the most loads of one model on one server within one job.
- ``shared``: 3 servers of speed 1, one shared with another client (``foreign_load`` 0.5: its
  rate counts as ``0.5 r``). Also counted: events whose reason calls a chunk stuck (should be 0).
- ``comeback``: speeds 1, 1, 0.4; every server killed (queues lost) when 40 % of the frames are
  written and restarted on the same port 3 s later. Ideal ``N / R + 3 s``.
- ``slowdown``: speeds 1, 1, 0.4; the first fast server drops to speed 0.2 when 70 % of the
  frames are written (at ``t_s``, ``d_s`` frames written). Ideal ``t_s + (N - d_s) / R'``.
  Run twice: with speculation (on the RESULT line, with the count of speculative copies) and
  without (``slowdown without speculation`` on a line of its own).

A job that fails or does not end in time counts as efficiency 0 (and says why). Lost = requested
frames not on disk; duplicated = frames written more than once plus stray files; both summed over
all scenarios. The script always exits 0; the last line is::

    RESULT efficiency_cold=a efficiency_models=b efficiency_shared=c efficiency_comeback=d
    efficiency_slowdown=e lost=n duplicated=m

(one line). Usage: ``python bench/realworld.py [--frames 96] [--node-seconds 0.05]``
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from workflows import invert_workflow

from comfy_cluster.core.engine import events as ev
from comfy_cluster.core.engine.job import RenderJob
from comfy_cluster.core.engine.scheduler import Scheduler
from comfy_cluster.core.server import ServerConfig
from comfy_cluster.core.transfer import frame_path
from comfy_cluster.sim.harness import SimServer, make_test_image, start_sims, stop_all
from comfy_cluster.sim.options import SimOptions

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = invert_workflow("rw")
IMG2IMG = ROOT / "tests" / "fixtures" / "comfyui" / "workflow_img2img_api.json"
NODES_PER_FRAME = 3
IMG2IMG_NODES_PER_FRAME = 5  # LoadImage, VAEEncode, KSampler, VAEDecode, SaveImage
RERUN_AFTER_LOAD = 3  # CheckpointLoaderSimple and two CLIPTextEncode run again after a load
MAX_IN_FLIGHT = 2
#: The scenarios on the RESULT line (``slowdown_nospec`` is printed on a line of its own).
RESULT_KEYS = ("cold", "models", "shared", "comeback", "slowdown")


@dataclass
class Outcome:
    """One scenario's figures."""

    name: str
    makespan: float
    ideal: float
    ok: bool
    lost: int = 0
    duplicated: int = 0
    note: str = ""

    @property
    def efficiency(self) -> float:
        if not self.ok or self.makespan <= 0:
            return 0.0
        return self.ideal / self.makespan


class Watch:
    """Counts FrameWritten per frame and stuck reasons; calls ``trigger`` once at ``at`` frames."""

    def __init__(self, at: Optional[int] = None, trigger: Optional[Callable[[], None]] = None):
        self.lock = threading.Lock()
        self.written: Counter[int] = Counter()
        self.stuck: list[str] = []
        self.retries: list[str] = []
        #: Speculative copies (ChunkSpeculated) seen.
        self.copies = 0
        self.at = at
        self.trigger = trigger
        self.fired: Optional[threading.Thread] = None
        #: When the job started (set by ``run_job``).
        self.t0 = time.monotonic()

    def __call__(self, event: ev.JobEvent) -> None:
        reason = " ".join(str(v) for v in vars(event).values() if isinstance(v, str))
        if "stuck" in reason.lower():
            self.stuck.append(f"{type(event).__name__}: {reason}")
        if isinstance(event, ev.ChunkRetried):
            self.retries.append(f"{event.server}: {event.why}")
        if isinstance(event, ev.ChunkSpeculated):
            self.copies += 1
        if not isinstance(event, ev.FrameWritten):
            return
        with self.lock:
            self.written[event.frame] += 1
            done = sum(1 for _ in self.written)
            if self.at is not None and self.fired is None and done >= self.at:
                assert self.trigger is not None
                # Triggers may join sim threads: never on the scheduler's callback thread.
                self.fired = threading.Thread(target=self.trigger, name="bench-trigger")
                self.fired.start()


def servers_for(sims: Sequence[SimServer]) -> list[ServerConfig]:
    return [
        ServerConfig(
            name=s.options.name, host="127.0.0.1", port=s.port, max_in_flight=MAX_IN_FLIGHT
        )
        for s in sims
    ]


def make_inputs(folder: Path, frames: int) -> str:
    pattern = str(folder / "in.####.png")
    for f in range(1, frames + 1):
        make_test_image(frame_path(pattern, f), (32, 32), (f % 256, (f * 7) % 256, 200))
    return pattern


def check(out_pattern: str, frames: Sequence[int], watch: Watch) -> tuple[int, int]:
    """(lost, duplicated) for one job's output folder."""
    lost = sum(1 for f in frames if not frame_path(out_pattern, f).is_file())
    out_dir = Path(out_pattern).parent
    expected = {frame_path(out_pattern, f).name for f in frames}
    stray = [p for p in out_dir.iterdir() if p.name not in expected] if out_dir.exists() else []
    return lost, sum(1 for c in watch.written.values() if c > 1) + len(stray)


def run_job(
    scheduler: Scheduler, job: RenderJob, watch: Watch, timeout: float
) -> tuple[bool, float, str]:
    """(ok, makespan, note); a job still running after ``timeout`` is cancelled and failed."""
    t0 = watch.t0 = time.monotonic()
    handle = scheduler.start(job, watch)
    result = handle.wait(timeout)
    makespan = time.monotonic() - t0
    if result is None:
        handle.cancel()
        handle.wait(15)
        return False, makespan, f"FAILED: not done after {timeout:.0f} s (cancelled)"
    if not result.ok:
        return False, makespan, f"FAILED: {result.message}"
    return True, makespan, ""


def spf(node_seconds: float, speeds: Sequence[float], nodes: int = NODES_PER_FRAME) -> list[float]:
    return [nodes * node_seconds / s for s in speeds]


def rate(times: Sequence[float], shares: Optional[Sequence[float]] = None) -> float:
    shares = shares or [1.0] * len(times)
    return sum(share / t for share, t in zip(shares, times))


def simple_scenario(
    name: str,
    args: argparse.Namespace,
    workdir: Path,
    in_pattern: str,
    options: list[SimOptions],
    ideal_of: Callable[[list[SimServer], Watch], tuple[float, str]],
    watch_for: Callable[[list[SimServer]], Watch],
    timeout: float,
    **scheduler_options: Any,
) -> tuple[Outcome, Watch]:
    """One job of ``args.frames`` frames on fresh sims; ``ideal_of`` runs after the job."""
    sims = start_sims(len(options), options)
    pattern = str(workdir / f"out_{name}" / "o.####.png")
    frames = list(range(1, args.frames + 1))
    watch = watch_for(sims)
    try:
        with Scheduler(servers_for(sims), **scheduler_options) as scheduler:
            job = RenderJob(WORKFLOW, frames, pattern, input_pattern=in_pattern)
            ok, makespan, note = run_job(scheduler, job, watch, timeout)
        if watch.fired is not None:
            watch.fired.join(30)
        ideal, info = ideal_of(sims, watch)
    finally:
        stop_all(sims)
    lost, dup = check(pattern, frames, watch)
    note = " ".join(x for x in (info, note) if x)
    return Outcome(name, makespan, ideal, ok, lost, dup, note), watch


# --- scenarios ---------------------------------------------------------------------------------


def cold(args: argparse.Namespace, workdir: Path, in_pattern: str) -> Outcome:
    speeds = (1.0, 1.0, 0.4)
    times = spf(args.node_seconds, speeds)
    warmup = 20 * times[0]
    opts = [
        SimOptions(name=f"cold{i}", speed=s, node_seconds=args.node_seconds, warmup_seconds=warmup)
        for i, s in enumerate(speeds)
    ]
    ideal = warmup + args.frames / rate(times)
    outcome, _ = simple_scenario(
        "cold",
        args,
        workdir,
        in_pattern,
        opts,
        lambda sims, w: (ideal, f"warm-up {warmup:.2f} s"),
        lambda sims: Watch(),
        timeout=4 * ideal + 20,
    )
    return outcome


def shared(args: argparse.Namespace, workdir: Path, in_pattern: str) -> tuple[Outcome, int]:
    speeds = (1.0, 1.0, 1.0)
    times = spf(args.node_seconds, speeds)
    opts = [
        SimOptions(name=f"shared{i}", speed=s, node_seconds=args.node_seconds)
        for i, s in enumerate(speeds)
    ]
    opts[2] = opts[2].replace(foreign_load=0.5, foreign_seconds=args.foreign_seconds)
    ideal = args.frames / rate(times, [1.0, 1.0, 0.5])
    stats: dict[str, Any] = {}

    def ideal_of(sims: list[SimServer], w: Watch) -> tuple[float, str]:
        stats.update(requests.get(f"{sims[2].url}/sim/stats", timeout=5).json())
        busy = stats["busy_seconds"]
        share = busy["foreign"] / max(1e-9, busy["own"] + busy["foreign"])
        return ideal, (
            f"shared2: {stats['foreign_prompts']} foreign prompts, foreign share of busy time "
            f"{share:.2f}; stuck reports {len(w.stuck)}"
        )

    outcome, watch = simple_scenario(
        "shared",
        args,
        workdir,
        in_pattern,
        opts,
        ideal_of,
        lambda sims: Watch(),
        timeout=4 * ideal + 20,
    )
    for line in watch.stuck[:5]:
        print(f"  shared: stuck report: {line}")
    return outcome, len(watch.stuck)


def comeback(args: argparse.Namespace, workdir: Path, in_pattern: str) -> Outcome:
    speeds = (1.0, 1.0, 0.4)
    times = spf(args.node_seconds, speeds)
    down = 3.0
    opts = [
        SimOptions(name=f"back{i}", speed=s, node_seconds=args.node_seconds)
        for i, s in enumerate(speeds)
    ]
    ideal = args.frames / rate(times) + down
    stamps: dict[str, float] = {}

    def watch_for(sims: list[SimServer]) -> Watch:
        def kill_all() -> None:
            stamps["killed"] = time.monotonic()
            for s in sims:
                s.kill()
            time.sleep(down)
            for s in sims:
                s.start()  # same port, empty queue and history, cold memory
            stamps["back"] = time.monotonic()

        return Watch(at=int(args.frames * 0.4), trigger=kill_all)

    outcome, _ = simple_scenario(
        "comeback",
        args,
        workdir,
        in_pattern,
        opts,
        lambda sims, w: (ideal, f"all {len(sims)} servers killed at 40 %, back {down:g} s later"),
        watch_for,
        timeout=4 * ideal + 30,
    )
    return outcome


def slowdown(
    args: argparse.Namespace, workdir: Path, in_pattern: str, speculation: bool = True
) -> Outcome:
    speeds = [1.0, 1.0, 0.4]
    opts = [
        SimOptions(name=f"slow{i}", speed=s, node_seconds=args.node_seconds)
        for i, s in enumerate(speeds)
    ]
    at: dict[str, float] = {}
    frames = args.frames

    def watch_for(sims: list[SimServer]) -> Watch:
        def slow_down() -> None:
            at["t"] = time.monotonic() - watch.t0
            at["done"] = sum(1 for _ in watch.written)
            sims[0].set_faults(speed=0.2)  # same as POST /sim/faults {"speed": 0.2}

        watch = Watch(at=int(frames * 0.7), trigger=slow_down)
        return watch

    def ideal_of(sims: list[SimServer], w: Watch) -> tuple[float, str]:
        if "t" not in at:
            return frames / rate(spf(args.node_seconds, speeds)), "never slowed down"
        after = rate(spf(args.node_seconds, [0.2, *speeds[1:]]))
        ideal = at["t"] + (frames - at["done"]) / after
        return ideal, f"slow0 to speed 0.2 at {at['t']:.2f} s with {at['done']:.0f} frames done"

    outcome, watch = simple_scenario(
        "slowdown" if speculation else "slowdown_nospec",
        args,
        workdir,
        in_pattern,
        opts,
        ideal_of,
        watch_for,
        timeout=4 * frames / rate(spf(args.node_seconds, speeds)) + 30,
        speculation=speculation,
    )
    outcome.note += f"; speculative copies {watch.copies}"
    return outcome


def models(args: argparse.Namespace, workdir: Path, in_pattern: str) -> tuple[Outcome, int]:
    n = args.model_frames
    t = IMG2IMG_NODES_PER_FRAME * args.node_seconds
    load = 10 * t
    ckpts = ("sim-a.safetensors", "sim-b.safetensors")
    opts = [
        SimOptions(
            name=f"model{i}",
            node_seconds=args.node_seconds,
            load_seconds=load,
            models_in_memory=1,
            steps=4,
        )
        for i in range(4)
    ]
    # A load is the disk read plus the nodes that run again after it (the loader and the two text
    # encoders: their cached outputs belong to the evicted model), a cost no schedule avoids.
    load_cost = load + RERUN_AFTER_LOAD * args.node_seconds
    ideal = (6 * load_cost + 2 * n * t) / 4
    # The work bound above is out of reach by construction: the second job arrives while the
    # first is already loading on all four servers, and a load cannot be interrupted. The best
    # schedule lets two servers finish that first prompt, then load the second model.
    best = 2 * (load_cost + t) + (n // 2 - 1) * t
    base = json.loads(IMG2IMG.read_text(encoding="utf-8"))
    sims = start_sims(4, opts)
    outs = [str(workdir / f"out_models_{k}" / "m.####.png") for k in range(2)]
    watches = [Watch(), Watch()]
    frames = list(range(1, n + 1))
    notes: list[str] = []
    ok = True
    try:
        servers = servers_for(sims)
        jobs = []
        for k, ckpt in enumerate(ckpts):
            workflow = copy.deepcopy(base)
            workflow["4"]["inputs"]["ckpt_name"] = ckpt
            jobs.append(RenderJob(workflow, frames, outs[k], input_pattern=in_pattern))
        with Scheduler(servers) as first, Scheduler(servers) as second:
            t0 = time.monotonic()
            h1 = first.start(jobs[0], watches[0])
            deadline = t0 + 4 * ideal + 30
            while not all(s.queue_snapshot()[0] for s in sims) and not h1.done:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            started = time.monotonic() - t0
            h2 = second.start(jobs[1], watches[1])
            results = []
            ends: list[float] = []
            for k, handle in enumerate((h1, h2)):
                result = handle.wait(max(1.0, deadline - time.monotonic()))
                if result is None:
                    handle.cancel()
                    handle.wait(15)
                    notes.append(f"FAILED job {k + 1}: not done in time (cancelled)")
                    ok = False
                elif not result.ok:
                    notes.append(f"FAILED job {k + 1}: {result.message}")
                    ok = False
                results.append(result)
                ends.append(time.monotonic() - t0)
            makespan = time.monotonic() - t0
        per_server = [requests.get(f"{s.url}/sim/stats", timeout=5).json() for s in sims]
    finally:
        stop_all(sims)
    loads = [st["models"]["loads_by_model"] for st in per_server]
    worst = max((c for by_model in loads for c in by_model.values()), default=0)
    lost = dup = 0
    for out, watch in zip(outs, watches):
        a, b = check(out, frames, watch)
        lost, dup = lost + a, dup + b
    split = " ".join(
        f"job{k + 1}:" + ",".join(f"{s}={c}" for s, c in sorted(r.per_server.items()))
        for k, r in enumerate(results)
        if r is not None
    )
    notes.insert(
        0,
        f"best possible schedule {best:.2f} s (eff {best / makespan:.3f} against it); "
        f"load {load:.2f} s, frame {t:.2f} s; second job started at {started:.2f} s; loads per "
        f"server {loads}; jobs done at {', '.join(f'{e:.2f} s' for e in ends)}; "
        f"max loads of one model on one server in one job {worst}; {split}",
    )
    return Outcome("models", makespan, ideal, ok, lost, dup, "; ".join(notes)), worst


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=96, help="frames per scenario")
    parser.add_argument("--model-frames", type=int, default=80, help="frames per job in models")
    parser.add_argument("--node-seconds", type=float, default=0.05)
    parser.add_argument("--foreign-seconds", type=float, default=2.0)
    args = parser.parse_args(argv)
    logging.getLogger("aiohttp").setLevel(logging.CRITICAL)
    t_start = time.monotonic()
    outcomes: dict[str, Outcome] = {}
    extra: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="comfy-realworld-") as tmp:
        workdir = Path(tmp)
        in_pattern = make_inputs(workdir / "in", max(args.frames, args.model_frames))
        print(
            f"{args.frames} frames per scenario ({args.model_frames} per job in models), "
            f"node_seconds={args.node_seconds}, max_in_flight={MAX_IN_FLIGHT}"
        )
        scenarios: list[tuple[str, Callable[[], Any]]] = [
            ("cold", lambda: cold(args, workdir, in_pattern)),
            ("models", lambda: models(args, workdir, in_pattern)),
            ("shared", lambda: shared(args, workdir, in_pattern)),
            ("comeback", lambda: comeback(args, workdir, in_pattern)),
            ("slowdown", lambda: slowdown(args, workdir, in_pattern)),
            ("slowdown_nospec", lambda: slowdown(args, workdir, in_pattern, speculation=False)),
        ]
        for name, scenario in scenarios:
            try:
                got = scenario()
            except Exception as exc:  # a bench bug or a crash counts as a failed scenario
                logging.getLogger(__name__).exception("scenario %s crashed", name)
                got = Outcome(name, 0.0, 0.0, False, note=f"CRASHED: {exc!r}")
            if isinstance(got, tuple):
                got, extra[name] = got
            outcomes[name] = got
            print(
                f"{got.name:<9} makespan {got.makespan:6.2f} s  ideal {got.ideal:6.2f} s  "
                f"eff {got.efficiency:.3f}  lost {got.lost}  dup {got.duplicated}  {got.note}",
                flush=True,
            )
    print(f"max loads of one model on one server within one job: {extra.get('models', 'n/a')}")
    print(f"stuck reports in shared: {extra.get('shared', 'n/a')}")
    print(f"total bench time {time.monotonic() - t_start:.1f} s")
    lost = sum(o.lost for o in outcomes.values())
    dup = sum(o.duplicated for o in outcomes.values())
    nospec = outcomes["slowdown_nospec"]
    print(f"slowdown without speculation: efficiency {nospec.efficiency:.3f}")
    print(
        "RESULT "
        + " ".join(
            f"efficiency_{k}={outcomes[k].efficiency:.3f}" for k, _ in scenarios if k in RESULT_KEYS
        )
        + f" lost={lost} duplicated={dup}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
