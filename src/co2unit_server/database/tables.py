"""Tables read in batches, as researchers get them: the columns, their encodings, time bounds.

The machinery behind the research tables (research_tables) and the gateways'
measurements (measurement_store): a table is a range query per unit and segment, read in
batches from one read-only snapshot, with SQLite writing each row's text for CSV and JSON.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from ..core.timestamps import utc_datetime
from .db import connect_readonly

DB_NAME = "db.sqlite3"
BATCH_ROWS = 10_000  # rows fetched from the cursor at a time

Source = str | os.PathLike | sqlite3.Connection
TimeLike = str | datetime | date | None


class ResearchError(ValueError):
    """Bad input to the research API or export, with a message meant for a person."""


class DatabaseNotFoundError(ResearchError, FileNotFoundError):
    """There is no database file where one was asked for."""


@dataclass(frozen=True)
class Column:
    """One output column: its name, SQL expression and kind (time, text, int or real)."""

    name: str
    sql: str
    kind: str


@dataclass(frozen=True)
class Table:
    """A research table: its source table, columns, and range condition on its unit index."""

    name: str
    source: str
    columns: tuple[Column, ...]
    needs: frozenset[str]  # source columns the query reads (checked before querying)
    where: str  # named parameters :unit, and the bounds from `bounds`
    order: str
    bounds: Callable[[datetime | None, datetime | None], dict[str, str]]
    units: Callable[[sqlite3.Connection], list[str]]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def query(self, encoding: str | None = None) -> str:
        """The segment query: one value per column, or with an encoding the pieces of a line."""
        select = (", ".join(f"{c.sql} AS {c.name}" for c in self.columns) if encoding is None
                  else ", ".join(ENCODINGS[encoding].pieces(self.columns)[0]))
        return f"SELECT {select} FROM {self.source} AS s WHERE {self.where} ORDER BY {self.order}"

    def line_template(self, encoding: str) -> str:
        """The %-template that joins the pieces of a row of query(encoding) into its line."""
        return ENCODINGS[encoding].pieces(self.columns)[1]


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _csv_run(columns: list[Column], opens: bool, closes: bool) -> str:
    """One text of the columns' values in CSV, by printf (NULL gives an empty cell)."""
    values = [_CSV_TEXT.format(x=c.sql) if c.kind == "text" else c.sql for c in columns]
    return f"printf({', '.join([_sql_literal(','.join(['%s'] * len(columns))), *values])})"


# Quoted as Python's csv module does (QUOTE_MINIMAL). For the deployment columns, bound per
# segment, SQLite computes this once per query.
_CSV_TEXT = ("CASE WHEN {x} GLOB '*[,\"' || char(10, 13) || ']*' "
             "THEN '\"' || replace({x}, '\"', '\"\"') || '\"' ELSE {x} END")


def _json_run(columns: list[Column], opens: bool, closes: bool) -> str:
    """One text of the columns' "name":value pairs by json_object(), with the braces only
    where the run opens or closes the line (no value ends in a brace: trimming is safe)."""
    sql = f"json_object({', '.join(f'{_sql_literal(c.name)}, {c.sql}' for c in columns)})"
    sql = sql if opens else f"ltrim({sql}, '{{')"
    return sql if closes else f"rtrim({sql}, '}}')"


@dataclass(frozen=True)
class Encoding:
    """How a row becomes a line of text: SQLite encodes all but reals (see `pieces`)."""

    start: str  # literal text before the first value, between two, after the last
    separator: str
    end: str
    key: str  # before a real value; {name} is the column name
    null: str  # a NULL real
    # SQL for the text of consecutive non-real columns, given whether the run opens and closes
    # the line (it then brings `start` and `end` itself).
    run: Callable[[list[Column], bool, bool], str]

    def pieces(self, columns: tuple[Column, ...]) -> tuple[list[str], str]:
        """The SQL of a line's pieces, and the %-template that joins them into the line.

        Runs of non-real columns come out of SQLite as one text each, which is much cheaper
        than fetching every value into Python. Reals come as numbers for Python to format:
        SQLite would round them to 15 digits, Python writes the shortest exact form.
        """
        sql: list[str] = []
        template: list[str] = []
        run: list[Column] = []
        for col in [*columns, None]:
            if col is not None and col.kind != "real":
                run.append(col)
                continue
            if run:
                sql.append(self.run(run, opens=not template, closes=col is None))
                template.append("%s")
                run = []
            if col is not None:
                sql.append(f"ifnull({col.sql}, {_sql_literal(self.null)})")
                template.append(self.key.format(name=col.name).replace("%", "%%") + "%s")
        opened, closed = columns[0].kind != "real", columns[-1].kind != "real"
        return sql, ("" if opened else self.start) + self.separator.join(template) + (
            "" if closed else self.end)


ENCODINGS = {
    "csv": Encoding(start="", separator=",", end="", key="", null="", run=_csv_run),
    "json": Encoding(start="{", separator=",", end="}", key='"{name}":', null="null",
                     run=_json_run),
}


def parse_time(value: TimeLike, what: str = "time") -> datetime | None:
    """An ISO string, datetime (naive = UTC) or date as naive UTC; None stays None."""
    if value is None:
        return None
    if isinstance(value, datetime):  # pandas.Timestamp is one too
        return value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    if isinstance(value, str):
        try:
            return utc_datetime(value.strip())
        except ValueError:
            pass
    raise ResearchError(f"{what}: cannot read {value!r} as a time; use ISO 8601 such as "
                        "2026-11-01, 2026-11-01T13:00:00 or 2026-11-01T13:00:00Z (UTC)")


def time_range(start: TimeLike, end: TimeLike, names: tuple[str, str] = ("start", "end")
               ) -> tuple[datetime | None, datetime | None]:
    """[start, end) as naive UTC; start after end is an error (`names` are for the message)."""
    lo, hi = parse_time(start, names[0]), parse_time(end, names[1])
    if lo is not None and hi is not None and lo > hi:
        raise ResearchError(f"{names[0]} {lo.isoformat()} is after {names[1]} {hi.isoformat()}")
    return lo, hi


def database_path(db: str | os.PathLike) -> Path:
    """The database file: `db` itself, or db.sqlite3 inside `db` when it is a directory."""
    path = Path(db)
    return path / DB_NAME if path.is_dir() else path


@contextmanager
def connection(db: Source) -> Iterator[sqlite3.Connection]:
    """A read-only connection to `db` (a file, a DB_DIR, or an open connection, kept open)."""
    if isinstance(db, sqlite3.Connection):
        yield db
        return
    path = database_path(db)
    if not path.is_file():
        raise DatabaseNotFoundError(f"no database at {path} (give db.sqlite3 or its directory)")
    # mode=ro: SQLite refuses every write, whatever the caller does with the connection.
    conn = connect_readonly(path, timeout_s=10)
    try:
        # One read transaction: every segment query sees the same snapshot, even while an
        # import or the server writes (WAL).
        conn.execute("BEGIN")
        yield conn
    finally:
        conn.close()


def csv_texts(table: Table, rows: Iterator[list[tuple]]) -> Iterator[str]:
    """A header row, then a text of lines per batch; NULL is an empty cell."""
    template = table.line_template("csv") + "\n"
    yield ",".join(table.names) + "\n"
    for batch in rows:
        yield "".join([template % row for row in batch])


def json_texts(table: Table, rows: Iterator[list[tuple]]) -> Iterator[str]:
    """A JSON array with one object per line, a text per batch."""
    template = table.line_template("json")
    yield "["
    separator = "\n"
    for batch in rows:
        yield separator + ",\n".join([template % row for row in batch])
        separator = ",\n"
    yield "\n]\n"


# The texts of each format, for `export`'s files and the server's streamed responses.
TEXTS: dict[str, Callable[[Table, Iterator[list[tuple]]], Iterator[str]]] = {
    "csv": csv_texts, "json": json_texts}
