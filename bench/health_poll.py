"""Benchmark the health cache: one full poll of a 50-server cluster, and snapshot reads.

Half the servers are black holes (127.0.0.1 listeners that accept and never answer), half are
simulated ComfyUI servers (``start_sims``; all in this process, so their event loops share the
GIL with the pollers; 25 sims start in well under a second, so all 25 are real).
Prints one full-cluster poll as a ratio of one poll timeout (target
<= 1.10: black-holed servers must not queue behind each other), the HTTP requests a poll sends
(one once the state is known: ``/queue``; ``/system_stats`` only every ``stats_interval`` or while
the state is unknown) and the time a snapshot read takes on the calling thread (target p99
<= 5 us), then a last line (``poll_ratio`` is the median of the
``--rounds`` full polls requested with ``refresh()`` once the pollers run; the first poll, which
also starts 50 threads and opens every connection, is printed separately)::

    RESULT poll_ratio=<x> snapshot_read_us_p50=<y> snapshot_read_us_p99=<z>

Usage: ``python bench/health_poll.py [--servers 50] [--sims 25] [--timeout 1.0] [--rounds 5]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from typing import Optional

from comfy_cluster.core.health import HealthMonitor, ServerState
from comfy_cluster.core.server import ServerConfig
from comfy_cluster.sim.harness import BlackHole, start_sims, stop_all


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=int, default=50)
    parser.add_argument("--sims", type=int, default=25, help="real sims; the rest are black holes")
    parser.add_argument("--timeout", type=float, default=1.0, help="poll timeout, seconds")
    parser.add_argument("--rounds", type=int, default=5, help="full polls after the first")
    parser.add_argument("--reads", type=int, default=20000, help="snapshot reads to time")
    args = parser.parse_args(argv)

    n_sims = min(args.sims, args.servers)
    n_holes = args.servers - n_sims
    sims = start_sims(n_sims) if n_sims else []
    holes = [BlackHole() for _ in range(n_holes)]
    servers = [
        ServerConfig(name=f"sim{i:02d}", host="127.0.0.1", port=s.port) for i, s in enumerate(sims)
    ] + [
        ServerConfig(name=f"hole{i:02d}", host="127.0.0.1", port=h.port)
        for i, h in enumerate(holes)
    ]
    monitor = HealthMonitor(
        servers, timeout=args.timeout, interval_busy=args.timeout * 100, interval_idle=3600.0
    )
    ratios: list[float] = []
    try:
        t0 = time.perf_counter()
        monitor.start()
        complete = monitor.wait_for_poll(args.timeout * 10)
        first = time.perf_counter() - t0
        print(
            f"first poll (incl. thread start): {first:.3f} s = {first / args.timeout:.2f} x timeout"
            f"{'' if complete else ' (INCOMPLETE)'}"
        )
        for n in range(args.rounds):
            t0 = time.perf_counter()
            _, complete = monitor.refresh(args.timeout * 10)
            took = time.perf_counter() - t0
            ratios.append(took / args.timeout)
            print(
                f"poll {n + 1}: {took:.3f} s = {took / args.timeout:.2f} x timeout"
                f"{'' if complete else ' (INCOMPLETE)'}"
            )
        pollers = list(monitor._pollers.values())
        sent = {p.server.name: p.requests for p in pollers}
        sims_sent = [v for k, v in sent.items() if k.startswith("sim")]
        print(
            f"HTTP requests per answering server over {1 + args.rounds} polls: "
            f"{min(sims_sent, default=0)}..{max(sims_sent, default=0)} "
            f"(first poll 2, then 1 each)"
        )
        snap = monitor.snapshot()
        counts = {s.value: len(snap.in_state(s)) for s in ServerState}
        print("states:", ", ".join(f"{k}={v}" for k, v in counts.items() if v))

        # Snapshot reads on this thread, while the pollers keep polling in the background.
        stop = threading.Event()

        def churn() -> None:
            while not stop.is_set():
                monitor.refresh(args.timeout * 10)

        churner = threading.Thread(target=churn, name="bench-churn", daemon=True)
        churner.start()
        samples = []
        for _ in range(args.reads):
            t = time.perf_counter_ns()
            s = monitor.snapshot()
            _ = s.get("sim00")
            samples.append((time.perf_counter_ns() - t) / 1000.0)
        stop.set()
        samples.sort()
        p50 = statistics.median(samples)
        p99 = samples[int(len(samples) * 0.99) - 1]
    finally:
        monitor.close(timeout=args.timeout + 1)
        stop_all(sims)
        for hole in holes:
            hole.close()

    ratio = statistics.median(ratios)
    print(
        f"servers={args.servers} sims={n_sims} black_holes={n_holes} timeout={args.timeout}s; "
        f"full-poll ratio over {len(ratios)} rounds: median={ratio:.3f} worst={max(ratios):.3f} "
        f"(first poll, with thread start-up: {first / args.timeout:.3f})"
    )
    print(f"snapshot read: p50={p50:.2f} us p99={p99:.2f} us over {args.reads} reads")
    print(
        f"RESULT poll_ratio={ratio:.3f} snapshot_read_us_p50={p50:.2f} "
        f"snapshot_read_us_p99={p99:.2f}"
    )
    return 0 if ratio <= 1.10 and p99 <= 5 else 1


if __name__ == "__main__":
    sys.exit(main())
