"""Request validation: hardware IDs, path segments, offsets and flags."""

from __future__ import annotations

import re

import pytest

from co2unit_server.core.errors import ApiError, ErrorCode
from co2unit_server.core.validate import (
    check_hw_id,
    parse_bool,
    parse_int,
    parse_offset,
    split_path,
)

PATTERN = re.compile(r"co2unit-[0-9a-f]{12}")


@pytest.mark.parametrize("hw_id", ["co2unit-30aea42a50bc", "co2unit-000000000000"])
def test_good_hw_ids(hw_id):
    assert check_hw_id(hw_id, PATTERN) == hw_id


@pytest.mark.parametrize("hw_id", ["co2unit-30AEA42A50BC", "co2unit-30aea42a50b", "..",
                                   "co2unit-30aea42a50bc0", "x", "", "co2unit-30aea42a50bc\n"])
def test_bad_hw_ids(hw_id):
    with pytest.raises(ApiError) as err:
        check_hw_id(hw_id, PATTERN)
    assert err.value.code is ErrorCode.BAD_HW_ID


def test_plain_paths_split():
    assert split_path("data/readings/readings-0000.tsv") == ["data", "readings",
                                                            "readings-0000.tsv"]


@pytest.mark.parametrize("path", ["data/../x", "..", "data/./x", "/etc/passwd", "data//x",
                                  "data/x/", "data\\x", "data/x\x00", "data/x\ny", "data/\x7f",
                                  ""])
def test_bad_paths(path):
    with pytest.raises(ApiError) as err:
        split_path(path)
    assert err.value.code is ErrorCode.BAD_PATH


@pytest.mark.parametrize("raw,value", [("0", 0), ("4096", 4096), ("123456789", 123456789)])
def test_good_offsets(raw, value):
    assert parse_offset(raw) == value


@pytest.mark.parametrize("raw", [None, "", "-1", "1.5", "abc", "0x10", " 1", "١٢"])
def test_bad_offsets(raw):
    with pytest.raises(ApiError) as err:
        parse_offset(raw)
    assert err.value.code is ErrorCode.BAD_OFFSET


@pytest.mark.parametrize("raw,value", [("True", True), ("true", True), ("1", True),
                                       ("False", False), ("false", False), ("0", False),
                                       (None, False)])
def test_bool_flags(raw, value):
    assert parse_bool("recursive", raw, default=False) is value


def test_bad_bool_flag():
    with pytest.raises(ApiError) as err:
        parse_bool("recursive", "maybe", default=False)
    assert err.value.status == 400


def test_optional_ints():
    assert parse_int("rssi", "-89") == -89
    assert parse_int("rssi", "None") is None
    assert parse_int("rssi", None) is None
    with pytest.raises(ApiError):
        parse_int("rssi", "loud")
