"""Gateway raw logs (`tcp/`, `pull/`, `ws/<device>/NNNN.log`) into measurements.

The gateway stores each line's receipt and values live, once the line is durable; this stage
reads the same lines with the same functions (tcp_format.interpret, pull_format.interpret,
ws_format.interpret: WebSocket rows carry their session), so a row lost between log and table
comes back and a database rebuilt from the logs alone is the
same. Rows are never deleted (the gateway writes them too): a replaced log is read again.

TCP decoding is stateful per device: a packet's times and its resent records depend on the
device's previous valid packet (tcp_format.History). The history after a file's last imported
line is kept in the file's import_files.carry; the file's next lines, or the device's next
file, start from it. The tcp_device_types registry decides which packets are parsed: when it
changes, every TCP log is read again, so packets kept raw under an unknown device ID get their
values, and their receipts the verdict the registry now gives.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ...database import db
from ...database.state import read_state, transaction, write_state
from ...records import rawlog
from . import sources
from .report import StageReport

if TYPE_CHECKING:
    from ...database.rows import Measurement, Receipt
    from ...records.tcp_format import History, RecordFormat
    from ...records.ws_format import WsLine

KIND = "measurements"
REGISTRY_STATE = "measurements:tcp_device_types"  # the registry the TCP logs were read with
RULES_STATE = "measurements:tcp_rules"  # and tcp_format.RULES
UNREADABLE = "unreadable raw log line (torn or edited)"
BATCH_VALUES = 20_000  # values per transaction: keeps memory flat on a big backlog
# A receipt read again may say something else than the stored one (a record format added for
# its device ID since): the log, read with the current settings, is right.
UPDATE_RECEIPT = """UPDATE gateway_receipts SET verdict = :verdict, stored = :stored,
    expected_s = :expected_s, detail = :detail
    WHERE device = :device AND ts = :ts AND source = :source
    AND (verdict IS NOT :verdict OR stored IS NOT :stored OR expected_s IS NOT :expected_s
         OR detail IS NOT :detail)"""

# (line, device, source, history) -> (receipt, values, history after the line)
Decode = Callable[[Any, str, str, "History | None"],
                  tuple["Receipt", list["Measurement"], "History | None"]]


class Family(NamedTuple):
    """How a family's raw log lines are read: `parse` a line (None: unreadable), `decode` it."""

    parse: Callable[[bytes], Any]
    decode: Decode


def registry_text(registry: dict[int, RecordFormat]) -> str:
    """The registry as one canonical text: '1=tsl2561-si7021,...' by device ID."""
    return ",".join(f"{device_id}={fmt.name}" for device_id, fmt in sorted(registry.items()))


def history_carry(history: History | None) -> str | None:
    """A History as import_files.carry (JSON), None for none."""
    if history is None:
        return None
    return json.dumps({"received_us": history.received_us,
                       "records": [r.hex() for r in history.records]})


def carried_history(carry: str | None) -> History | None:
    """The inverse of history_carry."""
    from ...records.tcp_format import History

    if carry is None:
        return None
    data = json.loads(carry)
    return History(data["received_us"], tuple(bytes.fromhex(r) for r in data["records"]))


def find_logs(data_dir: Path) -> list[sources.Found]:
    """Every device's raw logs, grouped by '<family>/<device>', each device's in order."""
    dirs = [(f"{family}/{device}", f"{family}/{device}")
            for family in sources.GATEWAY_FAMILIES
            for device in rawlog.devices(data_dir / family)]
    return [f for f in sources.find_files(data_dir, "data", dirs, ".log")
            if rawlog.LOG_FILE_RE.fullmatch(f.path.name)]


def parse_ws(raw: bytes) -> WsLine | None:
    """A WebSocket raw log line's fields, or None when no gateway wrote it so."""
    from ...records.ws_format import WsLine

    try:
        return WsLine.parse(raw)
    except ValueError:
        return None


def decoders(registry: dict[int, RecordFormat]) -> dict[str, Family]:
    """The reading of each family's lines, the gateways' own."""
    # Imported here: the formats import measurement_store, which imports the toolchain.
    from ...records import pull_format, tcp_format, ws_format

    def tcp(line: rawlog.RawLine, device: str, source: str,
            history: History | None) -> tuple[Receipt, list[Measurement], History | None]:
        return tcp_format.interpret(line, device, source, history, registry)

    def pull(line: rawlog.RawLine, device: str, source: str,
             history: History | None) -> tuple[Receipt, list[Measurement], History | None]:
        return (*pull_format.interpret(line, device, source), None)

    def ws(line: WsLine, device: str, source: str,
           history: History | None) -> tuple[Receipt, list[Measurement], History | None]:
        return (*ws_format.interpret(line, device, source), None)

    return {tcp_format.FAMILY: Family(rawlog.parse_raw, tcp),
            pull_format.FAMILY: Family(rawlog.parse_raw, pull),
            ws_format.FAMILY: Family(parse_ws, ws)}


def import_measurements(conn: sqlite3.Connection, data_dir: Path,
                        device_types: Sequence[str], report: StageReport) -> None:
    """Import the new lines of every gateway raw log, each device's files in order."""
    from ...records import tcp_format

    registry = tcp_format.parse_device_types(device_types)
    decode = decoders(registry)
    found = find_logs(data_dir)
    report.files = len(found)
    with transaction(conn):
        plan = sources.plan(conn, KIND, found)
        # What a TCP packet gives depends on the registry and on tcp_format's rules: when either
        # changed since the logs were read, they are read again (rows already in stay).
        tcp_reading_changed = (read_state(conn, REGISTRY_STATE) != registry_text(registry)
                            or read_state(conn, RULES_STATE) != tcp_format.RULES)
        if tcp_reading_changed:
            sources.rescan_groups(plan, {f.group for f in found
                                         if f.group.startswith(tcp_format.FAMILY + "/")})
        sources.rescan_groups(plan, _restarted_before_others(found, plan))
        # Rows stay: the gateway wrote them too, and a replaced log is read again whole.
        sources.forget(conn, plan.vanished)
        sources.forget_dropped(conn, plan.work)
    report.files_replaced = len(plan.replaced) + len(plan.vanished)
    work = {w.found.key: w for w in plan.work}
    unchanged = {f.key: state.carry for f, state in plan.unchanged}
    carry: dict[str, str | None] = {}  # per device: the history its next file starts from
    for f in found:
        if f.key in unchanged:
            carry[f.group] = unchanged[f.key]
            continue
        w = work[f.key]
        start = carry.get(f.group) if w.restart else w.state.carry
        carry[f.group] = import_file(conn, w, start, decode[f.group.split("/")[0]], report)
    report.files_read = len(plan.work)
    if tcp_reading_changed:  # only now: an import cut short reads them all again next time
        with transaction(conn):
            write_state(conn, REGISTRY_STATE, registry_text(registry))
            write_state(conn, RULES_STATE, tcp_format.RULES)


def _restarted_before_others(found: list[sources.Found], plan: sources.Plan) -> set[str]:
    """Devices with a file read from its start before a later file that is not: the later
    files' decoding starts from what the earlier one ends with, so they are read again."""
    restarted = {w.found.key for w in plan.work if w.restart}
    stale: set[str] = set()
    since_restart: set[str] = set()
    for f in found:
        if f.key in restarted:
            since_restart.add(f.group)
        elif f.group in since_restart:
            stale.add(f.group)
    return stale


def import_file(conn: sqlite3.Connection, work: sources.Work, carry: str | None,
                family: Family, report: StageReport) -> str | None:
    """Import a file's new lines starting from `carry`; return the carry after its last."""
    data, start = sources.read_new(work)
    device = work.found.group.split("/", 1)[1]
    history = carried_history(carry)
    line_no = 0 if work.restart else work.state.lines_done
    # A file read before and read again from its start (new rules, a changed registry, a mark):
    # its lines' rows from that earlier reading go, or they would stay beside the new ones
    # wherever the new reading times them otherwise.
    replaces = work.restart and work.state.bytes_done > 0
    first_line = line_no + 1
    offset = start
    receipts: list[Receipt] = []
    values: list[Measurement] = []
    for raw in data.split(b"\n")[:-1]:
        line_no += 1
        offset += len(raw) + 1
        line = family.parse(raw)
        if line is None:
            report.drop(work.state.id, line_no, UNREADABLE, raw.decode("utf-8", "replace"))
        else:
            receipt, new, history = family.decode(
                line, device, rawlog.source_key(work.found.path, line_no), history)
            receipts.append(receipt)
            values += new
        if len(values) >= BATCH_VALUES:
            _store(conn, work, Batch(first_line, line_no, offset, history_carry(history),
                                     replaces, finished=False), receipts, values, report)
            receipts, values, first_line = [], [], line_no + 1
    carry = history_carry(history)
    _store(conn, work, Batch(first_line, line_no, offset, carry, replaces, finished=True),
           receipts, values, report)
    return carry


@dataclass(frozen=True)
class Batch:
    """Lines first..last of a file, stored in one transaction, and where they leave it."""

    first: int
    last: int
    bytes_done: int
    carry: str | None
    replaces: bool  # the lines' rows from an earlier reading go first
    finished: bool  # the file is read to its end


FORGET_LINES = """DELETE FROM measurements WHERE device = ? AND source >= ? AND source < ?
    AND CAST(substr(source, ?) AS INTEGER) BETWEEN ? AND ?"""


def _forget_lines(conn: sqlite3.Connection, work: sources.Work, first: int, last: int) -> None:
    """Delete the rows an earlier reading made of lines first..last of the file."""
    prefix = rawlog.source_key(work.found.path, 0)[:-1]  # '<family>/<device>/<NNNN>.log:'
    conn.execute(FORGET_LINES, (work.found.group.split("/", 1)[1], prefix, prefix[:-1] + ";",
                                len(prefix) + 1, first, last))


def _store(conn: sqlite3.Connection, work: sources.Work, batch: Batch, receipts: list[Receipt],
           values: list[Measurement], report: StageReport) -> None:
    """Insert the rows, their file's dropped lines and its progress in one transaction."""
    with transaction(conn):
        if batch.replaces and batch.last >= batch.first:
            _forget_lines(conn, work, batch.first, batch.last)
        new_values = (conn.executemany(db.INSERT_MEASUREMENT, values)
                      .rowcount if values else 0)
        rows = [r.row() for r in receipts]
        new_receipts = conn.executemany(db.INSERT_RECEIPT, rows).rowcount if rows else 0
        updated = conn.executemany(UPDATE_RECEIPT, [
            {"device": r.device, "ts": r.ts, "source": r.source, "verdict": r.verdict,
             "stored": r.stored, "expected_s": r.expected_s, "detail": r.detail or None}
            for r in receipts
        ]).rowcount if receipts else 0
        report.store_dropped(conn)
        sources.save(conn, work, batch.bytes_done, batch.last, batch.carry, batch.finished)
    report.add("imported", "measurements", new_values)
    report.add("imported", "receipts", new_receipts)
    report.add("duplicate", "measurements already in (live from the gateway)",
               len(values) - new_values)
    report.add("duplicate", "receipts already in (live from the gateway)",
               len(receipts) - new_receipts)
    report.add("updated", "receipts that read differently now (tcp_device_types)", updated)
    for r in receipts:
        if r.verdict != "ok":
            report.add("noted", f"{r.verdict} receipts")
