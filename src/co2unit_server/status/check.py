"""`co2unit-server check`: the fleet's units and watched gateway devices, for cron or Nagios.

Above fleet_status and gateway_status, which it counts together (gateway_status builds on
fleet_status's status words, so `check` cannot live in either)."""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..core.config import ConfigError, load_config
from ..core.headroom import storage_alarms
from ..database.tables import ResearchError, connection
from ..records.gateway_health import read_health
from .fleet_status import NEVER_SEEN, SILENT, STATUSES, UnitRow, ago, fleet, iso_z
from .gateway_status import DeviceRow, fleet_devices

OK, WARNING, CRITICAL, UNKNOWN_EXIT = 0, 1, 2, 3
_LABELS = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN_EXIT: "UNKNOWN"}


def check(rows: list[UnitRow], now: float, devices: Sequence[DeviceRow] = (),
          gateway_problems: Sequence[tuple[str, str, str]] = (),
          storage: Sequence[str] = ()) -> tuple[int, list[str]]:
    """Exit status and lines for cron or Nagios: 0 all deployed units and watched gateway
    devices alive, 1 late, 2 silent/never seen (gateway_status says which devices count) or
    a storage alarm (headroom.storage_alarms: the server refuses new data).

    `gateway_problems` are the running gateway process's (records/gateway_health.py): a gateway
    that is not running is critical, the rest (a devices file in error) a warning."""
    deployed = [row for row in rows if row.deployed]
    watched = [row for row in devices if row.watched]
    gateway_lines = [f"GATEWAY {level.upper()} {message}" for _, level, message in gateway_problems]
    gateway_code = max((CRITICAL if level == "critical" else WARNING
                        for _, level, _ in gateway_problems), default=OK)
    if not deployed and not watched and not gateway_problems:
        head = ("no unit is deployed now (has the deployment table been imported? `make` in "
                "database/)")
        code = CRITICAL if storage else UNKNOWN_EXIT
        return code, [f"FLEET {_LABELS[code]} - {head}", *storage]
    problems = [row for row in deployed if row.problem]
    device_problems = [row for row in watched if row.problem]
    worst = {row.status for row in [*problems, *device_problems]}
    code = CRITICAL if storage or worst & {SILENT, NEVER_SEEN} else WARNING if worst else OK
    code = max(code, gateway_code)
    head = f"FLEET {_LABELS[code]} - {_counted(deployed, 'deployed units')}"
    if watched:
        head += f"; {_counted(watched, 'gateway devices')}"
    return code, ([head, *storage, *gateway_lines] + [_problem_line(row, now) for row in problems]
                  + [row.problem_line(now) for row in device_problems])


def _counted(rows: Sequence[UnitRow | DeviceRow], what: str) -> str:
    """'4 deployed units: 1 alive, 1 late, …'."""
    counts = Counter(row.status for row in rows)
    return f"{len(rows)} {what}" + "".join(
        (": " if i == 0 else ", ") + f"{counts[s]} {s}"
        for i, s in enumerate(s for s in STATUSES if counts[s]))


def _problem_line(row: UnitRow, now: float) -> str:
    where = ", ".join(str(v) for v in (row.nickname, row.site) if v)
    seen = ("never pinged" if row.last_ping is None else
            f"last ping {iso_z(row.last_ping)} ({ago(now - row.last_ping)} ago)")
    return f"{row.status.upper()} {row.hw_id}" + (f" ({where})" if where else "") + f": {seen}"


def add_check_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ini", type=Path, help="ini file whose [co2unit] section to apply")


def run_check(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Print the fleet's state; exit 0 (alive), 1 (late), 2 (silent), 3 (cannot tell)."""
    now = time.time()
    try:
        config = load_config(environ, args.ini)
        with connection(config.db_path) as conn:
            rows = fleet(conn, config, now, with_updates=False)
            devices = fleet_devices(conn, config, now)
        alarms = storage_alarms(config)
    except (ConfigError, ResearchError, sqlite3.Error, OSError) as exc:
        print(f"FLEET UNKNOWN - cannot tell: {exc}")
        return UNKNOWN_EXIT
    code, lines = check(rows, now, devices, read_health(config.gateway_health_file), alarms)
    print("\n".join(lines))
    sys.stdout.flush()
    return code
