"""A device's seqs as its raw log has them, read at its first hello."""

from __future__ import annotations

import json

from co2unit_server.gateways import ws_format
from co2unit_server.gateways.ws_format import WsLine
from co2unit_server.gateways.ws_seqs import stored_seqs


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
