"""The readings line a unit writes (`data/readings/*.tsv`): its fields and how one is checked.

Read by the import (toolchain/importer/readings) and, for the newest reading of a pushed
chunk, by the push path (push_stats): one definition of a valid line for both."""

from __future__ import annotations

import re
from datetime import date

HW_PREFIX = "co2unit-"
# Firmware before 2020-01-14 writes 16 fields; later firmware appends the sensor's 5 raw values.
FIELDS = 16
RAW_FIELDS = 5
FIELD_COUNTS = (FIELDS, FIELDS + RAW_FIELDS)

_FLOAT = r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_INT = r"-?\d+"
# Printable text except tab; surrogates stand for bytes that were not UTF-8.
NON_PRINTING = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\udc80-\udcff]")
HW_ID = re.compile(r"co2unit-[0-9a-f]{12}")
# Real calendar fields only: SQLite and Python both refuse month 13, hour 24 or second 60.
_DATE_RE = r"\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])"
_TIME_RE = r"(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d"
# The firmware warns that its clocks are not set when they read a year up to 2010; the RTC
# restarts at 1970-01-01. Such a row's time is unknown.
_CLOCK_LOST_RE = r"1\d{3}-|200\d-|2010-"
_CLOCK_LOST = re.compile(_CLOCK_LOST_RE)
_DATE = re.compile(_DATE_RE)
_TIME = re.compile(_TIME_RE)
_NUMBER = [re.compile(_FLOAT)] + [re.compile(_INT)] * (11 + RAW_FIELDS)
# What is left of a number whose end was cut off: '-', '23.', '.'.
_CUT_NUMBER = re.compile(r"-?\d*\.?\d*")
# The common case in one C-level match (possessive: no backtracking into digits); anything
# else goes through parse_line().
GOOD_LINE = re.compile(
    r"co2unit-[0-9a-f]{12}\t[^\t\x00-\x1f\x7f-\x9f\udc80-\udcff]*+\t(?!" + _CLOCK_LOST_RE + ")"
    + _DATE_RE + r"\t" + _TIME_RE +
    r"\t(?:-?\d++(?:\.\d++)?+(?:[eE][-+]?\d++)?+|None)" + r"\t(?:-?\d++|None)" * 11
    + r"(?:" + r"\t(?:-?\d++|None)" * RAW_FIELDS + r")?+")


def real_date(text: str) -> bool:
    """False for a day the month does not have (2019-02-30), which the pattern lets through."""
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _nickname(raw: str) -> str | None:
    return None if raw == "None" or raw.endswith("NICK") else raw


def parse_line(line: str) -> tuple[list | None, str, list[str]]:
    """Validate one line: (fields or None, why it was refused, reasons for fields set NULL)."""
    if NON_PRINTING.search(line):
        return None, "non-printing bytes", []
    if not line.startswith(HW_PREFIX):
        return None, "not a co2unit- line", []
    f = line.split("\t")
    if len(f) not in FIELD_COUNTS:
        return None, "wrong field count", []
    if not HW_ID.fullmatch(f[0]):
        return None, "garbled hw_id", []
    if not _DATE.fullmatch(f[2]) or not real_date(f[2]):
        return None, "unparseable date", []
    if _CLOCK_LOST.match(f[2]):
        return None, "date before 2011 (clock not set)", []
    if not _TIME.fullmatch(f[3]):
        return None, "unparseable time", []
    nulled = []
    if f[1].endswith("NICK"):
        nulled.append("nickname ending in NICK")
    f[1] = _nickname(f[1])
    for i, pattern in enumerate(_NUMBER[:len(f) - 4], 4):
        value = f[i]
        if pattern.fullmatch(value):
            continue
        if value == "None":
            pass
        elif value == "":
            nulled.append("empty field")
        elif _CUT_NUMBER.fullmatch(value):
            nulled.append("truncated field")
        else:
            return None, "unparseable field", []
        f[i] = None
    return f, "", nulled
