"""`co2unit-server export`: the research tables as CSV or JSON, streamed."""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from toolchain_fixtures import HW_A, HW_B, HW_C

from co2unit_server import research
from co2unit_server.cli import main
from co2unit_server.database import db, research_tables
from co2unit_server.toolchain import export

UNIT = "co2unit-aaaaaaaaaaaa"


def run_export(tmp_path: Path, *args: str, name: str = "out") -> tuple[int, Path]:
    out = tmp_path / name
    return main(["export", "--out", str(out), *args]), out


def iso(index: pd.DatetimeIndex) -> list[str]:
    """Times of readings as the export writes them."""
    return [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in index]


def exported(value, as_csv: bool):
    """What the export should hold for a DataFrame value: CSV text, or the JSON value."""
    if pd.isna(value):
        return "" if as_csv else None
    if isinstance(value, np.floating | float):
        return repr(float(value)) if as_csv else float(value)
    if isinstance(value, np.integer | int):
        return str(value) if as_csv else int(value)
    return value


def assert_same_table(records: list[dict], frame: pd.DataFrame, as_csv: bool) -> None:
    """Exported records hold exactly the frame's rows and columns, in order."""
    assert len(records) == len(frame) > 0
    assert all(list(r) == ["time", *frame.columns] for r in records)
    assert [pd.Timestamp(r["time"]) for r in records] == list(frame.index)
    for record, (_, row) in zip(records, frame.iterrows(), strict=True):
        for name, value in row.items():
            want = exported(value, as_csv)
            assert record[name] == want and type(record[name]) is type(want), (name, record)


def test_csv_holds_exactly_the_dataframe(tree_db, tmp_path):
    status, out = run_export(tmp_path, "--db-dir", str(tree_db))
    assert status == 0
    with open(out, newline="", encoding="utf-8") as f:
        records = list(csv.DictReader(f))
    frame = research.readings(tree_db)
    assert_same_table(records, frame, as_csv=True)
    assert [r["time"] for r in records] == iso(frame.index)
    assert records[0]["time"] == "2026-11-04T23:59:10Z"


def test_json_holds_exactly_the_dataframe(tree_db, tmp_path):
    status, out = run_export(tmp_path, "--db-dir", str(tree_db), "--format", "json")
    assert status == 0
    records = json.loads(out.read_text(encoding="utf-8"))
    frame = research.readings(tree_db)
    assert_same_table(records, frame, as_csv=False)
    assert [r["time"] for r in records] == iso(frame.index)


def test_json_is_an_array_with_one_object_per_line(tree_db, tmp_path):
    _, out = run_export(tmp_path, "--db-dir", str(tree_db), "--format", "json")
    lines = out.read_text().splitlines()
    assert lines[0] == "[" and lines[-1] == "]"
    objects = [json.loads(line.removesuffix(",")) for line in lines[1:-1]]
    assert all(isinstance(o, dict) for o in objects)
    assert all(line.endswith(",") for line in lines[1:-2]) and not lines[-2].endswith(",")
    assert len(objects) == len(research.readings(tree_db))


def test_null_and_fault_values_are_empty_or_null_never_zero(tree_db, tmp_path):
    _, out = run_export(tmp_path, "--db-dir", str(tree_db), "--units", HW_A)
    rows = {r["time"]: r for r in csv.DictReader(out.open(newline=""))}
    nulls = rows["2026-11-01T13:30:10Z"]
    assert (nulls["co2_01"], nulls["temp"]) == ("", "")
    assert rows["2026-11-01T14:30:10Z"]["temp"] == ""  # 85.0
    glitches = rows["2026-11-01T14:00:10Z"]
    assert (glitches["co2_01"], glitches["co2_02"], glitches["co2_mean"]) == ("0", "200010",
                                                                               "800.0")
    assert rows["2026-11-01T18:20:10Z"]["raw_sensor_temp"] == "1101"
    assert rows["2026-11-01T13:00:10Z"]["raw_sensor_temp"] == ""


def test_pings_export_holds_the_pings_frame(tree_db, tmp_path):
    status, out = run_export(tmp_path, "--db-dir", str(tree_db), "--kind", "pings", "--format",
                             "json")
    assert status == 0
    records = json.loads(out.read_text())
    assert_same_table(records, research.pings(tree_db), as_csv=False)
    assert [r["time"] for r in records][:3] == [
        "2026-11-01T03:11:00.000000Z", "2026-11-06T03:11:00.000001Z",
        "2026-11-01T03:10:05.123456Z"]


def test_units_and_time_range_are_applied(tree_db, tmp_path):
    status, out = run_export(tmp_path, "--db-dir", str(tree_db), "--units",
                             f"{HW_B}, {HW_C}", "--from", "2026-11-03T10:00:10Z", "--to",
                             "2026-11-06T12:00:10Z")
    assert status == 0
    got = [(r["unit_id"], r["time"]) for r in csv.DictReader(out.open(newline=""))]
    assert got == [(HW_B, "2026-11-04T23:59:10Z"), (HW_B, "2026-11-05T00:00:10Z"),
                   (HW_C, "2026-11-03T10:00:10Z")]


def test_db_dir_may_be_the_database_file(tree_db, tmp_path):
    status, out = run_export(tmp_path, "--db-dir", str(tree_db / "db.sqlite3"), "--units", HW_C)
    assert status == 0 and len(out.read_text().splitlines()) == 2


def test_header_only_when_no_rows(tree_db, tmp_path):
    args = ["--db-dir", str(tree_db), "--units", "co2unit-ffffffffffff"]
    assert run_export(tmp_path, *args, name="e.csv")[0] == 0
    assert (tmp_path / "e.csv").read_text() == ",".join(
        ["time", *research.readings(tree_db).columns]) + "\n"
    assert run_export(tmp_path, *args, "--format", "json", name="e.json")[0] == 0
    assert json.loads((tmp_path / "e.json").read_text()) == []


def test_writes_to_stdout_by_default(tree_db, capsysbinary):
    assert main(["export", "--db-dir", str(tree_db), "--units", HW_C]) == 0
    lines = capsysbinary.readouterr().out.decode("utf-8").splitlines()
    assert lines[0].startswith("time,unit_id,") and lines[1].startswith("2026-11-03T10:00:10Z,")


@pytest.fixture
def awkward_db(tmp_path) -> Path:
    """One reading whose nickname and site need CSV quoting and JSON escaping."""
    conn = db.connect(tmp_path / "awkward" / "db.sqlite3")
    db.init_schema(conn)
    conn.execute("INSERT INTO co2_readings (unit_id, nickname, date, time, temp, src_file, "
                 "src_line) VALUES (?, ?, '2026-11-01', '10:00:00', 1.1, 1, 1)",
                 (UNIT, 'Kilpisjärvi, "north"'))
    conn.execute("INSERT INTO deploy_durations_tiered VALUES (?, ?, ?, 1, 'deployed', NULL, NULL, "
                 "NULL)", (UNIT, "back\\slash", "line\nbreak,\ttab"))
    conn.close()
    return tmp_path / "awkward"


def test_csv_quotes_text_as_the_csv_module_reads_it(awkward_db, tmp_path):
    _, out = run_export(tmp_path, "--db-dir", str(awkward_db))
    (row,) = csv.DictReader(out.open(newline="", encoding="utf-8"))
    assert (row["nickname"], row["deployment_nickname"], row["site"]) == (
        'Kilpisjärvi, "north"', "back\\slash", "line\nbreak,\ttab")
    assert row["temp"] == "1.1"
    assert "Kilpisjärvi".encode() in out.read_bytes()  # UTF-8


def test_json_escapes_text(awkward_db, tmp_path):
    _, out = run_export(tmp_path, "--db-dir", str(awkward_db), "--format", "json")
    (record,) = json.loads(out.read_bytes().decode("utf-8"))
    assert (record["nickname"], record["deployment_nickname"], record["site"]) == (
        'Kilpisjärvi, "north"', "back\\slash", "line\nbreak,\ttab")
    assert len(out.read_text(encoding="utf-8").splitlines()) == 3  # newline escaped: one line


@pytest.mark.parametrize(("args", "message"), [
    (["--from", "2026-13-01"], "--from: cannot read '2026-13-01'"),
    (["--to", "soon"], "--to: cannot read 'soon'"),
    (["--from", "2026-11-02", "--to", "2026-11-01"], "is after --to"),
    (["--format", "xml"], "unknown format 'xml'"),
    (["--kind", "errors"], "unknown kind 'errors'"),
    (["--units", " , "], "--units is empty"),
])
def test_bad_input_exits_2_with_one_line(tree_db, tmp_path, capsys, args, message):
    status, out = run_export(tmp_path, "--db-dir", str(tree_db), *args)
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("co2unit-server export: ") and message in err
    assert err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []  # no output file, no temp file


def test_missing_database_exits_2_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "co2unit_server", "export", "--db-dir",
                             str(tmp_path / "var")], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == (f"co2unit-server export: no database at {tmp_path / 'var'} "
                             "(give db.sqlite3 or its directory)\n")
    assert result.stdout == ""
    assert not (tmp_path / "var").exists()


def test_unwritable_out_exits_2(tree_db, tmp_path, capsys):
    status, _ = run_export(tmp_path, "--db-dir", str(tree_db), name="no/such/dir.csv")
    assert status == 2 and "cannot write" in capsys.readouterr().err


def failing_batches(after: int):
    """research_tables.batches that fails with a database error after `after` batches."""
    def batches(*args, **kwargs):
        rows = research_tables.batches(*args, **{**kwargs, "size": 1})

        def failing():
            for n, batch in enumerate(rows):
                if n == after:
                    raise sqlite3.OperationalError("disk I/O error")
                yield batch
        return failing()
    return batches


def test_failed_export_leaves_no_half_file_and_keeps_the_old_one(tree_db, tmp_path, capsys,
                                                                 monkeypatch):
    old = tmp_path / "out"
    old.write_text("yesterday's export\n")
    monkeypatch.setattr(export, "batches", failing_batches(after=3))
    status, _ = run_export(tmp_path, "--db-dir", str(tree_db))
    assert status == 1
    assert "export failed: disk I/O error" in capsys.readouterr().err
    assert old.read_text() == "yesterday's export\n"
    assert list(tmp_path.iterdir()) == [old]  # the temp file is gone


def test_output_appears_under_its_name_only_when_complete(tree_db, tmp_path, monkeypatch):
    seen = []

    def batches(*args, **kwargs):
        for batch in research_tables.batches(*args, **{**kwargs, "size": 1}):
            seen.append(sorted(p.name for p in tmp_path.iterdir()))
            yield batch
    monkeypatch.setattr(export, "batches", batches)
    status, out = run_export(tmp_path, "--db-dir", str(tree_db), "--format", "json")
    assert status == 0 and len(seen) == len(research.readings(tree_db))
    assert all(names == [f".out.{os.getpid()}.part"] for names in seen)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_rows_are_written_while_the_query_runs(tmp_path, monkeypatch):
    conn = db.connect(tmp_path / "db.sqlite3")
    db.init_schema(conn)
    conn.executemany("INSERT INTO co2_readings (unit_id, date, time, co2_01, src_file, src_line) "
                     "VALUES (?, '2026-11-01', ?, 400, 1, 1)",
                     [(UNIT, f"{h:02d}:{m:02d}:{s:02d}") for h in range(24) for m in range(60)
                      for s in (0, 30)])
    conn.close()
    part = tmp_path / f".out.{os.getpid()}.part"
    on_disk = []

    def batches(*args, **kwargs):
        *first, last = research_tables.batches(*args, **{**kwargs, "size": 500})
        yield from first
        # Before the query's last batch is handed over, the earlier ones reach the file.
        deadline = time.monotonic() + 10
        while part.stat().st_size < 3 * 500 * 40 and time.monotonic() < deadline:
            time.sleep(0.01)
        on_disk.append(part.stat().st_size)
        yield last
    monkeypatch.setattr(export, "batches", batches)
    status, out = run_export(tmp_path, "--db-dir", str(tmp_path))
    assert status == 0 and len(out.read_text().splitlines()) == 1 + 2880
    assert on_disk[0] >= 3 * 500 * 40


def test_export_command_does_not_import_pandas(tree_db, tmp_path):
    code = ("import sys; from co2unit_server.cli import main; "
            f"status = main(['export', '--db-dir', {str(tree_db)!r}, '--out', "
            f"{str(tmp_path / 'x.csv')!r}]); "
            "assert status == 0; print(sorted(m for m in ('pandas', 'numpy') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_float_columns_round_trip_exactly(tree_db, tmp_path):
    _, out = run_export(tmp_path, "--db-dir", str(tree_db), "--units", HW_A)
    means = [float(r["co2_mean"]) for r in csv.DictReader(out.open(newline=""))]
    assert means == research.readings(tree_db, HW_A).co2_mean.tolist()
    assert 6280 / 9 in means  # 697.77...: 16 digits, where SQLite's text would have 15
