"""A device's seqs as its raw log has them, read at its first hello."""

from __future__ import annotations

import json

import pytest

from co2unit_server.gateways import ws_format
from co2unit_server.gateways.ws_format import WsLine
from co2unit_server.gateways.ws_seqs import (
    SAVED_FILE,
    SavedSeqs,
    save,
    stored_seqs,
    take_saved,
)


def line(seq: int) -> bytes:
    message = json.dumps({"type": "readings", "seq": seq, "readings": [
        {"ts": "2026-12-06T01:00:00Z", "values": {"co2": float(seq)}}]})
    return WsLine("2026-12-06T01:00:00.000000", "p", None, seq, message).encode()


def test_the_stored_seqs_pass_over_torn_and_edited_lines(tmp_path):
    device_dir = tmp_path / ws_format.FAMILY / "dev-1"
    device_dir.mkdir(parents=True)
    lines = [line(s) for s in range(6)]
    (device_dir / "0000.log").write_bytes(lines[0] + lines[1] + b"edited\n")
    (device_dir / "0001.log").write_bytes(lines[2] + lines[3] + lines[4] + lines[5][:20])  # torn
    assert stored_seqs(device_dir) == [0, 1, 2, 3, 4]
    assert stored_seqs(device_dir, keep=2) == [3, 4]
    assert stored_seqs(tmp_path / ws_format.FAMILY / "nobody") == []


# --- saved at a clean shutdown


def test_saved_seqs_hold_while_the_log_is_as_it_was(tmp_path):
    device_dir = tmp_path / "dev-1"
    device_dir.mkdir()
    (device_dir / "0000.log").write_bytes(line(0) + line(1))
    (device_dir / "0001.log").write_bytes(line(2) + line(3))
    saved = SavedSeqs.of(device_dir, [0, 1, 2, 3])
    assert saved == SavedSeqs("0001.log", len(line(2) + line(3)), ((0, 3),))
    assert saved.holds_for(device_dir) and saved.seqs() == [0, 1, 2, 3]
    with open(device_dir / "0001.log", "ab") as f:  # appended since: the scan says
        f.write(line(4))
    assert not saved.holds_for(device_dir)
    saved = SavedSeqs.of(device_dir, [0, 1, 2, 3, 4])
    (device_dir / "0002.log").write_bytes(b"")  # a new file since: the same
    assert not saved.holds_for(device_dir)
    assert SavedSeqs.of(tmp_path / "nobody", [1]) is None


def test_saved_seqs_go_through_their_file_once(tmp_path):
    path = tmp_path / SAVED_FILE
    seqs = [5, 6, 7, 9, 10, 20]
    saved = {"dev-1": SavedSeqs("0003.log", 812, ((5, 7), (9, 10), (20, 20))),
             "dev-2": SavedSeqs("0000.log", 0, ())}
    save(path, saved)
    assert json.loads(path.read_text())["devices"]["dev-1"]["seqs"] == [[5, 7], [9, 10],
                                                                       [20, 20]]
    taken = take_saved(path)
    assert taken == saved and taken["dev-1"].seqs() == seqs
    assert not path.exists()  # a crash from now on leaves nothing to trust
    assert take_saved(path) == {}


@pytest.mark.parametrize("text", [
    "{not json", '{"version": 2, "devices": {}}', '{"version": 1}',
    '{"version": 1, "devices": {"d": {"log": "0000.log", "size": 1, "seqs": [[3, 1]]}}}',
    '{"version": 1, "devices": {"d": {"log": "0000.log", "size": 1, "seqs": [[0, 99999999]]}}}',
    '{"version": 1, "devices": {"d": {"log": "0000.log", "size": "1", "seqs": []}}}',
    '{"version": 1, "devices": {"d": {"log": "0000.log", "size": 1, "seqs": [["a", 2]]}}}'])
def test_an_unreadable_saved_file_is_logged_and_every_log_is_read(tmp_path, caplog, text):
    path = tmp_path / SAVED_FILE
    path.write_text(text)
    assert take_saved(path) == {}
    assert "unreadable" in caplog.text and "read from its raw log" in caplog.text
    assert not path.exists()
