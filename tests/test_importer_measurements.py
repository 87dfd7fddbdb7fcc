"""The measurements stage: gateway raw logs into measurements and gateway_receipts."""

from __future__ import annotations

import json
import socket
import sqlite3
import struct
import threading
from contextlib import closing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from gateway_fixtures import wait_for
from toolchain_fixtures import Tree, append, build_tree, import_tree, open_db, write

from co2unit_server.database import db
from co2unit_server.records import pull_format, rawlog, tcp_format, ws_format
from co2unit_server.records.rawlog import RawLine
from co2unit_server.records.ws_format import WsLine
from co2unit_server.toolchain import build
from co2unit_server.toolchain.importer import Sources, run_import, sources
from co2unit_server.toolchain.importer.measurements import (
    REGISTRY_STATE,
    RULES_STATE,
    UNREADABLE,
    carried_history,
    history_carry,
)

TCP_DEV = "esp8266-1"
UNKNOWN_DEV = "esp8266-7"  # deviceID 7: no record format by default
PULL_DEV = "lab-1"
T0 = "2026-11-01T00:00:00.000000"
T1 = "2026-11-01T01:00:00.000000"  # 3600 s after T0: the device's wake-up, on time
T2 = "2026-11-01T02:00:00.000000"
BOTH_TYPES = ("1=tsl2561-si7021", "7=tsl2561-si7021")
# docs/gateways.md's example records: (light, humidity code, temperature code)
R1, R2 = (1234, 0x7CEC, 0x6394), (1244, 0x7D20, 0x63A4)
R3, R4, R5 = (1300, 0x7D00, 0x6400), (1310, 0x7D10, 0x6410), (1320, 0x7D20, 0x6420)
R6, R7 = (1400, 0x7E00, 0x6500), (1410, 0x7E10, 0x6510)


def packet(device_id: int, records: list[tuple[int, int, int]], wake: int = 3600,
           every: int = 120) -> bytes:
    body = b"".join(struct.pack("<HHH", *r) for r in records)
    return struct.pack("<HHHBBB", len(body), wake, every, 6, device_id, 3) + body


def tcp_line(ts: str, data: bytes, end: str = "eof") -> RawLine:
    """A line as the TCP gateway logs it (its verdict is the gateway's; the importer decides
    anew)."""
    return RawLine(ts, "10.0.0.5:40000", end, "ok", "", data)


def pull_line(ts: str, end: str, payload: bytes, verdict: str = "ok",
              detail: str = "") -> RawLine:
    return RawLine(ts, "http://10.0.0.9/circumstances", end, verdict, detail, payload)


ANSWER = {"nodemcu": {"mq135": {"co2": "402.08"}, "bmp180": {"pressure": "1006.13"},
                      "dht22": {"temperature": "27.90", "humidity": "47.30"}}}
PARTIAL = {"nodemcu": {"mq135": {"co2": "410.00"}, "bmp180": {"pressure": "1006.20"},
                       "dht22": {"temperature": "", "humidity": "nan"}}}

# (device, file, lines): each device's logs, in order. The TCP device's resend and its third
# packet go to 0001.log: its history carries across the rotation.
# Device 1 measures every 1800 s and wakes every 3600 s: 2 records a wake, so its packet at T2
# (one wake after T1) with 5 records carries T1's 3 again.
TCP_0000 = [tcp_line(T0, packet(1, [R1, R2], every=1800)),
            tcp_line("2026-11-01T00:00:10.000000", packet(1, [R3])[:12], "timeout"),  # bad
            tcp_line(T1, packet(1, [R3, R4, R5], every=1800))]
TCP_0001 = [tcp_line(T2, packet(1, [R3, R4, R5, R6, R7], every=1800))]  # resend, then new
UNKNOWN_0000 = [tcp_line(T0, packet(7, [R1])), tcp_line(T1, packet(7, [R2]))]
PULL_0000 = [pull_line(T0, "200", json.dumps(ANSWER).encode()),
             pull_line("2026-11-01T00:01:00.000000", "200", json.dumps(PARTIAL).encode(),
                       "partial"),
             pull_line("2026-11-01T00:02:00.000000", "500", b"oops", "bad", "HTTP 500"),
             pull_line("2026-11-01T00:03:00.000000", "-", b"", "failed", "connection refused")]
GARBAGE = b"2026-11-01T00:04:00\tnot a gateway line\n"


def log_path(tree: Tree, family: str, device: str, number: int = 0) -> Path:
    return tree.data_dir / family / device / f"{number:04d}.log"


def write_log(tree: Tree, family: str, device: str, lines: list[RawLine], number: int = 0,
              tail: bytes = b"") -> Path:
    return write(log_path(tree, family, device, number),
                 b"".join(line.encode() for line in lines) + tail)


def write_logs(tree: Tree) -> None:
    write_log(tree, "tcp", TCP_DEV, TCP_0000)
    write_log(tree, "tcp", TCP_DEV, TCP_0001, 1)
    write_log(tree, "tcp", UNKNOWN_DEV, UNKNOWN_0000)
    write_log(tree, "pull", PULL_DEV, PULL_0000[:2], tail=GARBAGE)
    append(log_path(tree, "pull", PULL_DEV), b"".join(line.encode() for line in PULL_0000[2:]))


def tcp_values(ts: str, record: tuple[int, int, int], source: str) -> list[tuple]:
    """The rows of one type-1 record, by docs/gateways.md's conversions."""
    light, humidity, temperature = record
    return [(TCP_DEV, "tcp", ts, "light", float(light), source),
            (TCP_DEV, "tcp", ts, "humidity", 125 * humidity / 65536 - 6, source),
            (TCP_DEV, "tcp", ts, "temperature", 175.72 * temperature / 65536 - 46.85, source)]


# Packet 1: no previous packet, so measurementsEvery (120 s) apart, back from T0. Packet 3:
# 3600 s after packet 1 (the bad one in between does not count): 3 records 1200 s apart.
# Packet 4 repeats packet 3's records, then 2 new ones spread over the 3600 s since.
EXPECTED_TCP = sorted(
    tcp_values("2026-10-31T23:00:00.000000", R1, "tcp/esp8266-1/0000.log:1")
    + tcp_values("2026-10-31T23:30:00.000000", R2, "tcp/esp8266-1/0000.log:1")
    + tcp_values("2026-11-01T00:00:00.000000", R3, "tcp/esp8266-1/0000.log:3")
    + tcp_values("2026-11-01T00:20:00.000000", R4, "tcp/esp8266-1/0000.log:3")
    + tcp_values("2026-11-01T00:40:00.000000", R5, "tcp/esp8266-1/0000.log:3")
    + tcp_values("2026-11-01T01:00:00.000000", R6, "tcp/esp8266-1/0001.log:1")
    + tcp_values("2026-11-01T01:30:00.000000", R7, "tcp/esp8266-1/0001.log:1"))
EXPECTED_PULL = sorted(
    [(PULL_DEV, "pull", T0, name, value, "pull/lab-1/0000.log:1") for name, value in (
        ("mq135.co2", 402.08), ("bmp180.pressure", 1006.13), ("dht22.temperature", 27.9),
        ("dht22.humidity", 47.3))]
    + [(PULL_DEV, "pull", "2026-11-01T00:01:00.000000", name, value, "pull/lab-1/0000.log:2")
       for name, value in (("mq135.co2", 410.0), ("bmp180.pressure", 1006.2))])
EXPECTED_RECEIPTS = [  # (source, device, verdict, stored, expected_s)
    ("pull/lab-1/0000.log:1", PULL_DEV, "ok", 4, None),
    ("pull/lab-1/0000.log:2", PULL_DEV, "partial", 2, None),
    # line 3 is the garbage line: dropped, no receipt
    ("pull/lab-1/0000.log:4", PULL_DEV, "bad", 0, None),
    ("pull/lab-1/0000.log:5", PULL_DEV, "failed", 0, None),
    ("tcp/esp8266-1/0000.log:1", TCP_DEV, "ok", 6, 3600.0),
    ("tcp/esp8266-1/0000.log:2", TCP_DEV, "bad", 0, None),
    ("tcp/esp8266-1/0000.log:3", TCP_DEV, "ok", 9, 3600.0),
    ("tcp/esp8266-1/0001.log:1", TCP_DEV, "ok", 6, 3600.0),
    ("tcp/esp8266-7/0000.log:1", UNKNOWN_DEV, "unknown", 0, 3600.0),
    ("tcp/esp8266-7/0000.log:2", UNKNOWN_DEV, "unknown", 0, 3600.0),
]


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    tree = Tree(tmp_path)
    write_logs(tree)
    return tree


@pytest.fixture
def conn(tree: Tree):
    conn = open_db(tree)
    yield conn
    conn.close()


def run(tree: Tree, conn: sqlite3.Connection, device_types: tuple[str, ...] | None = None,
        out: list[str] | None = None):
    """Run the measurements stage only."""
    src = Sources(tree.data_dir, tree.db_dir, tree.deployments,
                  *([device_types] if device_types else []))
    return run_import(conn, src, out=(out if out is not None else []).append,
                      stages=("measurements",))["measurements"]


def measurements(conn: sqlite3.Connection) -> list[tuple]:
    return conn.execute("SELECT device, family, ts, name, value, source FROM measurements "
                        "ORDER BY device, ts, name").fetchall()


def receipts(conn: sqlite3.Connection) -> list[tuple]:
    return conn.execute("SELECT source, device, family, ts, verdict, stored, expected_s, detail "
                        "FROM gateway_receipts ORDER BY source").fetchall()


def tables(conn: sqlite3.Connection) -> tuple[list[tuple], list[tuple]]:
    return measurements(conn), receipts(conn)


def close(a: list[tuple], b: list[tuple]) -> bool:
    """Rows equal, floats to the last bits (the conversions' order may differ)."""
    return len(a) == len(b) and all(
        x[:4] == y[:4] and x[4] == pytest.approx(y[4], rel=1e-12) and x[5:] == y[5:]
        for x, y in zip(a, b, strict=True))


def test_rows_values_times_and_sources(tree, conn):
    report = run(tree, conn)
    got = measurements(conn)
    assert close([r for r in got if r[1] == "tcp"], sorted(EXPECTED_TCP, key=_order))
    assert close([r for r in got if r[1] == "pull"], sorted(EXPECTED_PULL, key=_order))
    assert [(s, d, v, n, e) for s, d, _, _, v, n, e, _ in receipts(conn)] == EXPECTED_RECEIPTS
    details = {r[0]: r[7] for r in receipts(conn)}
    assert "did not close the connection in time" in details["tcp/esp8266-1/0000.log:2"]
    assert "resent: its first 3 records repeat" in details["tcp/esp8266-1/0001.log:1"]
    assert "no record format for deviceID 7" in details["tcp/esp8266-7/0000.log:1"]
    assert details["pull/lab-1/0000.log:5"] == "connection refused"
    assert report.counts[("imported", "measurements")] == len(EXPECTED_TCP) + len(EXPECTED_PULL)
    assert report.counts[("imported", "receipts")] == len(EXPECTED_RECEIPTS)
    assert report.counts[("dropped", "unreadable raw log line (torn or edited)")] == 1
    assert report.counts[("noted", "bad receipts")] == 2
    assert report.counts[("noted", "failed receipts")] == 1
    (sample,) = conn.execute("SELECT d.src_line, d.reason, d.content FROM dropped_lines d "
                             "JOIN import_files f ON f.id = d.src_file WHERE f.kind = ?",
                             ("measurements",)).fetchall()
    assert sample[:2] == (3, "dropped: unreadable raw log line (torn or edited)")
    assert "not a gateway line" in sample[2]


def _order(row: tuple) -> tuple:
    return (row[0], row[2], row[3])


def test_a_second_import_adds_nothing_and_reads_no_file(tree, conn):
    run(tree, conn)
    before = tables(conn)
    out: list[str] = []
    report = run(tree, conn, out=out)
    assert tables(conn) == before
    assert (report.files, report.files_read, report.total("imported")) == (4, 0, 0)
    assert out[0].startswith("measurements: 4 files (0 read, 0 replaced or gone), 0 new rows")


def test_import_in_steps_equals_import_at_once(tree, conn, tmp_path):
    at_once = Tree(tmp_path / "at-once")
    write_logs(at_once)
    whole = open_db(at_once)
    run(at_once, whole)
    # The same logs as they grew: first a part, the last line still being written.
    step = Tree(tmp_path / "steps")
    first = TCP_0000[:2]
    write_log(step, "tcp", TCP_DEV, first, tail=TCP_0000[2].encode()[:30])
    write_log(step, "pull", PULL_DEV, PULL_0000[:1])
    steps = open_db(step)
    run(step, steps)
    assert len(measurements(steps)) == 6 + 4
    append(log_path(step, "tcp", TCP_DEV), TCP_0000[2].encode()[30:])
    append(log_path(step, "pull", PULL_DEV), PULL_0000[1].encode() + GARBAGE)
    run(step, steps)
    write_log(step, "tcp", TCP_DEV, TCP_0001, 1)
    write_log(step, "tcp", UNKNOWN_DEV, UNKNOWN_0000)
    append(log_path(step, "pull", PULL_DEV), b"".join(x.encode() for x in PULL_0000[2:]))
    run(step, steps)
    assert tables(steps) == tables(whole)
    # Each file's carry is the device's history after its last line, whichever way it came.
    carries = "SELECT path, carry FROM import_files WHERE kind = 'measurements' ORDER BY path"
    assert steps.execute(carries).fetchall() == whole.execute(carries).fetchall()


def test_history_carry_round_trips():
    history = tcp_format.History(1_790_000_000_123_456, (b"\x01\x02\x03\x04\x05\x06", b"\xff" * 6))
    assert carried_history(history_carry(history)) == history
    assert history_carry(None) is None and carried_history(None) is None


def test_a_row_lost_between_log_and_table_comes_back(tree, conn):
    # The gateway stored some lines live, then died before storing the rest.
    live = [r for r in EXPECTED_TCP if r[5] == "tcp/esp8266-1/0000.log:1"]
    conn.executemany(db.INSERT_MEASUREMENT, [(*r, None) for r in live])
    report = run(tree, conn)
    assert close(sorted(r for r in measurements(conn) if r[1] == "tcp"),
                 sorted(EXPECTED_TCP, key=_order))
    assert report.counts[("duplicate", "measurements already in (live from the gateway)")] == 6
    # Rows deleted after the import come back when the logs are read again from the start.
    conn.execute("DELETE FROM measurements WHERE device = ?", (PULL_DEV,))
    conn.execute("DELETE FROM gateway_receipts WHERE source LIKE 'tcp/esp8266-1/0001.log:%'")
    conn.execute("DELETE FROM import_files WHERE kind = 'measurements'")
    run(tree, conn)
    assert len(measurements(conn)) == len(EXPECTED_TCP) + len(EXPECTED_PULL)
    assert len(receipts(conn)) == len(EXPECTED_RECEIPTS)


def test_a_record_format_for_an_unknown_device_id_parses_its_kept_packets(tree, conn):
    out: list[str] = []
    run(tree, conn, out=out)
    assert not conn.execute("SELECT 1 FROM measurements WHERE device = ?",
                            (UNKNOWN_DEV,)).fetchall()
    report = run(tree, conn, BOTH_TYPES, out)
    rows = conn.execute("SELECT ts, name, value, source FROM measurements WHERE device = ? "
                        "ORDER BY ts, name", (UNKNOWN_DEV,)).fetchall()
    # Packet 1: 120 s back from T0; packet 2: one record, spread over the hour since.
    assert [(ts, name, source) for ts, name, _, source in rows] == [
        ("2026-10-31T23:58:00.000000", n, "tcp/esp8266-7/0000.log:1") for n in
        ("humidity", "light", "temperature")] + [
        ("2026-11-01T00:00:00.000000", n, "tcp/esp8266-7/0000.log:2") for n in
        ("humidity", "light", "temperature")]
    assert conn.execute("SELECT verdict, stored, detail FROM gateway_receipts WHERE device = ?",
                        (UNKNOWN_DEV,)).fetchall() == [("ok", 3, None)] * 2
    assert report.counts[("updated", "receipts that read differently now (tcp_device_types)")] \
        == 2
    assert "2 updated" in out[-1]
    # Only the TCP logs were read again, and only once.
    assert report.files_read == 3
    assert conn.execute("SELECT value FROM toolchain_state WHERE name = ?",
                        (REGISTRY_STATE,)).fetchone() == (",".join(BOTH_TYPES),)
    assert run(tree, conn, BOTH_TYPES).files_read == 0


def test_a_registry_change_parses_the_kept_packets_of_a_log_that_grew_since(tree, conn):
    run(tree, conn)
    append(log_path(tree, "tcp", UNKNOWN_DEV), tcp_line(T2, packet(7, [R3])).encode())
    report = run(tree, conn, BOTH_TYPES)
    assert [source for (source,) in conn.execute(
        "SELECT DISTINCT source FROM measurements WHERE device = ? ORDER BY source",
        (UNKNOWN_DEV,))] == [f"tcp/esp8266-7/0000.log:{n}" for n in (1, 2, 3)]
    assert report.files_read == 3
    assert run(tree, conn, BOTH_TYPES).files_read == 0


def test_new_tcp_rules_read_the_tcp_logs_again_once(tree, conn):
    run(tree, conn)
    # A database whose TCP logs were read by earlier rules, which stored none of a packet
    # (as the rules before 2 did with a packet equal to the previous one).
    conn.execute("DELETE FROM measurements WHERE source = 'tcp/esp8266-1/0001.log:1'")
    conn.execute("UPDATE toolchain_state SET value = '1' WHERE name = ?", (RULES_STATE,))
    report = run(tree, conn)
    assert report.files_read == 3  # the TCP logs, unchanged on disk
    assert close([r for r in measurements(conn) if r[1] == "tcp"],
                 sorted(EXPECTED_TCP, key=_order))
    assert conn.execute("SELECT value FROM toolchain_state WHERE name = ?",
                        (RULES_STATE,)).fetchone() == (tcp_format.RULES,)
    assert run(tree, conn).files_read == 0


def test_new_tcp_rules_replace_what_earlier_rules_made_of_a_packet(tree, conn):
    run(tree, conn)
    # Earlier rules timed the packet's records otherwise (they took some for a resend, so
    # its step differed): those rows must go, not stay beside the new reading of the line.
    stale = ("esp8266-1", "tcp", "2026-11-01T01:31:00.000000", "light", 1.0,
             "tcp/esp8266-1/0001.log:1", None)
    conn.execute("INSERT INTO measurements VALUES (?, ?, ?, ?, ?, ?, ?)", stale)
    # ...and a line the gateway appended after the import's read keeps the row it wrote.
    later = ("esp8266-1", "tcp", "2026-11-01T03:00:00.000000", "light", 2.0,
             "tcp/esp8266-1/0001.log:2", None)
    conn.execute("INSERT INTO measurements VALUES (?, ?, ?, ?, ?, ?, ?)", later)
    conn.execute("UPDATE toolchain_state SET value = '1' WHERE name = ?", (RULES_STATE,))
    run(tree, conn)
    tcp_rows = [r for r in measurements(conn) if r[1] == "tcp" and r[0] == TCP_DEV]
    assert close([r for r in tcp_rows if r[2] != later[2]],
                 sorted((r for r in EXPECTED_TCP if r[0] == TCP_DEV), key=_order))
    assert [r[2] for r in tcp_rows if r[2] == later[2]] == [later[2]]


def test_a_log_read_in_part_is_read_on_the_next_time_though_unchanged(tree, conn, monkeypatch):
    # An import cut after a pull log's first batch (a value a batch): the next one reads the
    # rest of that log, though the file is as it was.
    from co2unit_server.toolchain.importer import measurements as stage
    monkeypatch.setattr(stage, "BATCH_VALUES", 1)
    real_store = stage._store
    pull_batches = []

    def cut_after_a_pull_batch(conn, work, *args, **kwargs):
        if work.found.group.startswith("pull/"):
            pull_batches.append(work.found.key)
            if len(pull_batches) > 1:
                raise KeyboardInterrupt
        real_store(conn, work, *args, **kwargs)

    monkeypatch.setattr(stage, "_store", cut_after_a_pull_batch)
    with pytest.raises(KeyboardInterrupt):
        run(tree, conn)
    monkeypatch.setattr(stage, "_store", real_store)
    run(tree, conn)
    fresh_tree = Tree(tree.root / "fresh")
    write_logs(fresh_tree)
    with closing(open_db(fresh_tree)) as fresh:
        run(fresh_tree, fresh)
        assert measurements(conn) == measurements(fresh)


def test_a_replaced_log_is_read_again_with_the_files_after_it(tree, conn):
    run(tree, conn)
    # The first file replaced (restored from a backup with a line less): the files after it
    # start from its end again; rows stay (the gateway wrote them too).
    write_log(tree, "tcp", TCP_DEV, [TCP_0000[0], TCP_0000[2]])
    report = run(tree, conn)
    assert report.files_replaced == 1 and report.files_read == 2
    assert len(measurements(conn)) == len(EXPECTED_TCP) + len(EXPECTED_PULL)


def test_gateway_dirs_are_no_units_for_the_other_stages(tmp_path):
    tree = build_tree(tmp_path)
    plain = open_db(tree)
    import_tree(tree, plain)
    with_logs = Tree(tmp_path / "with-logs")
    build_tree(with_logs.root)
    write_logs(with_logs)
    # Even directories that look like a unit's inside a family are not read as one.
    write(with_logs.data_dir / "pull" / "data" / "readings" / "readings-0000.tsv",
          (tree.readings("co2unit-30aea42a50bc")).read_bytes())
    write(with_logs.data_dir / "tcp" / "var" / "pings" / "pings-0000.tsv",
          (tree.db_dir / "pings" / "pings-0000.tsv").read_bytes())
    logs = open_db(with_logs)
    import_tree(with_logs, logs)
    for table in ("co2_readings", "error_logs", "pings"):
        count = f"SELECT count(*) FROM {table}"
        assert logs.execute(count).fetchone() == plain.execute(count).fetchone()
    paths = [p for (p,) in logs.execute("SELECT path FROM import_files WHERE kind != ?",
                                        ("measurements",))]
    assert not [p for p in paths if p.startswith(("data:tcp/", "data:pull/"))]
    assert "tcp" not in sources.unit_candidates(with_logs.data_dir)


def test_data_versions_change_when_measurements_are_imported(tree, conn):
    before = build.data_versions(conn)["measurements"]
    run(tree, conn)
    imported = build.data_versions(conn)["measurements"]
    append(log_path(tree, "tcp", TCP_DEV, 1), tcp_line("2026-11-01T03:00:00.000000",
                                                       packet(1, [R1])).encode())
    run(tree, conn)
    grown = build.data_versions(conn)["measurements"]
    run(tree, conn, BOTH_TYPES)
    assert len({before, imported, grown, build.data_versions(conn)["measurements"]}) == 4


def test_the_stage_runs_after_pings_in_every_import(tree):
    out: list[str] = []
    import_tree(tree, out=out)
    assert [line.split(":")[0] for line in out] == ["readings", "errors", "pings",
                                                    "measurements", "deployments"]


# --- WebSocket raw logs (JSON lines, rows tagged with their session)

WS_DEV = "phone-1"


def ws_line(ts: str, seq: int, values: dict, session: str | None = "s-1",
            at: str = "2026-11-01T00:00:00Z") -> WsLine:
    raw = json.dumps({"type": "readings", "seq": seq, "readings": [{"ts": at, "values": values}]})
    return WsLine(ts, "10.0.0.8:50000", session, seq, raw)


WS_LINES = [ws_line(T0, 0, {"co2": 415.5, "rh": 40}, None),
            ws_line(T1, 1, {"co2": 420.0}, at="2026-11-01T02:00:00+01:00")]
WS_EDITED = WsLine(T2, "10.0.0.8:50000", "s-1", 2, '{"type": "readings", "seq": 2}')


def write_ws_log(tree: Tree, lines: list[WsLine], tail: bytes = b"") -> Path:
    return write(log_path(tree, "ws", WS_DEV), b"".join(line.encode() for line in lines) + tail)


def ws_tree(tmp_path: Path) -> Tree:
    tree = Tree(tmp_path / "ws")
    write_ws_log(tree, WS_LINES[:1], tail=b'{"ts": "torn by a crash"}\n')
    append(log_path(tree, "ws", WS_DEV), b"".join(line.encode() for line in [*WS_LINES[1:],
                                                                             WS_EDITED]))
    return tree


def test_websocket_logs_are_imported_with_their_sessions(tmp_path):
    tree = ws_tree(tmp_path)
    conn = open_db(tree)
    report = run(tree, conn)
    assert conn.execute("SELECT device, family, ts, name, value, source, session "
                        "FROM measurements ORDER BY ts, name").fetchall() == [
        (WS_DEV, "ws", "2026-11-01T00:00:00.000000", "co2", 415.5, "ws/phone-1/0000.log:1", None),
        (WS_DEV, "ws", "2026-11-01T00:00:00.000000", "rh", 40.0, "ws/phone-1/0000.log:1", None),
        (WS_DEV, "ws", "2026-11-01T01:00:00.000000", "co2", 420.0, "ws/phone-1/0000.log:3",
         "s-1")]
    assert [r[:6] for r in receipts(conn)] == [
        ("ws/phone-1/0000.log:1", WS_DEV, "ws", T0, "ok", 2),
        ("ws/phone-1/0000.log:3", WS_DEV, "ws", T1, "ok", 1),
        ("ws/phone-1/0000.log:4", WS_DEV, "ws", T2, "bad", 0)]  # edited: kept, not parsed
    assert report.counts[("dropped", UNREADABLE)] == 1  # the torn line
    assert report.counts[("noted", "bad receipts")] == 1
    assert run(tree, conn).files_read == 0


def test_websocket_logs_in_steps_equal_at_once(tmp_path):
    whole = ws_tree(tmp_path)
    at_once = open_db(whole)
    run(whole, at_once)
    step = Tree(tmp_path / "steps")
    data = log_path(whole, "ws", WS_DEV).read_bytes()
    cut = len(WS_LINES[0].encode()) + 10  # a line being written when the import reads
    write(log_path(step, "ws", WS_DEV), data[:cut])
    steps = open_db(step)
    run(step, steps)
    assert len(measurements(steps)) == 2
    append(log_path(step, "ws", WS_DEV), data[cut:])
    run(step, steps)
    assert tables(steps) == tables(at_once)


# --- the live gateway and the import agree


def send(port: int, data: bytes) -> bool:
    """Send as a device does; True once the gateway read it all and closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        return s.recv(1) == b""


class _Answers(BaseHTTPRequestHandler):
    """A NodeMCU's /circumstances: good, partial and 500 answers in turn."""

    bodies = [(200, json.dumps(ANSWER).encode()), (200, json.dumps(PARTIAL).encode()),
              (500, b"oops")]
    served = 0

    def do_GET(self) -> None:  # noqa: N802 (the handler's API)
        status, body = self.bodies[_Answers.served % len(self.bodies)]
        _Answers.served += 1
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass





def test_a_rebuild_from_the_logs_equals_what_the_gateway_stored(gateway_factory, tmp_path):
    http = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    devices = tmp_path / "devices.tsv"
    devices.write_text(f"# name\tURL\tinterval\n{PULL_DEV}\thttp://127.0.0.1:"
                       f"{http.server_address[1]}/circumstances\t0.3\n")
    gateway = gateway_factory({"pull_devices_file": str(devices), "pull_refresh_seconds": "0.2",
                               "raw_log_rotate_bytes": "150"}, tcp=True)
    try:
        sent = [packet(1, [R1, R2]), packet(1, [R3])[:12], packet(1, [R3, R4, R5]),
                packet(1, [R3, R4, R5, R6, R7]), packet(7, [R1]), b"\x01\x02"]
        for data in sent:
            assert send(gateway.tcp_port, data)
        live_db = gateway.var_dir / "db.sqlite3"

        def stored() -> bool:
            try:
                with closing(sqlite3.connect(live_db)) as c:
                    counts = dict(c.execute("SELECT family, count(*) FROM gateway_receipts "
                                            "GROUP BY family").fetchall())
            except sqlite3.OperationalError:  # the writers have not created it yet
                return False
            return counts.get("pull", 0) >= 6 and counts.get("tcp") == len(sent)
        assert wait_for(stored, 60), gateway.log_text()[-3000:]
    finally:
        assert gateway.stop() == 0
        http.shutdown()
    assert len(rawlog.log_files(gateway.remote_data / "tcp" / TCP_DEV)) > 1  # rotated
    rebuilt = open_db(Tree(tmp_path / "rebuilt"))
    run(Tree(gateway.remote_data.parent), rebuilt)
    live = db.connect(live_db)
    live_measurements, live_receipts = tables(live)
    assert {r[4] for r in live_receipts} >= {"ok", "partial", "bad", "unknown"}
    # Every row the gateway stored is the import's, exactly; a poll cut short by the stop
    # may be in the log but not yet stored: the import into its own database adds it.
    assert set(live_measurements) <= set(measurements(rebuilt))
    assert set(live_receipts) <= set(receipts(rebuilt))
    missing = {r[0] for r in receipts(rebuilt)} - {r[0] for r in live_receipts}
    assert len(missing) <= 1 and all(s.startswith("pull/") for s in missing), missing
    report = run(Tree(gateway.remote_data.parent), live)
    assert tables(live) == tables(rebuilt)
    assert report.total("updated") == 0
    assert report.counts[("duplicate", "receipts already in (live from the gateway)")] == len(
        live_receipts)


def test_the_families_are_the_gateways_own():
    assert set(sources.GATEWAY_FAMILIES) == {tcp_format.FAMILY, pull_format.FAMILY,
                                             ws_format.FAMILY}


def test_the_import_command_reads_with_the_tcp_device_types_setting(tree, monkeypatch, capsys):
    from co2unit_server.cli import main

    monkeypatch.setenv("CO2UNIT_TCP_DEVICE_TYPES", ",".join(BOTH_TYPES))
    assert main(["import", "--data-dir", str(tree.data_dir), "--db-dir", str(tree.db_dir)]) == 0
    assert "measurements: 4 files (4 read" in capsys.readouterr().out
    conn = open_db(tree)
    assert conn.execute("SELECT count(*) FROM measurements WHERE device = ?",
                        (UNKNOWN_DEV,)).fetchone() == (6,)
