"""Files: written so that readers never see half of one, and listed in their natural order."""

from __future__ import annotations

import os
import re
from pathlib import Path

_DIGITS = re.compile(r"(\d+)")


def write_atomic(path: Path, text: str) -> None:
    """Write next to the final name, then rename: the server never serves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def natural_key(name: str) -> list:
    """Sort key that puts readings-10000.tsv after readings-9999.tsv."""
    return [int(p) if p.isdigit() else p for p in _DIGITS.split(name)]
