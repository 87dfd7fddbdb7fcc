"""Checks on every part of a request, done before anything touches the disk."""

from __future__ import annotations

import re

from .errors import ApiError, ErrorCode

_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no", ""}


def check_hw_id(hw_id: str, pattern: re.Pattern[str]) -> str:
    if not pattern.fullmatch(hw_id):
        raise ApiError(ErrorCode.BAD_HW_ID, f"hardware ID {hw_id!r} does not match "
                       f"{pattern.pattern!r}")
    return hw_id


# A gateway device's name: its raw log directory (esp8266-1, a polled device's configured name).
DEVICE_ID = re.compile(r"(?!\.\.?$)[A-Za-z0-9._-]{1,128}")


def check_device_id(name: str) -> str:
    if not DEVICE_ID.fullmatch(name):
        raise ApiError(ErrorCode.BAD_DEVICE_ID, f"{name[:140]!r} is neither a hardware ID nor "
                       "a device name (letters, digits, '.', '_', '-')")
    return name


# Control characters and the backslash: never part of a name a unit or an admin writes.
_UNSAFE_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")
_NOT_NAMES = ("", ".", "..")


def is_plain_name(segment: str) -> bool:
    """True for a name that cannot leave its directory: no '..', separators or control bytes."""
    return segment not in _NOT_NAMES and "/" not in segment and not _UNSAFE_CHARS.search(segment)


def split_path(path: str) -> list[str]:
    """Split a request sub-path into plain-name segments, or refuse it with 400."""
    segments = path.split("/")
    # A leading "/" or "//" shows up as an empty segment.
    if _UNSAFE_CHARS.search(path) or any(s in _NOT_NAMES for s in segments):
        raise ApiError(ErrorCode.BAD_PATH, f"invalid path {path!r}: segments must be plain "
                       "names (no '..', empty segments, backslashes or control characters)")
    return segments


def parse_offset(raw: str | None) -> int:
    if raw is None or not raw.isascii() or not raw.isdigit():
        raise ApiError(ErrorCode.BAD_OFFSET, f"offset must be a non-negative integer, got {raw!r}")
    return int(raw)


def parse_bool(name: str, raw: str | None, default: bool) -> bool:
    """Parse the units' True/False (and true/1/false/0) query flags."""
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ApiError(ErrorCode.BAD_QUERY, f"{name} must be True or False, got {raw!r}")


def parse_int(name: str, raw: str | None) -> int | None:
    """Parse an optional integer query value; 'None' and empty mean absent."""
    if raw is None or raw in ("", "None"):
        return None
    try:
        return int(raw)
    except ValueError:
        raise ApiError(ErrorCode.BAD_QUERY, f"{name} must be an integer, got {raw!r}") from None
