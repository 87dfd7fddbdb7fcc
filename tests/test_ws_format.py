"""The streaming devices' messages and raw log lines (records/ws_format.py)."""

from __future__ import annotations

import json

import pytest

from co2unit_server.database.rows import Measurement
from co2unit_server.records import ws_format
from co2unit_server.records.ws_format import MessageError, WsLine

TS = "2026-12-06T01:00:00.000000"


def readings(seq: object = 1, rows: object = None) -> dict:
    if rows is None:
        rows = [{"ts": "2026-12-06T01:00:00Z", "values": {"co2": 415.5, "rh": 40}}]
    return {"type": "readings", "seq": seq, "readings": rows}


def code(call, *args) -> str:
    with pytest.raises(MessageError) as caught:
        call(*args)
    return caught.value.code


@pytest.mark.parametrize(("text", "expected"), [
    ("{", "BAD_JSON"),
    ("[" * 100_000, "BAD_JSON"),  # deeper than the parser goes: still an answer
    ("[1, 2]", "BAD_MESSAGE"),
    ('{"seq": 1}', "BAD_MESSAGE"),
    ('{"type": 7}', "BAD_MESSAGE"),
    (b'{"type": "hello"}', "BAD_MESSAGE"),  # a binary frame
])
def test_parse_refuses(text, expected):
    assert code(ws_format.parse, text) == expected


def test_parse_takes_any_json_object_with_a_type():
    assert ws_format.parse('{"type": "x", "a": 1}') == {"type": "x", "a": 1}


def test_hello():
    hello = ws_format.check_hello({"type": "hello", "device_id": "lab-1.a_B", "sensors": ["co2"],
                                   "token": "t"})
    assert hello == ws_format.Hello("lab-1.a_B", ("co2",), "t")
    assert ws_format.check_hello({"type": "hello", "device_id": "d"}).sensors == ()


@pytest.mark.parametrize(("message", "expected"), [
    ({"type": "readings", "seq": 1}, "HELLO_FIRST"),
    ({"type": "hello"}, "BAD_DEVICE_ID"),
    ({"type": "hello", "device_id": ""}, "BAD_DEVICE_ID"),
    ({"type": "hello", "device_id": "a/b"}, "BAD_DEVICE_ID"),
    ({"type": "hello", "device_id": "x" * 65}, "BAD_DEVICE_ID"),
    ({"type": "hello", "device_id": 5}, "BAD_DEVICE_ID"),
    ({"type": "hello", "device_id": "d", "sensors": "co2"}, "BAD_MESSAGE"),
    ({"type": "hello", "device_id": "d", "sensors": [1]}, "BAD_MESSAGE"),
    ({"type": "hello", "device_id": "d", "token": 5}, "BAD_MESSAGE"),
])
def test_hello_refuses(message, expected):
    assert code(ws_format.check_hello, message) == expected


def test_readings_rows_in_utc():
    checked = ws_format.check_readings(readings(3, [
        {"ts": "2026-12-06T02:00:00+01:00", "values": {"co2": 415.5, "rh": 40}},
        {"ts": "2026-12-06T01:00:01.5Z", "values": {}}]))
    assert checked == ws_format.Readings(3, ((TS, "co2", 415.5), (TS, "rh", 40.0)), 0, TS)
    assert isinstance(checked.rows[1][2], float)


@pytest.mark.parametrize("seq", [-1, 1.0, "1", True, None])
def test_readings_refuse_a_bad_seq(seq):
    assert code(ws_format.check_readings, readings(seq)) == "BAD_MESSAGE"


@pytest.mark.parametrize("rows", [
    [], "x", [1], [{"ts": TS}], [{"ts": TS, "values": []}],
    [{"values": {"co2": 1}}], [{"ts": 5, "values": {"co2": 1}}],
    [{"ts": "yesterday", "values": {"co2": 1}}],
    [{"ts": TS, "values": {"co2": float("nan")}}],
    [{"ts": TS, "values": {"co2": float("inf")}}],
    [{"ts": TS, "values": {"co2": "415"}}],
    [{"ts": TS, "values": {"co2": True}}],
    [{"ts": TS, "values": {"co2": None}}],
    [{"ts": TS, "values": {"bad name": 1}}],
    [{"ts": TS, "values": {"co2": 1}}] * (ws_format.MAX_READINGS + 1),
])
def test_readings_refuse_bad_rows(rows):
    assert code(ws_format.check_readings, readings(1, rows)) == "BAD_MESSAGE"


def test_nan_in_the_text_is_refused_as_a_value():
    message = ws_format.parse('{"type": "readings", "seq": 1, "readings": '
                              '[{"ts": "2026-12-06T01:00:00Z", "values": {"co2": NaN}}]}')
    with pytest.raises(MessageError, match="co2 is nan"):
        ws_format.check_readings(message)


@pytest.mark.parametrize(("raw", "expected"), [
    ("2026-12-06T01:00:00Z", TS),
    ("2026-12-06T01:00:00", TS),  # naive: taken as UTC
    ("2026-12-06T03:30:00+02:30", TS),
    ("2026-12-05T20:00:00-05:00", TS),
    ("2026-12-06T01:00:00.123456789Z", "2026-12-06T01:00:00.123456"),  # cut to microseconds
    ("20261206T010000Z", TS),  # the basic format too
    ("2026-12-06", "2026-12-06T00:00:00.000000"),
])
def test_utc_text(raw, expected):
    assert ws_format.utc_text(raw) == expected


@pytest.mark.parametrize("raw", [None, 1700000000, "", "tomorrow"])
def test_utc_text_refuses(raw):
    with pytest.raises(ValueError):
        ws_format.utc_text(raw)


def test_answers():
    assert json.loads(ws_format.welcome(None)) == {"type": "welcome", "session": None}
    session = {"id": "s-1", "state": "started"}
    assert json.loads(ws_format.welcome(session))["session"] == session
    assert json.loads(ws_format.ack(7)) == {"type": "ack", "seq": 7}
    assert json.loads(ws_format.error("OUT_OF_ORDER", "why")) == {
        "type": "error", "error": "OUT_OF_ORDER", "message": "why"}
    assert json.loads(ws_format.command("start", "s-1", "2026-12-06T01:00:00.000000Z")) == {
        "type": "command", "command": "start", "session": "s-1",
        "at": "2026-12-06T01:00:00.000000Z"}


def line(raw: str, session: str | None = "s-1", seq: int = 4) -> WsLine:
    return WsLine(TS, "10.0.0.7:5000", session, seq, raw)


@pytest.mark.parametrize("raw", ['{"a": "b\\"c"}', 'ünïcödé \u2028 \x01 \t\n"\\', "", "{}"])
@pytest.mark.parametrize("session", [None, "s-1", 'a "quoted" id'])
def test_a_line_is_written_as_json_dumps_writes_it(raw, session):
    line = WsLine("2026-12-06T01:00:00.000000", "[::1]:5555", session, 7, raw)
    fields = {"ts": line.ts, "peer": line.peer, "session": session, "seq": 7, "raw": raw}
    assert line.encode() == (json.dumps(fields, ensure_ascii=False) + "\n").encode()
    assert WsLine.parse(line.encode()) == line


def test_a_line_round_trips():
    for session in ("s-1", None):
        original = line(json.dumps(readings(4)) + " \u2028 ünï\n", session)
        data = original.encode()
        assert data.endswith(b"\n") and data.count(b"\n") == 1  # one line, whatever raw holds
        assert WsLine.parse(data) == original


def test_the_first_line_of_a_new_sequence_is_marked_and_no_other():
    first = line("{}")._replace(new_sequence=True)
    assert json.loads(first.encode())["new_sequence"] is True
    assert WsLine.parse(first.encode()) == first
    assert "new_sequence" not in json.loads(line("{}").encode())
    assert not WsLine.parse(line("{}").encode()).new_sequence


@pytest.mark.parametrize("data", [
    b"", b"{", b"[]", b'"x"', b"\xff\xfe",
    b'{"ts": "2026-12-06T01:00:00", "peer": "p", "session": null, "seq": 1}',
    b'{"ts": "2026-12-06T01:00:00", "peer": "p", "session": null, "seq": "1", "raw": "{}"}',
    b'{"ts": "2026-12-06T01:00:00", "peer": "p", "session": null, "seq": true, "raw": "{}"}',
    b'{"ts": "2026-12-06T01:00:00", "peer": "p", "session": 5, "seq": 1, "raw": "{}"}',
    b'{"ts": "2026-12-06T01:00:00", "peer": "p", "session": null, "seq": 1, "raw": {}}',
    b'{"ts": "noon", "peer": "p", "session": null, "seq": 1, "raw": "{}"}',
    b'{"ts": "2026-12-06T01:00:00", "peer": "p", "session": null, "seq": 1, "raw": "{}", '
    b'"x": 1}',
    b'{"ts": "2026-12-06T01:00:00", "peer": "p", "session": null, "seq": 1, "raw": "{}", '
    b'"new_sequence": false}',
    b'{"ts": "2026-12-06T01:00:00", "peer": "p", "session": null, "seq": 1, "raw": "{}", '
    b'"new_sequence": 1}',
])
def test_a_line_no_gateway_wrote_is_a_value_error(data):
    with pytest.raises(ValueError):
        WsLine.parse(data)


def test_interpret():
    receipt, rows = ws_format.interpret(line(json.dumps(readings(4))), "lab-1", "ws/lab-1/0000"
                                        ".log:3")
    assert receipt == ws_format.Receipt("ws/lab-1/0000.log:3", "lab-1", "ws", TS, "ok", 2, None,
                                        "seq 4")
    assert rows == [Measurement("lab-1", "ws", TS, "co2", 415.5, "ws/lab-1/0000.log:3", "s-1"),
                    Measurement("lab-1", "ws", TS, "rh", 40.0, "ws/lab-1/0000.log:3", "s-1")]


def test_values_of_a_name_at_one_time_are_counted_and_the_receipt_says_so():
    message = readings(4, [
        {"ts": "2026-12-06T01:00:00Z", "values": {"co2": 415.5, "rh": 40}},
        {"ts": "2026-12-06T02:00:00+01:00", "values": {"co2": 416.0, "temp": 21.0}},  # same time
        {"ts": "2026-12-06T01:00:01Z", "values": {"co2": 417.0}}])
    checked = ws_format.check_readings(message)
    assert (len(checked.rows), checked.repeats, checked.newest) == (
        5, 1, "2026-12-06T01:00:01.000000")
    receipt, rows = ws_format.interpret(line(json.dumps(message)), "lab-1", "src")
    assert (receipt.verdict, receipt.stored, len(rows)) == ("partial", 4, 5)
    assert receipt.detail.startswith("seq 4: 1 value(s) at a name and time the message has")
    assert ws_format.check_readings(readings(5)).repeats == 0  # one reading: never


def test_interpret_an_edited_line():
    receipt, rows = ws_format.interpret(line('{"type": "readings"}', None), "lab-1", "src")
    assert (receipt.verdict, receipt.stored, rows) == ("bad", 0, [])
    assert "seq" in receipt.detail
