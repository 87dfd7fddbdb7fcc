"""The NodeMCU air-state answers (GATEWAYS.md §2): every value, named by its sensor.

`{"nodemcu": {"mq135": {"co2": "402.08", ...}, "bmp180": {...}, ...}}` gives `mq135.co2`,
`bmp180.pressure`, ...: same-named values of different sensors stay apart, never averaged.
Values are strings with two decimals; `""` (booting), `nan`, `inf`, `ovf` are unusable.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from ..measurement_store import Measurement, Receipt
from ..rawlog import RawLine

FAMILY = "pull"
# The DS18B20 reads -55..125 °C; the firmware averages 8 slots and a missing probe reads
# -127, so a mean below the range has a missing probe in it and is no temperature.
_LOWEST = {"ds18b20.temperature": -55.0}
# Before its first sensor read the firmware answers "" for every String value, but the DS18B20
# mean comes from a zero-initialised float array: a "0.00" beside any "" is no reading.
_PROBE_MEAN = "ds18b20.temperature"


class AnswerError(ValueError):
    """An answer that is kept raw but gives no value; the message says why."""


@dataclass(frozen=True)
class Answer:
    """The usable values of an answer (name, value) and what was wrong with the others."""

    values: tuple[tuple[str, float], ...]
    problems: tuple[str, ...]

    @property
    def verdict(self) -> str:
        return "partial" if self.problems else "ok"

    @property
    def detail(self) -> str:
        return "; ".join(self.problems)

    def measurements(self, device: str, ts: str, source: str) -> list[Measurement]:
        return [Measurement(device, FAMILY, ts, name, value, source)
                for name, value in self.values]

    def receipt(self, device: str, ts: str, source: str) -> Receipt:
        return Receipt(source, device, FAMILY, ts, self.verdict, len(self.values), None,
                       self.detail)


def _value(name: str, raw: object) -> float:
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise ValueError(f"{name} is {type(raw).__name__}, not a number")
    if raw == "":
        raise ValueError(f"{name} is empty (booting)")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} is {raw!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} is {raw!r}")
    if value < _LOWEST.get(name, -math.inf):
        raise ValueError(f"{name} is {raw}: below the sensor's range (a missing probe)")
    return value


def parse_answer(status: int, body: bytes) -> Answer:
    """The values of a 200 JSON answer; AnswerError when it gives none."""
    if status != 200:
        raise AnswerError(f"HTTP {status}")
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise AnswerError(f"not JSON: {exc}") from None
    sensors = document.get("nodemcu") if isinstance(document, dict) else None
    if not isinstance(sensors, dict):
        raise AnswerError('no "nodemcu" object')
    values: list[tuple[str, float]] = []
    problems: list[str] = []
    booting = False
    for sensor, readings in sensors.items():
        if not isinstance(readings, dict):
            problems.append(f"{sensor} is not an object")
            continue
        for key, raw in readings.items():
            name = f"{sensor}.{key}"
            booting = booting or raw == ""
            try:
                values.append((name, _value(name, raw)))
            except ValueError as exc:
                problems.append(str(exc))
    if booting and (_PROBE_MEAN, 0.0) in values:
        values.remove((_PROBE_MEAN, 0.0))
        problems.append(f"{_PROBE_MEAN} is 0.00 before the first read (booting)")
    if not values:
        raise AnswerError("no usable value" + (": " + "; ".join(problems) if problems else ""))
    return Answer(tuple(values), tuple(problems))


def interpret(line: RawLine, device: str, source: str) -> tuple[Receipt, list[Measurement]]:
    """A raw log line's receipt and values (for the importer; the collector decides alike)."""
    if line.verdict == "failed" or not line.end.isdigit():
        return Receipt(source, device, FAMILY, line.ts, "failed", 0, None, line.detail), []
    try:
        answer = parse_answer(int(line.end), line.payload)
    except AnswerError as exc:
        return Receipt(source, device, FAMILY, line.ts, "bad", 0, None, str(exc)), []
    return answer.receipt(device, line.ts, source), answer.measurements(device, line.ts, source)
