"""Benchmark of `delivery.update_states` (the fleet page's and `co2unit-server updates`' query).

Builds, in a temp dir, 1,000 units with 3 updates each (a nickname, a conf patch and 5 flash
files), a year of daily pings per unit (365,000 rows) and their update downloads in an on-disk
database, then prints the median time of `update_states` over every unit (--repeat rounds),
split into the directories' part and the whole.

    .venv/bin/python bench/bench_delivery.py [--units 1000] [--days 365] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from co2unit_server.database import db  # noqa: E402
from co2unit_server.updates import delivery  # noqa: E402
from co2unit_server.updates.publish import UpdateContent, publish  # noqa: E402
from co2unit_server.updates.tree import files_below  # noqa: E402

START = datetime(2026, 1, 1, 3, 10)


def build(base: Path, units: int, days: int) -> tuple[Path, Path]:
    """remote_data and the database, filled."""
    remote = base / "remote_data"
    hw_ids = [f"co2unit-{i:012x}" for i in range(units)]
    code = base / "code"
    code.mkdir()
    for i in range(5):
        (code / f"m{i}.py").write_text(f"x = {i}\n")
    flash = {f"m{i}.py": code / f"m{i}.py" for i in range(5)}
    real_fsync, os.fsync = os.fsync, lambda fd: None  # setting up, not measuring durability
    try:
        contents = [UpdateContent(nickname="site-1"),
                    UpdateContent(conf_patches={"ou-comm-config.json": {"ntp_host": "x.org"}}),
                    UpdateContent(flash=flash)]
        names = [publish(remote, hw_ids, content, name=f"update-2026-{3 * k + 3:02d}-01a").name
                 for k, content in enumerate(contents)]
    finally:
        os.fsync = real_fsync
    db_path = base / "db.sqlite3"
    conn = db.connect(db_path)
    db.init_schema(conn)
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO pings (ping_ts, ping_date, ping_time, unit_id, nickname) "
                     "VALUES (?, '', '', ?, ?)",
                     ((f"{START + timedelta(days=d):%Y-%m-%dT%H:%M:%S}.000000", hw,
                       "site-1" if d > 60 else "old") for hw in hw_ids for d in range(days)))
    rows = []
    for n, hw in enumerate(hw_ids):
        for k, name in enumerate(names):
            update = remote / hw / "updates" / name
            ts = f"{START + timedelta(days=59 + 92 * k, hours=1):%Y-%m-%dT%H:%M:%S}.000000"
            rows.append((ts, name, None, hw, 50, 50, 1))
            for rel in files_below(update):
                full = n % 10 or k < 2  # a tenth of the units never got the flash files whole
                rows.append((ts, name, rel, hw, 10 if full else 3, 10, int(bool(full))))
    conn.executemany(db.INSERT_DOWNLOAD, rows)
    conn.execute("COMMIT")
    conn.close()
    return remote, db_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--units", type=int, default=1000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-delivery-") as tmp:
        remote, db_path = build(Path(tmp), args.units, args.days)
        conn = db.connect(db_path)
        disk, whole = [], []
        for _ in range(args.repeat):
            started = time.perf_counter()
            for unit in sorted(os.listdir(remote)):
                delivery.updates_on_disk(remote, unit)
            disk.append(time.perf_counter() - started)
            started = time.perf_counter()
            states = delivery.update_states(conn, remote)
            whole.append(time.perf_counter() - started)
        counts: dict[str, int] = {}
        for updates in states.values():
            for s in updates:
                counts[s.state] = counts.get(s.state, 0) + 1
        print(f"{args.units} units x 3 updates, {args.units * args.days:,} pings")
        print(f"update_states: {statistics.median(whole) * 1000:.0f} ms median "
              f"(min {min(whole) * 1000:.0f}, max {max(whole) * 1000:.0f}); of which the "
              f"update directories {statistics.median(disk) * 1000:.0f} ms")
        print("states:", json.dumps(counts, sort_keys=True))


if __name__ == "__main__":
    main()
