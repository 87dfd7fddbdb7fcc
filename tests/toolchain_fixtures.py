"""A pushed-data tree with every irregularity of docs/unit-protocol.md and issue 3's traps.

Used by test_importer, test_plots, test_summaries and test_database_makefile.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from co2unit_server.database import db
from co2unit_server.toolchain.importer import Sources, run_import
from co2unit_server.toolchain.importer.report import StageReport

HW_A = "co2unit-30aea42a50bc"  # deployed, then en route, then in the lab
HW_B = "co2unit-0123456789ab"  # deployed at A's site after A: the same subplot
HW_C = "co2unit-cccccccccccc"  # one reading, never deployed
HW_D = "co2unit-dddddddddddd"  # every value None; its site has an overlapping deployment
HW_E = "co2unit-eeeeeeeeeeee"  # the overlapping one: a subplot of its own
SITE = "vj_re_sn_4"
OTHER_SITE = "ko_ho_me_1"
SUPERSEDED = "superseded/20261102T000000.000000Z"
CO2 = "\t".join(["700"] * 10)
# The ExplorIR raw values (Z, d, o, h, v) of firmware from 2020-01-14 on (docs/unit-protocol.md's
# example).
RAW = "45\t34986\t28228\t32626\t1101"
RAW_VALUES = (45, 34986, 28228, 32626, 1101)


def reading(hw: str, nick: str, date: str, time: str, temp: str = "4.5", flash: str = "1",
            co2: str = CO2, raw: str | None = None) -> str:
    """One readings line without its newline: 16 fields, or 21 with `raw`."""
    line = f"{hw}\t{nick}\t{date}\t{time}\t{temp}\t{flash}\t{co2}"
    return line if raw is None else f"{line}\t{raw}"


GOOD_A = reading(HW_A, "varanger-03", "2026-11-01", "13:00:10", "23.4375",
                 co2="680\t700\t710\t710\t700\t690\t700\t700\t700\t700")
# (content, what the importer must do with it): the lines of A's readings-0000.tsv.
A_LINES: list[tuple[bytes, str]] = [
    (GOOD_A.encode(), "imported"),
    (reading(HW_A, "varanger-03", "2026-11-01", "13:30:10", "None", "0",
             "None\t" + "\t".join(["700"] * 9)).encode(), "imported: temp and co2_01 NULL"),
    (reading(HW_A, "varanger-03", "2026-11-01", "14:00:10", "22.0", "0",
             "0\t200010\t" + "\t".join(["800"] * 8)).encode(), "imported: start-up glitches"),
    (reading(HW_A, "varanger-03", "1970-01-01", "00:00:42").encode(), "dropped: 1970 date"),
    (reading(HW_A, "var\x07anger-03", "2026-11-01", "14:10:10").encode(),
     "dropped: non-printing bytes"),
    (b"test\t1\t2\t3", "dropped: not a co2unit- line"),
    (reading(HW_A, "varanger-03", "2026-11-01", "14:30:10", "85.0").encode(),
     "imported: 85.0 fault temperature"),
    (reading(HW_A, "DEFAULTNICK", "2026-11-01", "15:00:10").encode(), "imported: nickname NULL"),
    (reading(HW_A, "varanger-03", "2026-11-01", "15:30:10", "23.", "1",
             "680\t\t" + "\t".join(["700"] * 8)).encode(),
     "imported: truncated temp and empty co2_02 NULL"),
    # A power loss cut the 16:00 row; the unit wrote the 16:30 row onto the same line.
    ((reading(HW_A, "varanger-03", "2026-11-01", "16:00:10")[:48]
      + reading(HW_A, "varanger-03", "2026-11-01", "16:30:10", "5.5")).encode(),
     "recovered: 16:30 row"),
    (b"\x00" * 64 + reading(HW_A, "varanger-03", "2026-11-01", "17:00:10").encode(),
     "recovered: row after a NUL block"),
    (b"\x00" * 40, "dropped: non-printing bytes"),
    (reading(HW_A, "varanger-03", "2026-11-01", "17:30:10", "4.5", "1",
             "680\tabc\t" + "\t".join(["700"] * 8)).encode(), "dropped: unparseable field"),
    (reading("co2unit-XYZ", "varanger-03", "2026-11-01", "17:40:10").encode(),
     "dropped: garbled hw_id"),
    (reading(HW_A, "varanger-03", "2026-11-01", "18:00:10")[:60].encode(),
     "dropped: wrong field count"),
    (reading(HW_A, "var\udcffanger", "2026-11-01", "18:10:10").encode("utf-8", "surrogateescape"),
     "dropped: non-printing bytes (not UTF-8)"),
    # The unit's firmware update: from here on it writes 21 fields, in the same file.
    (reading(HW_A, "varanger-03", "2026-11-01", "18:20:10", raw=RAW).encode(),
     "imported: with raw values"),
    (reading(HW_A, "varanger-03", "2026-11-01", "18:21:10",
             raw="\t".join(["None"] * 5)).encode(), "imported: raw read failed, raw NULL"),
    (reading(HW_A, "varanger-03", "2026-11-01", "18:22:10", raw="45\t3x986\t1\t2\t3").encode(),
     "dropped: damaged raw value"),
    (reading(HW_A, "varanger-03", "2026-11-01", "18:23:10", raw="45\t1").encode(),
     "dropped: 18 fields"),
    (b"", "noted: blank line (firmware of 2019-07-26)"),
    (reading(HW_A, "varanger-03", "2000-01-01", "00:01:00", raw=RAW).encode(),
     "dropped: clock not set"),
    ((reading(HW_A, "varanger-03", "2026-11-01", "18:24:10", raw=RAW)[:100]
      + reading(HW_A, "varanger-03", "2026-11-01", "18:25:10", raw=RAW)).encode(),
     "recovered: the 18:25 row, with raw values"),
]
# Being pushed: no newline yet.
A_PARTIAL = reading(HW_A, "varanger-03", "2026-11-01", "18:30:10")
A_PARTIAL_CUT = 50
A_IMPORTED = 11  # 8 clean (some with NULLs) + 3 recovered
A_DROPPED = {"date before 2011 (clock not set)": 2, "non-printing bytes": 3,
             "not a co2unit- line": 1, "unparseable field": 2, "garbled hw_id": 1,
             "wrong field count": 2}
# co2_readings after importing the tree: A, A's superseded-only row, B, C, D.
TREE_READINGS = A_IMPORTED + 1 + 3 + 1 + 3
SUPERSEDED_ONLY = reading(HW_A, "varanger-03", "2026-10-31", "12:00:10")

ERRORS_A = """----- (2026, 10, 25, 3, 11, 24, 4, 298) INFO  transmitting
----- 2026-10-25 03:12:00 EXC   Uncaught exception
Traceback (most recent call last):
  File "main.py", line 10, in <module>
OSError: [Errno 113] EHOSTUNREACH
----- (1970, 1, 1, 0, 0, 12, 3, 1) WARN  watchdog reset
----- 1970-01-01 00:00:15 INFO  Signal quality 18
----- 2026-10-26 03:10:00 WARN  LTE backoff 600 s
----- 2026-10-26 03:11:00 INFO  something else
"""

PINGS_OWN = (
    f"2026-11-01T03:10:05.123456\t{HW_A}\tvaranger-03\t18\t-77\t99\n"
    f"2026-11-01T03:11:00\t{HW_B}\tNone\tNone\tNone\n"  # 5 columns, old ts without .%f
    f"2026-11-06T03:11:00.000001\t{HW_B}\tvaranger-04\t20\t-73\t99\n"
    "not a ping line\n"
)
PINGS_OTHER_SERVER = (
    f"2026-11-01T03:10:05.123456\t{HW_A}\tvaranger-03\t18\t-77\t99\n"  # also in our log
    f"2026-11-02T03:12:00.500000\t{HW_D}\tNone\t9\t-95\n"
)

DEPLOYMENTS = f"""# deployments kept by researchers
unit_id\tnickname\tsite\ttier\tstatus\tstart_ts\tend_ts\tnote

{HW_A}\tvaranger-03\t{SITE}\t3\tdeployed\t2026-10-30\t2026-11-05\tfirst # not a comment
# {HW_C}\tcommented\tout\t9\tdeployed\t2026-01-01\t\t
{HW_B}\tvaranger-04\t{SITE}\t3\tdeployed\t2026-11-05\t\t
{HW_A}\tvaranger-03\t\t1\ten_route\t2026-11-05\t2026-11-07T12:00:00+02:00\t
{HW_A}\tvaranger-03\t\t1\tlab_check\t2026-11-07T10:00:00\t\t
{HW_D}\t\t{OTHER_SITE}\t2\tdeployed\t2026-11-01 00:00:00\t\tall None
{HW_E}\tx\t{OTHER_SITE}\t2\tdeployed\t2026-11-02\t\t
{HW_E}\tx\tsomewhere\tnot-a-tier\tdeployed\t2026-11-02\t\t
"""


@dataclass(frozen=True)
class Tree:
    """A temp server install: remote_data, var (the database and the server's pings), pub."""

    root: Path

    @property
    def data_dir(self) -> Path:
        return self.root / "remote_data"

    @property
    def db_dir(self) -> Path:
        return self.root / "var"

    @property
    def pub_dir(self) -> Path:
        return self.root / "var" / "pub"

    @property
    def deployments(self) -> Path:
        return self.data_dir / "manual" / "deploy_durations_tiered.tsv"

    def readings(self, hw: str, name: str = "readings-0000.tsv", under: str = "") -> Path:
        return self.data_dir / hw / under / "data" / "readings" / name

    def sources(self) -> Sources:
        return Sources(self.data_dir, self.db_dir, self.deployments)


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def append(path: Path, data: bytes | str) -> None:
    with open(path, "ab") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def build_tree(root: Path) -> Tree:
    """Write the irregular tree under root."""
    tree = Tree(root)
    a_lines = b"".join(line + b"\n" for line, _ in A_LINES)
    write(tree.readings(HW_A), a_lines + A_PARTIAL[:A_PARTIAL_CUT].encode())
    write(tree.readings(HW_A, under=SUPERSEDED), f"{GOOD_A}\n{SUPERSEDED_ONLY}\n")
    write(tree.readings(HW_B), "".join(f"{line}\n" for line in (
        reading(HW_B, "varanger-04", "2026-11-04", "23:59:10", "3.0"),  # before deployment
        reading(HW_B, "varanger-04", "2026-11-05", "00:00:10", "3.5"),  # first minute of it
        reading(HW_B, "varanger-04", "2026-11-06", "12:00:10", "4.0"))))
    write(tree.readings(HW_C), reading(HW_C, "None", "2026-11-03", "10:00:10") + "\n")
    none_row = "\t".join(["None"] * 10)
    write(tree.readings(HW_D), "".join(
        reading(HW_D, "None", f"2026-11-0{d}", "06:00:10", "None", "None", none_row) + "\n"
        for d in (1, 2, 3)))
    write(tree.data_dir / HW_A / "errors" / "errors-0000.txt", ERRORS_A)
    write(tree.db_dir / "pings" / "pings-0000.tsv", PINGS_OWN)
    write(tree.data_dir / "otherserver" / "var" / "pings" / "pings-0000.tsv", PINGS_OTHER_SERVER)
    write(tree.deployments, DEPLOYMENTS)
    return tree


def open_db(tree: Tree) -> sqlite3.Connection:
    conn = db.connect(tree.db_dir / "db.sqlite3")
    db.init_schema(conn)
    return conn


def import_tree(tree: Tree, conn: sqlite3.Connection | None = None,
                out: list[str] | None = None) -> dict[str, StageReport]:
    """Run every import stage against the tree's database."""
    conn = conn or open_db(tree)
    lines = out if out is not None else []
    return run_import(conn, tree.sources(), out=lines.append)


# Tables that describe runs, not data: they differ between any two builds.
RUN_TABLES = {"import_log", "toolchain_state", "import_files"}
# File ids, and what moves on with the clock (an ongoing deployment lasts until now).
VARYING = {"src_file", "computed_at", "days_deployed", "longest_gap_days", "gap_to"}


def table_content(db_path: Path, skip: set[str] = VARYING) -> dict[str, list[tuple]]:
    """Every data table's and view's rows, sorted, without the `skip` columns."""
    conn = sqlite3.connect(db_path)
    try:
        names = [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type IN "
                                            "('table', 'view') ORDER BY name")]
        content = {}
        for name in set(names) - RUN_TABLES:
            cols = [c[1] for c in conn.execute(f'PRAGMA table_info("{name}")')
                    if c[1] not in skip]
            content[name] = sorted(conn.execute(f'SELECT {", ".join(cols)} FROM "{name}"'),
                                   key=repr)
        return content
    finally:
        conn.close()
