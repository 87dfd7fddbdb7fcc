"""Storage of pushed files: resume, duplicates, gaps, new SD cards, limits, locking."""

from __future__ import annotations

import errno
import multiprocessing
import os
from pathlib import Path

import pytest

from co2unit_server.core.errors import ApiError, ErrorCode
from co2unit_server.records.pushstore import Ack, PushStore

from conftest import HW_ID

READINGS = ["data", "readings"]


def make_store(tmp_path: Path, **kw) -> PushStore:
    options = {"push_dirs": ("data", "errors"), "max_file_bytes": 1 << 20, "min_free_bytes": 0}
    options.update(kw)
    return PushStore(tmp_path / "remote_data", tmp_path / "var" / "locks", **options)


def stored(tmp_path: Path, *parts: str) -> bytes:
    return (tmp_path / "remote_data" / HW_ID).joinpath(*parts).read_bytes()


def push(store: PushStore, name: str, offset: int, data: bytes, dirs=READINGS) -> Ack:
    return store.push(HW_ID, [*dirs, name], offset, data)


def test_chunks_append_in_order_and_ack_names_last_file(tmp_path):
    store = make_store(tmp_path)
    assert push(store, "readings-0000.tsv", 0, b"a" * 4096) == Ack("readings-0000.tsv", 4096)
    assert push(store, "readings-0000.tsv", 4096, b"b" * 10) == Ack("readings-0000.tsv", 4106)
    assert push(store, "readings-0001.tsv", 0, b"c") == Ack("readings-0001.tsv", 1)
    assert stored(tmp_path, "data", "readings", "readings-0000.tsv") == b"a" * 4096 + b"b" * 10


def test_resent_chunk_changes_nothing(tmp_path):
    store = make_store(tmp_path)
    push(store, "r-0000.tsv", 0, b"x" * 100)
    path = tmp_path / "remote_data" / HW_ID / "data" / "readings" / "r-0000.tsv"
    mtime = path.stat().st_mtime_ns
    assert push(store, "r-0000.tsv", 0, b"x" * 100) == Ack("r-0000.tsv", 100)
    assert path.read_bytes() == b"x" * 100
    assert path.stat().st_mtime_ns == mtime


def test_overlapping_chunk_appends_only_the_new_tail(tmp_path):
    store = make_store(tmp_path)
    push(store, "r-0000.tsv", 0, b"0123456789")
    assert push(store, "r-0000.tsv", 5, b"56789abc") == Ack("r-0000.tsv", 13)
    assert stored(tmp_path, "data", "readings", "r-0000.tsv") == b"0123456789abc"


def test_unit_with_lost_state_is_told_to_jump_to_the_last_file(tmp_path):
    store = make_store(tmp_path)
    push(store, "r-0000.tsv", 0, b"first")
    push(store, "r-0001.tsv", 0, b"second file")
    # The unit forgot everything and starts again at its first file, offset 0.
    assert push(store, "r-0000.tsv", 0, b"first") == Ack("r-0001.tsv", 11)


def test_offset_past_end_is_416_with_the_servers_position_and_no_gap(tmp_path):
    store = make_store(tmp_path)
    push(store, "r-0000.tsv", 0, b"12345")
    for offset in (6, 100):  # one byte past the end was zero-filled by the reference server
        with pytest.raises(ApiError) as err:
            push(store, "r-0000.tsv", offset, b"zz")
        assert err.value.code is ErrorCode.SKIPPED_PART_OF_FILE
        assert err.value.status == 416
        assert err.value.body()["ack_file"] == ["r-0000.tsv", 5, 5]
    assert stored(tmp_path, "data", "readings", "r-0000.tsv") == b"12345"


def test_offset_past_end_of_an_earlier_file_is_also_checked(tmp_path):
    store = make_store(tmp_path)
    push(store, "r-0000.tsv", 0, b"12345")
    push(store, "r-0001.tsv", 0, b"later")
    with pytest.raises(ApiError) as err:
        push(store, "r-0000.tsv", 9, b"zz")
    assert err.value.body()["ack_file"] == ["r-0000.tsv", 5, 5]


def test_missing_file_with_nonzero_offset_is_416_from_zero(tmp_path):
    store = make_store(tmp_path)
    with pytest.raises(ApiError) as err:
        push(store, "r-0003.tsv", 4096, b"zz")
    assert err.value.body()["ack_file"] == ["r-0003.tsv", 0, 0]
    assert not (tmp_path / "remote_data" / HW_ID / "data").exists()


def test_missing_files_are_resent_from_the_last_stored_file(tmp_path):
    store = make_store(tmp_path)
    push(store, "r-0000.tsv", 0, b"0" * 10)
    # r-0001 and r-0002 were lost on the server (restored from an old backup, say).
    with pytest.raises(ApiError) as err:
        push(store, "r-0002.tsv", 10, b"more")
    assert err.value.body()["ack_file"] == ["r-0000.tsv", 10, 10]


def test_new_sd_card_moves_the_old_directory_aside_intact(tmp_path):
    store = make_store(tmp_path)
    push(store, "r-0000.tsv", 0, b"old card 0")
    push(store, "r-0001.tsv", 0, b"old card 1")
    push(store, "r-0002.tsv", 0, b"old card 2")
    # A new card starts its own sequence from r-0000 with different bytes.
    ack = push(store, "r-0000.tsv", 0, b"new card 0")
    assert ack == Ack("r-0000.tsv", 10)  # not the stale r-0002 of the old card
    current = tmp_path / "remote_data" / HW_ID / "data" / "readings"
    assert sorted(p.name for p in current.iterdir()) == ["r-0000.tsv"]
    assert current.joinpath("r-0000.tsv").read_bytes() == b"new card 0"
    moved = list((tmp_path / "remote_data" / HW_ID / "superseded").glob("*/data/readings"))
    assert len(moved) == 1
    assert {p.name: p.read_bytes() for p in moved[0].iterdir()} == {
        "r-0000.tsv": b"old card 0", "r-0001.tsv": b"old card 1", "r-0002.tsv": b"old card 2"}


def test_differing_bytes_at_nonzero_offset_supersede_then_ask_from_zero(tmp_path):
    store = make_store(tmp_path)
    push(store, "r-0000.tsv", 0, b"0123456789")
    with pytest.raises(ApiError) as err:
        push(store, "r-0000.tsv", 4, b"XXXX")
    assert err.value.body()["ack_file"] == ["r-0000.tsv", 0, 0]
    moved = list((tmp_path / "remote_data" / HW_ID / "superseded").glob("*/data/readings/*"))
    assert [p.read_bytes() for p in moved] == [b"0123456789"]


def test_only_configured_directories_can_be_pushed(tmp_path):
    store = make_store(tmp_path)
    for dirs in (["updates", "update-x"], ["conf"], ["superseded"], []):
        with pytest.raises(ApiError) as err:
            push(store, "f.json", 0, b"{}", dirs=dirs)
        assert err.value.code is ErrorCode.FORBIDDEN_DIR
    assert push(store, "errors-0000.txt", 0, b"e", dirs=["errors"]) == Ack("errors-0000.txt", 1)
    assert not (tmp_path / "remote_data" / HW_ID / "updates").exists()


def test_file_size_limit_is_413_and_writes_nothing(tmp_path):
    store = make_store(tmp_path, max_file_bytes=10)
    push(store, "r-0000.tsv", 0, b"12345678")
    with pytest.raises(ApiError) as err:
        push(store, "r-0000.tsv", 8, b"abc")
    assert err.value.code is ErrorCode.FILE_TOO_LARGE and err.value.status == 413
    assert stored(tmp_path, "data", "readings", "r-0000.tsv") == b"12345678"


def test_free_space_floor_is_507_and_writes_nothing(tmp_path):
    store = make_store(tmp_path, min_free_bytes=1 << 62)
    with pytest.raises(ApiError) as err:
        push(store, "r-0000.tsv", 0, b"data")
    assert err.value.code is ErrorCode.INSUFFICIENT_STORAGE and err.value.status == 507
    assert not (tmp_path / "remote_data" / HW_ID / "data" / "readings" / "r-0000.tsv").exists()


def test_disk_full_during_write_leaves_the_accepted_bytes_only(tmp_path, monkeypatch):
    store = make_store(tmp_path)
    push(store, "r-0000.tsv", 0, b"accepted")
    real_pwrite = os.pwrite

    def pwrite_then_fill_disk(fd, data, offset):
        real_pwrite(fd, bytes(data[:3]), offset)  # a partial write, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", pwrite_then_fill_disk)
    with pytest.raises(ApiError) as err:
        push(store, "r-0000.tsv", 8, b"more bytes")
    assert err.value.status == 507
    with pytest.raises(ApiError):
        push(store, "r-0001.tsv", 0, b"new file")
    monkeypatch.undo()
    assert stored(tmp_path, "data", "readings", "r-0000.tsv") == b"accepted"
    assert not (tmp_path / "remote_data" / HW_ID / "data" / "readings" / "r-0001.tsv").exists()


def test_path_colliding_with_a_directory_is_refused(tmp_path):
    store = make_store(tmp_path)
    push(store, "r-0000.tsv", 0, b"x", dirs=["data", "readings", "sub"])
    with pytest.raises(ApiError) as err:
        push(store, "sub", 0, b"x")
    assert err.value.code is ErrorCode.BAD_PATH
    with pytest.raises(ApiError) as err:
        push(store, "f", 0, b"x", dirs=["data", "readings", "sub", "r-0000.tsv"])
    assert err.value.code is ErrorCode.BAD_PATH


def _push_many(tmp_path: Path, data: bytes, barrier, results) -> None:
    store = make_store(tmp_path)
    barrier.wait()
    results.put([push(store, "r-0000.tsv", offset, data[offset:offset + 512]).size
                 for offset in range(0, len(data), 512)])


def test_two_processes_pushing_the_same_file_serialise(tmp_path):
    data = bytes(range(256)) * 64  # 16 KB
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_push_many, args=(tmp_path, data, barrier, results))
             for _ in range(2)]
    for proc in procs:
        proc.start()
    sizes = [results.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    assert stored(tmp_path, "data", "readings", "r-0000.tsv") == data
    for acked in sizes:
        assert acked == sorted(acked) and acked[-1] == len(data)
    assert not list((tmp_path / "remote_data" / HW_ID).glob("superseded"))


def _push_one(tmp_path: Path, results) -> None:
    results.put(push(make_store(tmp_path), "r-0000.tsv", 0, b"waited").size)


def test_a_push_waits_while_another_holds_the_directory_lock(tmp_path):
    store = make_store(tmp_path)
    # spawn, not fork: a forked child would inherit the held lock and wait for itself.
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    with store._locked(HW_ID, READINGS):
        proc = ctx.Process(target=_push_one, args=(tmp_path, results))
        proc.start()
        proc.join(timeout=1.0)
        assert proc.is_alive(), "the push went ahead while the directory was locked"
        assert not (tmp_path / "remote_data" / HW_ID / "data").exists()
    assert results.get(timeout=30) == 6
    proc.join(timeout=30)


def test_data_and_new_directory_entries_are_fsynced_before_the_ack(tmp_path, monkeypatch):
    store = make_store(tmp_path)
    events: list[tuple[str, str]] = []
    real_fsync, real_fdatasync, real_pwrite = os.fsync, os.fdatasync, os.pwrite

    def spy(real):
        def sync(fd):
            events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
            return real(fd)
        return sync

    def spy_pwrite(fd, data, offset):
        events.append(("pwrite", os.readlink(f"/proc/self/fd/{fd}")))
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "fsync", spy(real_fsync))
    monkeypatch.setattr(os, "fdatasync", spy(real_fdatasync))
    monkeypatch.setattr(os, "pwrite", spy_pwrite)
    push(store, "r-0000.tsv", 0, b"first chunk")
    readings = tmp_path / "remote_data" / HW_ID / "data" / "readings"
    file_path = str(readings / "r-0000.tsv")
    last_write = max(i for i, e in enumerate(events) if e == ("pwrite", file_path))
    assert ("fsync", file_path) in events[last_write:]
    # Every new directory entry, from the file's up to the unit's directory in remote_data.
    for directory in (readings, readings.parent, readings.parent.parent, store.root):
        assert ("fsync", str(directory)) in events
    events.clear()
    push(store, "r-0000.tsv", 11, b"second")
    assert events == [("pwrite", file_path), ("fsync", file_path)]
