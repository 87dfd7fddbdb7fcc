"""The `updates/` tree units pull code and config from: listings and file reads."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from ..core.errors import ApiError, ErrorCode

log = logging.getLogger(__name__)

UPDATES_DIR = "updates"


def _visible(name: str) -> bool:
    # Editor swap files and half-copied `.tmp` dirs must never be offered to a unit.
    return not name.startswith(".")


def files_below(directory: Path | str) -> list[str]:
    """Every file below `directory`, as sorted '/'-separated paths relative to it."""
    found: list[str] = []
    _collect(os.fspath(directory), "", found)
    return sorted(found)


def _collect(path: str, prefix: str, found: list[str]) -> None:
    # Plain strings and scandir: the delivery states walk every update of 1,000 units.
    try:
        entries = list(os.scandir(path))
    except OSError:  # unreadable or vanished meanwhile: skipped, as os.walk does
        return
    for entry in entries:
        if not _visible(entry.name):
            continue
        if entry.is_dir():  # follows symlinks
            _collect(entry.path, f"{prefix}{entry.name}/", found)
        else:
            found.append(prefix + entry.name)


class UpdateTree:
    """Read-only access to `<root>/<hw_id>/updates/`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def resolve(self, hw_id: str, segments: Sequence[str]) -> Path:
        if not segments or segments[0] != UPDATES_DIR:
            raise ApiError(ErrorCode.NOT_FOUND, "only the updates tree can be read")
        path = self.root.joinpath(hw_id, *segments)
        if not path.exists():
            raise ApiError(ErrorCode.NOT_FOUND, f"no {'/'.join(segments)} for {hw_id}")
        return path

    def listing(self, path: Path, recursive: bool) -> list[str]:
        """Entries of a directory; recursive lists files only, as paths relative to it."""
        if recursive:
            return files_below(path)
        entries = []
        for entry in sorted(e for e in os.listdir(path) if _visible(e)):
            # An empty update directory would be picked and then block the unit every day.
            if (path / entry).is_dir() and not files_below(path / entry):
                log.warning("not offering empty update directory %s", path / entry)
                continue
            entries.append(entry)
        return entries

    @staticmethod
    def open_file(path: Path) -> tuple[BinaryIO, int]:
        """The file opened for reading, and its size now."""
        source = open(path, "rb")  # noqa: SIM115 (closed by the reply that sends it)
        return source, os.fstat(source.fileno()).st_size
