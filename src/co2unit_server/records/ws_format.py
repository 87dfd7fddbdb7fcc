"""The streaming devices' WebSocket messages (docs/websocket.md) and their raw log lines.

Pure functions: the gateway checks what a device sends with them, and the importer reads the
raw log (JSON lines: `{"ts", "peer", "session", "seq", "raw"}`, `raw` the readings message
exactly as received, and `"new_sequence": true` on the first line of a device's new sequence of
seqs) with the same ones, so a rebuild from the logs gives the same rows.
"""

from __future__ import annotations

import json
import math
import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from ..database.rows import Receipt

FAMILY = "ws"
NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")  # device ids and value names
MAX_READINGS = 1000  # per message: bounds the work one message can cause


class MessageError(ValueError):
    """A message the gateway answers with an `error`; `code` is the error's CODE."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Hello:
    device_id: str
    sensors: tuple[str, ...]
    token: str | None


class Readings(NamedTuple):  # made for each message: see WsLine
    seq: int
    rows: tuple[tuple[str, str, float], ...]  # (UTC ts text, name, value)
    # Values of a name at a time another value of the message has: `measurements` keeps one
    # value per device, name and time (the first), the raw log keeps them.
    repeats: int = 0
    newest: str | None = None  # the newest time of a value (None: none has one)


def parse(text: str | bytes) -> dict[str, Any]:
    """A message as a JSON object with a string `type`; MessageError otherwise."""
    if isinstance(text, bytes):
        raise MessageError("BAD_MESSAGE", "binary frames are not accepted; send JSON text")
    try:
        message = json.loads(text)
    except (ValueError, RecursionError) as exc:  # nesting deep enough stops the parser
        raise MessageError("BAD_JSON", f"not JSON: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise MessageError("BAD_MESSAGE", 'a message is a JSON object with a string "type"')
    return message


def check_hello(message: dict[str, Any]) -> Hello:
    if message["type"] != "hello":
        raise MessageError("HELLO_FIRST", 'the first message must be {"type": "hello", ...}')
    device_id = message.get("device_id")
    if not isinstance(device_id, str) or not NAME.fullmatch(device_id):
        raise MessageError("BAD_DEVICE_ID", "device_id must be 1-64 of A-Z a-z 0-9 . _ -")
    sensors = message.get("sensors", [])
    if not isinstance(sensors, list) or not all(isinstance(s, str) for s in sensors):
        raise MessageError("BAD_MESSAGE", "sensors must be a list of names")
    token = message.get("token")
    if token is not None and not isinstance(token, str):
        raise MessageError("BAD_MESSAGE", "token must be a string")
    return Hello(device_id, tuple(sensors), token)


def utc_text(raw: object) -> str:
    """An ISO 8601 time as the tables write UTC ('YYYY-MM-DDTHH:MM:SS.ffffff')."""
    if not isinstance(raw, str):
        raise ValueError("ts must be an ISO 8601 string")
    ts = datetime.fromisoformat(raw)
    if ts.tzinfo is not None:
        ts = ts.astimezone(UTC).replace(tzinfo=None)
    return ts.isoformat(timespec="microseconds")


# Value names already checked: a fleet uses a handful, so most checks are a set lookup.
_good_names: set[str] = set()
MAX_GOOD_NAMES = 10_000


def _value(name: object, raw: object) -> float:
    if type(raw) is float and name in _good_names and math.isfinite(raw):
        return raw  # the common case, checked in a third of the time
    if name not in _good_names:
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise ValueError(f"value name {name!r} is not 1-64 of A-Z a-z 0-9 . _ -")
        if len(_good_names) < MAX_GOOD_NAMES:
            _good_names.add(name)
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise ValueError(f"{name} is {raw!r}, not a finite number")
    return float(raw)


def check_readings(message: dict[str, Any]) -> Readings:
    """The seq and rows of a `readings` message; MessageError for anything malformed."""
    seq = message.get("seq")
    if type(seq) is not int or seq < 0:  # JSON gives int or bool (a subclass): exactly int
        raise MessageError("BAD_MESSAGE", "seq must be a non-negative integer")
    readings = message.get("readings")
    if type(readings) is not list or not readings or len(readings) > MAX_READINGS:
        raise MessageError("BAD_MESSAGE", f"readings must be a list of 1-{MAX_READINGS}")
    rows: list[tuple[str, str, float]] = []
    newest = None
    try:
        for reading in readings:
            values = reading.get("values") if type(reading) is dict else None
            if type(values) is not dict:
                raise ValueError('each reading is {"ts": ..., "values": {name: number}}')
            ts = utc_text(reading.get("ts"))
            rows += [(ts, name, _value(name, raw)) for name, raw in values.items()]
            if values and (newest is None or ts > newest):  # per reading, not per value
                newest = ts
    except ValueError as exc:
        raise MessageError("BAD_MESSAGE", f"seq {seq}: {exc}") from None
    # values is an object (unique names): a name repeats only in readings of one time.
    repeats = len(rows) - len({row[:2] for row in rows}) if len(readings) > 1 else 0
    return Readings(seq, tuple(rows), repeats, newest)


def welcome(session: dict[str, str] | None) -> str:
    return json.dumps({"type": "welcome", "session": session})


def ack(seq: int) -> str:
    return f'{{"type": "ack", "seq": {seq:d}}}'  # json.dumps's text, at a tenth of its cost


def error(code: str, message: str) -> str:
    return json.dumps({"type": "error", "error": code, "message": message})


def command(name: str, session: str, at: str) -> str:
    return json.dumps({"type": "command", "command": name, "session": session, "at": at})


# A full disk (ws_gateway's doc): the error, the close code and the retry rule, for the
# gateway and for the devices that follow it.
STORAGE_FULL = "STORAGE_FULL"
CLOSE_TRY_AGAIN = 1013  # RFC 6455 "Try Again Later"
RETRY_JITTER = 0.5  # a device adds up to this share of the wait, at random
_RETRY_AFTER = re.compile(r"retry after (\d+(?:\.\d+)?) s")


def retry_reason(seconds: float) -> str:
    """The 1013 close reason (a STORAGE_FULL error's message says the same)."""
    return f"storage full; retry after {seconds:g} s"


def retry_after(text: str) -> float | None:
    """The seconds a 1013's reason or a STORAGE_FULL error's message asks a device to wait."""
    found = _RETRY_AFTER.search(text)
    return float(found.group(1)) if found else None


def retry_wait(seconds: float, rng: random.Random) -> float:
    """The retry rule: wait at least `seconds`, plus a random share of it up to RETRY_JITTER,
    so a fleet closed at once does not come back at once."""
    return seconds * (1 + RETRY_JITTER * rng.random())


_LINE_KEYS = {"ts", "peer", "session", "seq", "raw"}
_MARKED_KEYS = _LINE_KEYS | {"new_sequence"}
_quoted = json.encoder.encode_basestring  # a JSON string, as json.dumps(ensure_ascii=False)


class WsLine(NamedTuple):
    """One raw log line: a readings message as received, with when, from where and in which
    session it arrived. (A named tuple: made for each message, a frozen dataclass cost three
    times as much.)"""

    ts: str  # UTC receive time
    peer: str
    session: str | None
    seq: int
    raw: str  # the message's text
    # The device started its seqs again here (ws_gateway): the seqs before it are another
    # sequence's. Written only when true, so every line before it is as it was.
    new_sequence: bool = False

    def encode(self) -> bytes:
        # json.dumps(ensure_ascii=False) of the keys, written out: half its cost.
        session = "null" if self.session is None else _quoted(self.session)
        marker = ', "new_sequence": true' if self.new_sequence else ""
        return (f'{{"ts": {_quoted(self.ts)}, "peer": {_quoted(self.peer)}, "session": '
                f'{session}, "seq": {self.seq:d}{marker}, "raw": {_quoted(self.raw)}}}\n'
                ).encode()

    @classmethod
    def parse(cls, line: bytes) -> WsLine:
        """The line's fields; ValueError for a line no gateway wrote (torn, edited)."""
        data = json.loads(line)
        if not isinstance(data, dict) or (set(data) != _LINE_KEYS and (
                set(data) != _MARKED_KEYS or data["new_sequence"] is not True)):
            raise ValueError(f"not a JSON object of {', '.join(sorted(_LINE_KEYS))} "
                             '(and "new_sequence": true)')
        fields = cls(data["ts"], data["peer"], data["session"], data["seq"], data["raw"],
                     "new_sequence" in data)
        if (not all(isinstance(v, str) for v in (fields.peer, fields.raw))
                or not isinstance(fields.session, str | None)
                or isinstance(fields.seq, bool) or not isinstance(fields.seq, int)):
            raise ValueError("a field of the wrong type")
        utc_text(fields.ts)
        return fields


def interpret(line: WsLine, device: str, source: str) -> tuple[Receipt, list[tuple]]:
    """A raw log line's receipt and values (the importer's way: from the line alone)."""
    try:
        readings = check_readings(parse(line.raw))
    except MessageError as exc:  # never written so by the gateway; an edited log
        return Receipt(source, device, FAMILY, line.ts, "bad", 0, None, str(exc)), []
    return stored(readings, line, device, source)


def stored(readings: Readings, line: WsLine, device: str,
           source: str) -> tuple[Receipt, list[tuple]]:
    """The receipt and values of a line whose message checked as `readings` (the gateway
    has them from receipt; the importer from interpret): one way to rows for both. The values
    are Measurement's fields in plain tuples (see Measurement)."""
    session = line.session
    values = [(device, FAMILY, ts, name, value, source, session)
              for ts, name, value in readings.rows]
    if readings.repeats:  # the store keeps the first of each: say so, not "ok"
        return (Receipt(source, device, FAMILY, line.ts, "partial",
                        len(values) - readings.repeats, None,
                        f"seq {readings.seq}: {readings.repeats} value(s) at a name and time "
                        "the message has already, kept in the raw log only"), values)
    return (Receipt(source, device, FAMILY, line.ts, "ok", len(values), None,
                    f"seq {readings.seq}"), values)
