"""`python -m co2unit_server.simulator.demo` (`make demo`): the system with a month of data.

Starts the server on a loopback port, simulates 10 units for 30 days with a few faults and one
nickname update, builds the pages with the `database/` toolchain when it is there, prints the
URLs and serves until Ctrl-C.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .fleet import Fleet, FleetConfig, FleetResult, nickname_for, unit_ids
from .launcher import ServerProcess

PAGES = ["/", "/fleet", "/status/alive/recent", "/status/alive/summary", "/data/co2/summary"]
RENAMED_UNIT, RENAME_DAY, NEW_NICKNAME = 0, 12, "demo-renamed"


def run_toolchain(database: Path, server: ServerProcess) -> None:
    """Import the pushed data and generate the pages, when the toolchain exists."""
    if not (database / "Makefile").exists():
        print(f"demo: no {database}/Makefile yet: skipping the database toolchain")
        return
    pub = server.var_dir / "pub"
    cmd = ["make", "-C", str(database), f"DATA_DIR={server.remote_data.resolve()}",
           f"DB_DIR={server.var_dir.resolve()}", f"WEB_PUB_DIR={pub.resolve()}"]
    print("demo:", " ".join(cmd), flush=True)
    if subprocess.run(cmd).returncode != 0:
        print("demo: the toolchain failed; the server still runs", file=sys.stderr)


def write_deployments(remote_data: Path, hw_ids: list[str], start: datetime) -> None:
    """The researchers' deployment table for the simulated units (docs/unit-protocol.md format)."""
    rows = ["unit_id\tnickname\tsite\ttier\tstatus\tstart_ts\tend_ts\tnote"]
    for i, hw_id in enumerate(hw_ids):
        status = "lab_check" if i == len(hw_ids) - 1 else "deployed"
        rows.append(f"{hw_id}\t{nickname_for(i)}\tsim_site_{i // 2}\t{3 - i % 3}\t{status}\t"
                    f"{start:%Y-%m-%d}\t\tsimulated by make demo")
    path = remote_data / "manual" / "deploy_durations_tiered.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# written by the demo\n" + "\n".join(rows) + "\n", encoding="utf-8")


def demo_start(days: int) -> datetime:
    """Midnight UTC `days` ago: the simulated month ends today, so "last 14 days" has data."""
    today = datetime.now(UTC).replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days)


def simulate(server: ServerProcess, args: argparse.Namespace, base: Path) -> FleetResult:
    cfg = FleetConfig(host=server.host, port=server.port, remote_data=server.remote_data,
                      units=args.units, days=args.days, faults=args.faults, seed=args.seed,
                      timeout=1, workdir=base / "cards", lose_state_rate=0.01, swap_rate=0.005,
                      nickname_updates=[(RENAMED_UNIT, RENAME_DAY, NEW_NICKNAME)],
                      start=demo_start(args.days))
    print(f"demo: {args.units} units x {args.days} days, {args.faults:.0%} faulty connections; "
          f"unit 0 gets the nickname {NEW_NICKNAME!r} on day {RENAME_DAY}", flush=True)
    write_deployments(server.remote_data, unit_ids(cfg.units, cfg.seed), cfg.start)
    result = Fleet(cfg).run()
    print(result.summary(), flush=True)
    return result


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="demo", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, help="keep the data here (default: a temp dir, "
                        "removed at the end)")
    parser.add_argument("--port", type=int, help="default: a free port")
    parser.add_argument("--ini", type=Path, default=Path("server.ini.example"))
    parser.add_argument("--database", type=Path, default=Path("database"))
    parser.add_argument("--units", type=int, default=10)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--faults", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    # The server runs in its own session: stop it on a terminal closing or `kill` as on Ctrl-C.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    base = args.data_dir or Path(tempfile.mkdtemp(prefix="co2unit-demo-"))
    server = ServerProcess(base, args.ini, port=args.port)
    print(f"demo: starting the server on {server.url} with data in {base}", flush=True)
    result: FleetResult | None = None
    try:
        server.start()
        result = simulate(server, args, base)
        run_toolchain(args.database, server)
        print("demo: open", *(f"  {server.url}{page}" for page in PAGES), sep="\n")
        print("demo: Ctrl-C to stop", flush=True)
        while True:
            signal.pause()
    except KeyboardInterrupt:
        print("\ndemo: stopping")
    finally:
        server.stop()
        if not args.data_dir:
            shutil.rmtree(base, ignore_errors=True)
    return 0 if result is None or result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
