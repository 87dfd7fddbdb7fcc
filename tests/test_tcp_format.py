"""The weather stations' packets (docs/gateways.md): checking, de-duplicating, timing, parsing."""

from __future__ import annotations

import re
import struct

import pytest
from gateway_fixtures import EXAMPLE, S, packet, records

from co2unit_server.core.config import TCP_RECORD_FORMATS
from co2unit_server.records import tcp_format
from co2unit_server.records.rawlog import RawLine, RawLog, ts_text
from co2unit_server.records.tcp_format import (
    FORMATS,
    History,
    PacketError,
    check,
    decode,
    decode_received,
    device_name,
    history_from_log,
    interpret,
    parse_device_types,
    record_interval_us,
    repeated_records,
)

REGISTRY = parse_device_types(["1=tsl2561-si7021"])
T = 1_767_225_600_000_000  # 2026-01-01T00:00:00 UTC, in microseconds





def test_the_example_gives_its_six_values_two_minutes_apart():
    decoded = decode(EXAMPLE, T, None, REGISTRY)
    assert decoded.verdict == "ok" and decoded.detail == ""
    assert decoded.header == tcp_format.Header(12, 3600, 120, 6, 1, 3)
    assert [(ts, name, round(value, 3)) for ts, name, value in decoded.values] == [
        (ts_text(T - 240 * S), "light", 1234.0),
        (ts_text(T - 240 * S), "humidity", 54.997),
        (ts_text(T - 240 * S), "temperature", 21.501),
        (ts_text(T - 120 * S), "light", 1244.0),
        (ts_text(T - 120 * S), "humidity", 55.096),
        (ts_text(T - 120 * S), "temperature", 21.544),
    ]
    assert decoded.history == History(T, (EXAMPLE[9:15], EXAMPLE[15:21]))
    # The gateway stores rows(), the importer measurements(): the same rows.
    rows = decoded.rows("esp8266-1", "tcp/esp8266-1/0000.log:1")
    assert decoded.measurements("esp8266-1", "tcp/esp8266-1/0000.log:1") == rows
    assert [(ts, name, value) for _, _, ts, name, value, _, _ in rows] == list(decoded.values)
    receipt = decoded.receipt("esp8266-1", ts_text(T), "tcp/esp8266-1/0000.log:1")
    assert (receipt.verdict, receipt.stored, receipt.expected_s) == ("ok", 6, 3600.0)


@pytest.mark.parametrize("length", range(9))
def test_packets_under_the_header_are_bad_and_never_crash(length):
    short = EXAMPLE[:length]
    with pytest.raises(PacketError, match=f"{length} bytes: shorter than the 9-byte header"):
        decode(short, T, None, REGISTRY)
    assert device_name(short) == ("esp8266-1" if length == 8 else tcp_format.UNIDENTIFIED)


@pytest.mark.parametrize(("bad", "reason"), [
    (EXAMPLE[:-1], "20 bytes, but the header announces 9 + bytesReady 12"),
    (EXAMPLE + b"\0", "22 bytes, but the header announces 9 + bytesReady 12"),
    (packet([b"\1" * 7]), "bytesReady 7 is not a whole number of 6-byte records"),
    (packet([b"\1" * 8], record_bytes=4), "4-byte records, but device type 1"),
    (packet([], record_bytes=0), "bytesPerMeasurement is 0"),
    (packet(records(1, 1), wake=0), "expectedWakeupTime or measurementsEvery is 0"),
    (packet(records(1, 1), every=0), "expectedWakeupTime or measurementsEvery is 0"),
], ids=["truncated", "too-long", "partial-record", "record-size", "record-size-0", "wake-0",
        "every-0"])
def test_malformed_packets_say_why(bad, reason):
    with pytest.raises(PacketError, match=re.escape(reason)):
        check(bad, REGISTRY)


def test_an_unregistered_device_id_is_valid_but_unknown():
    decoded = decode(packet(records(1, 2), device_id=9), T, None, REGISTRY)
    assert decoded.verdict == "unknown" and decoded.values == ()
    assert "no record format for deviceID 9" in decoded.detail
    assert len(decoded.history.records) == 2  # its history goes on all the same


# The stock station: 30 records a wake, one wake every 30 * (120 * 1.024 + 0.16) s.
PER_WAKE = 30
WAKE = 3_691_200_000  # microseconds
NIGHT = struct.pack("<HHH", 0, 0xFFFC, 0xFFFC)  # dark, and the SI7021 failed: 0xFFFC codes


def test_the_wake_period_is_the_attinys():
    header = check(packet(records(1, 30)), REGISTRY)
    assert tcp_format.records_per_wake(header) == 30
    assert tcp_format.wake_period_us(header) == 3_691_200_000
    # It wakes the ESP8266 once its count of slept seconds reaches expectedWakeupTime.
    odd = check(packet(records(1, 1), wake=100, every=30), REGISTRY)
    assert tcp_format.records_per_wake(odd) == 4


@pytest.mark.parametrize(("since", "wakes"), [
    (0, 0), (WAKE // 2 - 1, 0), (WAKE // 2, 1), (WAKE + 5 * S, 1), (3 * WAKE // 2, 2),
    (2 * WAKE, 2), (-1, None)])
def test_wakes_since_rounds_the_time_in_wake_periods(since, wakes):
    header = check(packet(records(1, 30)), REGISTRY)
    assert tcp_format.wakes_since(header, T, History(T - since, ())) == wakes
    assert tcp_format.wakes_since(header, T, None) is None


def test_a_resend_is_the_previous_packet_and_the_records_of_the_wakes_since():
    previous = records(1, 3)
    assert repeated_records(previous, previous + records(4, 30), PER_WAKE, 1, False) == 3
    # After a lost `A` and an outage of one more wake.
    assert repeated_records(previous, previous + records(4, 60), PER_WAKE, 2, False) == 3
    # Two wakes since: all 33 are new (the first wake's packet never came).
    assert repeated_records(previous, records(4, 3) + records(7, 30), PER_WAKE, 2, False) == 0


def test_equal_records_are_new_when_the_count_says_so():
    night = [NIGHT] * 30
    assert repeated_records(night, night, PER_WAKE, 1, False) == 0
    assert repeated_records(night, [NIGHT] * 58, PER_WAKE, 1, True) == 28
    assert repeated_records(night, [NIGHT] * 60, PER_WAKE, 2, False) == 0
    # A packet one wake later with fewer records than a wake gives (the ATtiny restarted).
    assert repeated_records(night, [NIGHT] * 5, PER_WAKE, 1, False) == 0


def test_the_same_packet_within_one_wake_is_the_esp_running_twice():
    previous = records(1, 30)
    assert repeated_records(previous, previous, PER_WAKE, 0, False) == 30
    assert repeated_records(previous, previous + records(31, 1), PER_WAKE, 0, False) == 0
    assert repeated_records(previous, records(2, 30), PER_WAKE, 0, False) == 0
    assert repeated_records(previous, previous, PER_WAKE, None, False) == 0


def test_only_a_full_buffer_shifts_the_previous_records_out():
    previous = records(1, 30)
    shifted = previous[2:] + records(31, 30)  # 58: the oldest 2 were shifted out
    assert repeated_records(previous, shifted, PER_WAKE, 1, False) == 0
    assert repeated_records(previous, shifted, PER_WAKE, 1, True) == 28
    full = records(1, 58)
    assert repeated_records(full, full[30:] + records(59, 30), PER_WAKE, 1, True) == 28
    assert repeated_records(full, full[1:] + records(59, 1), 1, 1, True) == 57


def test_old_records_that_do_not_end_the_previous_packet_are_new():
    previous = records(1, 3)
    assert repeated_records(previous, records(2, 3) + records(4, 30), PER_WAKE, 1, False) == 0
    assert repeated_records(records(1, 30), records(5, 28) + records(59, 30), PER_WAKE, 1,
                            True) == 0


def test_decode_stores_only_the_new_records_of_a_resend():
    first = packet(records(1, 3))
    history = decode(first, T, None, REGISTRY).history
    resent = decode(packet(records(1, 3) + records(4, 30)), T + WAKE, history, REGISTRY)
    assert len(resent.values) == 30 * 3
    assert [v for _, name, v in resent.values if name == "light"] == list(range(4, 34))
    assert resent.detail == "resent: its first 3 records repeat the previous packet " \
        "(1 wake since it)"
    assert resent.receipt("d", "t", "s").stored == 90
    # The new records are spread over the time since the previous packet.
    assert resent.step_us == WAKE // 30
    assert (resent.values[0][0], resent.values[-1][0]) == \
        (ts_text(T), ts_text(T + WAKE - WAKE // 30))


def test_decode_stores_a_packet_equal_to_the_previous_one_a_wake_later():
    night = packet([NIGHT] * 30)
    first = decode(night, T, None, REGISTRY)
    again = decode(night, T + WAKE, first.history, REGISTRY)
    assert again.detail == "" and again.stored == 90
    assert {ts for ts, _, _ in again.values}.isdisjoint({ts for ts, _, _ in first.values})
    twice = decode(night, T + WAKE + 3 * S, again.history, REGISTRY)
    assert twice.stored == 0
    assert twice.detail == "sent again in the same wake: its 30 records repeat the previous packet"


def test_decode_recognises_a_full_buffer_resend():
    full_packet = packet(records(1, 58))
    assert len(full_packet) == 357 and check(full_packet, REGISTRY).bytes_ready == 348
    history = decode(full_packet, T, None, REGISTRY).history
    shifted = decode(packet(records(31, 28) + records(59, 30)), T + WAKE, history, REGISTRY)
    assert [v for _, name, v in shifted.values if name == "light"] == list(range(59, 89))
    # The same 58 records two wakes later: the ATtiny measured 60 since, all 58 are new.
    later = decode(packet([NIGHT] * 58), T + 2 * WAKE, history, REGISTRY)
    assert later.stored == 58 * 3


def test_the_interval_is_spread_when_the_previous_packet_is_on_time():
    header = check(packet(records(1, 30)), REGISTRY)
    on_time = History(T - 3500 * S, ())
    assert record_interval_us(header, T, on_time, 30) == 3500 * S // 30
    # Within a third of expectedWakeupTime either way (1200 s of 3600 s).
    assert record_interval_us(header, T, History(T - 2401 * S, ()), 10) == 2401 * S // 10
    assert record_interval_us(header, T, History(T - 4799 * S, ()), 10) == 4799 * S // 10


def test_the_interval_is_measurements_every_otherwise():
    header = check(packet(records(1, 30)), REGISTRY)
    assert record_interval_us(header, T, None, 30) == 120 * S
    assert record_interval_us(header, T, History(T - 2399 * S, ()), 30) == 120 * S
    assert record_interval_us(header, T, History(T - 4801 * S, ()), 30) == 120 * S
    assert record_interval_us(header, T, History(T - 3600 * S, ()), 0) == 120 * S


def test_decode_times_records_back_from_the_receive_time():
    history = History(T - 3000 * S, ())
    decoded = decode(packet(records(1, 3), wake=3000), T, history, REGISTRY)
    assert sorted({ts for ts, _, _ in decoded.values}) == [
        ts_text(T - 3000 * S), ts_text(T - 2000 * S), ts_text(T - 1000 * S)]


def test_parse_device_types():
    registry = parse_device_types(["1=tsl2561-si7021", " 200 = tsl2561-si7021 "])
    assert set(registry) == {1, 200}
    assert registry[200].names == ("light", "humidity", "temperature")
    assert parse_device_types([]) == {}


@pytest.mark.parametrize(("entry", "reason"), [
    ("1", "is not deviceID=format"),
    ("x=tsl2561-si7021", "is not deviceID=format"),
    ("256=tsl2561-si7021", "is not deviceID=format"),
    ("-1=tsl2561-si7021", "is not deviceID=format"),
    ("1=bme280", "no record format 'bme280' \\(known: tsl2561-si7021\\)"),
])
def test_parse_device_types_refuses(entry, reason):
    with pytest.raises(ValueError, match=reason):
        parse_device_types([entry])


def test_the_settings_know_every_record_format_and_no_other():
    assert sorted(FORMATS) == sorted(TCP_RECORD_FORMATS)


def test_a_read_not_ended_by_the_device_is_bad_unless_the_packet_is_whole():
    with pytest.raises(PacketError, match="did not close the connection in time; 20 bytes"):
        decode_received(EXAMPLE[:-1], "timeout", T, None, REGISTRY)
    with pytest.raises(PacketError, match="connection was reset; 5 bytes"):
        decode_received(EXAMPLE[:5], "reset", T, None, REGISTRY)
    # Its FIN lost, the device took the write for done and deleted the records: keep them.
    whole = decode_received(EXAMPLE, "timeout", T, None, REGISTRY)
    assert whole.verdict == "ok" and len(whole.values) == 6
    assert whole.detail == "the device did not close the connection in time, but the " \
                           "packet is whole"
    # A packet cut at the size limit is never whole, whatever its header says.
    with pytest.raises(PacketError, match="longer than tcp_max_packet_bytes"):
        decode_received(EXAMPLE, "too-large", T, None, REGISTRY)


def test_interpret_gives_a_bad_receipt_and_keeps_the_history():
    history = History(T - 10 * S, tuple(records(1, 2)))
    line = RawLine(ts_text(T), "10.0.0.5:4000", "eof", "bad", "", EXAMPLE[:-3])
    receipt, values, after = interpret(line, "esp8266-1", "tcp/esp8266-1/0000.log:3", history,
                                       REGISTRY)
    assert (receipt.verdict, receipt.stored, values, after) == ("bad", 0, [], history)
    assert "18 bytes, but the header announces" in receipt.detail
    line = RawLine(ts_text(T), "10.0.0.5:4000", "eof", "ok", "", EXAMPLE)
    receipt, values, after = interpret(line, "esp8266-1", "src", None, REGISTRY)
    assert receipt.verdict == "ok" and len(values) == 6 and values[0].source == "src"
    assert after == History(T, (EXAMPLE[9:15], EXAMPLE[15:21]))


def test_history_from_log_is_the_last_valid_packet(tmp_path):
    log = RawLog(tmp_path, "tcp", rotate_bytes=200)  # small: the lines spread over files
    device_dir = log.device_dir("esp8266-1")
    assert history_from_log(device_dir, REGISTRY) is None
    first, second = packet(records(1, 3)), packet(records(4, 2), device_id=9)
    log.append("esp8266-1", RawLine(ts_text(T), "p", "eof", "ok", "", first))
    log.append("esp8266-1", RawLine(ts_text(T + S), "p", "eof", "unknown", "", second))
    for n in range(3):  # bad packets after it do not count
        log.append("esp8266-1", RawLine(ts_text(T + (2 + n) * S), "p", "eof", "bad", "x",
                                        EXAMPLE[:-1]))
    log.close()
    assert len(list(device_dir.iterdir())) > 1
    with open(device_dir / "0000.log", "ab") as f:
        f.write(b"torn line without its end")
    assert history_from_log(device_dir, REGISTRY) == History(T + S, tuple(records(4, 2)))


def test_history_from_log_with_only_bad_lines_is_none(tmp_path):
    log = RawLog(tmp_path, "tcp", rotate_bytes=1 << 20)
    log.append("esp8266-1", RawLine(ts_text(T), "p", "eof", "bad", "x", b"\0\1"))
    log.close()
    assert history_from_log(log.device_dir("esp8266-1"), REGISTRY) is None
