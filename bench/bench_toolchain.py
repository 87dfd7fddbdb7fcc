"""Benchmark of the research toolchain on 100 units x 365 days (readings every 30 minutes).

Like a real fleet, part of it runs firmware that writes 21-field rows (the sensor's raw values):
the odd-numbered units from the start, every tenth unit from half-way (one file holds both).

Generates the data set into a temp dir, then runs `make -C database` as cron would and reports:
full build from scratch, a re-run with nothing new, a re-run after one unit adds one day, import
rows/s against the floor (read, str.split and one executemany into the same table in one
transaction), the size of every SVG, and the peak memory of the build processes.

    .venv/bin/python bench/bench_toolchain.py [--units 100] [--days 365] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROTATE_BYTES = 100 * 1024
SITES = ("vj_re_sn", "vj_ko_sn", "ko_ho_me", "ik_lo_he", "st_ve_sn")


def hw_id(unit: int) -> str:
    return f"co2unit-{unit:012x}"


class Rotating:
    """Writes lines into dir/<stem>-NNNN.<ext>, moving on at ~100 KB like the units."""

    def __init__(self, directory: Path, stem: str, ext: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory, self.stem, self.ext = directory, stem, ext
        existing = sorted(directory.glob(f"{stem}-*.{ext}"))
        self.number = int(existing[-1].stem.split("-")[-1]) if existing else 0
        self.size = existing[-1].stat().st_size if existing else 0
        self.f = open(self._path(), "a", encoding="utf-8")  # noqa: SIM115

    def _path(self) -> Path:
        return self.directory / f"{self.stem}-{self.number:04d}.{self.ext}"

    def write(self, text: str) -> None:
        if self.size >= ROTATE_BYTES:
            self.f.close()
            self.number, self.size = self.number + 1, 0
            self.f = open(self._path(), "a", encoding="utf-8")  # noqa: SIM115
        self.f.write(text)
        self.size += len(text)

    def close(self) -> None:
        self.f.close()


def raw_fields_from(unit: int, days: int) -> int | None:
    """The day from which the unit writes 21 fields (None: always 16)."""
    if unit % 2:
        return 0
    return days // 2 if unit % 10 == 0 else None


def unit_days(data: Path, var: Path, unit: int, first_day: datetime, days: int,
              raw_from: int | None = None) -> None:
    """Append `days` days of readings, error entries and pings of one unit."""
    rng = random.Random(unit * 7919 + first_day.toordinal())
    hw, nick = hw_id(unit), f"site-{unit:02d}"
    readings = Rotating(data / hw / "data" / "readings", "readings", "tsv")
    errors = Rotating(data / hw / "errors", "errors", "txt")
    pings = Rotating(var / "pings", "pings", "tsv")
    base = 420 + unit * 3
    for d in range(days):
        day = first_day + timedelta(days=d)
        date = day.strftime("%Y-%m-%d")
        lines = []
        for slot in range(48):
            co2 = base + int(150 * rng.random()) + (slot % 24) * 4
            temp = 8.0 + 6 * rng.random() + (slot // 4) * 0.2
            values = "\t".join(str(co2 + rng.randrange(-8, 9)) for _ in range(10))
            if raw_from is not None and d >= raw_from:
                values += (f"\t{co2 // 10}\t{rng.randrange(30000, 36000)}\t"
                           f"{rng.randrange(26000, 30000)}\t32626\t{1000 + int(temp * 10)}")
            lines.append(f"{hw}\t{nick}\t{date}\t{slot // 2:02d}:{(slot % 2) * 30:02d}:10\t"
                         f"{temp:.4f}\t{rng.randrange(3)}\t{values}\n")
        readings.write("".join(lines))
        errors.write(f"----- {date} 03:10:{unit % 60:02d} INFO  transmitting\n"
                     f"----- {date} 03:11:02 INFO  Signal quality {rng.randrange(5, 30)}\n")
        pings.write(f"{date}T03:1{unit % 10}:{unit % 60:02d}.{unit:06d}\t{hw}\t{nick}\t"
                    f"{rng.randrange(5, 30)}\t{-113 + 2 * rng.randrange(5, 30)}\t99\n")
    for f in (readings, errors, pings):
        f.close()


def generate(root: Path, units: int, days: int, first_day: datetime) -> None:
    """The data set: pushed files, the server's ping log and the deployment table."""
    data, var = root / "remote_data", root / "var"
    for unit in range(units):
        unit_days(data, var, unit, first_day, days, raw_fields_from(unit, days))
    rows = ["unit_id\tnickname\tsite\ttier\tstatus\tstart_ts\tend_ts\tnote"]
    for unit in range(units - 5):  # a few units were never deployed
        start = first_day + timedelta(days=unit % 30)
        rows.append(f"{hw_id(unit)}\tsite-{unit:02d}\t{SITES[unit % 5]}_{unit // 5}\t"
                    f"{unit % 4}\tdeployed\t{start:%Y-%m-%d}\t\tbench # {unit}")
    (data / "manual").mkdir(parents=True, exist_ok=True)
    (data / "manual" / "deploy_durations_tiered.tsv").write_text("\n".join(rows) + "\n")


def run_make(root: Path) -> tuple[float, str]:
    """One `make -C database` run as scripts/make-summaries.sh does; (seconds, output)."""
    cmd = ["make", "-s", "-C", str(REPO / "database"), f"DATA_DIR={root / 'remote_data'}",
           f"DB_DIR={root / 'var'}", f"WEB_PUB_DIR={root / 'var' / 'pub'}"]
    start = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"})
    seconds = time.monotonic() - start
    if done.returncode:
        sys.exit(f"make failed:\n{done.stdout}\n{done.stderr}")
    return seconds, done.stdout


def floor_rows_per_s(root: Path) -> tuple[int, float, float]:
    """Rows, seconds and rows/s of the floor: read, split, one executemany, one transaction."""
    sys.path.insert(0, str(REPO / "src"))
    from co2unit_server.database import db

    path = root / "floor.sqlite3"
    conn = db.connect(path)
    db.init_schema(conn)
    files = sorted((root / "remote_data").glob("*/data/readings/*.tsv"))
    columns = ["unit_id", "nickname", "date", "time", "temp", "flash_count",
               *(f"co2_{i:02d}" for i in range(1, 11)), *db.RAW_COLUMNS, "src_file", "src_line"]
    no_raw = (None,) * len(db.RAW_COLUMNS)

    def rows():
        for file_id, f in enumerate(files):
            with open(f, encoding="utf-8") as fh:
                for n, line in enumerate(fh, 1):
                    fields = line[:-1].split("\t")
                    yield (*fields, *(no_raw if len(fields) == 16 else ()), file_id, n)

    start = time.monotonic()
    conn.execute("BEGIN")
    cur = conn.executemany(f"INSERT INTO co2_readings ({', '.join(columns)}) VALUES ("
                           + ", ".join("?" * len(columns)) + ")", rows())
    conn.execute("COMMIT")
    seconds = time.monotonic() - start
    count = cur.rowcount
    conn.close()
    return count, seconds, count / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=100)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--keep", help="generate into this directory and keep it")
    args = parser.parse_args()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-toolchain-"))
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    first_day = today - timedelta(days=args.days)
    try:
        t0 = time.monotonic()
        generate(root, args.units, args.days, first_day)
        rows = args.units * args.days * 48
        print(f"generated {args.units} units x {args.days} days ({rows} readings) into {root} "
              f"in {time.monotonic() - t0:.1f} s")
        full, output = run_make(root)
        print(output, end="")
        match = re.search(r"^readings: .*?(\d+) new rows.* in ([\d.]+) s; "
                          r"co2_bins: \d+ rows binned in ([\d.]+) s", output, re.M)
        imported, bins_s = int(match.group(1)), float(match.group(3))
        import_s = float(match.group(2)) - bins_s
        noop, _ = run_make(root)
        unit_days(root / "remote_data", root / "var", 1, today, 1, 0)
        update, update_output = run_make(root)
        floor_count, floor_s, floor_rate = floor_rows_per_s(root)
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print("\n--- figures ---")
        print(f"full build from scratch (import + all plots and pages): {full:.2f} s")
        print(f"re-run with nothing new:                                {noop:.2f} s")
        print(f"re-run after one unit added one day (incl. re-plotting): {update:.2f} s")
        rate = imported / import_s
        print(f"import of readings: {imported} rows in {import_s:.2f} s = {rate:,.0f} rows/s "
              f"(then co2_bins, the plots' aggregate: {bins_s:.2f} s)")
        print(f"floor: {floor_count} rows in {floor_s:.2f} s = {floor_rate:,.0f} rows/s; "
              f"import takes {floor_rate / rate:.2f}x the floor's time per row")
        for svg in sorted((root / "var" / "pub").glob("*.svg")):
            print(f"{svg.name}: {svg.stat().st_size / 1e6:.2f} MB")
        print(f"peak memory (max RSS of the build processes): {peak_mb:.0f} MB")
        print("one-day update output:\n" + update_output, end="")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
