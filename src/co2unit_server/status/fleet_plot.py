"""A unit's last 7 days of CO2 and temperature, drawn live from its pushed readings files.

The tail of the newest readings files is parsed by the importer's own parse_lines into an
in-memory co2_readings table and drawn by the toolchain's co2_figure, so the plot means what
the summary plots mean (0 and 200010 ppm and 85.0 °C left out) without waiting for `make`.
The SVG is cached under var/cache/fleet/, keyed by the files' sizes and mtimes: redrawn only
when new data arrives.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

from ..core.files import natural_key
from ..core.locking import file_lock
from ..core.timestamps import DAY, to_epoch
from ..database import db
from ..database.plotdata import Group, Period, to_text
from ..toolchain.importer.readings import INSERT, parse_lines
from ..toolchain.importer.report import StageReport

READINGS_DIR = "data/readings"
WINDOW_S = 7 * DAY
# Bounds on what one drawing reads: files are ~100 KB, a week of readings far less.
MAX_FILES = 8
MAX_BYTES = 4 * 1024 * 1024
PLOT_VERSION = "1"  # part of the cache key: bump when the drawing changes


def readings_files(remote_data: Path, hw_id: str) -> list[tuple[Path, os.stat_result]]:
    """The unit's newest readings files with their stat, oldest of them first."""
    directory = remote_data / hw_id / READINGS_DIR
    try:
        with os.scandir(directory) as entries:
            found = [(Path(e.path), e.stat()) for e in entries
                     if e.name.endswith(".tsv") and e.is_file(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(found, key=lambda f: natural_key(f[0].name))[-MAX_FILES:]


def cache_key(files: list[tuple[Path, os.stat_result]], label: str) -> str:
    """Changes whenever one of the files grows or is replaced (or the label changes)."""
    text = PLOT_VERSION + label + "".join(f"\n{p.name} {st.st_size} {st.st_mtime_ns} {st.st_ino}"
                                  for p, st in files)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def load_rows(files: list[tuple[Path, os.stat_result]]) -> sqlite3.Connection:
    """An in-memory database holding the complete lines of the newest files, back a week."""
    conn = db.empty_database()
    budget = MAX_BYTES
    newest = ""
    for path, st in reversed(files):
        rows = parse_lines(_complete_lines(path, st.st_size, budget), 0, 1,
                           StageReport("readings"))
        budget -= st.st_size
        conn.executemany(INSERT, rows)
        if rows:
            times = [f"{r[2]} {r[3]}" for r in rows]
            newest = max(newest, *times)
            if min(times) <= to_text(to_epoch(newest) - WINDOW_S):
                break
        if budget <= 0:
            break
    return conn


def _complete_lines(path: Path, size: int, budget: int) -> str:
    """The file's complete lines, or those of its last `budget` bytes."""
    start = max(0, size - budget)
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(size - start)
    if start:  # started mid-file: the first line is cut
        data = data[data.find(b"\n") + 1:]
    return data[: data.rfind(b"\n") + 1].decode("utf-8", "surrogateescape")


def newest_reading(conn: sqlite3.Connection) -> float | None:
    row = conn.execute("SELECT max(date || ' ' || time) FROM co2_readings").fetchone()
    return to_epoch(row[0]) if row[0] else None


def co2_svg(remote_data: Path, cache_dir: Path, locks_dir: Path, hw_id: str,
            label: str) -> tuple[str, bytes] | None:
    """(cache key, SVG) of the unit's last week of readings, drawn only when new data came.

    None when the unit has pushed no readings file.
    """
    for _ in range(2):
        files = readings_files(remote_data, hw_id)
        if not files:
            return None
        key = cache_key(files, label)
        path = cache_dir / f"{hw_id}-{key}.svg"
        if not path.exists():
            # One drawing per unit at a time, across threads and processes.
            with file_lock(locks_dir / f"plot-{hw_id}.lock"):
                if not path.exists():
                    draw(load_rows(files), hw_id, label, path)
                    for old in cache_dir.glob(f"{hw_id}-*.svg"):
                        if old != path:
                            old.unlink(missing_ok=True)
        try:
            return key, path.read_bytes()
        except FileNotFoundError:  # newer data arrived and another request replaced it
            continue
    return None


def draw(conn: sqlite3.Connection, hw_id: str, label: str, path: Path) -> None:
    """The toolchain's CO2 figure of one unit over the week up to its newest reading."""
    # matplotlib costs a second to import: only a worker that draws pays it.
    import matplotlib

    from ..toolchain import plots

    hi = (newest_reading(conn) or 0.0) + 1
    title = f"{label}: the 7 days up to its newest reading pushed, {to_text(hi - 1)} UTC"
    with matplotlib.rc_context(plots.RC):
        fig = plots.co2_figure(conn, [Group(label, None, [Period(hw_id)])], hi - WINDOW_S, hi,
                               title, plots.PlotOptions())
        plots.save_svg(fig, path)
