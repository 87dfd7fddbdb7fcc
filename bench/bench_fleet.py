"""Fleet benchmark: units all waking at once against the server under uWSGI (the ini's 2 x 32).

Runs: 500 units x 1 day without faults, the same with 20% faulty connections, and 200 units on
2 kB/s links. Each run gets a fresh server and data dirs; after the timed wake, units that did
not finish are woken again without faults, so the verification can demand exact copies.

    .venv/bin/python bench/bench_fleet.py [--units 500] [--slow-units 200] [--only NAME]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from co2unit_server.simulator.fleet import Fleet, FleetConfig, FleetResult
from co2unit_server.simulator.launcher import ServerProcess

REPO = Path(__file__).resolve().parent.parent


def run_fleet(ini: Path, **options) -> FleetResult:
    with tempfile.TemporaryDirectory(prefix="co2unit-bench-") as tmp, \
            ServerProcess(Path(tmp), ini) as server:
        cfg = FleetConfig(host=server.host, port=server.port, remote_data=server.remote_data,
                          days=1, seed=1, workdir=Path(tmp) / "cards", **options)
        return Fleet(cfg).run()


def report(name: str, result: FleetResult, budget_s: float) -> None:
    print(f"== {name}")
    print(f"   wall time until every unit finished its cycle: {result.cycle_wall_s:.2f} s; "
          f"{result.requests} requests, {result.requests / result.cycle_wall_s:.0f} requests/s, "
          f"{result.bytes_sent / 1e6:.2f} MB sent")
    print(f"   latency p50 {result.percentile(0.5) * 1000:.0f} ms, p99 "
          f"{result.percentile(0.99) * 1000:.0f} ms; longest unit cycle "
          f"{result.longest_cycle_s:.1f} s (budget {budget_s:.0f} s), out of budget "
          f"{result.budget_exhausted}; failed transmissions {result.failures}, watchdog resets "
          f"{result.watchdog_resets}, faults injected "
          f"{result.faults_injected}; drain cycles afterwards "
          f"{result.drain.cycles if result.drain else 0}")
    print(f"   verification: {'PASS' if result.passed else 'FAIL'}"
          + (f" ({result.problems[0]})" if result.problems else ""), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=500)
    parser.add_argument("--slow-units", type=int, default=200)
    parser.add_argument("--ini", type=Path, default=REPO / "server.ini.example")
    parser.add_argument("--only", choices=["clean", "faults", "slow"], action="append")
    args = parser.parse_args()
    runs = {
        "clean": (f"{args.units} units x 1 day, no faults", dict(units=args.units)),
        "faults": (f"{args.units} units x 1 day, 20% faulty connections",
                   dict(units=args.units, faults=0.2)),
        "slow": (f"{args.slow_units} units x 1 day on 2 kB/s links",
                 dict(units=args.slow_units, kbps=2)),
    }
    passed = True
    for key in args.only or list(runs):
        name, options = runs[key]
        result = run_fleet(args.ini, **options)
        report(name, result, FleetConfig.budget_s)
        passed &= result.passed and result.budget_exhausted == 0
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
