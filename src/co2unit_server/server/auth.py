"""Access control: HTTP basic auth for the admin surfaces, and the allowlist of known units.

The unit endpoints (`/ou/...`) stay open: the firmware cannot authenticate. Everything else
(`/`, `/fleet`, `/api`, `/metrics`, `/status`, `/data/co2`, and any page added later) needs an
admin user of `admin_users_file` when that setting is set. The file holds one line per user,
written by `co2unit-server add-user` (users.py).
"""

from __future__ import annotations

import functools
import hmac
import logging
import secrets
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from flask import Flask, current_app, request

from ..core.config import Config
from ..core.errors import ApiError, ErrorCode
from ..database import db
from ..records.users import CredentialsFile, Stamp, hash_password, verify_password
from .resources import PushSequential, Updates

log = logging.getLogger(__name__)

REALM = 'Basic realm="co2unit-server"'
pause = time.sleep  # the failed-login delay (tests replace it)
UNIT_PATH_PREFIX = "/ou/"
# Flask-RESTful names a resource's endpoint after its class, lowercased.
ALLOWLISTED_ENDPOINTS = frozenset(cls.__name__.lower() for cls in (PushSequential, Updates))


@functools.cache
def decoy_hash() -> str:
    """Checked when the user does not exist: response times do not tell which names exist."""
    return hash_password(secrets.token_urlsafe(16))


class UsersFile(CredentialsFile):
    """The admin users, read again whenever the file changes (mtime, size or inode)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, "admin users file", "admin pages refuse everyone")

    def users(self) -> tuple[Stamp | None, dict[str, str]]:
        """The file's stamp (None when unreadable) and its users."""
        return self.read()


# --- throttling failed logins ----------------------------------------------------------------

class FailureThrottle:
    """Per client address, a delay before the next check that doubles with each failure.

    Forgotten `forget_after` seconds after the last failure, or at once on a success; at most
    `max_addresses` are remembered (the stalest go first), so memory stays bounded.
    """

    def __init__(self, base: float = 0.25, cap: float = 4.0, forget_after: float = 900.0,
                 max_addresses: int = 4096, clock: Callable[[], float] = time.monotonic) -> None:
        self.base, self.cap, self.forget_after = base, cap, forget_after
        self.max_addresses = max_addresses
        self.clock = clock
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._lock = threading.Lock()

    def delay(self, address: str) -> float:
        """Seconds to wait before checking credentials from `address`."""
        with self._lock:
            count, last = self._failures.get(address, (0, 0.0))
            if count and self.clock() - last > self.forget_after:
                del self._failures[address]
                count = 0
        return min(self.base * 2 ** (count - 1), self.cap) if count else 0.0

    def failed(self, address: str) -> int:
        """Note a failure; return how many in a row from `address`."""
        with self._lock:
            count = self._failures.pop(address, (0, 0.0))[0] + 1
            self._failures[address] = (count, self.clock())
            while len(self._failures) > self.max_addresses:
                self._failures.popitem(last=False)
        return count

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._failures.pop(address, None)


# --- the admin gate --------------------------------------------------------------------------

class AdminAuth:
    """Checks HTTP basic credentials against the users file, throttled per client address."""

    # Checks (their delay included) one process runs at once, of its 32 handler threads: a
    # flood of bad logins must leave threads for the units. Beyond it: 401 at once, unchecked.
    MAX_CONCURRENT_CHECKS = 4
    # Verified credentials are remembered (as an HMAC under a per-process key, never the
    # password) so that a page and its plots cost one scrypt, not one each.
    VERIFIED_TTL_S = 600.0
    MAX_VERIFIED = 64

    def __init__(self, users_file: UsersFile, throttle: FailureThrottle | None = None,
                 sleep: Callable[[float], None] | None = None) -> None:
        self.users_file = users_file
        self.throttle = throttle or FailureThrottle()
        self.sleep = sleep or pause
        self._slots = threading.BoundedSemaphore(self.MAX_CONCURRENT_CHECKS)
        decoy_hash()  # now, so that the first unknown name takes no longer than the next
        self._key = secrets.token_bytes(32)
        self._verified: OrderedDict[bytes, tuple[tuple, float]] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, address: str) -> str:
        """Return the admin user this request authenticates as, or raise a 401 ApiError."""
        credentials = request.authorization
        if credentials is None or credentials.type != "basic" or not credentials.username:
            raise self._refuse(address, "no basic credentials")
        user, password = credentials.username, credentials.password or ""
        stamp, users = self.users_file.users()
        header = request.headers.get("Authorization", "")
        token = hmac.digest(self._key, header.encode("utf-8", "surrogatepass"), "sha256")
        if stamp is not None and self._is_verified(token, stamp):
            return user
        if not self._slots.acquire(blocking=False):
            raise self._refuse(address, f"too many logins at once; {user!r} not checked")
        try:
            self.sleep(self.throttle.delay(address))
            # The decoy hash keeps an unknown name as slow as a known one.
            ok = verify_password(password, users.get(user) or decoy_hash()) and user in users
        finally:
            self._slots.release()
        if not ok:
            failures = self.throttle.failed(address)
            raise self._refuse(address, f"wrong user or password for {user!r} "
                                        f"({failures} failure(s) in a row)")
        self.throttle.succeeded(address)
        self._remember(token, stamp)
        return user

    @staticmethod
    def _refuse(address: str, why: str) -> ApiError:
        log.warning("admin login refused from %s: %s %s: %s", address, request.method,
                    request.path, why)
        # Browsers show their login dialog on this header.
        return ApiError(ErrorCode.UNAUTHORIZED, headers={"WWW-Authenticate": REALM})

    def _is_verified(self, token: bytes, stamp: tuple) -> bool:
        with self._lock:
            entry = self._verified.get(token)
            return (entry is not None and entry[0] == stamp
                    and time.monotonic() - entry[1] < self.VERIFIED_TTL_S)

    def _remember(self, token: bytes, stamp: tuple | None) -> None:
        if stamp is None:
            return
        with self._lock:
            self._verified.pop(token, None)
            self._verified[token] = (stamp, time.monotonic())
            while len(self._verified) > self.MAX_VERIFIED:
                self._verified.popitem(last=False)

    def before_request(self) -> None:
        """Let unit requests through; demand an admin login for everything else."""
        if request.path.startswith(UNIT_PATH_PREFIX):
            return
        self.check(request.remote_addr or "unknown")


# --- the allowlist of known units ------------------------------------------------------------

class KnownUnits:
    """The hw_ids in deploy_durations_tiered (any status), cached per process for `ttl` s.

    If the database cannot be read, the last set read is kept; with none yet, every unit is
    let through (fail open, logged). Failing closed would stop the whole fleet: a unit whose
    update pull gets 403 ends its cycle before it pushes anything, every day, for as long as
    the database is broken. Failing open admits, for that time, only what any unit may do:
    write its own data/ and errors/ within max_file_bytes and min_free_bytes.
    """

    QUERY = "SELECT DISTINCT unit_id FROM deploy_durations_tiered WHERE unit_id IS NOT NULL"

    def __init__(self, db_path: Path, ttl: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.db_path = db_path
        self.ttl = ttl
        self.clock = clock
        self._units: frozenset[str] | None = None
        self._expires = float("-inf")
        self._lock = threading.Lock()

    def is_known(self, hw_id: str) -> bool:
        """Whether `hw_id` is in a deployment (True while the database cannot be read)."""
        units = self._current()
        return units is None or hw_id in units

    def _current(self) -> frozenset[str] | None:
        if self.clock() < self._expires:
            return self._units
        with self._lock:
            if self.clock() >= self._expires:
                self._refresh()
                self._expires = self.clock() + self.ttl
            return self._units

    def _refresh(self) -> None:
        try:
            conn = db.connect_readonly(self.db_path, timeout_s=1.0)
            try:
                units = frozenset(row[0] for row in conn.execute(self.QUERY))
            finally:
                conn.close()
        except sqlite3.Error as exc:
            kept = "the last known set" if self._units is not None else "every unit (fail open)"
            log.error("known_units_only: cannot read deployments from %s (%s); letting %s in",
                      self.db_path, exc, kept)
            return
        if self._units is None or len(units) != len(self._units):
            log.log(logging.INFO if units else logging.WARNING,
                    "known_units_only: %d unit(s) in deploy_durations_tiered", len(units))
        self._units = units

    def before_request(self) -> None:
        """403 for pushes and update pulls of a hw_id in no deployment (pings stay open)."""
        if request.endpoint not in ALLOWLISTED_ENDPOINTS:
            return
        hw_id = (request.view_args or {}).get("hw_id", "")
        # A malformed hw_id is the resource's 400, not a 403.
        if not current_app.extensions["co2unit"].hw_id_pattern.fullmatch(hw_id):
            return
        if not self.is_known(hw_id):
            raise ApiError(ErrorCode.UNKNOWN_UNIT, f"{hw_id} is in no deployment "
                           "(deploy_durations_tiered) and known_units_only is set")


def init_app(app: Flask, config: Config) -> None:
    """Install the admin login and the allowlist that `config` asks for."""
    if config.admin_users_file is not None:
        gate = AdminAuth(UsersFile(config.admin_users_file))
        if gate.users_file.users()[0] is None:
            log.error("admin_users_file %s is missing: create it with `co2unit-server add-user`",
                      config.admin_users_file)
        app.before_request(gate.before_request)
    if config.known_units_only:
        app.before_request(KnownUnits(config.db_path).before_request)
