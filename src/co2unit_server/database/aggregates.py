"""Keep co2_bins (per unit and 3-hour bucket) in step with co2_readings."""

from __future__ import annotations

import sqlite3

from .state import read_state, transaction, write_state

BUCKET_SECONDS = 10800
GLITCH_PPM = (0, 200010)  # sensor start-up values, never real CO2
FAULT_TEMP = 85.0  # the temperature sensor's fault value


def _valid(column: str) -> str:
    return f"nullif(nullif({column}, {GLITCH_PPM[0]}), {GLITCH_PPM[1]})"


_COLUMNS = [f"co2_{i:02d}" for i in range(1, 11)]
_ALL = ", ".join(_COLUMNS)
# The usual reading has ten real values: one cheap test (scalar min/max are NULL if any value
# is) before the per-column expressions.
_CLEAN = f"min({_ALL}) > {GLITCH_PPM[0]} AND max({_ALL}) < {GLITCH_PPM[1]}"
# Per reading: the sum and the number of its real CO2 values, and its real temperature.
CO2_SUM_SQL = (f"CASE WHEN {_CLEAN} THEN {' + '.join(_COLUMNS)} ELSE "
               + " + ".join(f"ifnull({_valid(c)}, 0)" for c in _COLUMNS) + " END")
CO2_N_SQL = (f"CASE WHEN {_CLEAN} THEN {len(_COLUMNS)} ELSE "
             + " + ".join(f"({_valid(c)} IS NOT NULL)" for c in _COLUMNS) + " END")
TEMP_SQL = f"CASE WHEN temp <> {FAULT_TEMP} THEN temp END"
EPOCH_SQL = "unixepoch(date || ' ' || time)"

WATERMARK = "co2_bins_rowid"  # toolchain_state: readings up to this rowid are in co2_bins
# Readings per transaction (about half a second): the server's live pings never wait long.
CHUNK_ROWS = 200_000
# NOT INDEXED: read new rows by rowid range; the planner would scan the whole key index.
_ADD = f"""INSERT INTO co2_bins (unit_id, bucket, co2_sum, co2_n, temp_sum, temp_n)
    SELECT unit_id, {EPOCH_SQL} / {BUCKET_SECONDS} AS b, total({CO2_SUM_SQL}),
           total({CO2_N_SQL}), total({TEMP_SQL}), count({TEMP_SQL})
    FROM co2_readings NOT INDEXED WHERE rowid > ? AND rowid <= ? AND b IS NOT NULL
    GROUP BY unit_id, b
    ON CONFLICT (unit_id, bucket) DO UPDATE SET
        co2_sum = co2_sum + excluded.co2_sum, co2_n = co2_n + excluded.co2_n,
        temp_sum = temp_sum + excluded.temp_sum, temp_n = temp_n + excluded.temp_n"""


def update(conn: sqlite3.Connection) -> int:
    """Add readings inserted since the last update (new rows get higher rowids); return count."""
    with transaction(conn):
        first = int(read_state(conn, WATERMARK) or 0)
        newest = conn.execute("SELECT ifnull(max(rowid), 0) FROM co2_readings").fetchone()[0]
    for start in range(first, newest, CHUNK_ROWS):
        end = min(start + CHUNK_ROWS, newest)
        with transaction(conn):
            conn.execute(_ADD, (start, end))
            write_state(conn, WATERMARK, str(end))
    return newest - first


def rebuild(conn: sqlite3.Connection) -> None:
    """Forget co2_bins after readings were deleted; update() then recomputes it from scratch."""
    conn.execute("DELETE FROM co2_bins")
    # Later inserts may reuse rowids of deleted rows: recompute from the first row.
    write_state(conn, WATERMARK, "0")
