"""Incremental reading of append-only source files: what is new since the last import.

Per file the `import_files` table keeps the stat seen last, how many bytes (complete lines) were
imported and a hash of the first and last imported bytes. A re-run stats files only; a file that
grew is read from where the import stopped; a file that shrank or whose imported bytes changed
(a replaced file, a new SD card's sequence under the same name) is imported again from byte 0,
and so is a file marked for re-reading, however unchanged its stat: the mark (REREAD) is a
check hash no content has, set by a schema upgrade (db.mark_for_reread) or by a stage that
deleted rows the file must give again (hold_restarts), and replaced when the file is read.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ...core.files import natural_key
from ...database.db import REREAD

# remote_data/sessions/sessions.log: the streaming sessions, no unit either.
from ...records.sessions import LOG_DIR as SESSIONS_DIR

# import_files.size of a file read in part: no file has it, so its stat never looks unchanged.
UNFINISHED = -1
HEAD_BYTES = 4096
TAIL_BYTES = 1024
# remote_data/<family>/<device>/NNNN.log: the gateways' raw logs (rawlog.py), not CO2 units.
GATEWAY_FAMILIES = ("tcp", "pull", "ws")


@dataclass(frozen=True)
class Found:
    """A source file on disk: its key in import_files, path, rescan group and stat."""

    key: str
    path: Path
    group: str
    size: int
    mtime_ns: int
    inode: int


@dataclass
class State:
    """A row of import_files."""

    id: int
    key: str
    size: int
    mtime_ns: int
    inode: int
    check_hash: str
    bytes_done: int
    lines_done: int
    carry: str | None


@dataclass
class Work:
    """A file with bytes to import; `restart` means from byte 0 (new, replaced or rescanned)."""

    found: Found
    state: State
    restart: bool


@dataclass
class Plan:
    work: list[Work]
    unchanged: list[tuple[Found, State]]
    replaced: list[State]  # imported bytes changed or file shrank: its rows must go
    vanished: list[State]  # no longer on disk


def _files_in(directory: Path, suffix: str) -> Iterator[os.DirEntry]:
    try:
        with os.scandir(directory) as entries:
            items = [e for e in entries if e.name.endswith(suffix) and e.is_file()]
    except (FileNotFoundError, NotADirectoryError):
        return
    yield from sorted(items, key=lambda e: natural_key(e.name))


def subdirs(directory: Path) -> list[str]:
    """Names of the visible subdirectories, sorted."""
    try:
        with os.scandir(directory) as entries:
            return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []


def find_files(root: Path, prefix: str, relative_dirs: Iterable[tuple[str, str]],
               suffix: str) -> list[Found]:
    """Files ending in `suffix` in each (group, dir relative to root), in natural order."""
    found = []
    for group, rel in relative_dirs:
        for entry in _files_in(root / rel, suffix):
            st = entry.stat()
            found.append(Found(f"{prefix}:{rel}/{entry.name}", Path(entry.path), group,
                               st.st_size, st.st_mtime_ns, st.st_ino))
    return found


def unit_candidates(data_dir: Path) -> list[str]:
    """The subdirectories of the data root that may be units' (not the gateways' families)."""
    return [name for name in subdirs(data_dir)
            if name not in GATEWAY_FAMILIES and name != SESSIONS_DIR]


def unit_dirs(data_dir: Path, subdir: str) -> list[tuple[str, str]]:
    """(group, relative dir) of `<unit>/<subdir>` and `<unit>/superseded/<ts>/<subdir>`."""
    dirs = []
    for unit in unit_candidates(data_dir):
        dirs.append((unit, f"{unit}/{subdir}"))
        for stamp in subdirs(data_dir / unit / "superseded"):
            dirs.append((unit, f"{unit}/superseded/{stamp}/{subdir}"))
    return dirs


def load_states(conn: sqlite3.Connection, kind: str) -> dict[str, State]:
    rows = conn.execute("SELECT id, path, size, mtime_ns, inode, check_hash, bytes_done, "
                        "lines_done, carry FROM import_files WHERE kind = ?", (kind,))
    return {row[1]: State(*row) for row in rows}


def content_hash(path: Path, length: int) -> str:
    """Hash of the first and last imported bytes (up to `length`), enough to spot a new file."""
    with open(path, "rb") as f:
        head = f.read(min(HEAD_BYTES, length))
        tail_start = max(length - TAIL_BYTES, 0)
        f.seek(tail_start)
        tail = f.read(length - tail_start)
    if len(tail) != length - tail_start:
        return ""  # shorter than what was imported
    return hashlib.sha1(head + b"|" + tail).hexdigest()


def _stat_changed(f: Found, state: State) -> bool:
    return (f.size, f.mtime_ns, f.inode) != (state.size, state.mtime_ns, state.inode)


def _was_replaced(f: Found, state: State) -> bool:
    """True when the bytes imported before are no longer the file's first bytes."""
    return f.size < state.bytes_done or content_hash(f.path, state.bytes_done) != state.check_hash


def plan(conn: sqlite3.Connection, kind: str, found: list[Found]) -> Plan:
    """Compare the files on disk with import_files: what to read, what to forget."""
    states = load_states(conn, kind)
    result = Plan([], [], [], [])
    for f in found:
        state = states.pop(f.key, None)
        if state is None:
            conn.execute("INSERT INTO import_files (kind, path, size, mtime_ns, inode, check_hash,"
                         " bytes_done, lines_done) VALUES (?, ?, 0, 0, 0, '', 0, 0)", (kind, f.key))
            state = State(conn.execute("SELECT last_insert_rowid()").fetchone()[0], f.key,
                          0, 0, 0, "", 0, 0, None)
            result.work.append(Work(f, state, True))
        elif state.check_hash == REREAD or (_stat_changed(f, state) and _was_replaced(f, state)):
            # The mark before the stat: a marked file's stat is as unchanged as any.
            result.replaced.append(state)
            result.work.append(Work(f, state, True))
        elif not _stat_changed(f, state):
            result.unchanged.append((f, state))
        else:
            result.work.append(Work(f, state, False))
    result.vanished = list(states.values())
    return result


def rescan_groups(p: Plan, groups: set[str]) -> None:
    """Read every file of these groups again from byte 0: unchanged ones, and grown ones
    whose imported part is as much in question as an unchanged file's."""
    keep = []
    for f, state in p.unchanged:
        if f.group in groups:
            p.work.append(Work(f, state, True))
        else:
            keep.append((f, state))
    p.unchanged = keep
    for w in p.work:
        w.restart = w.restart or w.found.group in groups
    p.work.sort(key=lambda w: w.found.key)


def hold_restarts(conn: sqlite3.Connection, work: Iterable[Work]) -> None:
    """Mark the files to read from byte 0 (REREAD), in the transaction that deletes what they
    must give again: an import cut short before it reads them reads them next time."""
    conn.executemany("UPDATE import_files SET check_hash = ? WHERE id = ?",
                     [(REREAD, w.state.id) for w in work if w.restart])


def forget(conn: sqlite3.Connection, states: Iterable[State]) -> None:
    """Drop the import state and dropped-line samples of files no longer on disk."""
    ids = [(s.id,) for s in states]
    conn.executemany("DELETE FROM dropped_lines WHERE src_file = ?", ids)
    conn.executemany("DELETE FROM import_files WHERE id = ?", ids)


def forget_dropped(conn: sqlite3.Connection, work: Iterable[Work]) -> None:
    """Drop the dropped-line samples of files read again from byte 0: they are taken anew."""
    conn.executemany("DELETE FROM dropped_lines WHERE src_file = ?",
                     [(w.state.id,) for w in work if w.restart and w.state.bytes_done])


def read_new(work: Work) -> tuple[bytes, int]:
    """The complete lines after the imported part, and the offset they start at."""
    start = 0 if work.restart else work.state.bytes_done
    with open(work.found.path, "rb") as f:
        f.seek(start)
        data = f.read(max(work.found.size - start, 0))
    # Only newline-terminated lines: a partial last line is read once a later push completes it.
    return data[: data.rfind(b"\n") + 1], start


def save(conn: sqlite3.Connection, work: Work, bytes_done: int, lines_done: int,
         carry: str | None = None, finished: bool = True) -> None:
    """Record how far the file is imported (in the transaction that stored its rows).

    A file read only in part (`finished` False: a batch of a larger read) gets no stat, so
    that an import cut after it reads the rest next time though the file is unchanged.
    """
    f = work.found
    size = f.size if finished else UNFINISHED
    conn.execute("UPDATE import_files SET size = ?, mtime_ns = ?, inode = ?, check_hash = ?, "
                 "bytes_done = ?, lines_done = ?, carry = ? WHERE id = ?",
                 (size, f.mtime_ns, f.inode, content_hash(f.path, bytes_done), bytes_done,
                  lines_done, carry, work.state.id))

