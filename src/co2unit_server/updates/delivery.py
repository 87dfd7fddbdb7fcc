"""Who got which update: each unit's updates and their delivery state, and `co2unit-server updates`.

States of one update of one unit:
- `published`: its directory is there, nothing of it was downloaded yet;
- `downloading`: something was downloaded, but not every file was fully sent;
- `delivered`: every file of it was fully sent at least once (`delivered` is when the last
  of them first was);
- `confirmed`: the unit shows it has it. For an update whose conf-patch/ou-id.json sets a
  site_code: a ping after delivery carrying that nickname. Otherwise: a ping after delivery with
  no download of that update after it (the unit did not come back for it).
The server records every download in `update_downloads` (server/resources.py); the pings come
from `pings`. Times are UTC 'YYYY-MM-DD HH:MM:SS'.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ..core.config import load_config
from ..database import db
from .tree import UPDATES_DIR, files_below

PUBLISHED, DOWNLOADING, DELIVERED, CONFIRMED = "published", "downloading", "delivered", "confirmed"
OU_ID_PATCH = "conf-patch/ou-id.json"


@dataclass
class UpdateState:
    """One update of one unit and how far it got."""

    name: str
    state: str
    published: str | None  # the directory's mtime
    delivered: str | None
    confirmed: str | None
    files: int
    files_sent: int  # files of it fully sent at least once


@dataclass
class _OnDisk:
    """An update directory as it is now."""

    name: str
    mtime: float
    files: list[str]
    nickname: str | None  # the site_code its ou-id.json patch sets


@dataclass
class _Downloads:
    """What update_downloads says about one update of one unit (ts as stored)."""

    first_full: dict[str, str] = field(default_factory=dict)  # file -> first full send
    last: str = ""  # the latest download of anything of it, the listing included


def _shown(ts: str | None) -> str | None:
    return ts[:19].replace("T", " ") if ts else None


def _nickname(update: str) -> str | None:
    try:
        with open(os.path.join(update, OU_ID_PATCH), encoding="utf-8") as f:
            patch = json.load(f)
    except (OSError, ValueError):
        return None
    site_code = patch.get("site_code") if isinstance(patch, dict) else None
    return site_code if isinstance(site_code, str) else None


def updates_on_disk(remote_data: Path, hw_id: str) -> list[_OnDisk]:
    """The unit's update directories (hidden ones never offered, so left out), sorted by name."""
    found = []
    try:
        entries = sorted(os.scandir(remote_data / hw_id / UPDATES_DIR), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return []
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        found.append(_OnDisk(entry.name, entry.stat().st_mtime, files_below(entry.path),
                             _nickname(entry.path)))
    return found


def _unit_dirs(remote_data: Path) -> list[str]:
    """Every unit directory under remote_data that has an updates/ directory."""
    try:
        names = os.listdir(remote_data)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if os.path.isdir(remote_data / n / UPDATES_DIR))


def _unit_filter(units: list[str] | None) -> tuple[str, tuple]:
    # One JSON parameter however many units: no limit on SQL variables.
    if units is None:
        return "", ()
    return "WHERE unit_id IN (SELECT value FROM json_each(?))", (json.dumps(units),)


def _downloads(conn: sqlite3.Connection,
               units: list[str] | None) -> dict[tuple[str, str], _Downloads]:
    """(unit, update) -> its downloads, from one grouped query."""
    where, params = _unit_filter(units)
    rows = conn.execute(
        "SELECT unit_id, update_name, file, min(CASE WHEN full THEN ts END), max(ts) "
        f"FROM update_downloads {where} GROUP BY unit_id, update_name, file", params)
    found: dict[tuple[str, str], _Downloads] = {}
    for unit, name, file, first_full, last in rows:
        entry = found.setdefault((unit, name), _Downloads())
        entry.last = max(entry.last, last)
        if file is not None and first_full is not None:
            entry.first_full[file] = first_full
    return found


def _first_pings(conn: sqlite3.Connection,
                 wanted: list[tuple[str, str, str, str | None]]) -> dict[tuple[str, str], str]:
    """(unit, update) -> the first ping after `since` (with `nickname` when given): one query.

    Each is one short walk along the (unit_id, ping_ts) index, stopping at the first match.
    """
    if not wanted:
        return {}
    rows = conn.execute(
        "SELECT json_extract(w.value, '$[0]'), json_extract(w.value, '$[1]'), "
        "(SELECT p.ping_ts FROM pings p WHERE p.unit_id = json_extract(w.value, '$[0]') "
        " AND p.ping_ts > json_extract(w.value, '$[2]') "
        " AND (json_extract(w.value, '$[3]') IS NULL "
        "      OR p.nickname = json_extract(w.value, '$[3]')) "
        " ORDER BY p.ping_ts LIMIT 1) "
        "FROM json_each(?) w", (json.dumps(wanted),))
    return {(unit, name): ts for unit, name, ts in rows if ts is not None}


def _state(update: _OnDisk, got: _Downloads | None) -> UpdateState:
    """The state before confirmation: published, downloading or delivered."""
    published = datetime.fromtimestamp(update.mtime, UTC).strftime("%Y-%m-%d %H:%M:%S")
    sent = [got.first_full[f] for f in update.files if f in got.first_full] if got else []
    state = UpdateState(update.name, PUBLISHED, published, None, None, len(update.files),
                        len(sent))
    if got is None:
        return state
    state.state = DOWNLOADING
    if update.files and len(sent) == len(update.files):
        state.state, state.delivered = DELIVERED, max(sent)
    return state


def update_states(conn: sqlite3.Connection, remote_data: Path,
                  units: Iterable[str] | None = None) -> dict[str, list[UpdateState]]:
    """Every update of `units` (None: every unit with an updates/ directory), sorted by name."""
    wanted = None if units is None else list(dict.fromkeys(units))
    on_disk = {unit: updates_on_disk(remote_data, unit)
               for unit in (_unit_dirs(remote_data) if wanted is None else wanted)}
    downloads = _downloads(conn, wanted)
    states: dict[str, list[UpdateState]] = {}
    # (unit, update, since, nickname) of every delivered update, for the confirming ping.
    to_confirm: list[tuple[str, str, str, str | None]] = []
    for unit, updates in on_disk.items():
        states[unit] = []
        for update in updates:
            got = downloads.get((unit, update.name))
            state = _state(update, got)
            states[unit].append(state)
            if state.state == DELIVERED and got is not None:
                # A nickname shows in the first ping after delivery; otherwise a ping counts
                # once the unit stopped downloading the update.
                since = got.last if update.nickname is None else state.delivered
                to_confirm.append((unit, update.name, since, update.nickname))
    confirmed = _first_pings(conn, to_confirm)
    for unit, updates in states.items():
        for state in updates:
            if (unit, state.name) in confirmed:
                state.state, state.confirmed = CONFIRMED, _shown(confirmed[unit, state.name])
            state.delivered = _shown(state.delivered)
    return states


# --- the command ---------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--unit", action="append", metavar="HW_ID",
                   help="only this unit (repeatable; default: every unit with updates)")
    p.add_argument("--ini", help="ini file whose [co2unit] section to apply")


def open_readonly(path: Path) -> sqlite3.Connection:
    """The database read-only; an empty one when it does not exist or predates the tables."""
    if path.exists():
        conn = db.connect_readonly(path)
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        if {"pings", "update_downloads"} <= tables:
            return conn
        conn.close()
    return db.empty_database()


COLUMNS = ("unit", "update", "state", "published", "delivered", "confirmed", "files sent")


def table_rows(states: Mapping[str, list[UpdateState]]) -> list[tuple[str, ...]]:
    """One row of text per unit and update, for the table."""
    return [(unit, s.name, s.state, s.published or "-", s.delivered or "-", s.confirmed or "-",
             f"{s.files_sent}/{s.files}")
            for unit, updates in sorted(states.items()) for s in updates]


def format_table(rows: list[tuple[str, ...]]) -> str:
    """Columns padded to their widest cell."""
    widths = [max(len(r[i]) for r in [COLUMNS, *rows]) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
                     .rstrip() for row in [COLUMNS, *rows])


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Print the table of every update's delivery state."""
    cfg = load_config(environ, Path(args.ini) if args.ini else None)
    conn = open_readonly(cfg.db_path)
    try:
        states = update_states(conn, cfg.remote_data_dir, args.unit)
    finally:
        conn.close()
    rows = table_rows(states)
    print(format_table(rows) if rows else "no updates")
    return 0
