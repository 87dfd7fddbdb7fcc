"""The gateways' raw logs: readable lines, rotation, torn-line repair, group commit."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable

import pytest

from co2unit_server.records import rawlog
from co2unit_server.records.rawlog import GroupCommit, RawLine, RawLog


def line(payload: bytes, verdict: str = "ok", ts: str = "2026-12-06T01:02:03.000004") -> RawLine:
    return RawLine(ts, "127.0.0.1:40000", "eof", verdict, "", payload)


def test_a_line_reads_back_as_written():
    binary = line(bytes.fromhex("0c00100e7800060103d204"), "bad", )
    text = RawLine("2026-12-06T01:02:03.000004", "http://10.0.0.5/circumstances", "200",
                   "partial", "mq135.co2 is empty\t(booting)", b'{"nodemcu":{}}')
    assert binary.encode().endswith(b"\thex:0c00100e7800060103d204\n")
    assert text.encode().endswith(b'\ttext:{"nodemcu":{}}\n')
    assert RawLine.parse(binary.encode().decode()) == binary
    # A tab in the detail would break the columns: it is written as a space.
    assert RawLine.parse(text.encode().decode()).detail == "mq135.co2 is empty (booting)"


@pytest.mark.parametrize("payload", [b"", b"a\nb", b"tab\there", b"\xff\xfe", b"hex:abc"])
def test_payloads_that_are_not_clean_text_go_as_hex(payload):
    encoded = rawlog.encode_payload(payload)
    assert rawlog.decode_payload(encoded) == payload
    assert "\n" not in encoded and "\t" not in encoded


@pytest.mark.parametrize("bad", ["", "a\tb\tc", "2026-13-01T00:00:00.000000\tp\teof\tok\t\thex:",
                                 "2026-12-06T00:00:00.000000\tp\teof\tmaybe\t\thex:",
                                 "2026-12-06T00:00:00.000000\tp\teof\tok\t\tbase64:AA=="])
def test_lines_no_gateway_wrote_are_refused(bad):
    with pytest.raises(ValueError):
        RawLine.parse(bad)


def test_timestamps_round_trip_exactly():
    us = 1_764_979_200_123_456
    assert rawlog.ts_text(us) == "2025-12-06T00:00:00.123456"
    assert rawlog.ts_us(rawlog.ts_text(us)) == us


@pytest.mark.parametrize("first, step", [(1_764_979_200_123_456, 120_000_000),
                                         (1_764_979_199_999_999, 7), (86_400_000_000, -3)])
def test_a_series_of_timestamps_is_ts_text_of_each(first, step):
    assert rawlog.ts_texts(first, step, 40) == [rawlog.ts_text(first + i * step)
                                                for i in range(40)]
    assert rawlog.ts_texts(first, step, 0) == []


def test_append_numbers_lines_and_rotates(tmp_path):
    log = RawLog(tmp_path, "tcp", rotate_bytes=150)  # lines of ~96 bytes: 2 a file
    sources = [log.append("esp8266-1", line(bytes([i]) * 20)) for i in range(6)]
    log.close()
    files = rawlog.log_files(tmp_path / "tcp" / "esp8266-1")
    assert [f.name for f in files] == ["0000.log", "0001.log", "0002.log"]
    assert sources[:3] == ["tcp/esp8266-1/0000.log:1", "tcp/esp8266-1/0000.log:2",
                           "tcp/esp8266-1/0001.log:1"]
    read = list(rawlog.read_lines(tmp_path / "tcp" / "esp8266-1"))
    assert [s for s, _ in read] == sources
    assert [ln.payload for _, ln in read] == [bytes([i]) * 20 for i in range(6)]


def test_a_reopened_log_continues_its_line_numbers(tmp_path):
    first = RawLog(tmp_path, "pull", 1 << 20)
    first.append("dev", line(b"one"))
    first.close()
    second = RawLog(tmp_path, "pull", 1 << 20)
    assert second.append("dev", line(b"two")) == "pull/dev/0000.log:2"
    second.close()


def test_a_device_opened_ahead_appends_after_its_lines(tmp_path):
    log = RawLog(tmp_path, "ws", 1 << 20)
    assert [log.append("dev-1", line(b"x")) for _ in range(3)][-1] == "ws/dev-1/0000.log:3"
    log.close()
    reopened = RawLog(tmp_path, "ws", 1 << 20)
    reopened.open_device("dev-1")
    reopened.open_device("dev-2")  # a new device: its directory and first file made
    assert (tmp_path / "ws" / "dev-2" / "0000.log").read_bytes() == b""
    assert reopened.append("dev-1", line(b"y")) == "ws/dev-1/0000.log:4"
    assert reopened.append("dev-2", line(b"y")) == "ws/dev-2/0000.log:1"
    reopened.close()


def test_a_torn_last_line_is_ended_and_kept(tmp_path, caplog):
    device_dir = tmp_path / "tcp" / "esp8266-2"
    device_dir.mkdir(parents=True)
    good = line(b"\x01\x02").encode()
    (device_dir / "0000.log").write_bytes(good + good[:15])  # killed mid-write
    log = RawLog(tmp_path, "tcp", 1 << 20)
    assert log.append("esp8266-2", line(b"\x03")) == "tcp/esp8266-2/0000.log:3"
    log.close()
    read = list(rawlog.read_lines(device_dir))
    assert [ln.payload if ln else None for _, ln in read] == [b"\x01\x02", None, b"\x03"]
    assert "torn line" in caplog.text


def test_a_line_the_full_disk_cut_short_is_taken_back(small_fs):
    disk = small_fs(1 << 20)
    log = RawLog(disk.path, "tcp", 1 << 30)
    log.append("esp8266-1", line(b"first"))
    disk.fill(leave=8192)  # room for part of the next line only
    with pytest.raises(OSError) as full:
        log.append("esp8266-1", line(b"x" * 65536))
    assert full.value.errno == 28  # ENOSPC, as a write that took nothing says it
    disk.empty()
    assert log.append("esp8266-1", line(b"second")) == "tcp/esp8266-1/0000.log:2"
    log.close()
    assert [parsed.payload for _, parsed in rawlog.read_lines(disk.path / "tcp/esp8266-1")] == [
        b"first", b"second"]


def test_an_unfinished_last_line_is_not_read(tmp_path):
    device_dir = tmp_path / "tcp" / "esp8266-3"
    device_dir.mkdir(parents=True)
    good = line(b"\x01").encode()
    (device_dir / "0000.log").write_bytes(good + good[:10])
    assert len(list(rawlog.read_lines(device_dir))) == 1


def test_group_commit_shares_one_sync_between_waiters(tmp_path):
    log = RawLog(tmp_path, "tcp", 1 << 20)
    synced: list[int] = []
    real_sync = log.sync

    def counting_sync() -> None:
        synced.append(len(log._dirty))
        real_sync()

    commit = GroupCommit(counting_sync, window_s=0.05)

    async def device(n: int) -> None:
        log.append(f"esp8266-{n}", line(b"x"))
        await commit.durable()

    async def main() -> None:
        await asyncio.gather(*(device(n) for n in range(10)))
        await device(99)  # after the round: a round of its own

    asyncio.run(main())
    assert synced == [10, 1]
    commit.close()
    log.close()


def test_sync_failure_reaches_every_waiter(tmp_path):
    def failing_sync() -> None:
        raise OSError(28, os.strerror(28))

    commit = GroupCommit(failing_sync, window_s=0.01)

    async def main() -> list:
        return await asyncio.gather(commit.durable(), commit.durable(), return_exceptions=True)

    results = asyncio.run(main())
    assert all(isinstance(r, OSError) for r in results)
    commit.close()


def test_every_round_syncs_in_one_thread_of_its_own_until_closed():
    threads: list[threading.Thread] = []

    def sync() -> None:
        threads.append(threading.current_thread())

    commit = GroupCommit(sync, window_s=0.001)

    async def rounds() -> None:
        for _ in range(3):
            await commit.durable()

    asyncio.run(rounds())
    assert len(threads) == 3 and len(set(threads)) == 1
    assert threads[0] is not threading.main_thread() and threads[0].is_alive()
    commit.close()
    threads[0].join(5)
    assert not threads[0].is_alive()


def _spy_syncs(monkeypatch) -> list[tuple[str, int]]:
    """Record (kind, fd) of each fsync and syncfs the raw log makes (and make them)."""
    calls: list[tuple[str, int]] = []
    real_fsync, real_syncfs = os.fsync, rawlog._syncfs
    assert real_syncfs is not None  # Linux: the C library has syncfs

    def fsync(fd: int) -> None:
        calls.append(("fsync", fd))
        real_fsync(fd)

    def syncfs(fd: int) -> None:
        calls.append(("syncfs", fd))
        real_syncfs(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(rawlog, "_syncfs", syncfs)
    return calls


def test_a_sync_of_a_few_files_fsyncs_each(tmp_path, monkeypatch):
    log = RawLog(tmp_path, "ws", 1 << 20)
    count = rawlog.SYNCFS_OVER_FILES
    for n in range(count):
        log.append(f"dev-{n}", line(b"x"))
    calls = _spy_syncs(monkeypatch)
    log.sync()
    assert [kind for kind, _ in calls] == ["fsync"] * count
    assert len({fd for _, fd in calls}) == count
    log.sync()  # nothing appended since: nothing to make durable
    assert len(calls) == count


def test_a_sync_of_many_files_is_one_syncfs_of_their_filesystem(tmp_path, monkeypatch):
    log = RawLog(tmp_path, "ws", 1 << 20)
    for n in range(rawlog.SYNCFS_OVER_FILES + 1):
        log.append(f"dev-{n}", line(b"x"))
    calls = _spy_syncs(monkeypatch)
    log.sync()
    assert [kind for kind, _ in calls] == ["syncfs"]
    assert os.fstat(calls[0][1]).st_dev == os.stat(tmp_path / "ws").st_dev


def test_a_failed_syncfs_raises_as_fsync_does(tmp_path, monkeypatch):
    log = RawLog(tmp_path, "ws", 1 << 20)
    for n in range(rawlog.SYNCFS_OVER_FILES + 1):
        log.append(f"dev-{n}", line(b"x"))
    assert rawlog._syncfs is not None
    with pytest.raises(OSError):
        rawlog._syncfs(-1)  # the real call, on a bad descriptor: EBADF
    log.sync()  # the real syncfs: no error


def test_requests_waiting_for_a_sync_share_the_next_and_are_called_back_in_order():
    syncing, release = threading.Event(), threading.Event()
    syncs: list[int] = []

    def sync() -> None:
        syncs.append(len(syncs) + 1)
        if len(syncs) == 1:
            syncing.set()
            release.wait(5)  # a slow sync: three more requests queue meanwhile
        else:
            raise OSError(5, "Input/output error")

    commit = GroupCommit(sync, window_s=0.001)
    outcomes: list[object] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def then(n: int) -> Callable[[BaseException | None], None]:
            return lambda error: outcomes.append(
                (n, type(error).__name__ if error else None, asyncio.get_running_loop() is loop))

        commit.sync_then(then(0))
        assert await asyncio.to_thread(syncing.wait, 5)
        for n in (1, 2, 3):
            commit.sync_then(then(n))
        commit.sync_then(lambda error: done.set_result(None))
        release.set()
        await done

    asyncio.run(main())
    commit.close()
    assert syncs == [1, 2]
    assert outcomes == [(0, None, True), (1, "OSError", True), (2, "OSError", True),
                        (3, "OSError", True)]
