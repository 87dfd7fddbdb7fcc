"""The updates tree: listings as the units expect them, and nothing broken offered."""

from __future__ import annotations

import pytest

from co2unit_server.core.errors import ApiError
from co2unit_server.updates.tree import UpdateTree

from conftest import HW_ID


@pytest.fixture
def tree(tmp_path):
    updates = tmp_path / HW_ID / "updates"
    for rel in ("update-2019-07-28a/flash/main.py", "update-2020-01-14a/conf-patch/ou-id.json",
                "update-2020-01-14a/flash/lib/fileutil.mpy", "update-2020-01-14a/.swp"):
        (updates / rel).parent.mkdir(parents=True, exist_ok=True)
        (updates / rel).write_bytes(rel.encode())
    (updates / "update-2099-empty").mkdir()
    (updates / ".update-copying").mkdir()
    return UpdateTree(tmp_path)


def test_top_listing_skips_hidden_and_empty_directories(tree):
    path = tree.resolve(HW_ID, ["updates"])
    assert tree.listing(path, recursive=False) == ["update-2019-07-28a", "update-2020-01-14a"]


def test_recursive_listing_gives_file_paths_relative_to_the_update(tree):
    path = tree.resolve(HW_ID, ["updates", "update-2020-01-14a"])
    assert tree.listing(path, recursive=True) == ["conf-patch/ou-id.json",
                                                  "flash/lib/fileutil.mpy"]


def test_read_file(tree):
    path = tree.resolve(HW_ID, ["updates", "update-2020-01-14a", "flash", "lib", "fileutil.mpy"])
    source, size = tree.open_file(path)
    with source:
        assert source.read() == b"update-2020-01-14a/flash/lib/fileutil.mpy"
    assert size == len(b"update-2020-01-14a/flash/lib/fileutil.mpy")


@pytest.mark.parametrize("segments", [["updates", "nope"], ["data"], [], ["conf", "x"]])
def test_missing_or_outside_updates_is_404(tree, segments):
    with pytest.raises(ApiError) as err:
        tree.resolve(HW_ID, segments)
    assert err.value.status == 404


def test_unit_without_updates_dir_is_404(tmp_path):
    with pytest.raises(ApiError) as err:
        UpdateTree(tmp_path).resolve(HW_ID, ["updates"])
    assert err.value.status == 404
