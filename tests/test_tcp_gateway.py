"""The TCP gateway as the weather stations meet it: the real process, raw sockets, loopback."""

from __future__ import annotations

import re
import socket
import struct
import subprocess
import sys
import time

from gateway_fixtures import EXAMPLE, S, packet, query, records, wait_for

from co2unit_server.records import tcp_format
from co2unit_server.records.rawlog import RawLine, log_files, read_lines_of, ts_text, ts_us
from co2unit_server.simulator import tcp_devices
from co2unit_server.simulator.launcher import GatewayProcess


def connect(gateway: GatewayProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", gateway.tcp_port), timeout=20)


def send(gateway: GatewayProcess, data: bytes, pieces: bool = False) -> None:
    """Write as a device does and close; return once the gateway closed too (it has the
    packet in its raw log then)."""
    with connect(gateway) as s:
        if pieces:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for i in range(len(data)):
                s.sendall(data[i:i + 1])
                time.sleep(0.002)
        else:
            s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        assert s.recv(1) == b""  # the gateway sends nothing, it only closes


def lines(gateway: GatewayProcess, device: str = "esp8266-1") -> list[RawLine]:
    device_dir = gateway.remote_data / "tcp" / device
    found = [line for path in log_files(device_dir) for _, line in read_lines_of(path)]
    assert None not in found
    return found


def values(gateway: GatewayProcess, device: str = "esp8266-1") -> list[tuple[str, str, float]]:
    """The device's (ts, name, value) rows, once every line of its raw log has its receipt
    (written in one transaction with the line's values: nothing more is to come)."""
    def stored() -> bool:
        done = query(gateway, "SELECT count(*) FROM gateway_receipts WHERE device = ?", device)
        return bool(done) and done[0][0] >= len(lines(gateway, device))
    assert wait_for(stored), "the receipts did not arrive"
    return query(gateway, "SELECT ts, name, value FROM measurements WHERE device = ? "
                 "ORDER BY ts, name", device)


def measurement_count(gateway: GatewayProcess) -> int:
    return (query(gateway, "SELECT count(*) FROM measurements") or [(0,)])[0][0]


def receipts(gateway: GatewayProcess, device: str = "esp8266-1") -> list[tuple]:
    return query(gateway, "SELECT source, verdict, stored, detail FROM gateway_receipts "
                 "WHERE device = ? ORDER BY source", device)


def lights(rows: list[tuple[str, str, float]]) -> list[float]:
    return [value for _, name, value in rows if name == "light"]


def test_the_example_packet_gives_its_six_values(gateway_factory):
    gateway = gateway_factory(tcp=True)
    send(gateway, EXAMPLE)
    [line] = lines(gateway)
    assert (line.end, line.verdict, line.detail, line.payload) == ("eof", "ok", "", EXAMPLE)
    assert line.peer.startswith("127.0.0.1:")
    t = ts_us(line.ts)
    assert [(ts, name, round(value, 3)) for ts, name, value in values(gateway)] == [
        (ts_text(t - 240 * S), "humidity", 54.997),
        (ts_text(t - 240 * S), "light", 1234.0),
        (ts_text(t - 240 * S), "temperature", 21.501),
        (ts_text(t - 120 * S), "humidity", 55.096),
        (ts_text(t - 120 * S), "light", 1244.0),
        (ts_text(t - 120 * S), "temperature", 21.544),
    ]
    assert receipts(gateway) == [("tcp/esp8266-1/0000.log:1", "ok", 6, None)]


def test_a_packet_in_one_byte_pieces_parses_whole(gateway_factory):
    gateway = gateway_factory(tcp=True)
    whole = packet(records(100, 5))
    send(gateway, whole, pieces=True)
    assert [(line.verdict, line.payload) for line in lines(gateway)] == [("ok", whole)]
    assert lights(values(gateway)) == [100.0, 101.0, 102.0, 103.0, 104.0]


def test_malformed_packets_are_kept_bad_and_the_gateway_serves_on(gateway_factory):
    gateway = gateway_factory(tcp=True)
    malformed = [
        (EXAMPLE[:-4], "17 bytes, but the header announces 9 + bytesReady 12"),
        (EXAMPLE + b"\0\0", "23 bytes, but the header announces 9 + bytesReady 12"),
        (packet([b"\1" * 8], record_bytes=4),
         "4-byte records, but device type 1 (tsl2561-si7021) has 6"),
        (packet([b"\1" * 7]), "bytesReady 7 is not a whole number of 6-byte records"),
        (EXAMPLE[:8], "8 bytes: shorter than the 9-byte header"),
    ]
    for bad, _ in malformed:
        send(gateway, bad)
    for length in range(8):  # too short to name a device; 0 bytes: not even a line
        send(gateway, EXAMPLE[:length])
    send(gateway, EXAMPLE)  # the gateway lives on
    logged = lines(gateway)
    assert [(line.payload, line.detail) for line in logged[:-1]] == malformed
    assert all(line.verdict == "bad" and line.end == "eof" for line in logged[:-1])
    assert logged[-1].verdict == "ok"
    short = lines(gateway, tcp_format.UNIDENTIFIED)
    assert [line.payload for line in short] == [EXAMPLE[:n] for n in range(1, 8)]
    assert all(line.verdict == "bad" for line in short)
    assert len(values(gateway)) == 6  # the good packet's only
    assert [(verdict, stored) for _, verdict, stored, _ in receipts(gateway)] == \
        [("bad", 0)] * 5 + [("ok", 6)]
    assert measurement_count(gateway) == 6
    log = gateway.log_text()
    assert "bad packet from esp8266-1 at 127.0.0.1:" in log
    assert "bytesReady 7 is not a whole number" in log
    assert "Traceback" not in log


def test_an_unknown_device_id_is_kept_raw_with_a_receipt(gateway_factory):
    gateway = gateway_factory(tcp=True)
    unknown = packet(records(1, 4), device_id=42)
    send(gateway, unknown)
    [line] = lines(gateway, "esp8266-42")
    assert (line.verdict, line.payload) == ("unknown", unknown)
    assert "no record format for deviceID 42" in line.detail
    [receipt] = wait_for(lambda: receipts(gateway, "esp8266-42"))
    assert receipt[:3] == ("tcp/esp8266-42/0000.log:1", "unknown", 0)
    assert measurement_count(gateway) == 0
    assert "unknown packet from esp8266-42" in gateway.log_text()


def test_a_resend_after_a_short_write_stores_every_record_once(gateway_factory):
    gateway = gateway_factory(tcp=True)
    send(gateway, packet(records(1, 3)))
    held = records(10, 3)
    send(gateway, packet(held)[:20])  # the write came back short: the device keeps them
    send(gateway, packet(held + records(13, 3)))
    assert [line.verdict for line in lines(gateway)] == ["ok", "bad", "ok"]
    assert sorted(lights(values(gateway))) == \
        [1.0, 2.0, 3.0] + [float(n) for n in range(10, 16)]


def spread_times(first: RawLine, second: RawLine, count: int) -> list[str]:
    """The times docs/gateways.md gives `count` new records when the previous packet was on time."""
    t, t_prev = ts_us(second.ts), ts_us(first.ts)
    step = (t - t_prev) // count
    return [ts_text(t - (count - i) * step) for i in range(count)]


def light_times(rows: list[tuple[str, str, float]], first: int, count: int) -> list[str]:
    """The times of the records whose light is first, first + 1, ..."""
    times = {value: ts for ts, name, value in rows if name == "light"}
    return [times[float(first + i)] for i in range(count)]


def wait_until(t_us: int) -> None:
    time.sleep(max(0.0, (t_us - time.time_ns() // 1000) / S))


def period_us(wake: int, every: int) -> int:
    """The station's time between wakes, as its header makes it (the gateway's rule)."""
    return tcp_format.wake_period_us(tcp_format.check(packet([], wake, every), {}))


def send_a_wake_later(gateway: GatewayProcess, data: bytes, wake: int, every: int,
                      wakes: int = 1) -> None:
    """Send when the station would: `wakes` wake periods after its previous packet."""
    wait_until(ts_us(lines(gateway)[-1].ts) + wakes * period_us(wake, every))
    send(gateway, data)


def test_a_resend_of_a_packet_received_whole_is_not_stored_twice(gateway_factory):
    gateway = gateway_factory(tcp=True)
    first = records(1, 3)  # one record a wake (wake = every = 1 s)
    send(gateway, packet(first, wake=1, every=1))  # received whole, but its `A` was lost
    send_a_wake_later(gateway, packet(first + records(4, 1), wake=1, every=1), 1, 1)
    send_a_wake_later(gateway, packet(first + records(4, 2), wake=1, every=1), 1, 1)
    rows = values(gateway)
    assert sorted(lights(rows)) == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert [stored for _, _, stored, _ in receipts(gateway)] == [9, 3, 3]
    assert lines(gateway)[2].detail == \
        "resent: its first 4 records repeat the previous packet (1 wake since it)"


def test_a_full_buffer_resend_stores_the_records_measured_since(gateway_factory):
    gateway = gateway_factory(tcp=True)
    full = records(1, 58)
    send(gateway, packet(full, wake=2, every=1))
    # Two records later the ATtiny shifted the oldest two out; the packet is still 58.
    send_a_wake_later(gateway, packet(full[2:] + records(59, 2), wake=2, every=1), 2, 1)
    # Its `A` lost again, then two wakes without a connection: 6 records more, 6 shifted out.
    send_a_wake_later(gateway, packet(full[8:] + records(59, 8), wake=2, every=1), 2, 1, 3)
    assert sorted(lights(values(gateway))) == [float(n) for n in range(1, 67)]
    assert [stored for _, _, stored, _ in receipts(gateway)] == [174, 6, 18]


NIGHT = struct.pack("<HHH", 0, 0xFFFC, 0xFFFC)  # dark, and the SI7021 failed (0xFFFC codes)


def test_equal_packets_a_wake_apart_are_all_stored(gateway_factory):
    """A failed SI7021 on a dark night: every record is 00 00 fc ff fc ff, wake after wake."""
    gateway = gateway_factory(tcp=True)
    night = [NIGHT] * 2  # two records a wake
    send(gateway, packet(night, wake=2, every=1))
    send_a_wake_later(gateway, packet(night, wake=2, every=1), 2, 1)  # the same bytes, new
    send_a_wake_later(gateway, packet(night * 2, wake=2, every=1), 2, 1)  # `A` lost: 2 old
    send(gateway, packet(night * 2, wake=2, every=1))  # the ESP8266 ran twice in that wake
    rows = values(gateway)
    assert [stored for _, _, stored, _ in receipts(gateway)] == [6, 6, 6, 0]
    assert len(rows) == 18 and len({ts for ts, _, _ in rows}) == 6
    assert lines(gateway)[3].detail == \
        "sent again in the same wake: its 4 records repeat the previous packet"


def test_records_spread_over_the_time_since_an_on_time_previous_packet(gateway_factory):
    gateway = gateway_factory(tcp=True)
    send(gateway, packet(records(1, 2), wake=3, every=1))
    send(gateway, packet(records(3, 3), wake=3, every=1))  # far too early: every second
    early = lines(gateway)[-1]
    t_early = ts_us(early.ts)
    assert light_times(values(gateway), 3, 3) == \
        [ts_text(t_early - (3 - i) * S) for i in range(3)]
    wait_until(t_early + 3 * S)  # on time: within a third of the 3 s wake
    send(gateway, packet(records(6, 4), wake=3, every=1))
    on_time = lines(gateway)[-1]
    assert 2 * S < ts_us(on_time.ts) - t_early < 4 * S
    assert light_times(values(gateway), 6, 4) == spread_times(early, on_time, 4)


def test_the_history_survives_a_restart(gateway_factory, tmp_path):
    settings = {"raw_log_rotate_bytes": "100"}  # the history is in an older log file
    gateway = gateway_factory(settings, tcp=True, base=tmp_path)
    first = records(1, 3)  # three records a wake, one wake every 6.6 s
    send(gateway, packet(first, wake=6, every=2))
    send(gateway, packet(records(50, 1), wake=3, every=1, device_id=2))  # another device
    previous = lines(gateway)[-1]
    assert gateway.stop() == 0
    restarted = gateway_factory(settings, tcp=True, base=tmp_path)
    # A resend, one wake later.
    send_a_wake_later(restarted, packet(first + records(4, 3), wake=6, every=2), 6, 2)
    latest = lines(restarted)[-1]
    assert len(log_files(restarted.remote_data / "tcp" / "esp8266-1")) == 2
    assert latest.detail == "resent: its first 3 records repeat the previous packet " \
        "(1 wake since it)"
    rows = values(restarted)
    assert sorted(lights(rows)) == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert light_times(rows, 4, 3) == spread_times(previous, latest, 3)


def test_a_packet_read_to_its_end_survives_kill_9(gateway_factory):
    gateway = gateway_factory({"raw_log_sync_ms": "60000"}, tcp=True)  # no fsync in time
    send(gateway, EXAMPLE)  # returns once the gateway closed: after its append
    gateway.kill()
    assert [line.payload for line in lines(gateway)] == [EXAMPLE]


def test_an_oversize_packet_is_cut_kept_bad_and_closed(gateway_factory):
    gateway = gateway_factory({"tcp_max_packet_bytes": "30"}, tcp=True)
    oversize = packet(records(1, 10))
    with connect(gateway) as s:
        s.sendall(oversize)
        # The gateway cuts it: no EOF needed (a reset, as unread bytes were left, is fine).
        with _closed():
            assert s.recv(1) == b""
    send(gateway, EXAMPLE)
    cut, good = lines(gateway)
    assert (cut.end, cut.verdict, cut.payload) == ("too-large", "bad", oversize[:30])
    assert "longer than tcp_max_packet_bytes" in cut.detail
    assert good.verdict == "ok"
    assert len(values(gateway)) == 6


class _closed:
    """A connection the gateway closed: EOF, or a reset when it left bytes unread."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, tb) -> bool:
        return kind is ConnectionResetError


def test_a_device_that_never_closes_times_out_and_the_gateway_lives(gateway_factory):
    gateway = gateway_factory({"tcp_read_timeout_seconds": "0.5"}, tcp=True)
    whole = packet(records(7, 2))
    stalled, unclosed = connect(gateway), connect(gateway)
    with stalled, unclosed:
        stalled.sendall(EXAMPLE[:15])
        unclosed.sendall(whole)  # whole, but its FIN never comes
        send(gateway, packet(records(1, 1)))  # served meanwhile
        for s in (stalled, unclosed):
            with _closed():
                assert s.recv(1) == b""  # closed by the gateway at its timeout
    logged = {line.payload: line for line in lines(gateway)}
    cut = logged[EXAMPLE[:15]]
    assert (cut.end, cut.verdict) == ("timeout", "bad")
    assert cut.detail == "the device did not close the connection in time; 15 bytes, but " \
                         "the header announces 9 + bytesReady 12"
    # The device took its write for done and deleted the records: they are kept.
    assert (logged[whole].end, logged[whole].verdict) == ("timeout", "ok")
    assert sorted(lights(values(gateway))) == [1.0, 7.0, 8.0]
    send(gateway, EXAMPLE)
    assert lines(gateway)[-1].verdict == "ok"


def test_a_reset_after_the_write_keeps_a_whole_packet(gateway_factory):
    gateway = gateway_factory(tcp=True)
    whole, cut = packet(records(20, 2)), EXAMPLE[:12]
    for n, data in enumerate((whole, cut)):
        with connect(gateway) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.sendall(data)
            # A packet after it, kept: by then the gateway has read these bytes.
            send(gateway, packet(records(n, 1), device_id=2))
        # closed with a reset, no FIN
    assert wait_for(lambda: len(lines(gateway)) == 2)
    logged = {line.payload: line for line in lines(gateway)}
    assert (logged[whole].end, logged[whole].verdict) == ("reset", "ok")
    assert (logged[cut].end, logged[cut].verdict) == ("reset", "bad")
    assert logged[cut].detail.startswith("the connection was reset; 12 bytes")
    assert sorted(lights(values(gateway))) == [20.0, 21.0]


def test_a_stop_keeps_what_connections_in_flight_sent(gateway_factory):
    gateway = gateway_factory(tcp=True)
    with connect(gateway) as stalled:
        stalled.sendall(EXAMPLE)  # whole, but not closed when the gateway stops
        # A packet after it, kept: by then the gateway has read the stalled one's bytes.
        send(gateway, packet(records(1, 1), device_id=2))
        assert gateway.stop() == 0
    [line] = lines(gateway)
    assert (line.end, line.verdict, line.payload) == ("timeout", "ok", EXAMPLE)
    assert len(values(gateway)) == 6  # stored before the process exited


def test_many_concurrent_connections_are_all_stored(gateway_factory):
    devices = range(1, 41)
    types = ",".join(f"{i}=tsl2561-si7021" for i in devices)
    gateway = gateway_factory({"tcp_device_types": types}, tcp=True)
    packets = [packet(records(1000 * i + 10 * k, 5), device_id=i)
               for i in devices for k in range(5)]
    sockets = [connect(gateway) for _ in packets]  # all open at once
    for s, data in zip(sockets, packets, strict=True):
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
    for s in sockets:
        assert s.recv(1) == b""
        s.close()
    expected = len(packets) * 5 * 3
    assert wait_for(lambda: measurement_count(gateway) == expected), measurement_count(gateway)
    assert query(gateway, "SELECT count(*) FROM gateway_receipts WHERE verdict = 'ok'") == \
        [(len(packets),)]


def refused(gateway: GatewayProcess) -> bool:
    """Whether a station's connect fails now (what keeps its records on the device)."""
    try:
        socket.create_connection(("127.0.0.1", gateway.tcp_port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def test_a_full_disk_refuses_connects_until_there_is_room(gateway_factory, small_fs):
    disk = small_fs(8 << 20)
    gateway = gateway_factory({"min_free_bytes": str(2 << 20)}, tcp=True, base=disk.path)
    send(gateway, packet(records(1, 2)))
    disk.fill(leave=1 << 20)  # below the floor: a packet would still fit, but is not taken
    assert wait_for(lambda: refused(gateway), timeout=5), "still accepting on a full disk"
    time.sleep(1.5)
    assert refused(gateway)  # refused, not accepted and closed: the station keeps its records
    disk.empty()
    assert wait_for(lambda: not refused(gateway), timeout=5), "not accepting after recovery"
    send(gateway, packet(records(3, 2), every=120))
    assert sorted(lights(values(gateway))) == [1, 2, 3, 4]  # nothing lost, nothing twice
    log = gateway.log_text()
    assert log.count("tcp gateway: storage full") == 1, log
    assert log.count("tcp gateway: storage recovered") == 1, log
    assert "Traceback" not in log


def test_simulate_tcp_passes(tmp_path):
    """Stations as the firmware makes them, in real time (a wake every 11.8 s): every fault,
    constant readings and full buffers; every record delivered whole stored once, on time."""
    done = subprocess.run(
        [sys.executable, "-m", "co2unit_server", "simulate-tcp", "--devices", "5",
         "--packets", "4", "--faults", "0.6", "--seed", "5", "--workdir", str(tmp_path / "sim")],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert done.stdout.rstrip().endswith("PASS")
    assert re.search(r"failed [1-9], steady [1-9], varying [1-9]", done.stdout)
    for kind in ("normal", *tcp_devices.FAULTS):
        assert re.search(rf"{kind} [1-9]", done.stdout), kind
    assert re.search(r"shifted out [1-9]", done.stdout)
    assert re.search(r"resent records recognised [1-9]\d* \(full-buffer resends [1-9]",
                     done.stdout)
    assert re.search(r"equal packets stored [1-9]", done.stdout)
    assert (tmp_path / "sim" / "remote_data" / "tcp").is_dir()
