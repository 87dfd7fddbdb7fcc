"""`co2unit-server import` and `co2unit-server build`: the research toolchain's entry points.

`build` imports what is new, then redraws only the plots and pages whose inputs changed: each
output's fingerprint (data versions, options, and for time-relative outputs the current hour)
is kept in toolchain_state, so a run with nothing new stats files and exits. One run at a time
holds a lock next to the database, which makes `make -j` and overlapping cron runs safe.
"""

from __future__ import annotations

import argparse
import sqlite3
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path

from ..core.config import Config, load_config
from ..core.locking import file_lock
from ..core.timestamps import to_epoch
from ..database import db, plotdata
from ..database.aggregates import WATERMARK
from ..database.state import read_state, transaction, write_state
from . import quality, summaries
from .importer import STAGES, Sources, run_import
from .importer.measurements import REGISTRY_STATE, RULES_STATE

DB_NAME = "db.sqlite3"
LOCK_SUFFIX = ".toolchain-lock"
PLOTS = plotdata.PLOT_OUTPUTS
PAGES = summaries.OUTPUTS
OUTPUT_PREFIX = "output:"


def locked(db_path: Path) -> AbstractContextManager:
    """The toolchain lock of this database (waits for a running build, saying so)."""
    return file_lock(Path(f"{db_path}{LOCK_SUFFIX}"), on_wait=lambda: print(
        f"waiting for another toolchain run on {db_path}", flush=True))


def data_versions(conn: sqlite3.Connection) -> dict[str, str]:
    """A value per source kind that changes whenever its imported data does.

    Read from import_files, which is written in the transactions that store the rows, so a
    crash between importing and drawing cannot leave the plots stale.
    """
    versions = dict.fromkeys(STAGES, "none")
    for kind, *figures in conn.execute(
            "SELECT kind, count(*), total(bytes_done), total(mtime_ns), total(inode) "
            "FROM import_files GROUP BY kind"):
        versions[kind] = "/".join(f"{f:.0f}" for f in figures)
    versions["readings"] += f" bins={read_state(conn, WATERMARK)}"
    # The server inserts live pings without the importer: its rows count too.
    pings = conn.execute("SELECT ifnull(max(rowid), 0) FROM pings").fetchone()[0]
    versions["pings"] += f" rows={pings}"
    # A new tcp_device_types reads the TCP logs again: new values, the same files. (No output
    # is drawn from measurements yet; the gateway's live rows would need a count here then.)
    versions["measurements"] += (f" registry={read_state(conn, REGISTRY_STATE)}"
                                 f" rules={read_state(conn, RULES_STATE)}")
    return versions


def fingerprints(conn: sqlite3.Connection, options: str, now: float) -> dict[str, str]:
    """What each output is drawn from; an output is redrawn when this changes."""
    v = data_versions(conn)
    hour = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H")
    co2 = f"readings={v['readings']} deployments={v['deployments']} {options}"
    ping = f"pings={v['pings']} deployments={v['deployments']} {options}"
    return {
        plotdata.CO2_ALL: co2,
        plotdata.CO2_RECENT: f"{co2} hour={hour}",  # the last-14-days window moves on
        plotdata.PINGS_ALL: ping,
        summaries.PINGS_SUMMARY: f"{ping} readings={v['readings']} hour={hour}",
        summaries.CO2_SUMMARY: f"{co2} errors={v['errors']} pings={v['pings']} hour={hour}",
    }


def stale_outputs(conn: sqlite3.Connection, pub_dir: Path, prints: dict[str, str]) -> list[str]:
    return [name for name, fp in prints.items()
            if read_state(conn, OUTPUT_PREFIX + name) != fp or not (pub_dir / name).is_file()]


def add_source_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, default=Path(".."),
                   help="pushed data root, DATA_DIR (default: %(default)s)")
    p.add_argument("--db-dir", type=Path, default=Path("."),
                   help=f"where {DB_NAME} and the server's pings/ are, DB_DIR (default: .)")
    p.add_argument("--deployments", type=Path,
                   help="deployment table (default: DATA_DIR/manual/deploy_durations_tiered.tsv)")


def add_build_arguments(p: argparse.ArgumentParser) -> None:
    add_source_arguments(p)
    p.add_argument("--pub-dir", type=Path, default=Path("out_web"),
                   help="where plots and pages go, WEB_PUB_DIR (default: %(default)s)")
    p.add_argument("--xmin", type=to_epoch, help="plots start here (ISO date or date-time)")
    p.add_argument("--xmax", type=to_epoch, help="plots end here (ISO date or date-time)")
    p.add_argument("--min-tier", type=int, help="leave out groups below this tier")
    p.add_argument("--max-tier", type=int, help="leave out groups above this tier")
    p.add_argument("--recent-days", type=float, default=14.0,
                   help="window of the recent plot (default: %(default)s)")
    p.add_argument("--co2-max", type=float, help="top of the CO2 axes (ppm)")
    p.add_argument("--force", action="store_true", help="redraw every plot and page")


def _sources(args: argparse.Namespace, config: Config) -> Sources:
    deployments = args.deployments or args.data_dir / "manual" / "deploy_durations_tiered.tsv"
    return Sources(args.data_dir, args.db_dir, deployments, config.tcp_device_types)


def _open(db_dir: Path) -> sqlite3.Connection:
    conn = db.connect(db_dir / DB_NAME)
    db.init_schema(conn)
    return conn


def _print(line: str) -> None:
    print(line, flush=True)


def _import(conn: sqlite3.Connection, args: argparse.Namespace, config: Config) -> None:
    reports = run_import(conn, _sources(args, config), out=_print)
    quality.refresh(conn, reports, time.time(), config.loss_warn_share, _print)


def _run(args: argparse.Namespace, environ: Mapping[str, str], publish: bool) -> int:
    db_path = args.db_dir / DB_NAME
    config = load_config(environ)
    with locked(db_path):
        conn = _open(args.db_dir)
        try:
            _import(conn, args, config)
            if publish:
                _publish(conn, db_path, args, config.loss_warn_share)
        finally:
            conn.close()
    return 0


def run_import_command(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Import everything new into DB_DIR/db.sqlite3."""
    return _run(args, environ, publish=False)


def run_build_command(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Import, then redraw the plots and pages whose inputs changed."""
    return _run(args, environ, publish=True)


def _publish(conn: sqlite3.Connection, db_path: Path, args: argparse.Namespace,
             warn_share: float) -> None:
    started, now = time.monotonic(), time.time()
    options = " ".join(f"{k}={getattr(args, k)}" for k in
                       ("xmin", "xmax", "min_tier", "max_tier", "recent_days", "co2_max"))
    # A new schema can change what the pages show: redraw them once after an upgrade.
    options += f" loss_warn_share={warn_share} schema={db.SCHEMA_VERSION}"
    prints = fingerprints(conn, options, now)
    todo = list(prints) if args.force else stale_outputs(conn, args.pub_dir, prints)
    if not todo:
        print(f"plots and pages: up to date in {args.pub_dir}", flush=True)
        return
    args.pub_dir.mkdir(parents=True, exist_ok=True)
    plots_todo = [n for n in todo if n in PLOTS]
    if plots_todo:
        from . import plots  # matplotlib only when something is drawn

        opts = plots.PlotOptions(args.xmin, args.xmax, args.min_tier, args.max_tier,
                                 args.recent_days, args.co2_max)
        plots.make_plots(db_path, plots_todo, args.pub_dir, opts, now)
    for name in (n for n in todo if n in PAGES):
        summaries.make_page(conn, name, args.pub_dir, now, args.recent_days, warn_share)
    with transaction(conn):
        for name in todo:
            write_state(conn, OUTPUT_PREFIX + name, prints[name])
    sizes = ", ".join(f"{n} ({(args.pub_dir / n).stat().st_size / 1e6:.2f} MB)" for n in todo)
    print(f"plots and pages: {sizes} in {time.monotonic() - started:.2f} s", flush=True)

