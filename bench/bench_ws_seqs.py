"""What a streaming device's first hello after a restart costs: its seq state read from its raw
log, or taken from what the gateway saved at its last clean stop (records/ws_seqs.py).

    .venv/bin/python bench/bench_ws_seqs.py [--devices 100] [--lines 12000] [--files 4]

Writes the devices' raw logs (each line as the gateway writes it) in a temp dir, then times,
per device, the scan (read_state) and the saved path (holds_for and state()), and checks that
both give the same state. Prints the figures and their ratio.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from co2unit_server.records.ws_format import WsLine
from co2unit_server.records.ws_seqs import SavedSeqs, read_state


def write_logs(device_dir: Path, lines: int, files: int) -> None:
    device_dir.mkdir(parents=True)
    per_file = -(-lines // files)
    for seq in range(lines):
        message = json.dumps({"type": "readings", "seq": seq, "readings": [
            {"ts": "2026-12-06T01:00:00.123456Z",
             "values": {"co2": 415.5, "temp": 21.5, "rh": 40.0}}]})
        line = WsLine("2026-12-06T01:00:00.123456", "127.0.0.1:50000", None, seq, message)
        with open(device_dir / f"{seq // per_file:04d}.log", "ab") as f:
            f.write(line.encode())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=100)
    p.add_argument("--lines", type=int, default=12_000, help="raw log lines per device")
    p.add_argument("--files", type=int, default=4, help="raw log files per device")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        dirs = [Path(tmp) / f"dev-{n:04d}" for n in range(args.devices)]
        for device_dir in dirs:
            write_logs(device_dir, args.lines, args.files)
        started = time.perf_counter()
        scanned = [read_state(device_dir) for device_dir in dirs]
        scan_s = time.perf_counter() - started
        saved = [SavedSeqs.of(device_dir, state) for device_dir, state in zip(dirs, scanned,
                                                                           strict=True)]
        started = time.perf_counter()
        taken = [s.state() for s, device_dir in zip(saved, dirs, strict=True)
                 if s is not None and s.holds_for(device_dir)]
        saved_s = time.perf_counter() - started
    assert taken == scanned, "the saved state differs from the scan's"
    per = 1000 / args.devices
    print(f"{args.devices} devices, {args.lines} lines in {args.files} files each, "
          f"{len(scanned[0].seqs)} seqs kept per device")
    print(f"read from the raw log:      {scan_s * per:8.2f} ms per device")
    print(f"saved at the last stop:     {saved_s * per:8.2f} ms per device")
    fleet = 1000 / args.devices  # the whole run scaled to 1,000 devices, in seconds
    print(f"saved / read: {saved_s / scan_s:.4f}x ({scan_s / saved_s:.0f} times faster); "
          f"a fleet of 1,000 such devices: {scan_s * fleet:.1f} s -> {saved_s * fleet:.2f} s")


if __name__ == "__main__":
    main()
