"""`co2unit-server publish-update`: put one update in the `updates/` of many units, safely.

Each target unit gets its own `remote_data/<hw_id>/updates/update-<name>/`, one name for the
whole publish, chosen to sort after every entry any target already has (the firmware takes the
greatest name by plain string sort). Each is written under a hidden `.tmp-` name in the same
`updates/` directory, every file and directory fsynced, then renamed into place, then the parent
fsynced: a unit listing at any moment sees the whole update or none of it. Everything is
checked before anything is written; an error midway removes the temporary directories.

What the firmware installs (co2_ou_device): `flash/...` copied over /flash, and each
`conf-patch/<name>.json` merged (top-level `dict.update`) into `conf/<name>.json`. It reads only
`conf/ou-id.json` and `conf/ou-comm-config.json`; a non-JSON file or a subdirectory in
conf-patch fails the install on every wake, so only those two names and JSON objects pass.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sqlite3
import sys
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

from ..core.config import Config, load_config
from ..core.locking import file_lock
from ..core.validate import is_plain_name
from ..database import db, plotdata
from ..records.pushstore import fsync_dir, make_dirs
from .tree import UPDATES_DIR

PROG = "co2unit-server publish-update"
PREFIX = "update-"  # the firmware installs only directories named so
TEMP_PREFIX = ".tmp-"  # hidden: the server never offers names starting with "."
OU_ID = "ou-id.json"
COMM_CONFIG = "ou-comm-config.json"
CONF_PATCH = "conf-patch"
FLASH = "flash"
# A unit downloads the whole update inside one ~5-minute cycle at a few kB/s.
FLASH_WARN_BYTES = 256 * 1024
# The nickname travels unencoded in the ping URL and into every readings row (tab-separated).
NICKNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# The units speak plain HTTP/1.0 to host[:port]; anything else and the unit is lost for good.
SYNC_DEST = re.compile(r"http://[A-Za-z0-9.-]+(:[0-9]{1,5})?")

# A file's content: bytes we generate, or a source file (flash) copied as it is.
Content = bytes | Path


class PublishError(ValueError):
    """Bad input: nothing was written."""


@dataclass(frozen=True)
class UpdateContent:
    """What an update holds, the same for every unit (ou-id.json is made per unit)."""

    nickname: str | None = None
    conf_patches: Mapping[str, dict] = field(default_factory=dict)  # file name -> JSON object
    flash: Mapping[str, Path] = field(default_factory=dict)  # path below flash/ -> source file


@dataclass
class Plan:
    """One publish: the name, and each unit's files (relative path -> content)."""

    remote_data: Path
    name: str
    files: dict[str, dict[str, Content]]

    @property
    def units(self) -> list[str]:
        return list(self.files)

    def target(self, hw_id: str) -> Path:
        return self.remote_data / hw_id / UPDATES_DIR / self.name


# --- checks on the content ---------------------------------------------------------------

def _text(value: object) -> bool:
    return isinstance(value, str) and value != ""


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _sync_dest(value: object) -> bool:
    dests = value if isinstance(value, list) else [value]
    return bool(dests) and all(isinstance(d, str) and SYNC_DEST.fullmatch(d) for d in dests)


def _name_list(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(_text(v) for v in value)


def _site_code(value: object) -> bool:
    return isinstance(value, str) and nickname_problem(value) is None


# The keys current firmware reads from each conf file, with a check and what it expects.
CONF_KEYS: dict[str, dict[str, tuple]] = {
    OU_ID: {
        "hw_id": (_text, "the unit's own hardware ID"),
        "site_code": (_site_code, "a nickname: letters, digits, '.', '_', '-'"),
    },
    COMM_CONFIG: {
        "sync_dest": (_sync_dest, 'a URL "http://host[:port]" or a list of them'),
        "sync_dirs": (_name_list, "a list of directory names"),
        "ntp_host": (_text, "a host name"),
        "ntp_max_drift_secs": (_count, "a positive integer"),
        "send_chunk_size": (_count, "a positive integer"),
        "total_connect_secs_max": (_count, "a positive integer"),
        "connect_backoff_max": (_count, "a positive integer"),
    },
}
NOT_READ = {"schedule.json": "current firmware (co2unit_main2) uses its built-in schedule and "
                             "never reads conf/schedule.json"}


def nickname_problem(nickname: str) -> str | None:
    """Why a nickname would hurt the unit or the data, or None when it is fine."""
    if not NICKNAME.fullmatch(nickname):
        return (f"nickname {nickname!r} is sent unencoded in the unit's ping URL and written "
                "into every readings row: use 1-64 letters, digits, '.', '_' or '-'")
    if nickname == "None" or nickname.endswith("NICK"):
        return f"nickname {nickname!r} means 'not configured' to the toolchain"
    return None


def check_conf_patch(name: str, patch: object) -> dict:
    """The patch for conf/<name> when the firmware would read and apply it; else PublishError."""
    if name in NOT_READ:
        raise PublishError(f"conf-patch {name}: {NOT_READ[name]}")
    if name not in CONF_KEYS:
        raise PublishError(f"conf-patch {name}: the firmware reads only "
                           f"{' and '.join(sorted(CONF_KEYS))}")
    if not isinstance(patch, dict):
        raise PublishError(f"conf-patch {name}: must be a JSON object, not "
                           f"{type(patch).__name__}")
    if not patch:
        raise PublishError(f"conf-patch {name}: the object is empty, nothing to patch")
    for key, value in patch.items():
        if key not in CONF_KEYS[name]:
            raise PublishError(f"conf-patch {name}: the firmware does not read key {key!r} "
                               f"(it reads {', '.join(CONF_KEYS[name])})")
        check, expected = CONF_KEYS[name][key]
        if not check(value):
            raise PublishError(f"conf-patch {name}: {key} must be {expected}, got "
                               f"{json.dumps(value)}")
    return patch


def read_conf_patch(path: Path) -> tuple[str, dict]:
    """(file name, JSON object) of a conf-patch file given on the command line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PublishError(f"cannot read conf-patch {path}: {exc}") from exc
    try:
        patch = json.loads(text, parse_constant=_no_constant)
    except ValueError as exc:
        raise PublishError(f"conf-patch {path} is not valid JSON: {exc}") from exc
    return path.name, check_conf_patch(path.name, patch)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not plain JSON")


def flash_files(directory: Path) -> dict[str, Path]:
    """Every file below `directory` (path below flash/ -> source), checked for being servable."""
    if not directory.is_dir():
        raise PublishError(f"--flash {directory} is not a directory")
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(directory, followlinks=True):
        rel = Path(dirpath).relative_to(directory)
        for name in sorted(dirnames) + sorted(filenames):
            if name.startswith(".") or not is_plain_name(name):
                # The server never offers hidden names: the unit would get the update without it.
                raise PublishError(f"--flash: {rel / name} would never be sent to a unit "
                                   "(hidden or unsafe name)")
        found.update({(rel / f).as_posix(): Path(dirpath) / f for f in filenames})
    if not found:
        raise PublishError(f"--flash {directory} holds no file")
    return dict(sorted(found.items()))


def unit_files(hw_id: str, content: UpdateContent) -> dict[str, Content]:
    """The files of one unit's update: conf patches (ou-id.json with its own hw_id), flash."""
    patches = dict(content.conf_patches)
    own = patches.get(OU_ID, {}).get("hw_id", hw_id)
    if own != hw_id:
        # The unit would put this hw_id in every URL and data row: it would become another unit.
        raise PublishError(f"conf-patch {OU_ID} sets hw_id {own!r}, which is not {hw_id}'s own")
    if content.nickname is not None:
        patches[OU_ID] = {"hw_id": hw_id, "site_code": content.nickname}
    files: dict[str, Content] = {f"{CONF_PATCH}/{name}": (json.dumps(patch) + "\n").encode()
                                 for name, patch in sorted(patches.items())}
    files.update({f"{FLASH}/{rel}": source for rel, source in content.flash.items()})
    return files


def check_content(content: UpdateContent) -> None:
    """Refuse an update with nothing in it, or a nickname given twice."""
    if content.nickname is not None:
        problem = nickname_problem(content.nickname)
        if problem:
            raise PublishError(problem)
        if OU_ID in content.conf_patches:
            raise PublishError(f"give --nickname or a conf-patch {OU_ID}, not both")
    if content.nickname is None and not content.conf_patches and not content.flash:
        raise PublishError("nothing to publish: give --nickname, --conf-patch or --flash")


# --- the name ------------------------------------------------------------------------------

def visible_entries(remote_data: Path, hw_id: str) -> list[str]:
    """What the unit could be offered in its updates/ (every name not hidden)."""
    try:
        return [e for e in os.listdir(remote_data / hw_id / UPDATES_DIR) if not e.startswith(".")]
    except FileNotFoundError:
        return []


def _bump(name: str) -> str:
    """A name sorting right after `name`: its trailing letters counted up, else 'a' appended."""
    match = re.fullmatch(r"(.*\d)([a-z]+)", name)
    if not match:
        return name + "a"
    stem, letters = match.groups()
    if letters[-1] == "z":
        return stem + letters + "a"
    return stem + letters[:-1] + chr(ord(letters[-1]) + 1)


def next_name(existing: Iterable[str], day: date) -> str:
    """`update-<day>a`, `…b`, …, or an existing later name extended, sorting after all of them."""
    latest = max(existing, default="")
    if not latest.startswith(PREFIX) and latest > PREFIX:
        # Every update- name sorts before it: the unit would never pick a new update.
        raise PublishError(f"existing entry {latest!r} sorts after every {PREFIX} name, so no "
                           "new update would ever be picked: move it out of updates/")
    name = f"{PREFIX}{day:%Y-%m-%d}a"
    return name if name > latest else _bump(latest)


def check_name(name: str, existing: Iterable[str]) -> str:
    """An explicitly chosen name, if the units would pick and install it."""
    latest = max(existing, default="")
    if not name.startswith(PREFIX) or not is_plain_name(name):
        raise PublishError(f"update name {name!r} must be a plain name starting with {PREFIX}")
    if name <= latest:
        raise PublishError(f"update name {name!r} does not sort after existing {latest!r}: "
                           "the units would not pick it")
    return name


# --- planning and writing ------------------------------------------------------------------

def plan_update(remote_data: Path, units: Sequence[str], content: UpdateContent,
                name: str | None = None, day: date | None = None,
                taken: Iterable[str] = ()) -> Plan:
    """Check everything and decide the name and every unit's files; writes nothing.

    `taken`: names the units may already hold (downloaded, since deleted on the server): a
    unit skips an update whose name it has, so the name must sort after those too.
    """
    if not units:
        raise PublishError("no target unit")
    check_content(content)
    files = {hw_id: unit_files(hw_id, content) for hw_id in dict.fromkeys(units)}
    existing = [e for hw_id in files for e in visible_entries(remote_data, hw_id)] + list(taken)
    if name is None:
        name = next_name(existing, day or datetime.now(UTC).date())
    return Plan(remote_data, check_name(name, existing), files)


def write_update(plan: Plan) -> list[Path]:
    """Write every unit's temporary tree, then rename each into place; the final paths."""
    temps: list[tuple[Path, Path]] = []
    try:
        for hw_id, files in plan.files.items():
            target = plan.target(hw_id)
            temp = target.with_name(f"{TEMP_PREFIX}{plan.name}-{uuid.uuid4().hex[:8]}")
            temps.append((temp, target))
            _write_tree(temp, files)
        for temp, target in temps:
            if os.path.lexists(target):  # rename would replace an empty directory silently
                raise FileExistsError(f"{target} appeared while publishing")
            os.rename(temp, target)
            fsync_dir(target.parent)
    finally:
        for temp, _ in temps:
            shutil.rmtree(temp, ignore_errors=True)  # only what was not renamed is still there
    return [target for _, target in temps]


def _write_tree(root: Path, files: Mapping[str, Content]) -> None:
    """Create `root` (hidden) with `files`; every file and directory fsynced, parents too."""
    for parent in make_dirs(str(root.parent)):  # a unit's first updates/ directory
        fsync_dir(parent)
    os.mkdir(root)
    directories = {root}
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        directories.update(p for p in path.parents if p.is_relative_to(root))
        _write_file(path, content)
    # Deepest first: an entry is durable once the directory holding it is synced.
    for directory in sorted(directories, key=lambda p: len(p.parts), reverse=True):
        fsync_dir(directory)


def _write_file(path: Path, content: Content) -> None:
    with open(path, "xb") as out:
        if isinstance(content, Path):
            with open(content, "rb") as source:
                shutil.copyfileobj(source, out)
        else:
            out.write(content)
        out.flush()
        os.fsync(out.fileno())


def publish(remote_data: Path, units: Sequence[str], content: UpdateContent,
            name: str | None = None, day: date | None = None) -> Plan:
    """Plan and write an update for `units` (the simulator's and the command's one way)."""
    plan = plan_update(remote_data, units, content, name, day)
    write_update(plan)
    return plan


def describe(plan: Plan) -> list[str]:
    """Lines saying what the plan writes: the name, the files, the units and their paths."""
    first = plan.units[0]
    lines = [f"{plan.name} for {len(plan.units)} unit(s):"]
    for rel, content in plan.files[first].items():
        if isinstance(content, Path):
            lines.append(f"  {rel}  {content.stat().st_size:,} bytes from {content}")
        else:
            shown = content.decode().strip().replace(json.dumps(first), "<the unit's hw_id>")
            lines.append(f"  {rel}  {shown}")
    flash_bytes = sum(c.stat().st_size for c in plan.files[first].values() if isinstance(c, Path))
    if flash_bytes > FLASH_WARN_BYTES:
        lines.append(f"  warning: {flash_bytes:,} bytes of flash may not download within one "
                     "unit cycle (~5 min at a few kB/s)")
    lines += [f"  {hw_id}  {plan.target(hw_id)}" for hw_id in plan.units]
    return lines


# --- targets ---------------------------------------------------------------------------------

def current_deployments(conn: sqlite3.Connection, now: float) -> dict[str, plotdata.Period]:
    """Each unit's current deployment: status deployed, started and not ended."""
    by_unit: dict[str, list[plotdata.Period]] = {}
    for period in plotdata.periods(conn):
        by_unit.setdefault(period.unit_id, []).append(period)
    current = {unit: plotdata.current_deployment(periods, now) for unit, periods in by_unit.items()}
    return {unit: p for unit, p in current.items()
            if p is not None and (p.end is None or p.end > now)}


def _has_table(conn: sqlite3.Connection | None, table: str) -> bool:
    return conn is not None and conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).fetchone() is not None


def _known(conn: sqlite3.Connection | None, remote_data: Path, hw_id: str) -> bool:
    """True for a unit that pushed, pinged or is in a deployment."""
    if (remote_data / hw_id).is_dir():
        return True
    return any(_has_table(conn, table) and conn.execute(
        f"SELECT 1 FROM {table} WHERE unit_id = ? LIMIT 1", (hw_id,)).fetchone()
        for table in ("pings", "deploy_durations_tiered"))


def downloaded_names(conn: sqlite3.Connection | None, units: Sequence[str]) -> list[str]:
    """Every update name the units ever downloaded (update_downloads)."""
    if not _has_table(conn, "update_downloads"):
        return []
    return [name for (name,) in conn.execute(
        "SELECT DISTINCT update_name FROM update_downloads "
        "WHERE unit_id IN (SELECT value FROM json_each(?))", (json.dumps(list(units)),))]


def select_units(args: argparse.Namespace, conn: sqlite3.Connection | None, cfg: Config,
                 now: float) -> list[str]:
    """The hw_ids the options name, checked; PublishError when none or one is not a unit."""
    if args.unit:
        units = list(dict.fromkeys(args.unit))
        for hw_id in units:
            if not re.fullmatch(cfg.hw_id_pattern, hw_id):
                raise PublishError(f"{hw_id!r} is not a hardware ID ({cfg.hw_id_pattern})")
            if not _known(conn, cfg.remote_data_dir, hw_id):
                raise PublishError(f"unknown unit {hw_id}: it never pushed or pinged and is in "
                                   "no deployment")
        return units
    if not _has_table(conn, "deploy_durations_tiered"):
        raise PublishError(f"no deployments in {cfg.db_path}: --all, --site and --tier need "
                           "them (co2unit-server import)")
    current = current_deployments(conn, now)
    units = sorted(u for u, p in current.items()
                   if (args.site is None or p.site == args.site)
                   and (args.tier is None or p.tier == args.tier))
    if not units:
        raise PublishError("no unit is currently deployed" + (
            f" at site {args.site!r}" if args.site is not None else "") + (
            f" in tier {args.tier}" if args.tier is not None else ""))
    bad = [u for u in units if not re.fullmatch(cfg.hw_id_pattern, u)]
    if bad:
        raise PublishError(f"deployment of {bad[0]!r}: not a hardware ID ({cfg.hw_id_pattern})")
    return units


def _open_db(path: Path) -> sqlite3.Connection | None:
    """The database read-only, or None when there is none yet."""
    return db.connect_readonly(path) if path.exists() else None


# --- the command ---------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    target = p.add_mutually_exclusive_group()
    target.add_argument("--unit", action="append", metavar="HW_ID",
                        help="a unit to update (repeatable)")
    target.add_argument("--site", help="every unit currently deployed at this site")
    target.add_argument("--tier", type=int, metavar="N",
                        help="every unit currently deployed in this tier")
    target.add_argument("--all", action="store_true",
                        help="every unit in a current deployment")
    p.add_argument("--nickname", metavar="NAME",
                   help="set the nickname (conf-patch/ou-id.json with each unit's own hw_id)")
    p.add_argument("--conf-patch", action="append", default=[], type=Path, metavar="FILE.json",
                   help=f"a JSON object merged into conf/<its name>: {OU_ID} or {COMM_CONFIG} "
                        "(repeatable)")
    p.add_argument("--flash", type=Path, metavar="DIR",
                   help="code copied over the units' /flash (needs --yes)")
    p.add_argument("--yes", action="store_true", help="really replace code with --flash")
    p.add_argument("--dry-run", action="store_true", help="show what would be written; write "
                   "nothing")
    p.add_argument("--ini", help="ini file whose [co2unit] section to apply")


def content_from_args(args: argparse.Namespace) -> UpdateContent:
    """The update's content from the options, every file read and checked."""
    patches: dict[str, dict] = {}
    for path in args.conf_patch:
        name, patch = read_conf_patch(path)
        if name in patches:
            raise PublishError(f"conf-patch {name} given twice")
        patches[name] = patch
    flash = flash_files(args.flash) if args.flash is not None else {}
    content = UpdateContent(args.nickname, patches, flash)
    check_content(content)
    return content


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Publish; 2 with one line on stderr for bad input (nothing written), 1 when writing fails."""
    cfg = load_config(environ, Path(args.ini) if args.ini else None)
    try:
        if not (args.unit or args.site is not None or args.tier is not None or args.all):
            raise PublishError("no target: give --unit HW_ID, --site SITE, --tier N or --all")
        content = content_from_args(args)
        conn = _open_db(cfg.db_path)
        try:
            units = select_units(args, conn, cfg, datetime.now(UTC).timestamp())
            taken = downloaded_names(conn, units)
        finally:
            if conn is not None:
                conn.close()
        if args.dry_run or (content.flash and not args.yes):
            print("\n".join(describe(plan_update(cfg.remote_data_dir, units, content,
                                                 taken=taken))))
            if not args.dry_run:
                raise PublishError(f"--flash replaces code on {len(units)} unit(s): check the "
                                   "files above and add --yes")
            print("dry run: nothing written")
            return 0
        # One publish at a time: two could choose the same name.
        with file_lock(cfg.locks_dir / "publish-update.lock"):
            plan = plan_update(cfg.remote_data_dir, units, content, taken=taken)
            print("\n".join(describe(plan)))
            write_update(plan)
    except PublishError as exc:
        return _fail(str(exc), 2)
    except (OSError, sqlite3.Error) as exc:
        return _fail(f"publishing failed (temporary directories removed): {exc}", 1)
    print(f"published {plan.name} to {len(units)} unit(s)")
    return 0


def _fail(message: str, status: int) -> int:
    sys.stdout.flush()
    print(f"{PROG}: {message}", file=sys.stderr)
    return status
