"""database/Makefile and scripts/make-summaries.sh end to end, in temp dirs."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from old_schema_fixtures import OLD_SCHEMAS, build_old_schema_tree, restore_old_database
from toolchain_fixtures import (
    HW_B,
    TREE_READINGS,
    Tree,
    append,
    build_tree,
    reading,
    table_content,
    write,
)

from co2unit_server.database import db

REPO = Path(__file__).resolve().parent.parent
OUTPUTS = {"co2_tiered_all_hires.svg", "co2_tiered_recent_hires.svg", "pings_all_tiered.svg",
           "pings_summary.html", "co2_summary.html"}
DB = "db.sqlite3"
TABLES = ("co2_readings", "error_logs", "pings", "deploy_durations_tiered", "import_log")


def make(tree: Tree, *targets: str, env: dict[str, str] | None = None,
         check: bool = True) -> subprocess.CompletedProcess:
    cmd = ["make", "-s", "-C", str(REPO / "database"), f"DATA_DIR={tree.data_dir}",
           f"DB_DIR={tree.db_dir}", f"WEB_PUB_DIR={tree.pub_dir}", *targets]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def counts(tree: Tree) -> dict[str, int]:
    conn = sqlite3.connect(tree.db_dir / "db.sqlite3")
    try:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
    finally:
        conn.close()


def test_make_builds_the_database_and_every_page(tmp_path):
    tree = build_tree(tmp_path)
    done = make(tree)
    stages = [line.split(":")[0] for line in done.stdout.splitlines()]
    assert stages == ["readings", "errors", "pings", "measurements", "deployments",
                      "data quality", "plots and pages"]
    assert {p.name for p in tree.pub_dir.iterdir()} == OUTPUTS
    assert counts(tree)["co2_readings"] == TREE_READINGS and counts(tree)["error_logs"] == 6
    conn = sqlite3.connect(tree.db_dir / "db.sqlite3")
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def _utc_hour() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H")


def test_rerun_with_nothing_new_does_almost_nothing(tmp_path):
    tree = build_tree(tmp_path)
    # Time-relative outputs are redrawn when the UTC hour changes: a pair of runs that
    # straddles the hour is repeated once rather than mistaken for a needless redraw.
    for _ in range(2):
        hour = _utc_hour()
        make(tree)
        before = {p.name: p.stat().st_mtime_ns for p in tree.pub_dir.iterdir()}
        done = make(tree)
        if _utc_hour() == hour:
            break
    assert "plots and pages: up to date" in done.stdout
    assert all("(0 read," in line for line in done.stdout.splitlines()[:4])
    assert {p.name: p.stat().st_mtime_ns for p in tree.pub_dir.iterdir()} == before


def test_new_data_is_imported_and_replotted(tmp_path):
    tree = build_tree(tmp_path)
    make(tree)
    append(tree.readings(HW_B), reading(HW_B, "varanger-04", "2026-11-07", "00:00:10") + "\n")
    done = make(tree)
    assert "1 new rows" in done.stdout.splitlines()[0]
    assert "co2_tiered_all_hires.svg" in done.stdout.splitlines()[-1]
    pages = make(tree, "web", "PLOT_ARGS=--force --recent-days 3 --co2-max 2000")
    assert all(name in pages.stdout for name in OUTPUTS)


def test_make_j_and_overlapping_runs_do_not_lock_each_other_out(tmp_path):
    tree = build_tree(tmp_path)
    cmd = ["make", "-s", "-j4", "-C", str(REPO / "database"), f"DATA_DIR={tree.data_dir}",
           f"DB_DIR={tree.db_dir}", f"WEB_PUB_DIR={tree.pub_dir}", "web", "all", "import"]
    runs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(3)]
    for run in runs:
        out, err = run.communicate(timeout=600)
        assert run.returncode == 0, out + err
        assert "locked" not in err
    assert counts(tree)["co2_readings"] == TREE_READINGS
    assert {p.name for p in tree.pub_dir.iterdir()} == OUTPUTS


def test_thousands_of_files_are_never_listed_on_a_command_line(tmp_path):
    tree = Tree(tmp_path)
    for n in range(2500):
        day, slot = divmod(n, 48)
        write(tree.readings(HW_B, f"readings-{n:04d}.tsv"),
              reading(HW_B, "x", f"2026-{1 + day // 28:02d}-{1 + day % 28:02d}",
                      f"{slot // 2:02d}:{30 * (slot % 2):02d}:10") + "\n")
    make(tree, "import")
    assert counts(tree)["co2_readings"] == 2500


def _dump(tree: Tree) -> list:
    conn = sqlite3.connect(tree.db_dir / "db.sqlite3")
    try:
        return [conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2, 3, 4").fetchall()
                for t in TABLES[:-1]]
    finally:
        conn.close()


def test_results_do_not_depend_on_the_locale(tmp_path):
    dumps = []
    for n, locale in enumerate(("C", "C.UTF-8")):
        tree = build_tree(tmp_path / str(n))
        write(tree.readings(HW_B, "readings-0009.tsv"),
              reading(HW_B, "Várangerbotn-ø", "2026-11-07", "08:00:10") + "\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG"))}
        env.update(LC_ALL=locale, PYTHONUTF8="0")
        subprocess.run([sys.executable, "-m", "co2unit_server", "import", "--data-dir",
                        str(tree.data_dir), "--db-dir", str(tree.db_dir)], env=env, check=True,
                       capture_output=True)
        dumps.append(_dump(tree))
    assert dumps[0] == dumps[1]
    assert any("Várangerbotn-ø" in row for row in dumps[0][0])


def test_no_op_build_does_not_import_matplotlib(tmp_path):
    tree = build_tree(tmp_path)
    make(tree)
    args = ["build", "--data-dir", str(tree.data_dir), "--db-dir", str(tree.db_dir),
            "--pub-dir", str(tree.pub_dir)]
    code = (f"import sys; from co2unit_server.cli import main; main({args!r}); "
            "print('matplotlib' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.splitlines()[-1] == "False"


def test_makefile_defaults_match_the_reference():
    done = subprocess.run(["make", "-pn", "-C", str(REPO / "database")], capture_output=True,
                          text=True)
    defaults = dict(re.findall(r"^(\w+) :?= (.*)$", done.stdout, re.M))
    assert defaults["DATA_DIR"] == ".." and defaults["DB_DIR"] == "."
    assert defaults["WEB_PUB_DIR"] == "out_web"
    assert defaults["DEPLOY_DURATIONS_TIERED_TSV"] == \
        "$(DATA_DIR)/manual/deploy_durations_tiered.tsv"
    assert ".DEFAULT_GOAL := web" in done.stdout


def test_make_summaries_script_builds_where_the_server_serves(tmp_path):
    """The script finds remote_data, var and var/pub next to itself, and passes args on."""
    install = tmp_path / "install"
    (install / "scripts").mkdir(parents=True)
    shutil.copy2(REPO / "scripts" / "make-summaries.sh", install / "scripts")
    (install / "database").symlink_to(REPO / "database")
    (install / ".venv").symlink_to(REPO / ".venv")
    tree = build_tree(install)
    script = install / "scripts" / "make-summaries.sh"
    assert os.access(REPO / "scripts" / "make-summaries.sh", os.X_OK)
    done = subprocess.run([str(script), "-s", "all"], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert {p.name for p in tree.pub_dir.iterdir()} == OUTPUTS
    assert (install / "var" / "db.sqlite3").is_file()


STAGE_LINE = re.compile(r"^(\w+): \d+ files \((\d+) read, (\d+) replaced or gone\)", re.M)


def _stats(tree: Tree) -> dict[Path, tuple[int, int, int]]:
    return {p: (p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_ino)
            for p in tree.root.rglob("*") if p.is_file() and tree.db_dir not in p.parents}


def _files_read(output: str) -> dict[str, tuple[int, int]]:
    """Per import stage: (files read, files replaced or gone), from its progress line."""
    return {stage: (int(read), int(gone)) for stage, read, gone in STAGE_LINE.findall(output)}


@pytest.mark.parametrize("version", sorted(OLD_SCHEMAS))
def test_a_database_of_every_earlier_schema_heals_on_the_next_plain_make(tmp_path, version):
    # The old toolchain's database on the tree it was built from: the same files, whose stat
    # the old import recorded; nothing on disk changes before or during the new make.
    old = build_old_schema_tree(tmp_path / "old")
    restore_old_database(old, version)
    fresh = build_old_schema_tree(tmp_path / "fresh")
    conn = sqlite3.connect(old.db_dir / DB)
    assert max(conn.execute("PRAGMA user_version").fetchone()[0], 1) == version
    before = conn.execute("SELECT count(*) FROM co2_readings").fetchone()[0]
    conn.close()
    stats = _stats(old)

    healed = make(old).stdout
    make(fresh)

    assert _stats(old) == stats
    assert table_content(old.db_dir / DB) == table_content(fresh.db_dir / DB)
    conn = sqlite3.connect(old.db_dir / DB)
    assert conn.execute("PRAGMA user_version").fetchone() == (db.SCHEMA_VERSION,)
    after = conn.execute("SELECT count(*) FROM co2_readings").fetchone()[0]
    raw_rows = conn.execute("SELECT count(*) FROM co2_readings "
                            "WHERE raw_co2_filtered IS NOT NULL").fetchone()[0]
    assert conn.execute("SELECT count(*) FROM import_files WHERE check_hash = ?",
                        (db.REREAD,)).fetchone() == (0,)
    conn.close()
    assert raw_rows == 17  # A's 6, its old card's 1 and C's 10 21-field rows with values
    if version == 1:  # the 21-field rows the old importer dropped: A's 7, C's 12 and the
        assert after == before + 20  # old card's one that A's file lacks
        assert "rows deleted (marked to be read again: " in healed
        assert "Data quality" in (old.pub_dir / "co2_summary.html").read_text(encoding="utf-8")
    else:
        assert after == before
    again = make(old).stdout
    assert set(_files_read(again).values()) == {(0, 0)}, again
    assert "plots and pages: up to date" in again
    assert table_content(old.db_dir / DB) == table_content(fresh.db_dir / DB)


def test_a_schema_1_database_from_an_import_cut_short_heals_too(tmp_path):
    """Schema 1's importer stored the samples of dropped lines at the end of its stage: a
    readings stage stopped before that kept the rows and the progress, and no trace of what
    it dropped."""
    old = build_old_schema_tree(tmp_path / "old")
    restore_old_database(old, 1)
    conn = sqlite3.connect(old.db_dir / DB)
    with conn:
        conn.execute("DELETE FROM dropped_lines WHERE src_file IN "
                     "(SELECT id FROM import_files WHERE kind = 'readings')")
    conn.close()
    fresh = build_old_schema_tree(tmp_path / "fresh")

    make(old, "import")
    make(fresh, "import")

    assert table_content(old.db_dir / DB) == table_content(fresh.db_dir / DB)
