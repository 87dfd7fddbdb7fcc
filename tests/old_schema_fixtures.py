"""A pushed-data tree, frozen, and the databases that earlier toolchains built from it.

tests/data/old_schemas/v<N>.sql is the database (sqlite3's iterdump) that the toolchain of
schema version N built from exactly this tree; tests/data/old_schemas/make_databases.py made
them from the project's git history. test_database_makefile restores one on a new copy of the
tree, gives its import_files the stat of the copy's files (what the old toolchain would have
recorded had it run there), and runs the current `make` on the same, untouched files: the
way a researcher's database meets a new release.

Frozen: change a byte here and the databases no longer describe the tree; run the script again.
"""

from __future__ import annotations

import json
import os
import sqlite3
import struct
from pathlib import Path

from toolchain_fixtures import Tree, write

OLD_SCHEMAS_DIR = Path(__file__).resolve().parent / "data" / "old_schemas"
# Schema version -> the last commit whose toolchain built that version (make_databases.py).
OLD_SCHEMAS = {1: "da9f70a5549ad552cd022a94008cccd2f6a911ac",  # before the 21-field rows
               2: "1a2c965b46dbe78686b6007a2d67febba6a05629"}  # before schema 3's receipts

HW_A = "co2unit-30aea42a50bc"  # updated to 21-field firmware mid-file; an SD card change
HW_B = "co2unit-0123456789ab"  # old firmware only: nothing the old importers missed
HW_C = "co2unit-cccccccccccc"  # current firmware from the start
SUPERSEDED = "superseded/20261102T000000.000000Z"
CO2 = "\t".join(["700"] * 10)
RAW = "45\t34986\t28228\t32626\t1101"


def _row(hw: str, nick: str, day: str, time: str, temp: str = "4.5", raw: str | None = None,
         co2: str = CO2) -> str:
    line = f"{hw}\t{nick}\t{day}\t{time}\t{temp}\t1\t{co2}"
    return f"{line}\n" if raw is None else f"{line}\t{raw}\n"


def _a_readings() -> bytes:
    """A's current file: 16-field rows, irregular lines, then its firmware writes 21 fields."""
    rows = [_row(HW_A, "varanger-03", "2026-11-01", f"{h:02d}:00:10") for h in range(10, 14)]
    rows += [_row(HW_A, "varanger-03", "1970-01-01", "00:00:42"),
             "test\t1\t2\t3\n",
             _row(HW_A, "DEFAULTNICK", "2026-11-01", "14:00:10", "None"),
             _row(HW_A, "varanger-03", "2026-11-01", "14:30:10", "23.",
                  co2="680\t\t" + "\t".join(["700"] * 8)),
             _row(HW_A, "varanger-03", "2026-11-01", "15:00:10")[:48]
             + _row(HW_A, "varanger-03", "2026-11-01", "15:30:10", "5.5"),
             "\n"]
    rows += [_row(HW_A, "varanger-03", "2026-11-01", f"{h:02d}:00:10", "5.0", RAW)
             for h in range(16, 20)]
    rows += [_row(HW_A, "varanger-03", "2026-11-01", "20:00:10", "5.0", "\t".join(["None"] * 5)),
             _row(HW_A, "varanger-03", "2026-11-01", "20:30:10", raw="45\t1"),
             _row(HW_A, "varanger-03", "2026-11-01", "21:00:10", raw=RAW)[:90]
             + _row(HW_A, "varanger-03", "2026-11-01", "21:30:10", raw=RAW)]
    return "".join(rows).encode() + b"\x00" * 16 + _row(HW_A, "varanger-03", "2026-11-01",
                                                          "22:00:10", raw=RAW).encode()


def _a_superseded() -> bytes:
    """The card A had before: a row also in its current file, some only here (21 fields too)."""
    return "".join([_row(HW_A, "varanger-03", "2026-10-31", "12:00:10"),
                    _row(HW_A, "varanger-03", "2026-11-01", "10:00:10"),
                    _row(HW_A, "varanger-03", "2026-11-01", "16:00:10", "5.0", RAW),
                    _row(HW_A, "varanger-03", "2026-10-31", "23:00:10", "5.0", RAW)]).encode()


def _c_readings(day: int) -> bytes:
    raws = ["None\t" * 4 + "None" if h == 3 else f"{40 + h}\t34986\t28228\t32626\t{1100 + h}"
            for h in range(6)]
    return "".join(_row(HW_C, "lab-7", f"2026-11-0{day}", f"0{h}:00:10", "21.0", raw)
                   for h, raw in enumerate(raws)).encode()


ERRORS_A = """----- (2026, 10, 25, 3, 11, 24, 4, 298) INFO  transmitting
----- 2026-10-25 03:12:00 EXC   Uncaught exception
Traceback (most recent call last):
  File "main.py", line 10, in <module>
OSError: [Errno 113] EHOSTUNREACH
----- (1970, 1, 1, 0, 0, 12, 3, 1) WARN  watchdog reset
----- 2026-10-26 03:10:00 WARN  LTE backoff 600 s
"""
ERRORS_A_LATER = """  a continuation of the last entry of errors-0000
----- 1970-01-01 00:00:15 INFO  Signal quality 18
"""
PINGS_OWN = (f"2026-11-01T03:10:05.123456\t{HW_A}\tvaranger-03\t18\t-77\t99\n"
             f"2026-11-01T03:11:00\t{HW_B}\tNone\tNone\tNone\n"
             f"2026-11-02T03:11:00.000001\t{HW_C}\tlab-7\t20\t-73\t99\n"
             "not a ping line\n")
PINGS_OTHER_SERVER = (f"2026-11-01T03:10:05.123456\t{HW_A}\tvaranger-03\t18\t-77\t99\n"
                      f"2026-11-02T03:12:00.500000\t{HW_B}\tNone\t9\t-95\n")
DEPLOYMENTS = f"""unit_id\tnickname\tsite\ttier\tstatus\tstart_ts\tend_ts\tnote
{HW_A}\tvaranger-03\tvj_re_sn_4\t3\tdeployed\t2026-10-30\t2026-11-05\t
{HW_B}\tvaranger-04\tvj_re_sn_4\t3\tdeployed\t2026-10-30\t\t
{HW_C}\tlab-7\tlab\t1\tlab_check\t2026-11-01\t\t
{HW_C}\tlab-7\tlab\tnot-a-tier\tdeployed\t2026-11-02\t\t
"""


def _tcp_line(ts: str, records: list[tuple[int, int, int]], device_id: int = 1,
              end: str = "eof") -> str:
    """A TCP raw log line: a weather station's packet (docs/gateways.md's layout) as received."""
    body = b"".join(struct.pack("<HHH", *r) for r in records)
    packet = struct.pack("<HHHBBB", len(body), 3600, 120, 6, device_id, 3) + body
    return f"{ts}\t10.0.0.5:40000\t{end}\tok\t\thex:{packet.hex()}\n"


R1, R2, R3, R4 = (1234, 0x7CEC, 0x6394), (1244, 0x7D20, 0x63A4), (1300, 0x7D00, 0x6400), \
    (1310, 0x7D10, 0x6410)
# Packet 2 is a resend: packet 1's records, then one measured since (as the firmware resends).
TCP_0000 = (_tcp_line("2026-11-01T00:00:00.000000", [R1, R2])
            + _tcp_line("2026-11-01T01:00:00.000000", [R1, R2, R3]))
TCP_0001 = (_tcp_line("2026-11-01T01:00:09.000000", [R4], end="timeout")[:60] + "\n"
            + _tcp_line("2026-11-01T02:00:00.000000", [R4]))
ANSWER = {"nodemcu": {"mq135": {"co2": "402.08"}, "dht22": {"temperature": "27.90",
                                                            "humidity": "47.30"}}}
PULL_0000 = (f"2026-11-01T00:00:00.000000\thttp://10.0.0.9/circumstances\t200\tok\t\t"
             f"text:{json.dumps(ANSWER)}\n"
             "2026-11-01T00:01:00.000000\thttp://10.0.0.9/circumstances\t500\tbad\tHTTP 500\t"
             "text:oops\n")
SESSION = "s-20261101T000000Z"


def _ws_line(ts: str, seq: int, session: str | None, values: dict) -> str:
    raw = json.dumps({"type": "readings", "seq": seq,
                      "readings": [{"ts": ts[:19] + "Z", "values": values}]})
    return json.dumps({"ts": ts, "peer": "10.0.0.8:50000", "session": session, "seq": seq,
                       "raw": raw}) + "\n"


WS_0000 = (_ws_line("2026-11-01T00:00:00.000000", 0, None, {"co2": 415.5, "rh": 40})
           + _ws_line("2026-11-01T00:00:01.000000", 1, SESSION, {"co2": 420.0}))
SESSIONS_LOG = (json.dumps({"event": "start", "id": SESSION, "name": None,
                            "at": "2026-11-01T00:00:00.500000"}) + "\n"
                + json.dumps({"event": "stop", "id": SESSION,
                              "at": "2026-11-01T00:00:02.000000"}) + "\n")


def build_old_schema_tree(root: Path) -> Tree:
    """Write the frozen tree under root."""
    tree = Tree(root)
    write(tree.readings(HW_A), _a_readings())
    write(tree.readings(HW_A, under=SUPERSEDED), _a_superseded())
    write(tree.readings(HW_B), "".join(_row(HW_B, "varanger-04", "2026-11-0" + str(d), "12:00:10")
                                       for d in range(1, 4)))
    write(tree.readings(HW_C), _c_readings(1))
    write(tree.readings(HW_C, "readings-0001.tsv"), _c_readings(2))
    write(tree.data_dir / HW_A / "errors" / "errors-0000.txt", ERRORS_A)
    write(tree.data_dir / HW_A / "errors" / "errors-0001.txt", ERRORS_A_LATER)
    write(tree.db_dir / "pings" / "pings-0000.tsv", PINGS_OWN)
    write(tree.data_dir / "otherserver" / "var" / "pings" / "pings-0000.tsv", PINGS_OTHER_SERVER)
    write(tree.deployments, DEPLOYMENTS)
    write(tree.data_dir / "tcp" / "esp8266-1" / "0000.log", TCP_0000)
    write(tree.data_dir / "tcp" / "esp8266-1" / "0001.log", TCP_0001)
    write(tree.data_dir / "pull" / "lab-1" / "0000.log", PULL_0000)
    write(tree.data_dir / "ws" / "phone-1" / "0000.log", WS_0000)
    write(tree.data_dir / "sessions" / "sessions.log", SESSIONS_LOG)
    return tree


def _path_of(tree: Tree, key: str) -> Path:
    """The file an import_files key names in this tree (deployments: by absolute path)."""
    root, rel = key.split(":", 1)
    return {"data": tree.data_dir / rel, "db": tree.db_dir / rel}.get(root, tree.deployments)


def restore_old_database(tree: Tree, version: int) -> None:
    """The database schema `version` built from this tree, as if built on these very files.

    Every import_files row gets the stat of its file here; the deployment table's key, its
    absolute path, becomes this tree's."""
    sql = (OLD_SCHEMAS_DIR / f"v{version}.sql").read_text(encoding="utf-8")
    tree.db_dir.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(tree.db_dir / "db.sqlite3", isolation_level=None)
    try:
        conn.executescript(sql)
        conn.execute("BEGIN")
        for file_id, key, size in conn.execute(
                "SELECT id, path, size FROM import_files").fetchall():
            path = _path_of(tree, key)
            st = os.stat(path)
            assert st.st_size == size, f"{key}: not the tree v{version}.sql was built from"
            new_key = f"file:{path.resolve()}" if key.startswith("file:") else key
            conn.execute("UPDATE import_files SET path = ?, mtime_ns = ?, inode = ? WHERE id = ?",
                         (new_key, st.st_mtime_ns, st.st_ino, file_id))
        conn.execute("COMMIT")
    finally:
        conn.close()
