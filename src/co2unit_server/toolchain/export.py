"""`co2unit-server export`: the research tables as CSV or JSON, for R and spreadsheets.

Writes the same table as `co2unit_server.research.readings` (or `.pings`): `time` first as ISO
UTC (2026-11-01T13:00:10Z), then the same columns in the same order; UTF-8 with a header row;
NULL as an empty CSV cell or JSON null. JSON is one array with one object per line. Rows are
streamed from the database batch by batch, so memory stays small whatever the size; `--out`
is written beside its final name and renamed when complete.
"""

from __future__ import annotations

import argparse
import io
import os
import queue
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from ..database.research_tables import TABLES, batches
from ..database.tables import TEXTS, ResearchError, Table, connection, time_range

FORMATS = ("csv", "json")
PROG = "co2unit-server export"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--units", metavar="HW_ID[,HW_ID...]",
                   help="comma-separated hardware IDs (default: every unit)")
    p.add_argument("--from", dest="start", metavar="T",
                   help="first time, inclusive: ISO date or date-time, UTC unless it has an "
                        "offset (default: the beginning)")
    p.add_argument("--to", dest="end", metavar="T",
                   help="end time, exclusive, like --from (default: the end)")
    p.add_argument("--kind", default="readings",
                   help=f"{' or '.join(TABLES)} (default: %(default)s)")
    p.add_argument("--format", default="csv", help=f"{' or '.join(FORMATS)} (default: csv)")
    p.add_argument("--out", type=Path, help="file to write (default: standard output)")
    p.add_argument("--db-dir", type=Path, default=Path("var"),
                   help="directory holding db.sqlite3, or the file itself (default: var)")


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Export; 2 with a one-line message on bad input, 1 when writing or reading fails."""
    try:
        table, units = _check(args)
        with connection(args.db_dir) as conn:
            rows = batches(conn, table, units, args.start, args.end, encoding=args.format)
            with _output(args.out) as out:
                write_texts(out, table, rows, args.format)
    except ResearchError as exc:
        return _fail(str(exc), 2)
    except BrokenPipeError:
        # The reader (say `head`) has had enough: no traceback, no "Exception ignored".
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (OSError, sqlite3.Error) as exc:
        return _fail(f"export failed: {exc}", 1)
    return 0


def _fail(message: str, status: int) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return status


def _check(args: argparse.Namespace) -> tuple[Table, list[str] | None]:
    """The table and units asked for; bad options raise ResearchError before anything opens."""
    if args.format not in FORMATS:
        raise ResearchError(f"unknown format {args.format!r}: use {' or '.join(FORMATS)}")
    if args.kind not in TABLES:
        raise ResearchError(f"unknown kind {args.kind!r}: use {' or '.join(TABLES)}")
    time_range(args.start, args.end, ("--from", "--to"))
    units = None
    if args.units is not None:
        units = [u.strip() for u in args.units.split(",") if u.strip()]
        if not units:
            raise ResearchError("--units is empty: give hardware IDs, or leave it out for all")
    return TABLES[args.kind], units


@contextmanager
def _output(path: Path | None) -> Iterator[TextIO]:
    """UTF-8 text to stdout, or to a temp file beside `path` renamed to it only on success."""
    if path is None:
        yield from _stdout()
        return
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        out = open(part, "x", encoding="utf-8", newline="")  # noqa: SIM115
    except OSError as exc:
        raise ResearchError(f"cannot write {path}: {exc.strerror}") from exc
    try:
        with out:
            yield out
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def _stdout() -> Iterator[TextIO]:
    sys.stdout.flush()
    if not hasattr(sys.stdout, "buffer"):
        yield sys.stdout
        return
    # UTF-8 whatever the locale says; detached afterwards so stdout itself stays open.
    out = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="")
    try:
        yield out
        out.flush()
    finally:
        out.detach()


def write_texts(out: TextIO, table: Table, rows: Iterator[list[tuple]], fmt: str) -> None:
    """Write the table in format `fmt` to `out`."""
    with _in_background(out) as write:
        for text in TEXTS[fmt](table, rows):
            write(text)


QUEUED_BATCHES = 4  # texts waiting for the writer thread: bounds the memory


@contextmanager
def _in_background(out: TextIO) -> Iterator[Callable[[str], None]]:
    """A write() for `out` that writes on another thread, in order; errors come back here.

    SQLite releases the GIL while it computes a row, so the time spent writing hundreds of
    megabytes overlaps the query's on a second core (a tenth off a large export, measured).
    """
    texts: queue.Queue[str | None] = queue.Queue(QUEUED_BATCHES)
    failed: list[BaseException] = []

    def writer() -> None:
        while (text := texts.get()) is not None:
            if not failed:
                try:
                    out.write(text)
                except BaseException as exc:  # raised again by the next write() or at the end
                    failed.append(exc)

    def write(text: str) -> None:
        if failed:
            raise failed[0]
        texts.put(text)

    thread = threading.Thread(target=writer, name="export-writer", daemon=True)
    thread.start()
    try:
        yield write
    finally:
        texts.put(None)
        thread.join()
    if failed:
        raise failed[0]

