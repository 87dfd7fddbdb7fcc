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

from toolchain_fixtures import HW_B, TREE_READINGS, Tree, append, build_tree, reading, write

from co2unit_server import db

REPO = Path(__file__).resolve().parent.parent
OUTPUTS = {"co2_tiered_all_hires.svg", "co2_tiered_recent_hires.svg", "pings_all_tiered.svg",
           "pings_summary.html", "co2_summary.html"}
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


V1 = REPO / "tests" / "data" / "schema_v1"
# Tables that describe runs, not data: they differ between any two builds.
RUN_TABLES = {"import_log", "toolchain_state", "import_files"}


def _v1_tree(root: Path, with_db: bool) -> Tree:
    """The tree of tests/data/schema_v1, with the database the old toolchain built from it."""
    tree = Tree(root)
    shutil.copytree(V1 / "remote_data", tree.data_dir)
    shutil.copytree(V1 / "var", tree.db_dir)
    if with_db:
        conn = sqlite3.connect(tree.db_dir / "db.sqlite3")
        conn.executescript((V1 / "db.sql").read_text(encoding="utf-8"))
        conn.close()
    return tree


def _content(tree: Tree) -> dict[str, list[tuple]]:
    """Every data table's rows, without the columns that number files or say when."""
    conn = sqlite3.connect(tree.db_dir / "db.sqlite3")
    # File ids, and what moves on with the clock (an ongoing deployment lasts until now).
    skip = {"src_file", "computed_at", "days_deployed", "longest_gap_days", "gap_to"}
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


def test_a_database_from_before_schema_2_heals_on_the_next_plain_make(tmp_path):
    old = _v1_tree(tmp_path / "old", with_db=True)
    conn = sqlite3.connect(old.db_dir / "db.sqlite3")
    assert conn.execute("PRAGMA user_version").fetchone() == (0,)
    before = conn.execute("SELECT count(*) FROM co2_readings").fetchone()[0]
    assert conn.execute("SELECT count(*) FROM dropped_lines d JOIN import_files f ON f.id = "
                        "d.src_file WHERE f.kind = 'readings' AND d.reason = "
                        "'dropped: wrong field count'").fetchone()[0] == 7
    conn.close()
    fresh = _v1_tree(tmp_path / "fresh", with_db=False)

    healed = make(old).stdout
    make(fresh)

    assert "read again after a schema upgrade" in healed
    assert _content(old) == _content(fresh)
    conn = sqlite3.connect(old.db_dir / "db.sqlite3")
    assert conn.execute("PRAGMA user_version").fetchone() == (db.SCHEMA_VERSION,)
    after = conn.execute("SELECT count(*) FROM co2_readings").fetchone()[0]
    assert after == before + 3  # the 21-field rows the old importer dropped
    assert conn.execute("SELECT count(*) FROM co2_readings WHERE raw_co2_filtered = 45 AND "
                        "raw_sensor_temp = 1101").fetchone()[0] == 2
    assert conn.execute("SELECT count(*) FROM co2_bins").fetchone() == conn.execute(
        "SELECT count(*) FROM (SELECT DISTINCT unit_id, unixepoch(date || ' ' || time) / 10800 "
        "FROM co2_readings)").fetchone()
    conn.close()
    page = (old.pub_dir / "co2_summary.html").read_text(encoding="utf-8")
    assert "Data quality" in page  # the pages were redrawn
    again = make(old).stdout
    assert "0 new rows" in again and "plots and pages: up to date" in again
    assert _content(old) == _content(fresh)
