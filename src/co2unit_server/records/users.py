"""The admin users file: salted scrypt hashes, atomic writes, `co2unit-server add-user`.

One line per user, `name:scrypt$n=16384,r=8,p=5$<salt>$<hash>` (salt and hash in base64);
blank lines and `#` comments are allowed. The server reads it (server/auth.py) whenever it
changes. Kept free of Flask: the command line loads this without the web stack.

The file handling is generic (`name:<scheme>$...` lines, CredentialsFile, write_credential):
the WebSocket gateway's device tokens file (gateways/ws_tokens.py) is one more such file.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import getpass
import hashlib
import hmac
import logging
import os
import secrets
import sys
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path

from ..core.config import load_config, required_path
from .pushstore import fsync_dir

log = logging.getLogger(__name__)
SCHEME = "scrypt"
# OWASP's scrypt minimum at 16 MiB of memory (N=2^14, r=8, p=5): about 0.2 s per check.
SCRYPT_PARAMS = {"n": 2**14, "r": 8, "p": 5}
SALT_BYTES = 16
HASH_BYTES = 32
# Admins' file, trusted, but a typo in it must not ask for gigabytes.
MAX_SCRYPT_MEMORY = 256 * 1024 * 1024


# --- password hashes -------------------------------------------------------------------------

def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _scrypt(password: str, salt: bytes, params: Mapping[str, int]) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=params["n"], r=params["r"],
                          p=params["p"], maxmem=MAX_SCRYPT_MEMORY, dklen=HASH_BYTES)


def hash_password(password: str) -> str:
    """`scrypt$n=…,r=…,p=…$salt$hash` for a password, with a fresh random salt."""
    salt = secrets.token_bytes(SALT_BYTES)
    params = ",".join(f"{k}={v}" for k, v in SCRYPT_PARAMS.items())
    return f"{SCHEME}${params}${_b64(salt)}${_b64(_scrypt(password, salt, SCRYPT_PARAMS))}"


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` matches a stored hash (compared in constant time)."""
    try:
        scheme, raw_params, salt, expected = stored.split("$")
        params = {k: int(v) for k, v in (item.split("=") for item in raw_params.split(","))}
        if scheme != SCHEME or set(params) != set(SCRYPT_PARAMS):
            return False
        digest = _scrypt(password, base64.b64decode(salt, validate=True), params)
        return hmac.compare_digest(digest, base64.b64decode(expected, validate=True))
    except (ValueError, binascii.Error):
        return False


# --- credentials files: the users file, the device tokens file ------------------------------

def parse_credentials(text: str) -> dict[str, str]:
    """{name: stored hash} of a credentials file; blank lines and `#` comments are skipped."""
    entries = {}
    for line in text.splitlines():
        name, sep, stored = line.strip().partition(":")
        if sep and name and not name.startswith("#"):
            entries[name] = stored
    return entries


def check_user_name(name: str) -> None:
    """Refuse names that the file format (or a log line) cannot hold."""
    if (not name or ":" in name or name.startswith("#") or not name.isprintable()
            or name != name.strip()):
        raise ValueError(f"user name {name!r} must be printable, without ':', a leading '#' "
                         "or outer spaces")


def write_credential(path: Path, name: str, stored: str) -> None:
    """Add or replace `name`'s line, writing the file atomically with mode 0600."""
    try:
        kept = [line for line in path.read_text(encoding="utf-8").splitlines()
                if line.partition(":")[0].strip() != name]
    except FileNotFoundError:
        kept = []
    text = "\n".join([*kept, f"{name}:{stored}"]) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # created 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def add_user(path: Path, name: str, password: str) -> None:
    """Add or replace a user, writing the file atomically with mode 0600."""
    check_user_name(name)
    if not password:
        raise ValueError("the password must not be empty")
    write_credential(path, name, hash_password(password))


Stamp = tuple[int, int, int]


class CredentialsFile:
    """A credentials file's entries, read again whenever it changes (mtime, size or inode)."""

    def __init__(self, path: Path, what: str, when_unreadable: str) -> None:
        self.path = path
        self.what = what  # for the log: "admin users file"
        self.when_unreadable = when_unreadable  # what follows for whom it guards
        self._stamp: Stamp | None = None
        self._entries: dict[str, str] = {}
        self._lock = threading.Lock()

    def read(self) -> tuple[Stamp | None, dict[str, str]]:
        """The file's stamp (None when unreadable) and its entries (none then)."""
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError as exc:
            return self._unreadable(exc)
        with self._lock:
            if stamp != self._stamp:
                try:
                    self._entries = parse_credentials(self.path.read_text(encoding="utf-8"))
                except (OSError, UnicodeError) as exc:
                    return self._unreadable(exc)
                self._stamp = stamp
                log.info("%s %s: %d entries", self.what, self.path, len(self._entries))
            return self._stamp, self._entries

    def _unreadable(self, exc: Exception) -> tuple[None, dict[str, str]]:
        # Closed, not open: whoever it guards waits until the file is back.
        log.error("%s %s cannot be read (%s): %s", self.what, self.path, exc,
                  self.when_unreadable)
        return None, {}


# --- `co2unit-server add-user` ---------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="the admin user to add or replace")
    p.add_argument("--ini", help="ini file whose [co2unit] admin_users_file to write")
    p.add_argument("--password-stdin", action="store_true",
                   help="read the password from the first line of standard input")


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    password = getpass.getpass("Password: ")
    if password != getpass.getpass("Password again: "):
        raise ValueError("the passwords differ")
    return password


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Add or replace an admin user in the configured users file."""
    config = load_config(environ, Path(args.ini) if args.ini else None)
    path = required_path(config, "admin_users_file")
    try:
        check_user_name(args.name)
        add_user(path, args.name, _read_password(args.password_stdin))
    except (ValueError, EOFError) as exc:
        print(f"co2unit-server add-user: {exc}", file=sys.stderr)
        return 2
    print(f"user {args.name!r} written to {path}", file=sys.stderr)
    return 0
