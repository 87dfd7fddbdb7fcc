"""Benchmark the HTTP pull collector: a large polled fleet with hanging devices among it.

    .venv/bin/python bench/bench_pull_collector.py [--devices 1000] [--interval 10]
        [--seconds 60] [--hang 0.05] [--timeout 5] [--keep DIR]

The real gateway process (`co2unit-server gateways`, its own process) polls emulated NodeMCUs
(simulator/nodemcu.py, on loopback ports in this process): the healthy ones answer like the
firmware, a share of them hang (take the request, never answer) until the collector's timeout.
Reports, for the healthy devices, how late each poll started after its slot (measured where
the emulator received the request, so it includes the connect): p50/p99/max and how many
started more than 1 s late (target: none); polls/s; the gateway's CPU; and whether every
accepted answer is in the table exactly once with the values and time it was sent with.
Loopback only; the run is bounded by --seconds.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import tempfile
from pathlib import Path

from co2unit_server.simulator.nodemcu import (
    FIRMWARES,
    DeviceSpec,
    PullRunSettings,
    percentile,
    run_pull,
)

LATE_LIMIT_S = 1.0


def fleet(count: int, hang_share: float, seed: int) -> list[DeviceSpec]:
    """`count` devices, every 1/hang_share-th of them hanging, the others of every firmware."""
    rng = random.Random(seed)
    every = round(1 / hang_share) if hang_share else 0
    return [DeviceSpec(f"nodemcu-{i:04d}", "hang" if every and i % every == 0 else "",
                       firmware=rng.choice(list(FIRMWARES)), seed=seed)
            for i in range(count)]


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--hang", type=float, default=0.05, help="share of hanging devices")
    parser.add_argument("--timeout", type=float, default=5.0, help="pull_timeout_seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="run in DIR and keep it")
    args = parser.parse_args()
    specs = fleet(args.devices, args.hang, args.seed)
    settings = PullRunSettings(interval_s=args.interval, seconds=args.seconds,
                               timeout_s=args.timeout, max_backoff_s=300.0,
                               late_limit_s=LATE_LIMIT_S)
    with tempfile.TemporaryDirectory(prefix="co2unit-bench-pull-") as tmp:
        base = args.keep or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        cpu_before = children_cpu_s()
        result = run_pull(base, settings, specs)
        gateway_cpu_s = children_cpu_s() - cpu_before  # the gateway: reaped, so counted
    report = result.report
    late = report.lateness_s
    hanging = sum(spec.fault == "hang" for spec in specs)
    print(f"{args.devices} devices ({hanging} hanging) at a {args.interval:g} s interval, "
          f"pull_timeout_seconds {args.timeout:g}, {args.seconds:g} s run")
    print(f"healthy poll start lateness vs schedule: p50 {percentile(late, 0.5) * 1000:.1f} ms, "
          f"p99 {percentile(late, 0.99) * 1000:.1f} ms, max {max(late, default=0) * 1000:.1f} "
          f"ms over {len(late)} polls")
    over = sum(x > LATE_LIMIT_S for x in late)
    print(f"healthy polls started more than {LATE_LIMIT_S:g} s late: {over} (target: 0)")
    print(f"polls: {report.figures['polls']}")
    run_s = (result.stopped_us - result.started_us) / 1e6
    print(f"gateway CPU: {gateway_cpu_s:.1f} s over {run_s:.0f} s "
          f"({100 * gateway_cpu_s / run_s:.0f} % of a core, including its start and stop)")
    print(f"values stored: {report.figures['values stored']}")
    print("every accepted answer in the table once, with its values and time: "
          f"{'yes' if report.passed else 'NO'}")
    if not report.passed:
        print(report.summary())
    return 0 if report.passed and over == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
