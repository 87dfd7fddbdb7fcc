"""Benchmark of `co2unit-server export` and `co2unit_server.research` on 100 units x 365 days.

Generates bench_toolchain's data set (1,752,000 readings) into a temp dir, imports it with
`co2unit-server import`, then prints: the floor (a plain SELECT of the same columns, every row
iterated in Python), `export --format csv` and `--format json` to a file (each a process of its
own, start-up included) and their ratio to the floor (target <= 3x), the peak RSS of each
export process, and the time of `research.readings` for one unit's year and for all units.
Floor and exports take turns for --repeat rounds; figures are medians.

    .venv/bin/python bench/bench_export.py [--units 100] [--days 365] [--repeat 5] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench_toolchain import generate, hw_id

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from co2unit_server import research  # noqa: E402
from co2unit_server.database import db  # noqa: E402

FLOOR_COLUMNS = ("unit_id, nickname, date, time, temp, flash_count, "
                 + ", ".join(f"co2_{i:02d}" for i in range(1, 11)) + ", "
                 + ", ".join(db.RAW_COLUMNS))


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "co2unit_server", *args]


def build(root: Path, units: int, days: int) -> None:
    """Generate and import the data set unless root already holds it (--keep)."""
    if (root / "var" / "db.sqlite3").exists():
        print(f"using the database already in {root}")
        return
    first_day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0,
                                          tzinfo=None) - timedelta(days=days)
    t0 = time.monotonic()
    generate(root, units, days, first_day)
    t1 = time.monotonic()
    done = subprocess.run(cli("import", "--data-dir", str(root / "remote_data"), "--db-dir",
                              str(root / "var")), capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"import failed:\n{done.stdout}\n{done.stderr}")
    print(f"generated {units} units x {days} days in {t1 - t0:.1f} s, imported in "
          f"{time.monotonic() - t1:.1f} s")


def floor(db_path: Path) -> tuple[float, int]:
    """Seconds and rows of a plain SELECT of the stored columns, iterated in Python."""
    conn = sqlite3.connect(f"{db_path.as_uri()}?mode=ro", uri=True)
    start = time.monotonic()
    rows = 0
    for _ in conn.execute(f"SELECT {FLOOR_COLUMNS} FROM co2_readings"):
        rows += 1
    seconds = time.monotonic() - start
    conn.close()
    return seconds, rows


def export(db_dir: Path, fmt: str, out: Path) -> tuple[float, float]:
    """Seconds and peak RSS (MB) of one `co2unit-server export` process."""
    start = time.monotonic()
    proc = subprocess.Popen(cli("export", "--db-dir", str(db_dir), "--format", fmt,
                                "--out", str(out)))
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS, not all children's
    seconds = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.exit(f"export --format {fmt} failed with status {proc.returncode}")
    return seconds, usage.ru_maxrss / 1024


def rounds(db_dir: Path, root: Path, repeat: int) -> None:
    """Floor, csv and json take turns, so a slow minute on the machine hits all three."""
    floors, exports = [], {"csv": [], "json": []}
    for _ in range(repeat):
        floors.append(floor(db_dir / "db.sqlite3"))
        for fmt, runs in exports.items():
            runs.append(export(db_dir, fmt, root / f"export.{fmt}"))
    floor_s = statistics.median(s for s, _ in floors)
    print(f"plain SELECT of {floors[0][1]:,} rows into Python: {floor_s:.2f} s")
    for fmt, runs in exports.items():
        seconds = statistics.median(s for s, _ in runs)
        ratios = [s / f for (s, _), (f, _) in zip(runs, floors, strict=True)]
        print(f"export --format {fmt}: {seconds:.2f} s = {seconds / floor_s:.2f}x the plain "
              f"SELECT (per round {min(ratios):.2f}-{max(ratios):.2f}x; target <= 3x); "
              f"{(root / f'export.{fmt}').stat().st_size / 1e6:.0f} MB; "
              f"peak RSS {max(r for _, r in runs):.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=100)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", help="generate into this directory and keep it (reused)")
    args = parser.parse_args()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-export-"))
    try:
        build(root, args.units, args.days)
        db_dir = root / "var"
        print(f"\n--- figures (median of {args.repeat} rounds) ---")
        rounds(db_dir, root, args.repeat)
        one = hw_id(0)
        for label, units in ((f"one unit's year ({one})", one), ("all units", None)):
            start = time.monotonic()
            frame = research.readings(db_dir, units=units)
            seconds = time.monotonic() - start
            print(f"research.readings, {label}: {len(frame):,} rows in {seconds:.2f} s, "
                  f"{frame.memory_usage(deep=True).sum() / 1e6:.0f} MB")
            del frame
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
