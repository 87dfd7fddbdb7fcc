"""The simulated SD card: readings and error-log formats, irregularities, rotation, saved state."""

from __future__ import annotations

import random
import re
from datetime import datetime, timedelta

import pytest

from co2unit_server.simulator.sdcard import (
    ERRORS_DIR,
    READINGS_DIR,
    Irregularities,
    SdCard,
    error_entry,
    reading_line,
)

HW_ID = "co2unit-30aea42a50bc"
CLEAN = Irregularities(glitch=0, none=0, lost_clock=0, nonprinting=0, temp85=0, test_lines=0,
                       warning=0, exception=0, tuple_date=0)
DAY = datetime(2026, 1, 1)
LINE_RE = re.compile(rb"co2unit-[0-9a-f]{12}\tvaranger-03\t\d{4}-\d\d-\d\d\t\d\d:\d\d:\d\d\t"
                     rb"-?\d+\.\d+\t\d+(\t\d+){10}\n")


@pytest.fixture
def card(tmp_path) -> SdCard:
    card = SdCard(tmp_path / "card", rotate_bytes=2000)
    card.format(HW_ID, "varanger-03")
    return card


def lines_with(irr: Irregularities, count: int = 200) -> list[bytes]:
    rng = random.Random(1)
    return [reading_line(rng, HW_ID, "varanger-03", DAY, 1, irr) for _ in range(count)]


def test_a_clean_reading_has_the_16_unit_fields():
    for line in lines_with(CLEAN):
        assert LINE_RE.fullmatch(line), line
        assert len(line.rstrip(b"\n").split(b"\t")) == 16


@pytest.mark.parametrize(("name", "found"), [
    ("glitch", lambda f: b"0" in f[6:] or b"200010" in f[6:]),
    ("none", lambda f: b"None" in f[4:]),
    ("lost_clock", lambda f: f[2] == b"1970-01-01"),
    ("temp85", lambda f: f[4] == b"85.0"),
    ("nonprinting", lambda f: any(b < 0x20 and b != 9 or b == 0xff for b in b"\t".join(f))),
])
def test_each_irregularity_appears_at_its_rate(name, found):
    rare = lines_with(CLEAN.__class__(**{**CLEAN.__dict__, name: 0.5}), 400)
    hits = sum(bool(found(line.rstrip(b"\n").split(b"\t"))) for line in rare)
    assert 100 < hits < 300
    assert not any(found(line.rstrip(b"\n").split(b"\t")) for line in lines_with(CLEAN))


def test_error_entries_in_both_date_formats_with_tracebacks():
    ts = datetime(2019, 10, 25, 3, 11, 24)
    assert error_entry(ts, "INFO", "transmitting") == (
        b"----- 2019-10-25 03:11:24 INFO  transmitting\n")
    assert error_entry(ts, "EXC", "Uncaught exception", ["Traceback (most recent call last):",
                                                         "OSError: 5"], as_tuple=True) == (
        b"----- (2019, 10, 25, 3, 11, 24, 4, 298) EXC   Uncaught exception\n"
        b"Traceback (most recent call last):\nOSError: 5\n")


def test_a_day_of_readings_every_30_minutes_rotating_at_whole_lines(card):
    card.measure(random.Random(2), DAY, DAY + timedelta(days=1), CLEAN)
    names = card.files(READINGS_DIR)
    assert names[:2] == ["readings-0000.tsv", "readings-0001.tsv"]
    data = [(card.root / READINGS_DIR / n).read_bytes() for n in names]
    assert sum(chunk.count(b"\n") for chunk in data) == 48
    assert all(chunk.endswith(b"\n") for chunk in data)
    assert all(len(chunk) >= 2000 for chunk in data[:-1])
    times = [line.split(b"\t")[3][:5] for chunk in data for line in chunk.splitlines()]
    assert times[:3] == [b"00:00", b"00:30", b"01:00"]


def test_the_error_log_of_a_day_mixes_date_formats(card):
    irr = Irregularities(warning=1, exception=1, tuple_date=0.5)
    for day in range(10):
        card.log_day(random.Random(day), DAY + timedelta(days=day), irr)
    text = b"".join((card.root / ERRORS_DIR / n).read_bytes() for n in card.files(ERRORS_DIR))
    assert re.search(rb"^----- \(2026, 1, \d+, \d+, \d+, \d+, \d, \d+\) (WARN |EXC  ) ", text,
                     re.M)
    assert re.search(rb"^----- 2026-01-\d\d \d\d:\d\d:\d\d WARN  ", text, re.M)
    assert re.search(rb"^----- .* EXC   Uncaught exception at top level\nTraceback \(most recent "
                     rb"call last\):\n  File ", text, re.M)
    # Only what a firmware writes: co2_ou_device logs no daily wake-up entry.
    messages = {m for m in re.findall(rb"^----- .*? (?:INFO |WARN |EXC  ) (.*)$", text, re.M)}
    assert messages == {b"Skipping comm due to backoff: 1/2",
                        b"Had to run recovery procedure. Watchdog reset?",
                        b"Uncaught exception at top level"}


def test_none_and_glitches_fall_where_the_firmware_puts_them():
    """co2unit_measure: a failed read is None on its own (never the flash count, read from
    memory); the sensor's start-up glitches are in the first two of the 10 CO2 reads."""
    irr = CLEAN.__class__(**{**CLEAN.__dict__, "none": 1, "glitch": 1})
    rows = [line.rstrip(b"\n").split(b"\t") for line in lines_with(irr, 300)]
    assert all(r[5] == b"1" for r in rows)
    assert all(sum(v == b"None" for v in r) == 1 for r in rows)
    glitched = [i for r in rows for i, v in enumerate(r) if v in (b"0", b"200010")]
    assert set(glitched) == {6, 7}


def test_readings_fall_on_the_half_hours_whatever_the_start(card):
    wake = DAY + timedelta(hours=3, minutes=15)
    assert card.measure(random.Random(4), wake, wake + timedelta(days=1), CLEAN) == 48
    times = [line.split(b"\t")[3] for n in card.files(READINGS_DIR)
             for line in (card.root / READINGS_DIR / n).read_bytes().splitlines()]
    assert times[0].startswith(b"03:30:") and times[-1].startswith(b"03:00:")
    assert all(t[3:5] in (b"00", b"30") and 5 <= int(t[6:]) <= 15 for t in times)


def test_a_file_rolls_over_once_past_100_kib_by_less_than_a_line(tmp_path):
    """seqfile.choose_append_file: append to the last file while it is under 100 KiB."""
    card = SdCard(tmp_path / "card")
    card.format(HW_ID, "varanger-03")
    card.measure(random.Random(6), DAY, DAY + timedelta(days=30), CLEAN, raw=True)
    first, *_ = card.files(READINGS_DIR)
    data = (card.root / READINGS_DIR / first).read_bytes()
    last_line = data[data.rindex(b"\n", 0, -1) + 1:]
    assert len(data) - len(last_line) < 100 * 1024 <= len(data)
    assert card.files(READINGS_DIR)[1] == "readings-0001.tsv"


def test_sync_state_is_saved_and_can_be_lost(card):
    assert card.load_state() == {"sync_states": {}, "signal_quality": None}
    state = {"sync_states": {READINGS_DIR: {"ack_file": ["readings-0000.tsv", 10, 20]}},
             "signal_quality": None}
    card.save_state(state)
    assert SdCard(card.root).load_state() == state
    card.lose_state()
    assert card.load_state()["sync_states"] == {}


def test_nickname_comes_from_the_cards_conf(card):
    assert (card.hw_id, card.nickname) == (HW_ID, "varanger-03")
    card.write_json("conf/ou-id.json", {"hw_id": HW_ID, "site_code": "varanger-04"})
    card.measure(random.Random(3), DAY, DAY + timedelta(hours=1), CLEAN)
    first = (card.root / READINGS_DIR / "readings-0000.tsv").read_bytes().split(b"\t")
    assert first[1] == b"varanger-04"


def test_irregularities_parse_rates_and_refuse_unknown_names():
    assert Irregularities.parse("glitch=0.5, none=0").glitch == 0.5
    with pytest.raises(ValueError, match="unknown irregularity"):
        Irregularities.parse("gremlins=1")


def test_current_firmware_writes_21_fields_and_none_when_the_raw_read_failed(card):
    card.measure(random.Random(5), DAY, DAY + timedelta(days=1), Irregularities(
        glitch=0, none=0.3, lost_clock=0, nonprinting=0, temp85=0, test_lines=0), raw=True)
    rows = [line.split(b"\t") for n in card.files(READINGS_DIR)
            for line in (card.root / READINGS_DIR / n).read_bytes().splitlines()]
    assert len(rows) == 48 and {len(r) for r in rows} == {21}
    raws = [r[16:] for r in rows]
    assert [b"None"] * 5 in raws  # the whole multi-field read failed
    assert all(v.isdigit() for r in raws if r != [b"None"] * 5 for v in r)
