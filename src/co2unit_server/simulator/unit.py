"""One unit's communication cycle, in the firmware's order and with the firmware's logic.

Mirrors co2unit_comm.py of the field firmware: alive ping, pull the last `updates/` dir, then
push `errors` and `data/readings` in 4096-byte chunks, following `ack_file` on 200 and 416.
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
from datetime import datetime
from pathlib import Path
from typing import Any

from ..unitclient import ProtocolError, Reply, build_request, request
from .sdcard import PUSH_DIRS, UPDATES_DIR, SdCard, error_entry

CHUNK_SIZE = 4096
BUDGET_S = 300.0
TIMEOUT_S = 10.0


class UnitError(Exception):
    """A reply the firmware would raise on: an unaccepted status or an unusable body."""


class FirmwareHazard(UnitError):
    """The firmware got into one of its known bad states (the server must never cause one)."""


@dataclass
class CycleStats:
    """What one wake of one unit did."""

    requests: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    failures: int = 0       # transmit attempts that ended in an error
    retries: int = 0        # transmit attempts started after a failed one
    updates: int = 0        # update directories pulled and applied
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


class Unit:
    """A unit with an SD card, talking to the server at (host, port)."""

    def __init__(self, card: SdCard, host: str, port: int, rng: random.Random, *,
                 budget_s: float = BUDGET_S, timeout: float = TIMEOUT_S, attempts: int = 3,
                 signal_missing: float = 0.2,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.card = card
        self.host = host
        self.port = port
        self.rng = rng
        self.budget_s = budget_s
        self.timeout = timeout
        self.attempts = attempts
        self.signal_missing = signal_missing
        self.clock = clock
        self._deadline = 0.0
        self._stats = CycleStats()

    @property
    def hw_id(self) -> str:
        return self.card.hw_id

    def cycle(self, now: datetime) -> CycleStats:
        """One daily wake: up to `attempts` transmissions inside the time budget."""
        self._stats = stats = CycleStats()
        self._deadline = self.clock() + self.budget_s
        state = self.card.load_state()
        state["signal_quality"] = self._measure_signal()
        self.card.log(error_entry(now, "INFO", "Comm cycle. LTE attached: True. Signal quality "
                                  f"{state['signal_quality']}"))
        attempts = 0
        while not self._time_up():
            try:
                got_updates = self._transmit(state)
            except TRANSMIT_ERRORS as exc:
                self._record_failure(now, exc)
                attempts += 1
                if attempts >= self.attempts:
                    break
                stats.retries += 1
                continue
            finally:
                self.card.save_state(state)
            if not got_updates:
                stats.synced = not self._time_up()
                break
            # As the firmware: install the update, then communicate again at once.
            try:
                self._apply_latest_update()
                stats.updates += 1
            except ValueError as exc:
                self.card.log(error_entry(now, "EXC", f"Update failed: {exc}"))
        return stats

    def _record_failure(self, now: datetime, exc: Exception) -> None:
        """Count a failed transmission and log it as the firmware does (record_error)."""
        if isinstance(exc, FirmwareHazard):
            self._stats.hazards.append(str(exc))
        self._stats.failures += 1
        self.card.log(error_entry(now, "EXC", f"Error transmitting to {self.host}",
                                  ["Traceback (most recent call last):",
                                   '  File "co2unit_comm.py", line 311, in comm_sequence',
                                   f"{type(exc).__name__}: {exc}"]))

    def _measure_signal(self) -> dict[str, int] | None:
        if self.rng.random() < self.signal_missing:
            return None
        raw = self.rng.randint(3, 31)
        return {"rssi_raw": raw, "rssi_dbm": -113 + 2 * raw, "ber_raw": self.rng.choice([0, 99])}

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
        reply = request(self.host, self.port, method, path, body, self.timeout)
        stats.latencies.append(time.perf_counter() - started)
        stats.bytes_received += len(reply.raw_head) + 4 + len(reply.body)
        if reply.status not in accept:
            raise UnitError(f"{method} {path} {reply.status} {reply.body[:100]!r}")
        return reply

    def _transmit(self, state: dict[str, Any]) -> bool:
        """The firmware's transmit_data: ping, pull updates, push; True when an update came."""
        ou_id = self.card.read_json("conf/ou-id.json")
        path = f"/ou/{ou_id['hw_id']}/alive?site_code={ou_id.get('site_code')}"
        signal = state.get("signal_quality")
        if signal:
            path += "&rssi_raw={rssi_raw}&rssi_dbm={rssi_dbm}&ber_raw={ber_raw}".format(**signal)
        self._request("POST", path)
        if self._pull_last_dir(UPDATES_DIR):
            return True
        for dirname in PUSH_DIRS:
            ss = state["sync_states"].setdefault(dirname, {})
            self._push_sequential(dirname, ss)
        return False

    def _push_sequential(self, dirname: str, ss: dict[str, Any]) -> None:
        """Push one directory from the saved position; the position is saved however it ends."""
        pushstate = PushState(self.card.root, dirname, *ss.get("ack_file", []))
        try:
            while not pushstate.dir_complete():
                while not pushstate.file_complete():
                    if self._time_up():
                        return
                    self._push_chunk(pushstate)
                pushstate.update_to_next_file()
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
                break  # the firmware's own shortcut: it takes a half-fetched update as whole
            content = self._request("GET", f"/ou/{self.hw_id}/{rpath}/{fpath}").body
            tmp_path.parent.mkdir(parents=True, exist_ok=True)
            tmp_path.write_bytes(content)
        (self.card.root / dpath).mkdir(parents=True, exist_ok=True)
        os.rename(tmp_dir, self.card.root / rpath)
        return True

    def _apply_latest_update(self) -> None:
        """Merge the newest update's conf-patch/*.json into conf/ (e.g. a new nickname)."""
        updates = self.card.root / UPDATES_DIR
        patch_dir = updates / max(os.listdir(updates)) / "conf-patch"
        if not patch_dir.is_dir():
            return
        for patch in sorted(patch_dir.glob("*.json")):
            conf = self.card.read_json(f"conf/{patch.name}", {})
            conf.update(json.loads(patch.read_text(encoding="utf-8")))
            self.card.write_json(f"conf/{patch.name}", conf)
