"""`co2unit-server simulate`: run a simulated fleet against a server and verify the result."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from .fleet import DRAIN_ROUNDS, Fleet, FleetConfig, FleetError
from .sdcard import ROTATE_BYTES, Irregularities
from .unit import BUDGET_S, TIMEOUT_S


def _positive(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {raw}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default="http://127.0.0.1:8080",
                   help="the server (default: %(default)s)")
    p.add_argument("--remote-data", type=Path,
                   help="the server's remote_data dir on this machine, to verify the result")
    p.add_argument("--units", type=_positive, default=10,
                   help="units in the fleet (default: %(default)s)")
    p.add_argument("--days", type=int, default=30, help="simulated days (default: %(default)s)")
    p.add_argument("--faults", type=float, default=0.0,
                   help="share of connections dropped or stalled by the proxy (default: 0)")
    p.add_argument("--seed", type=int, default=1, help="seed of data, events and faults")
    p.add_argument("--kbps", type=float, help="link bandwidth per unit and direction, in kB/s")
    p.add_argument("--workdir", type=Path, help="where the SD cards live (default: a temp dir, "
                   "removed at the end)")
    p.add_argument("--concurrency", type=int, default=0,
                   help="units waking at once (default: all of them)")
    p.add_argument("--budget", type=float, default=BUDGET_S,
                   help="seconds a unit may spend on one cycle (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=TIMEOUT_S,
                   help="seconds a unit waits on a silent link before its watchdog resets it "
                   "(the firmware's: 120; stalls outlast it; default: %(default)s)")
    p.add_argument("--rotate-bytes", type=int, default=ROTATE_BYTES,
                   help="size at which a unit starts its next file (default: %(default)s)")
    p.add_argument("--lose-state", type=float, default=0.0, metavar="RATE",
                   help="per unit and day: the unit loses its saved sync state")
    p.add_argument("--new-card", type=float, default=0.0, metavar="RATE",
                   help="per unit and day: the unit gets a new, empty SD card")
    p.add_argument("--irregularities", type=Irregularities.parse, default=Irregularities(),
                   metavar="NAME=RATE,...", help="override data irregularity rates "
                   "(glitch, none, lost_clock, nonprinting, temp85, test_lines, warning, "
                   "exception, tuple_date)")
    p.add_argument("--raw-share", type=float, default=0.5, metavar="SHARE",
                   help="share of units on firmware from 2020-01-14 on, which writes 21-field "
                   "readings rows (default: %(default)s)")
    p.add_argument("--nickname-update", action="append", default=[], metavar="UNIT:DAY:NICK",
                   help="on DAY, offer unit number UNIT an update setting its nickname "
                   "(needs --remote-data)")
    p.add_argument("--no-drain", dest="drain", action="store_false",
                   help=f"do not wake unfinished units (up to {DRAIN_ROUNDS} times, without "
                   "faults) before verifying; files still being pushed then match as prefixes")


def parse_nickname_update(text: str) -> tuple[int, int, str]:
    unit, day, nickname = text.split(":", 2)
    return int(unit), int(day), nickname


def config_from_args(args: argparse.Namespace) -> FleetConfig:
    url = urlsplit(args.url)
    return FleetConfig(
        host=url.hostname or "127.0.0.1", port=url.port or 80, remote_data=args.remote_data,
        units=args.units, days=args.days, faults=args.faults, seed=args.seed, kbps=args.kbps,
        workdir=args.workdir, concurrency=args.concurrency, budget_s=args.budget,
        timeout=args.timeout, rotate_bytes=args.rotate_bytes,
        lose_state_rate=args.lose_state, swap_rate=args.new_card,
        irregularities=args.irregularities, drain=args.drain, raw_share=args.raw_share,
        nickname_updates=[parse_nickname_update(t) for t in args.nickname_update])


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Run the fleet, print the summary; exit status 1 on FAIL."""
    cfg = config_from_args(args)
    if cfg.nickname_updates and not cfg.remote_data:
        print("co2unit-server simulate: --nickname-update needs --remote-data", file=sys.stderr)
        return 2
    try:
        fleet = Fleet(cfg)
    except FleetError as exc:
        print(f"co2unit-server simulate: {exc}", file=sys.stderr)
        return 2
    result = fleet.run()
    print(result.summary())
    return 1 if result.problems or result.all_hazards or (result.verified and not result.passed) \
        else 0
