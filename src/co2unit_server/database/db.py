"""The SQLite database (var/db.sqlite3): connections and schema, shared by server and toolchain."""

from __future__ import annotations

import contextlib
import functools
import logging
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)

# Column names follow the reference toolchain so existing SQL keeps working; add, don't rename.
SCHEMA = """
CREATE TABLE IF NOT EXISTS pings (
    ping_ts   TEXT NOT NULL,
    ping_date TEXT NOT NULL,
    ping_time TEXT NOT NULL,
    unit_id   TEXT NOT NULL,
    nickname  TEXT,
    rssi_raw  INTEGER,
    rssi_dbm  INTEGER,
    ber_raw   INTEGER
);
-- The server inserts live pings and the importer reads the same pings from the TSV log:
-- this key lets both use INSERT OR IGNORE without duplicates.
CREATE UNIQUE INDEX IF NOT EXISTS pings_unit_ts ON pings (unit_id, ping_ts);
CREATE INDEX IF NOT EXISTS pings_ts ON pings (ping_ts);

-- Every update file the server sent (or began to send) to a unit: delivery tracking.
CREATE TABLE IF NOT EXISTS update_downloads (
    ts          TEXT NOT NULL,     -- UTC 'YYYY-MM-DDTHH:MM:SS.ffffff', when the reply ended
    update_name TEXT NOT NULL,     -- the update directory, e.g. update-2026-11-29a
    file        TEXT,              -- path below it; NULL for the update's recursive listing
    unit_id     TEXT NOT NULL,
    bytes       INTEGER NOT NULL,  -- bytes handed to the connection
    size        INTEGER NOT NULL,  -- the file's size
    full        INTEGER NOT NULL   -- 1 when all of it was sent, 0 when cut short
);
CREATE INDEX IF NOT EXISTS update_downloads_unit ON update_downloads (unit_id, update_name);
-- What each unit pushed per UTC day, kept live by the server (the fleet page's figures).
CREATE TABLE IF NOT EXISTS push_daily (
    unit_id         TEXT NOT NULL,
    day             TEXT NOT NULL,     -- 'YYYY-MM-DD' the chunks arrived (UTC)
    bytes           INTEGER NOT NULL,  -- new bytes stored (a re-sent chunk adds nothing)
    chunks          INTEGER NOT NULL,  -- chunks acknowledged
    error_entries   INTEGER NOT NULL,  -- error-log entries (`----- ` headlines) received
    last_push_ts    TEXT NOT NULL,     -- UTC, the day's last acknowledged chunk
    last_reading_ts TEXT,              -- 'YYYY-MM-DD HH:MM:SS', the newest reading received
    PRIMARY KEY (unit_id, day)
) WITHOUT ROWID;

-- Values from the gateways' device families (TCP weather stations, polled NodeMCUs), written
-- live by the gateway process after its raw log is fsynced, and again by the importer from the
-- raw logs: the key lets both use INSERT OR IGNORE, and a rebuild from the logs alone matches.
CREATE TABLE IF NOT EXISTS measurements (
    device TEXT NOT NULL,   -- esp8266-<deviceID>, or the polled device's configured name
    family TEXT NOT NULL,   -- tcp | pull | ws
    ts     TEXT NOT NULL,   -- UTC 'YYYY-MM-DDTHH:MM:SS.ffffff'
    name   TEXT NOT NULL,   -- light, humidity, temperature; mq135.co2, bmp180.pressure, ...
    value  REAL NOT NULL,
    source TEXT NOT NULL,   -- raw log line: '<family>/<device>/<NNNN>.log:<line>'
    session TEXT,           -- the streaming session it was received in (ws), else NULL
    -- By time within a device: what the readers range over, and where a device's new values
    -- go (at its end); no second index to keep up at every insert.
    PRIMARY KEY (device, ts, name)
) WITHOUT ROWID;
-- One row per raw log line (a packet, a poll or a streamed message): what the fleet page counts.
-- Keyed by device and time, as measurements are: a device's new receipts go at its end, a page
-- or two per device a transaction. (Keyed by source, a text ending in the line number, each new
-- receipt went to a page of its own within the device's range, more pages the longer it ran.)
CREATE TABLE IF NOT EXISTS gateway_receipts (
    source      TEXT NOT NULL,     -- as measurements.source
    device      TEXT NOT NULL,
    family      TEXT NOT NULL,
    ts          TEXT NOT NULL,     -- UTC receive (or answer) time
    verdict     TEXT NOT NULL,     -- ok | partial | unknown | bad | failed (see rawlog.Verdict)
    stored      INTEGER NOT NULL,  -- values stored from it (a resend's repeats excluded)
    expected_s  REAL,              -- seconds until the device's next packet or poll is due
    detail      TEXT,              -- why it is not ok
    -- A line always reads as the same device and time, so the key still keeps each line once.
    PRIMARY KEY (device, ts, source)
) WITHOUT ROWID;
-- The fleet page's refusal counts; only refused receipts are in it.
CREATE INDEX IF NOT EXISTS gateway_receipts_refused ON gateway_receipts (device, ts)
    WHERE verdict IN ('bad', 'failed');
-- Streaming sessions an admin started and stopped (records/sessions.py): written by the
-- gateway before it broadcasts the command, and by the importer from the record of truth,
-- remote_data/sessions/sessions.log. measurements.session holds the id.
CREATE TABLE IF NOT EXISTS sessions (
    id         TEXT PRIMARY KEY,  -- s-20261206T015211Z, or s-20261206T015211Z-<name slug>
    name       TEXT,              -- as the admin gave it, if any
    started_at TEXT NOT NULL,     -- UTC 'YYYY-MM-DDTHH:MM:SS.ffffff'
    stopped_at TEXT               -- UTC; NULL while it runs
) WITHOUT ROWID;

-- Imported by the research toolchain (co2unit_server.toolchain.importer) from pushed files.
CREATE TABLE IF NOT EXISTS co2_readings (
    unit_id     TEXT NOT NULL,
    nickname    TEXT,
    date        TEXT NOT NULL,
    time        TEXT NOT NULL,
    temp        REAL,
    flash_count INTEGER,
    co2_01      INTEGER,
    co2_02      INTEGER,
    co2_03      INTEGER,
    co2_04      INTEGER,
    co2_05      INTEGER,
    co2_06      INTEGER,
    co2_07      INTEGER,
    co2_08      INTEGER,
    co2_09      INTEGER,
    co2_10      INTEGER,
    src_file    INTEGER NOT NULL,  -- import_files.id: where the row came from
    src_line    INTEGER NOT NULL,  -- 1-based line number in that file
    -- Firmware from 2020-01-14 on appends the ExplorIR sensor's raw multi-field read (Z, d, o,
    -- h, v); NULL for 16-field rows and where the read failed. Added by schema version 2.
    raw_co2_filtered   INTEGER,
    raw_led_normalized INTEGER,
    raw_led_signal     INTEGER,
    raw_zero_point     INTEGER,
    raw_sensor_temp    INTEGER
);
-- A reading is (unit_id, date, time): the copy in superseded/ and the re-pushed one are one row.
CREATE UNIQUE INDEX IF NOT EXISTS co2_readings_key ON co2_readings (unit_id, date, time);
CREATE TABLE IF NOT EXISTS error_logs (
    unit_id  TEXT NOT NULL,
    idate    TEXT,  -- inferred: odate, or the last good date before a 1970-01-01 entry
    itime    TEXT,
    etype    TEXT,  -- uncaught, watchdog, signal, backoff, transmit, or NULL
    odate    TEXT,  -- as written in the headline
    otime    TEXT,
    level    TEXT,
    message  TEXT,  -- headline message and its continuation lines (tracebacks)
    src_file INTEGER NOT NULL,
    src_line INTEGER NOT NULL,
    UNIQUE (src_file, src_line)
);
CREATE INDEX IF NOT EXISTS error_logs_unit ON error_logs (unit_id, idate, itime);
CREATE TABLE IF NOT EXISTS deploy_durations_tiered (
    unit_id  TEXT,
    nickname TEXT,
    site     TEXT,
    tier     INTEGER,
    status   TEXT,
    start_ts TEXT,  -- UTC, 'YYYY-MM-DD HH:MM:SS'; a bare date means its midnight
    end_ts   TEXT,
    note     TEXT
);
-- Sums of co2_readings per unit and 3-hour bucket (plots re-bin these instead of every row);
-- co2 counts only real values: NULL and the start-up glitches 0 and 200010 ppm are left out,
-- as is the sensor's 85.0 fault temperature.
CREATE TABLE IF NOT EXISTS co2_bins (
    unit_id  TEXT NOT NULL,
    bucket   INTEGER NOT NULL,  -- unixepoch(date || ' ' || time) / 10800
    co2_sum  REAL NOT NULL,
    co2_n    INTEGER NOT NULL,
    temp_sum REAL NOT NULL,
    temp_n   INTEGER NOT NULL,
    PRIMARY KEY (unit_id, bucket)
) WITHOUT ROWID;
-- Incremental import state, one row per source file.
CREATE TABLE IF NOT EXISTS import_files (
    id         INTEGER PRIMARY KEY,
    kind       TEXT NOT NULL,     -- readings, errors, pings, measurements, deployments
    path       TEXT NOT NULL UNIQUE,  -- relative to its root: data:<rel> or db:<rel>
    size       INTEGER NOT NULL,  -- stat seen at the last import
    mtime_ns   INTEGER NOT NULL,
    inode      INTEGER NOT NULL,
    check_hash TEXT NOT NULL,     -- of the first and the last imported bytes: spots a replacement
    bytes_done INTEGER NOT NULL,  -- complete lines imported up to here
    lines_done INTEGER NOT NULL,
    carry      TEXT               -- parser state carried on (error logs: last good date;
                                  -- TCP raw logs: the device's History as JSON)
);
CREATE TABLE IF NOT EXISTS import_log (
    run_ts  TEXT NOT NULL,
    stage   TEXT NOT NULL,  -- readings, pings, errors, measurements, deployments
    -- imported, duplicate, recovered, dropped, nulled, updated, inferred, noted, deleted,
    -- binned, files
    outcome TEXT NOT NULL,
    reason  TEXT NOT NULL,
    count   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS dropped_lines (
    src_file INTEGER NOT NULL,
    src_line INTEGER NOT NULL,
    reason   TEXT NOT NULL,
    content  TEXT NOT NULL  -- repr() of the start of the line
);
CREATE INDEX IF NOT EXISTS dropped_lines_file ON dropped_lines (src_file, src_line);
-- Per unit that pushed readings: what reached co2_readings and what the import dropped.
-- Rewritten by the importer for the units whose data or deployments changed (and daily).
CREATE TABLE IF NOT EXISTS data_quality (
    unit_id          TEXT PRIMARY KEY,
    rows_imported    INTEGER NOT NULL,  -- rows of co2_readings
    rows_dropped     INTEGER NOT NULL,  -- lines of its readings files the import dropped
    lost_share       REAL NOT NULL,     -- rows_dropped / (rows_imported + rows_dropped)
    first_reading    TEXT,              -- 'YYYY-MM-DD HH:MM:SS' UTC
    last_reading     TEXT,
    days_deployed    REAL,              -- in its `deployed` periods up to computed_at
    days_with_data   INTEGER,           -- UTC days with a reading (in those periods, if any)
    longest_gap_days REAL,              -- between readings and the periods' ends, if deployed
    gap_from         TEXT,
    gap_to           TEXT,
    computed_at      TEXT NOT NULL
);
-- Dropped lines per unit and reason (every dropped line is in dropped_lines).
CREATE VIEW IF NOT EXISTS dropped_by_unit AS
    SELECT substr(f.path, 6, instr(substr(f.path, 6), '/') - 1) AS unit_id,
           substr(d.reason, 10) AS reason, count(*) AS rows
    FROM dropped_lines d JOIN import_files f ON f.id = d.src_file
    WHERE f.kind = 'readings' AND d.reason LIKE 'dropped: %'
    GROUP BY 1, 2;
-- What each generated plot or page was last built from, and how far co2_bins has got.
CREATE TABLE IF NOT EXISTS toolchain_state (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


def connect(path: Path, busy_timeout_ms: int = 5000) -> sqlite3.Connection:
    """Open the database in WAL mode so readers and the ping writer work at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=busy_timeout_ms / 1000, isolation_level=None,
                           check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    _set_wal(conn, busy_timeout_ms / 1000)
    # Durable except for the last transactions on power loss, without a sync per commit.
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def _set_wal(conn: sqlite3.Connection, timeout_s: float) -> None:
    # Turning a new file to WAL needs it alone, and SQLite does not wait for that (no busy
    # handler): two writer threads opening a fresh database at once would fail the second.
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


INSERT_MEASUREMENT = ("INSERT OR IGNORE INTO measurements (device, family, ts, name, value, "
                      "source, session) VALUES (?, ?, ?, ?, ?, ?, ?)")
INSERT_RECEIPT = ("INSERT OR IGNORE INTO gateway_receipts (source, device, family, ts, verdict, "
                  "stored, expected_s, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
INSERT_DOWNLOAD = ("INSERT INTO update_downloads (ts, update_name, file, unit_id, bytes, size, "
                   "full) VALUES (?, ?, ?, ?, ?, ?, ?)")
# A row per acknowledged chunk: (unit_id, day, bytes, chunks, error_entries, last_push_ts,
# last_reading_ts), summed into the unit's day.
UPSERT_PUSH_DAILY = """INSERT INTO push_daily VALUES (?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (unit_id, day) DO UPDATE SET bytes = bytes + excluded.bytes,
        chunks = chunks + excluded.chunks, error_entries = error_entries + excluded.error_entries,
        last_push_ts = max(last_push_ts, excluded.last_push_ts),
        last_reading_ts = nullif(max(ifnull(last_reading_ts, ''),
                                     ifnull(excluded.last_reading_ts, '')), '')"""

# PRAGMA user_version of a database this code built or upgraded. Version 1 is the layout
# before versioning (user_version 0 then); each step of _UPGRADES brings one version up.
SCHEMA_VERSION = 3
RAW_COLUMNS = ("raw_co2_filtered", "raw_led_normalized", "raw_led_signal", "raw_zero_point",
               "raw_sensor_temp")


# import_files.check_hash of a file the next import must read again from byte 0, whatever its
# stat says: no file's content hashes to it. Set by mark_for_reread; the import that reads the
# file again stores its real hash, so the mark holds until the file has been read once.
REREAD = ""


def mark_for_reread(conn: sqlite3.Connection, why: str, kind: str, condition: str = "1") -> int:
    """Have the next import read the `kind` files matching `condition` again; return how many.

    How a schema upgrade gets what an earlier importer skipped or read wrongly: the next import
    reads each marked file from byte 0, its stat unchanged or not, and its stage replaces what
    the file gave before (toolchain/importer/sources.plan)."""
    if not _columns(conn, "import_files"):
        return 0
    marked = conn.execute(f"UPDATE import_files SET check_hash = ? WHERE kind = ? "
                          f"AND ({condition})", (REREAD, kind)).rowcount
    log.warning("%s: %d %s files will be imported again", why, marked, kind)
    return marked


# The readings files each of whose lines is a row of co2_readings.
_FILES_ALL_ROWS = """SELECT f.id FROM import_files f
    JOIN (SELECT src_file, count(*) AS n FROM co2_readings GROUP BY src_file) r
    ON r.src_file = f.id WHERE r.n >= f.lines_done"""


def _upgrade_to_2(conn: sqlite3.Connection) -> None:
    """Add the raw columns; have the readings files with lines that gave no row read again.

    Versions before 2 dropped every 21-field row as "wrong field count", so only such a file
    can hold one. Not only the files with a dropped line in dropped_lines: those versions stored
    the samples at the end of the stage, so an import cut short kept rows and progress without
    them. (A file with a blank line or a duplicate row is read again too, to no harm.)
    """
    if not _columns(conn, "co2_readings"):
        return
    for column in RAW_COLUMNS:
        if column not in _columns(conn, "co2_readings"):
            conn.execute(f"ALTER TABLE co2_readings ADD COLUMN {column} INTEGER")
    mark_for_reread(conn, "schema 2", "readings", f"id NOT IN ({_FILES_ALL_ROWS})")


def _upgrade_to_3(conn: sqlite3.Connection) -> None:
    """Key gateway_receipts by (device, ts, source); its two indexes become one partial index.

    The rows are copied as they are (SCHEMA creates the new index after the upgrade)."""
    if not _columns(conn, "gateway_receipts"):
        return
    conn.execute("DROP INDEX IF EXISTS gateway_receipts_device_ts")
    conn.execute("DROP INDEX IF EXISTS gateway_receipts_device_verdict")
    conn.execute("ALTER TABLE gateway_receipts RENAME TO gateway_receipts_v2")
    conn.execute(_table_sql("gateway_receipts"))
    conn.execute("INSERT INTO gateway_receipts SELECT source, device, family, ts, verdict, "
                 "stored, expected_s, detail FROM gateway_receipts_v2")
    conn.execute("DROP TABLE gateway_receipts_v2")


_UPGRADES = {2: _upgrade_to_2, 3: _upgrade_to_3}


def _upgrade(conn: sqlite3.Connection) -> None:
    """Bring the database up to SCHEMA_VERSION, once, even with several processes starting."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = max(conn.execute("PRAGMA user_version").fetchone()[0], 1)
        for target in range(version + 1, SCHEMA_VERSION + 1):
            _UPGRADES[target](conn)
        if version < SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')}


def connect_readonly(path: Path, timeout_s: float = 5.0) -> sqlite3.Connection:
    """Open an existing database so that SQLite refuses every write through this connection."""
    # As a file: URI, so that a path with '?', '#' or '%' in it still names the file.
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=timeout_s,
                           isolation_level=None)


def empty_database() -> sqlite3.Connection:
    """An in-memory database of the current schema, for reading before any database exists."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.executescript(SCHEMA)
    return conn


def init_schema(conn: sqlite3.Connection) -> None:
    """Upgrade an older database, then create every table and index that does not exist yet.

    A table from a foreign schema (the reference server's `pings` has no ping_ts) is renamed
    aside, intact, and recreated: every table is rebuilt from the files by the importer.
    """
    _upgrade(conn)
    for table, columns in _schema_columns().items():
        existing = _columns(conn, table)
        if existing and not columns <= existing:
            _move_aside(conn, table, columns - existing)
    conn.executescript(SCHEMA)


def _scratch() -> sqlite3.Connection:
    """An in-memory database of SCHEMA, to read the schema from."""
    scratch = sqlite3.connect(":memory:")
    scratch.executescript(SCHEMA)
    return scratch


@functools.cache
def _schema_columns() -> dict[str, set[str]]:
    """Each table of SCHEMA and its columns."""
    with contextlib.closing(_scratch()) as scratch:
        tables = [row[0] for row in scratch.execute("SELECT name FROM sqlite_master "
                                                    "WHERE type = 'table'")]
        return {t: {row[1] for row in scratch.execute(f'PRAGMA table_info("{t}")')}
                for t in tables}


def _table_sql(table: str) -> str:
    """SCHEMA's CREATE TABLE statement of `table`."""
    with contextlib.closing(_scratch()) as scratch:
        return scratch.execute("SELECT sql FROM sqlite_master WHERE type = 'table' "
                               "AND name = ?", (table,)).fetchone()[0]


def _move_aside(conn: sqlite3.Connection, table: str, missing: set[str]) -> None:
    aside = f"{table}_before_{datetime.now(UTC):%Y%m%dT%H%M%S}"
    # Its indexes keep their names when the table is renamed: drop them (they are derived),
    # or CREATE INDEX IF NOT EXISTS would skip the new table's.
    for (index,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' "
                                 "AND tbl_name = ? AND sql IS NOT NULL", (table,)).fetchall():
        conn.execute(f'DROP INDEX "{index}"')
    conn.execute(f'ALTER TABLE "{table}" RENAME TO "{aside}"')
    log.warning("table %s lacked %s: renamed it to %s and created it anew", table,
                ", ".join(sorted(missing)), aside)
