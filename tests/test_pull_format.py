"""The pull formats (docs/gateways.md): the devices file, strict and tolerant; the NodeMCU answers,
every value by its sensor's name, unusable ones named."""

from __future__ import annotations

import json
import logging
import re

import pytest

from co2unit_server.core.config import ConfigError
from co2unit_server.records.pull_format import (
    FAMILY,
    AnswerError,
    DevicesFileWatch,
    PullDevice,
    interpret,
    parse_answer,
    read_devices_file,
)
from co2unit_server.records.rawlog import RawLine

EXAMPLE = (b'{"nodemcu":{"mq135":{"co":"2.56","co2":"402.08","alcohol":"0.94","nh4":"3.30",'
           b'"aceton":"0.32","toulen":"0.38"},"bmp180":{"temperature":"28.60","pressure":'
           b'"1006.13","seaLevelPressure":"1024.18","altitude":"149.75"},"ds18b20":'
           b'{"temperature":"27.00"},"dht22":{"temperature":"27.90","humidity":"47.30"}}}')
EXAMPLE_VALUES = (
    ("mq135.co", 2.56), ("mq135.co2", 402.08), ("mq135.alcohol", 0.94), ("mq135.nh4", 3.30),
    ("mq135.aceton", 0.32), ("mq135.toulen", 0.38), ("bmp180.temperature", 28.60),
    ("bmp180.pressure", 1006.13), ("bmp180.seaLevelPressure", 1024.18),
    ("bmp180.altitude", 149.75), ("ds18b20.temperature", 27.00), ("dht22.temperature", 27.90),
    ("dht22.humidity", 47.30))


def answer(**changes: str) -> bytes:
    """The example answer with some values replaced ("sensor.key": "text")."""
    document = json.loads(EXAMPLE)
    for name, text in changes.items():
        sensor, key = name.split(".")
        document["nodemcu"][sensor][key] = text
    return json.dumps(document, separators=(",", ":")).encode()


def test_example_answer_gives_every_value_by_its_sensor_name():
    parsed = parse_answer(200, EXAMPLE)
    assert parsed.values == EXAMPLE_VALUES
    assert (parsed.verdict, parsed.detail) == ("ok", "")
    # Same-named values of different sensors stay apart, never averaged.
    temperatures = {n: v for n, v in parsed.values if n.endswith(".temperature")}
    assert temperatures == {"bmp180.temperature": 28.6, "ds18b20.temperature": 27.0,
                            "dht22.temperature": 27.9}


def test_firmware_before_ds18b20_and_dht22_gives_what_it_has():
    document = json.loads(EXAMPLE)
    del document["nodemcu"]["ds18b20"], document["nodemcu"]["dht22"]
    parsed = parse_answer(200, json.dumps(document).encode())
    assert parsed.verdict == "ok"
    assert [n for n, _ in parsed.values] == [n for n, _ in EXAMPLE_VALUES[:10]]


@pytest.mark.parametrize("text", ["", "nan", "inf", "-inf", "ovf", "no data"])
def test_an_unusable_value_is_left_out_and_named(text):
    parsed = parse_answer(200, answer(**{"bmp180.pressure": text}))
    assert parsed.verdict == "partial"
    assert "bmp180.pressure" not in dict(parsed.values)
    assert len(parsed.values) == len(EXAMPLE_VALUES) - 1
    assert "bmp180.pressure is" in parsed.detail


def test_ds18b20_mean_with_missing_probes_is_no_temperature():
    # Seven of eight slots without a probe (-127 each) and one at 27 °C: -107.75.
    parsed = parse_answer(200, answer(**{"ds18b20.temperature": "-107.75"}))
    assert parsed.verdict == "partial"
    assert "ds18b20.temperature" not in dict(parsed.values)
    assert "missing probe" in parsed.detail
    assert dict(parse_answer(200, answer(**{"ds18b20.temperature": "-54.50"})).values)[
        "ds18b20.temperature"] == -54.5


def test_booting_answer_gives_no_value_and_its_zeroed_probe_mean_is_no_reading():
    # Until the first read every String is "", the DS18B20 mean comes from zeroed floats.
    booting = {name: "" for name, _ in EXAMPLE_VALUES}
    booting["ds18b20.temperature"] = "0.00"
    with pytest.raises(AnswerError, match="no usable value.*empty \\(booting\\)"):
        parse_answer(200, answer(**booting))
    half = parse_answer(200, answer(**{"dht22.temperature": "", "dht22.humidity": "",
                                       "ds18b20.temperature": "0.00"}))
    assert "ds18b20.temperature" not in dict(half.values)
    assert "before the first read" in half.detail
    # Beside real values only, 0.00 °C is a temperature like any other.
    real = parse_answer(200, answer(**{"ds18b20.temperature": "0.00"}))
    assert dict(real.values)["ds18b20.temperature"] == 0.0 and real.verdict == "ok"


@pytest.mark.parametrize("status, body, why", [
    (500, EXAMPLE, "HTTP 500"),
    (404, b"", "HTTP 404"),
    (200, b"<html>oops</html>", "not JSON"),
    (200, b'{"nodemcu":{"mq135":{"co":"2.5', "not JSON"),
    (200, b"\xff\xfe\x00garbage", "not JSON"),
    (200, b'{"esp8266":{"uptime":"12"}}', 'no "nodemcu" object'),
    (200, b'["nodemcu"]', 'no "nodemcu" object'),
    (200, b'{"nodemcu":{"mq135":"402"}}', "no usable value: mq135 is not an object"),
])
def test_answers_without_values_are_refused_with_the_reason(status, body, why):
    with pytest.raises(AnswerError, match=why):
        parse_answer(status, body)


def raw(end: str, verdict: str, payload: bytes, detail: str = "") -> RawLine:
    return RawLine("2026-05-01T12:00:00.250000", "http://10.0.0.7/circumstances", end, verdict,
                   detail, payload)


def test_interpret_stores_an_answers_values_at_its_time_with_its_source():
    receipt, measurements = interpret(raw("200", "ok", EXAMPLE), "lab-1", "pull/lab-1/0000.log:3")
    assert (receipt.verdict, receipt.stored, receipt.detail) == ("ok", 13, "")
    assert (receipt.device, receipt.family, receipt.ts) == ("lab-1", FAMILY, raw("", "", b"").ts)
    assert [(m.name, m.value) for m in measurements] == list(EXAMPLE_VALUES)
    assert {(m.device, m.family, m.ts, m.source) for m in measurements} == {
        ("lab-1", "pull", "2026-05-01T12:00:00.250000", "pull/lab-1/0000.log:3")}


def test_interpret_partial_bad_and_failed():
    receipt, values = interpret(raw("200", "partial", answer(**{"mq135.co": "nan"})), "d", "s")
    assert receipt.verdict == "partial" and receipt.stored == 12 == len(values)
    assert receipt.detail == "mq135.co is 'nan'"
    receipt, values = interpret(raw("500", "bad", b"Internal Server Error"), "d", "s")
    assert (receipt.verdict, receipt.detail, values) == ("bad", "HTTP 500", [])
    receipt, values = interpret(raw("-", "failed", b"", "connection refused"), "d", "s")
    assert (receipt.verdict, receipt.detail, receipt.stored, values) == (
        "failed", "connection refused", 0, [])
    # An answer cut short after its status line is failed, whatever bytes came.
    receipt, values = interpret(raw("200", "failed", b"", "timeout"), "d", "s")
    assert (receipt.verdict, values) == ("failed", [])


# --- the devices file ------------------------------------------------------------------------

def test_an_interval_under_the_refresh_is_read_and_polled_at_the_refresh(tmp_path):
    # ahttpdc polls every 1 s by default and the firmware answers any request: no error.
    path = tmp_path / "devices.tsv"
    path.write_text("fast\thttp://10.0.0.7/circumstances\t1\nslow\thttp://x/\t10\n")
    fast, slow = read_devices_file(path)
    assert fast == PullDevice("fast", "http://10.0.0.7/circumstances", 1.0)
    assert fast.polled_every(1.3) == PullDevice("fast", "http://10.0.0.7/circumstances", 1.3)
    assert slow.polled_every(1.3) is slow


def test_devices_file_with_comments_and_blank_lines(tmp_path):
    path = tmp_path / "devices.tsv"
    path.write_text("# name\tURL\tinterval\n\nlab-1\thttp://10.0.0.7/circumstances\t10\n"
                    "  # a comment\nroof_2.b\thttps://air.example:8443/circumstances\t1.5\n")
    assert read_devices_file(path) == [
        PullDevice("lab-1", "http://10.0.0.7/circumstances", 10.0),
        PullDevice("roof_2.b", "https://air.example:8443/circumstances", 1.5)]


@pytest.mark.parametrize("line, why", [
    ("lab-1 http://10.0.0.7/circumstances 10", "found 1 tab-separated field"),
    ("lab-1\thttp://10.0.0.7/circumstances", "found 2 tab-separated field"),
    ("../etc\thttp://10.0.0.7/circumstances\t10", "not a safe directory name"),
    ("..\thttp://10.0.0.7/circumstances\t10", "not a safe directory name"),
    ("lab 1\thttp://10.0.0.7/circumstances\t10", "not a safe directory name"),
    ("lab-1\tftp://10.0.0.7/circumstances\t10", "not an http:// or https:// URL"),
    ("lab-1\t10.0.0.7/circumstances\t10", "not an http:// or https:// URL"),
    ("lab-1\thttp://10.0.0.7/circumstances\tten", "not a number of seconds"),
    ("lab-1\thttp://10.0.0.7/circumstances\t0", "not a positive number"),
    ("lab-1\thttp://10.0.0.7/circumstances\tnan", "not a positive number"),
    ("lab-2\thttp://10.0.0.8/circumstances\t10", "'lab-2' is already used on line 1"),
])
def test_bad_devices_file_line_is_refused_with_file_line_and_why(tmp_path, line, why):
    path = tmp_path / "devices.tsv"
    path.write_text(f"lab-2\thttp://10.0.0.9/circumstances\t10\n{line}\n")
    with pytest.raises(ConfigError) as raised:
        read_devices_file(path)
    assert str(raised.value).startswith(f"{path}:2: ")
    assert why in str(raised.value)


def test_tolerant_reading_leaves_out_what_does_not_parse_and_repeats(tmp_path):
    path = tmp_path / "devices.tsv"
    path.write_bytes(b"# comment\ta\t1\n\nok\thttp://x/\t30\nbad-interval\thttp://x/\tsoon\n"
                     b"zero\thttp://x/\t0\ntwo\tfields\nlab 1\thttp://x/\t5\n"
                     b"ftp\tftp://x/\t5\n  spaced \thttp://x/\t 5 \nok\thttp://y/\t99\n"
                     b"latin-\xe9\thttp://x/\t5\n# caf\xe9\nlast\thttp://x/\t7\n")
    assert read_devices_file(path, strict=False) == [
        PullDevice("ok", "http://x/", 30.0), PullDevice("spaced", "http://x/", 5.0),
        PullDevice("last", "http://x/", 7.0)]
    with pytest.raises(ConfigError, match="cannot read it"):  # strict, not even UTF-8
        read_devices_file(path)


def test_an_unreadable_devices_file_is_refused_or_logged(tmp_path, caplog):
    missing = tmp_path / "missing.tsv"
    with pytest.raises(ConfigError, match=re.escape(f"pull_devices_file {missing}: cannot")):
        read_devices_file(missing)
    assert read_devices_file(missing, strict=False) == []
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert f"pull_devices_file {missing}: cannot read it" in caplog.text


# --- following the devices file while running ------------------------------------------------

GOOD = "lab-1\thttp://10.0.0.7/circumstances\t10\n"


def test_the_watch_reads_the_file_again_only_when_it_changes(tmp_path, caplog):
    path = tmp_path / "devices.tsv"
    path.write_text(GOOD)
    watch = DevicesFileWatch(path)
    assert watch.check() and watch.devices == read_devices_file(path)
    assert not watch.check()  # unchanged: not parsed again
    path.write_text(GOOD + "lab-2\thttp://10.0.0.8/circumstances\t5\n")
    assert watch.check() and [d.name for d in watch.devices] == ["lab-1", "lab-2"]
    path.write_text(GOOD + "lab-2\thttp://10.0.0.8/circumstances\t5\n# a comment\n")
    assert not watch.check()  # parsed again, the same devices
    assert watch.error is None and "ERROR" not in caplog.text


def test_a_file_edited_bad_keeps_the_last_good_devices_and_logs_once(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    path = tmp_path / "devices.tsv"
    path.write_text(GOOD)
    watch = DevicesFileWatch(path)
    watch.check()
    good = watch.devices
    path.write_text(GOOD + "lab-2 http://10.0.0.8/circumstances 5\n")
    for _ in range(3):
        assert not watch.check()
    assert watch.devices == good
    assert watch.error is not None and watch.error.startswith(f"{path}:2: ")
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [f"{watch.error} (still polling the 1 device(s) of its last good version)"]
    path.write_text(GOOD + "lab-2\thttp://10.0.0.8/circumstances\t5\n")  # fixed
    assert watch.check() and len(watch.devices) == 2 and watch.error is None
    assert f"pull_devices_file {path} is good again" in caplog.text


def test_a_removed_file_keeps_the_last_good_devices_until_it_is_back(tmp_path, caplog):
    path = tmp_path / "devices.tsv"
    path.write_text(GOOD)
    watch = DevicesFileWatch(path)
    watch.check()
    path.unlink()
    assert not watch.check() and not watch.check()
    assert len(watch.devices) == 1 and "cannot read it" in (watch.error or "")
    assert sum(r.levelname == "ERROR" for r in caplog.records) == 1
    path.write_text("other\thttp://10.0.0.9/circumstances\t10\n")
    assert watch.check() and [d.name for d in watch.devices] == ["other"]


def test_a_file_bad_from_the_start_polls_nothing_until_it_is_good(tmp_path):
    path = tmp_path / "devices.tsv"
    path.write_text("lab-1\tnot-a-url\t10\n")
    watch = DevicesFileWatch(path)
    assert not watch.check() and watch.devices == [] and watch.error
    path.write_text(GOOD)
    assert watch.check() and len(watch.devices) == 1
