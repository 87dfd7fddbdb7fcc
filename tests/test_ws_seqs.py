"""A device's seq state as its raw log has it, read at its first hello, or as saved."""

from __future__ import annotations

import json

import pytest

from co2unit_server.records import ws_format
from co2unit_server.records.ws_format import WsLine
from co2unit_server.records.ws_seqs import (
    SAVED_FILE,
    SavedSeqs,
    SeqState,
    read_state,
    save,
    take_saved,
)


def line(seq: int, minute: int = 0, peer: str = "p", new_sequence: bool = False) -> bytes:
    """A raw log line whose message has two readings, the newer at 01:`minute`:30."""
    message = json.dumps({"type": "readings", "seq": seq, "readings": [
        {"ts": f"2026-12-06T01:{minute:02d}:30Z", "values": {"co2": float(seq)}},
        {"ts": f"2026-12-06T02:{minute:02d}:00+01:00", "values": {"co2": 1.0}}]})
    return WsLine("2026-12-06T03:00:00.000000", peer, None, seq, message, new_sequence).encode()


def test_the_state_passes_over_torn_and_edited_lines(tmp_path):
    device_dir = tmp_path / ws_format.FAMILY / "dev-1"
    device_dir.mkdir(parents=True)
    lines = [line(s, minute=s) for s in range(6)]
    empty = json.dumps({"type": "readings", "seq": 9, "readings": [
        {"ts": "2026-12-06T05:00:00Z", "values": {}}]})  # a time, but no value stored at it
    lines[4] = WsLine("2026-12-06T03:00:00.000000", "p", None, 4, empty).encode()
    (device_dir / "0000.log").write_bytes(lines[0] + lines[1] + b"edited\n")
    (device_dir / "0001.log").write_bytes(lines[2] + lines[3] + lines[4] + lines[5][:20])  # torn
    assert read_state(device_dir) == SeqState((0, 1, 2, 3, 4), "2026-12-06T01:03:30.000000", 0)
    assert read_state(device_dir, keep=2).seqs == (3, 4)
    assert read_state(tmp_path / ws_format.FAMILY / "nobody") == SeqState()


def test_the_state_is_the_current_sequence_and_its_latest_connection(tmp_path):
    device_dir = tmp_path / "dev-1"
    device_dir.mkdir()
    (device_dir / "0000.log").write_bytes(
        b"".join(line(s, minute=50, peer="a") for s in range(1, 9)))  # restarted after 8:
    (device_dir / "0001.log").write_bytes(
        line(1, minute=10, peer="b", new_sequence=True) + line(2, minute=11, peer="b")
        + line(3, minute=12, peer="c") + line(4, minute=12, peer="c"))
    # Only the new sequence's seqs and readings; the floor is what connection c sent first.
    assert read_state(device_dir) == SeqState((1, 2, 3, 4), "2026-12-06T01:12:30.000000", 3)


# --- saved at a clean shutdown


def test_saved_seqs_hold_while_the_log_is_as_it_was(tmp_path):
    device_dir = tmp_path / "dev-1"
    device_dir.mkdir()
    (device_dir / "0000.log").write_bytes(line(0) + line(1))
    (device_dir / "0001.log").write_bytes(line(2) + line(3))
    state = SeqState((0, 1, 2, 3), "2026-12-06T01:00:30.000000", 2)
    saved = SavedSeqs.of(device_dir, state)
    assert saved == SavedSeqs("0001.log", len(line(2) + line(3)), ((0, 3),),
                              "2026-12-06T01:00:30.000000", 2)
    assert saved.holds_for(device_dir) and saved.state() == state
    with open(device_dir / "0001.log", "ab") as f:  # appended since: the scan says
        f.write(line(4))
    assert not saved.holds_for(device_dir)
    saved = SavedSeqs.of(device_dir, SeqState((0, 1, 2, 3, 4)))
    (device_dir / "0002.log").write_bytes(b"")  # a new file since: the same
    assert not saved.holds_for(device_dir)
    assert SavedSeqs.of(tmp_path / "nobody", SeqState((1,))) is None


def test_saved_seqs_go_through_their_file_once(tmp_path):
    path = tmp_path / SAVED_FILE
    seqs = (5, 6, 7, 9, 10, 20)
    saved = {"dev-1": SavedSeqs("0003.log", 812, ((5, 7), (9, 10), (20, 20)),
                                "2026-12-06T01:00:30.000000", 9),
             "dev-2": SavedSeqs("0000.log", 0, ())}
    save(path, saved)
    assert json.loads(path.read_text())["devices"]["dev-1"]["seqs"] == [[5, 7], [9, 10],
                                                                       [20, 20]]
    taken = take_saved(path)
    assert taken == saved and taken["dev-1"].state() == SeqState(
        seqs, "2026-12-06T01:00:30.000000", 9)
    assert not path.exists()  # a crash from now on leaves nothing to trust
    assert take_saved(path) == {}


def entry(**fields: object) -> str:
    """A saved file of one device whose entry has `fields` instead of good ones."""
    good = {"log": "0000.log", "size": 1, "seqs": [[0, 3]], "newest": None, "floor": None}
    return json.dumps({"version": 2, "devices": {"d": {**good, **fields}}})


@pytest.mark.parametrize("text", [
    "{not json", '{"version": 1, "devices": {}}', '{"version": 2}',
    entry(seqs=[[3, 1]]), entry(seqs=[[0, 99999999]]), entry(size="1"),
    entry(seqs=[["a", 2]]), entry(newest=5), entry(floor="1"),
    json.dumps({"version": 2, "devices": {"d": {"log": "0000.log", "size": 1, "seqs": []}}})])
def test_an_unreadable_saved_file_is_logged_and_every_log_is_read(tmp_path, caplog, text):
    path = tmp_path / SAVED_FILE
    path.write_text(text)
    assert take_saved(path) == {}
    assert "unreadable" in caplog.text and "read from its raw log" in caplog.text
    assert not path.exists()
