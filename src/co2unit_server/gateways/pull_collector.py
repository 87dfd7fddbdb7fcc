"""The HTTP pull collector: polls NodeMCU air-state devices (docs/gateways.md) on a schedule.

Each device is polled by a task of its own at `phase + k * interval` (the phase spreads the
fleet over the interval, the same on every start); a poll that overruns skips the slots it
missed. Every poll, answered or not, becomes one raw log line first (`remote_data/pull/<name>/`),
made durable, then its values are stored. After a bad or failed poll the next one waits
longer (doubling, up to pull_max_backoff_seconds); no device is polled again sooner than
pull_refresh_seconds after its previous poll ended, and a device whose interval is shorter is
polled every pull_refresh_seconds (warned once). One device's trouble never holds up another.

The devices file is read every RELOAD_CHECK_S: a new good version takes effect at once
(devices added, removed, or changed restart; the others keep their schedule), a bad one or its
removal is logged and the devices of the last good version are polled on (DevicesFileWatch).
While remote_data is below min_free_bytes (headroom.py) polling pauses, and resumes once there
is room: a poll's line could not be kept, and a NodeMCU keeps no history to lose meanwhile.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from ..core.config import Config
from ..core.headroom import RECHECK_S, Headroom
from ..database.measurement_store import MeasurementStore
from ..database.rows import REFUSED
from ..records.pull_format import FAMILY, DevicesFileWatch, PullDevice, interpret
from ..records.rawlog import RawLine, open_family, ts_text

log = logging.getLogger(__name__)

# How often the devices file is read: an edit takes effect within this.
RELOAD_CHECK_S = 1.0
# The firmware's answer is under 1 KB; a device sending more is broken, not worth the memory.
MAX_ANSWER_BYTES = 64 * 1024
_US = 1_000_000
# Beyond 2^32 intervals the wait is capped by pull_max_backoff_seconds anyway.
_MAX_DOUBLINGS = 32
_OS_REASONS = {errno.ECONNREFUSED: "connection refused", errno.ECONNRESET: "connection reset",
               errno.EHOSTUNREACH: "host unreachable", errno.ENETUNREACH: "network unreachable",
               errno.ETIMEDOUT: "connect timed out", errno.EPIPE: "connection reset"}


def backoff_us(device: PullDevice, failures: int, max_backoff_s: float) -> int:
    """The wait after the `failures`-th bad or failed poll in a row (never under the interval)."""
    doubled = device.interval_us << min(failures - 1, _MAX_DOUBLINGS)
    return max(device.interval_us, min(doubled, round(max_backoff_s * _US)))


def next_poll_us(device: PullDevice, at_us: int, ended_us: int, failures: int,
                 refresh_s: float, max_backoff_s: float) -> int:
    """When to poll next, after the poll due at `at_us` that ended at `ended_us`."""
    earliest = ended_us + round(refresh_s * _US)
    if failures:
        return max(at_us + backoff_us(device, failures, max_backoff_s), earliest)
    if device.interval_s <= refresh_s:
        # Polled as often as it refreshes: its next slot always comes sooner than the refresh
        # after this poll's end, and the one after would halve its polls.
        return earliest
    # Back on the schedule: the next slot after this poll's, skipping those already missed.
    return device.slot_us(max(device.slot_index(at_us + 1), device.slot_index(earliest)))


def _failure_reason(exc: BaseException, timeout_s: float, answered: bool) -> str:
    """Why a poll got no (complete) answer, on one line for the raw log and the log."""
    return " ".join(_why(exc, timeout_s, answered).split())


def _why(exc: BaseException, timeout_s: float, answered: bool) -> str:
    if isinstance(exc, TimeoutError):
        what = "complete answer" if answered else "answer"
        return f"timeout: no {what} within {timeout_s:g} s"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "connection closed without an answer"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return f"answer cut short: {exc}"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"not an HTTP answer: {exc.message}"
    os_error = getattr(exc, "os_error", exc)
    reason = _OS_REASONS.get(getattr(os_error, "errno", None) or -1)
    if reason:
        return reason
    return f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class Exchange:
    """One poll's outcome: HTTP status (None: no answer), body, why it failed, when it ended."""

    status: int | None
    body: bytes
    failure: str
    ended_us: int

    def raw_line(self, device: PullDevice) -> RawLine:
        """The raw log line, its verdict decided by pull_format.interpret as the importer does."""
        end = "-" if self.status is None else str(self.status)
        provisional = RawLine(ts_text(self.ended_us), device.url, end,
                              "failed" if self.failure else "ok", self.failure,
                              b"" if self.failure else self.body)
        receipt, _ = interpret(provisional, device.name, "")
        return dataclasses.replace(provisional, verdict=receipt.verdict, detail=receipt.detail)


async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_ANSWER_BYTES:
        chunk = await response.content.read(MAX_ANSWER_BYTES + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    body = b"".join(chunks)
    if len(body) > MAX_ANSWER_BYTES:
        log.warning("pull %s: answer longer than %d bytes, kept cut", response.url,
                    MAX_ANSWER_BYTES)
    return body[:MAX_ANSWER_BYTES]


class _Clock:
    """UTC µs read from the monotonic loop clock: a wall clock step never bunches up polls."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._offset_us = time.time_ns() // 1000 - round(self._loop.time() * _US)

    def now_us(self) -> int:
        return round(self._loop.time() * _US) + self._offset_us

    async def sleep_until(self, at_us: int) -> None:
        await asyncio.sleep(max(0.0, (at_us - self.now_us()) / _US))


class PullCollector:
    """Polls every device on its own schedule; raw log line first, then the stored values.

    `on_file_problem` hears why the devices file's current version is not used (None once it
    is good again), for the gateway process's health.
    """

    def __init__(self, config: Config, store: MeasurementStore,
                 on_file_problem: Callable[[str | None], None] = lambda _: None) -> None:
        assert config.pull_devices_file is not None
        self.config = config
        self.store = store
        self.devices: dict[str, PullDevice] = {}  # as polled (polled_every), by name
        self.rawlog, self._commit = open_family(config, FAMILY)
        self._file = DevicesFileWatch(config.pull_devices_file)
        self._on_file_problem = on_file_problem
        self._warned: set[PullDevice] = set()  # interval under refresh, already warned
        self.headroom = Headroom(config.remote_data_dir, config.min_free_bytes,
                                 "pull collector")
        self._timeout = aiohttp.ClientTimeout(total=config.pull_timeout_seconds)
        self._session: aiohttp.ClientSession | None = None
        self._clock: _Clock | None = None
        self._tasks: dict[str, asyncio.Task] = {}
        self._recording: set[asyncio.Task] = set()

    def _open_session(self) -> aiohttp.ClientSession:
        # No connection cap (limit=0): hanging devices must never make others wait for a slot.
        # A fresh connection per poll, as the firmware closes it anyway and a rebooted device
        # would break a kept one; identity encoding, so the raw log holds the bytes as sent.
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, force_close=True)
        return aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(), raise_for_status=False,
            headers={"User-Agent": "co2unit-server pull collector",
                     "Accept-Encoding": "identity"})

    async def start(self) -> None:
        """Read the devices file and start polling its devices (none while it is bad)."""
        self._session = self._open_session()
        self._clock = _Clock()
        await self._follow_file()

    async def run(self) -> None:
        """Follow the devices file until cancelled (the polls run in tasks of their own)."""
        try:
            while True:
                await asyncio.sleep(RELOAD_CHECK_S)
                await self._follow_file()
        finally:
            await self._stop_tasks(list(self._tasks))

    async def _follow_file(self) -> None:
        changed = await asyncio.to_thread(self._file.check)  # the loop never waits on disk
        self._on_file_problem(self._file.error)
        if changed:
            await self._apply({d.name: self._polled(d) for d in self._file.devices})

    def _polled(self, device: PullDevice) -> PullDevice:
        """The device as polled; an interval under refresh warned once (per interval)."""
        refresh_s = self.config.pull_refresh_seconds
        polled = device.polled_every(refresh_s)
        if polled is not device and device not in self._warned:
            self._warned.add(device)
            log.warning("pull %s: interval %g s is below pull_refresh_seconds (%g s), the "
                        "device's values would not have changed: polled every %g s",
                        device.name, device.interval_s, refresh_s, refresh_s)
        return polled

    async def _apply(self, devices: dict[str, PullDevice]) -> None:
        """Poll `devices` from now on: the unchanged keep their task and schedule."""
        gone = [name for name, old in self.devices.items() if devices.get(name) != old]
        await self._stop_tasks(gone)
        added = [device for name, device in devices.items() if self.devices.get(name) != device]
        assert self._clock is not None
        for device in added:
            self._tasks[device.name] = asyncio.create_task(
                self._poll_forever(device, self._clock), name=f"pull {device.name}")
        self.devices = devices
        log.info("pull collector polling %d devices from %s (%d started, %d stopped)",
                 len(devices), self.config.pull_devices_file, len(added), len(gone))

    async def _stop_tasks(self, names: list[str]) -> None:
        tasks = [self._tasks.pop(name) for name in names if name in self._tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        """Stop polling, store what was received, close the session and the raw logs."""
        await self._stop_tasks(list(self._tasks))
        await asyncio.gather(*self._recording, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        self._commit.close()
        await asyncio.to_thread(self.rawlog.close)

    async def _poll_forever(self, device: PullDevice, clock: _Clock) -> None:
        at_us = device.slot_us(device.slot_index(clock.now_us()))
        failures = 0
        while True:
            await clock.sleep_until(at_us)
            await self._until_room()
            verdict = await self._poll_safely(device)
            if verdict in REFUSED:
                failures += 1
            elif verdict is not None:  # None: our own trouble, not the device's
                failures = 0
            at_us = next_poll_us(device, at_us, clock.now_us(), failures,
                                 self.config.pull_refresh_seconds,
                                 self.config.pull_max_backoff_seconds)

    async def _until_room(self) -> None:
        """Wait while the disk is full (the headroom logs when it fills and recovers)."""
        while self.headroom.full():
            await asyncio.sleep(RECHECK_S)

    async def _poll_safely(self, device: PullDevice) -> str | None:
        """Poll once; the verdict, or None when the collector itself failed (logged)."""
        try:
            return await self._poll(device)
        except Exception:
            log.exception("pull %s %s: the poll failed in the collector", device.name,
                          device.url)
            return None

    async def _poll(self, device: PullDevice) -> str:
        line = (await self._fetch(device)).raw_line(device)
        if line.verdict != "ok":
            level = logging.INFO if line.verdict == "partial" else logging.WARNING
            log.log(level, "pull %s %s: %s: %s", device.name, device.url, line.verdict,
                    line.detail)
        # Once an answer is in, it is logged and stored even when shutdown cancels the poll.
        record = asyncio.ensure_future(self._record(device, line))
        self._recording.add(record)
        record.add_done_callback(self._recording.discard)
        await asyncio.shield(record)
        return line.verdict

    async def _fetch(self, device: PullDevice) -> Exchange:
        assert self._session is not None
        status = None
        try:
            async with self._session.get(device.url) as response:
                status = response.status
                body = await _read_capped(response)
            return Exchange(status, body, "", time.time_ns() // 1000)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            reason = _failure_reason(exc, self.config.pull_timeout_seconds, status is not None)
            return Exchange(status, b"", reason, time.time_ns() // 1000)

    async def _record(self, device: PullDevice, line: RawLine) -> None:
        # The append runs in a thread: opening a device's log reads it (to count its lines),
        # and the loop must never wait on the disk while other polls are due.
        source = await asyncio.to_thread(self.rawlog.append, device.name, line)
        await self._commit.durable()
        receipt, measurements = interpret(line, device.name, source)
        self.store.add(receipt, measurements)
