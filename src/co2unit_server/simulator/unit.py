"""One unit's wake, in the firmware's order and with the firmware's logic.

Mirrors co2_ou_device's co2unit_comm.py, co2unit_update.py and the task chain of
co2unit_main2.py: Communicate (alive ping, pull the last `updates/` dir, push `errors` then
`data/readings` in 4096-byte chunks, following `ack_file` on 200 and 416), then CheckForUpdates,
which installs the newest `update-*` dir on the card and, when it did, Communicate again.
One transmission per wake: a failed request ends it (the firmware logs it and tries next day).
The unit's socket has no timeout; a silent link holds it until the hardware watchdog resets the
unit, and then nothing of that wake is saved (`timeout` stands in for the watchdog's 120 s).
Its hazards are kept on purpose, because the server has to live with them: an ack naming a file
the unit does not have sends it back to its first file; an acked offset past its own file's size
fails an assertion; a reply without `ack_file` makes it re-send the same chunk until its time
budget runs out. Every request goes through `unitclient`, the firmware's HTTP/1.0 dialect.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from .sdcard import OU_ID_PATH, PUSH_DIRS, UPDATES_DIR, SdCard, error_entry
from .unitclient import ProtocolError, Reply, build_request, request

CHUNK_SIZE = 4096
BUDGET_S = 300.0
TIMEOUT_S = 10.0          # the firmware's watchdog waits 120 s; simulated days cannot
UPDATE_STATE_PATH = "var/updates-state.json"
UPDATE_PREFIX = "update-"  # CheckForUpdates installs only dirs named so (any name is pulled)
# What AT+CSQ gives, per wake: (share, rssi_raw, ber_raw); rssi_raw -1 is "a value 0-31".
# 99 is the modem's "not known"; a reply the firmware cannot parse leaves all three None; an
# AT command that raises leaves no signal at all, and the ping goes without the fields.
CSQ_OUTCOMES = ((0.85, -1, 99), (0.08, 99, 99), (0.04, None, None), (0.03, "raises", None))


class UnitError(Exception):
    """A reply the firmware would raise on: an unaccepted status or an unusable body."""


class FirmwareHazard(UnitError):
    """The firmware got into one of its known bad states (the server must never cause one)."""


class WatchdogReset(Exception):
    """The link went silent: the unit hangs in a socket read until its watchdog resets it."""


@dataclass
class CycleStats:
    """What one wake of one unit did."""

    requests: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    failures: int = 0       # transmissions that ended in an error (logged on the card)
    watchdog_resets: int = 0  # wakes cut by a silent link: nothing of them was saved
    updates: int = 0        # update directories installed
    hazards: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    synced: bool = False    # every pushed directory was complete at the end
    budget_exhausted: bool = False


class PushState:
    """The firmware's PushSequentialState: a position (file, progress) in one pushed dir."""

    def __init__(self, root: Path, dirname: str, fname: str | None = None,
                 progress: int | None = None, totalsize: int | None = None) -> None:
        self.root = root
        self.dirname = dirname
        self.fname = fname
        self.progress = progress
        self.totalsize = totalsize
        (root / dirname).mkdir(parents=True, exist_ok=True)
        self.dirlist = sorted(os.listdir(root / dirname))
        self.dirindex = 0
        self.update_by_fname(fname, progress)

    def to_list(self) -> list[Any]:
        return [self.fname, self.progress, self.totalsize]

    def fpath(self) -> str:
        return f"{self.dirname}/{self.fname}"

    def update_by_fname(self, fname: str | None, progress: int | None = None) -> None:
        """Jump to (fname, progress); a name not on the card means the first file (hazard)."""
        if not fname or fname not in self.dirlist:
            self.update_by_dirindex(0)
        else:
            self.fname = fname
            self.progress = progress
            self.update_by_dirindex(self.dirlist.index(fname))

    def update_by_dirindex(self, dirindex: int) -> None:
        self.dirindex = dirindex
        if dirindex < len(self.dirlist):
            fname = self.dirlist[dirindex]
            if fname != self.fname:
                self.fname = fname
                self.progress = 0
            self.totalsize = (self.root / self.fpath()).stat().st_size

    def update_to_next_file(self) -> None:
        self.update_by_dirindex(self.dirindex + 1)

    def file_complete(self) -> bool:
        if self.progress > self.totalsize:
            raise FirmwareHazard(f"progress greater than totalsize: {self.to_list()} "
                                 f"in {self.dirname} (the unit is stuck for ever)")
        return self.progress == self.totalsize

    def dir_complete(self) -> bool:
        return self.dirindex == len(self.dirlist)


TRANSMIT_ERRORS = (OSError, ProtocolError, UnitError, ValueError, TypeError)


def rssi_dbm(rssi_raw: int) -> int | None:
    """The firmware's dBm for an AT+CSQ rssi: -113 at 0 up to -51 at 31; None for 99."""
    return -113 + 2 * rssi_raw if 0 <= rssi_raw <= 31 else None


def signal_quality(rng: random.Random) -> dict[str, Any] | None:
    """What the firmware's lte_signal_quality gives on one wake (see CSQ_OUTCOMES)."""
    raw, ber = rng.choices([outcome[1:] for outcome in CSQ_OUTCOMES],
                           [outcome[0] for outcome in CSQ_OUTCOMES])[0]
    if raw == "raises":
        return None
    if raw == -1:
        raw, ber = rng.randint(0, 31), rng.choice([99, 99, 99, 0])
    return {"rssi_raw": raw, "ber_raw": ber, "rssi_dbm": None if raw is None else rssi_dbm(raw)}


def alive_path(ou_id: dict[str, Any], signal: dict[str, Any] | None) -> str:
    """The ping's path: `None` for a missing nickname or value; no signal fields without one."""
    path = f"/ou/{ou_id['hw_id']}/alive?site_code={ou_id.get('site_code')}"
    if signal is not None:
        path += "&rssi_raw={rssi_raw}&rssi_dbm={rssi_dbm}&ber_raw={ber_raw}".format(**signal)
    return path


class Unit:
    """A unit with an SD card, talking to the server at (host, port)."""

    def __init__(self, card: SdCard, host: str, port: int, rng: random.Random, *,
                 budget_s: float = BUDGET_S, timeout: float = TIMEOUT_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.card = card
        self.host = host
        self.port = port
        self.rng = rng
        self.budget_s = budget_s
        self.timeout = timeout
        self.clock = clock
        self._deadline = 0.0
        self._stats = CycleStats()

    @property
    def hw_id(self) -> str:
        return self.card.hw_id

    @property
    def sync_dest(self) -> str:
        return f"http://{self.host}:{self.port}"

    def cycle(self, now: datetime) -> CycleStats:
        """One wake: Communicate, CheckForUpdates, and Communicate again after an install."""
        self._stats = stats = CycleStats()
        # One budget for the whole wake: the firmware's chrono is started once per boot.
        self._deadline = self.clock() + self.budget_s
        state = self.card.load_state()
        while True:
            try:
                self._communicate(now, state)
            except WatchdogReset:
                # A hard reset: the comm state of this wake is never saved; the next boot runs
                # the crash recovery, which logs it.
                stats.watchdog_resets += 1
                stats.synced = False
                self._log_crash_recovery(now)
                return stats
            self.card.save_state(state)
            if not self._install_update():
                return stats
            stats.updates += 1

    def _communicate(self, now: datetime, state: dict[str, Any]) -> None:
        """The firmware's comm_sequence: attach (logged), one transmission, errors logged."""
        state["signal_quality"] = signal_quality(self.rng)
        self.card.log(error_entry(now, "INFO", "Comm cycle. LTE attached: True. Signal quality "
                                  f"{state['signal_quality']}"))
        self._stats.synced = False
        try:
            self._transmit(state)
        except TRANSMIT_ERRORS as exc:
            self._record_failure(now, exc)

    def _record_failure(self, now: datetime, exc: Exception) -> None:
        """Count a failed transmission and log it as the firmware does (record_error)."""
        if isinstance(exc, FirmwareHazard):
            self._stats.hazards.append(str(exc))
        self._stats.failures += 1
        self.card.log(error_entry(now, "EXC", f"Error transmitting to {self.sync_dest}",
                                  ["Traceback (most recent call last):",
                                   '  File "co2unit_comm.py", line 425, in comm_sequence',
                                   f"{type(exc).__name__}: {exc}"]))

    def _log_crash_recovery(self, now: datetime) -> None:
        """The entries co2unit_main2's CrashRecovery writes at the boot after a watchdog reset."""
        later = now + timedelta(seconds=self.timeout)
        self.card.log(error_entry(later, "WARN", "CRASH RECOVERY. Running recovery procedure "
                                  "(attempt 1). Watchdog reset? LTE was on: True; LTE turned "
                                  "off: True"))
        self.card.log(error_entry(later, "INFO", "Run log leading up to this... [(<class "
                                  "'Communicate'>, 'START', 1), (<class 'CheckForUpdates'>, "
                                  "'OK', 1)]"))

    def _time_up(self) -> bool:
        if self.clock() > self._deadline:
            self._stats.budget_exhausted = True
            return True
        return False

    def _request(self, method: str, path: str, body: bytes | None = None,
                 accept: tuple[int, ...] = (200,)) -> Reply:
        stats = self._stats
        stats.requests += 1
        stats.bytes_sent += len(build_request(method, path, self.host, body))
        started = time.perf_counter()
        try:
            reply = request(self.host, self.port, method, path, body, self.timeout)
        except TimeoutError as exc:
            raise WatchdogReset(f"{method} {path}: no byte for {self.timeout} s") from exc
        stats.latencies.append(time.perf_counter() - started)
        stats.bytes_received += len(reply.raw_head) + 4 + len(reply.body)
        if reply.status not in accept:
            raise UnitError(f"{method} {path} {reply.status} {reply.body[:100]!r}")
        return reply

    def _transmit(self, state: dict[str, Any]) -> None:
        """The firmware's transmit_data: ping, pull updates (ending early on one), push."""
        self._request("POST", alive_path(self.card.read_json(OU_ID_PATH),
                                         state["signal_quality"]))
        if self._pull_last_dir(UPDATES_DIR):
            return
        complete = [self._push_sequential(dirname, state["sync_states"].setdefault(dirname, {}))
                    for dirname in PUSH_DIRS]
        self._stats.synced = all(complete)

    def _push_sequential(self, dirname: str, ss: dict[str, Any]) -> bool:
        """Push one directory from the saved position; the position is kept however it ends.
        True when the whole directory is pushed."""
        pushstate = PushState(self.card.root, dirname, *ss.get("ack_file", []))
        try:
            while not pushstate.dir_complete():
                while not pushstate.file_complete():
                    if self._time_up():
                        return False
                    self._push_chunk(pushstate)
                pushstate.update_to_next_file()
            return True
        finally:
            ss["ack_file"] = pushstate.to_list()

    def _push_chunk(self, pushstate: PushState) -> None:
        with open(self.card.root / pushstate.fpath(), "rb") as f:
            f.seek(pushstate.progress)
            data = f.read(CHUNK_SIZE)
        path = (f"/ou/{self.hw_id}/push-sequential/{pushstate.fpath()}"
                f"?offset={pushstate.progress}")
        reply = self._request("PUT", path, data, accept=(200, 416))
        if reply.status == 200:
            pushstate.progress += len(data)
        parsed = reply.json()
        if "ack_file" not in parsed:
            # The firmware re-sends the same chunk until its budget is gone.
            self._stats.hazards.append(f"no ack_file in {reply.status} reply to {path}")
            return
        fname, progress, _ = parsed["ack_file"]
        if fname != pushstate.fname or progress != pushstate.progress:
            pushstate.update_by_fname(fname, progress)

    def _pull_last_dir(self, dpath: str) -> bool:
        """The firmware's pull_last_dir: fetch the greatest-named update dir if not yet here."""
        reply = self._request("GET", f"/ou/{self.hw_id}/{dpath}?recursive=False",
                              accept=(200, 404))
        dirlist = reply.json() if reply.status == 200 else None
        if not dirlist:
            return False
        rpath = f"{dpath}/{max(dirlist)}"
        if (self.card.root / rpath).is_dir():
            return False
        fetch_paths = self._request("GET", f"/ou/{self.hw_id}/{rpath}?recursive=True").json()
        tmp_dir = self.card.root / "tmp" / rpath
        for fpath in fetch_paths:
            tmp_path = tmp_dir / fpath
            if tmp_path.is_file():
                continue  # fetched by an earlier wake, whole or not: the firmware keeps it
            content = self._request("GET", f"/ou/{self.hw_id}/{rpath}/{fpath}").body
            tmp_path.parent.mkdir(parents=True, exist_ok=True)
            tmp_path.write_bytes(content)
        (self.card.root / dpath).mkdir(parents=True, exist_ok=True)
        os.rename(tmp_dir, self.card.root / rpath)  # an empty update fails here, every wake
        return True

    def _install_update(self) -> bool:
        """CheckForUpdates: install the newest `update-*` dir on the card unless it is the
        installed one (merge its conf-patch files into conf/); True when it installed."""
        updates = self.card.root / UPDATES_DIR
        names = sorted(n for n in os.listdir(updates) if n.startswith(UPDATE_PREFIX)) \
            if updates.is_dir() else []
        if not names:
            return False
        update = f"{UPDATES_DIR}/{names[-1]}"
        if self.card.read_json(UPDATE_STATE_PATH, {}).get("installed") == update:
            return False
        patch_dir = self.card.root / update / "conf-patch"
        try:
            for patch in sorted(patch_dir.iterdir()) if patch_dir.is_dir() else []:
                conf = self.card.read_json(f"conf/{patch.name}", {})
                conf.update(json.loads(patch.read_text(encoding="utf-8")))
                self.card.write_json(f"conf/{patch.name}", conf)
        except ValueError:
            return False  # the firmware's task fails (no log entry) and tries at every wake
        self.card.write_json(UPDATE_STATE_PATH, {"installed": update})
        return True
