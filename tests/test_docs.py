"""The repository documents itself: README.md and docs/ link only to what a clone has."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# Built, not written out: this file must not hold the path it looks for.
OUTSIDE = "../" + "shared"
SKIPPED_DIRS = {".git", ".venv", "var", "remote_data", "build", "__pycache__", ".pytest_cache",
                ".ruff_cache", "co2unit_server.egg-info"}
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def repository_files() -> list[Path]:
    """The files git keeps or would add; without git, the tree less runtime and caches."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, capture_output=True)
    if listed.returncode == 0:
        return [REPO / name for name in listed.stdout.decode().split("\0")
                if name and (REPO / name).is_file()]
    return [path for path in REPO.rglob("*")
            if path.is_file() and not SKIPPED_DIRS & set(path.relative_to(REPO).parts)]


def test_nothing_in_the_repository_points_outside_it():
    pointing = [str(path.relative_to(REPO)) for path in repository_files()
                if OUTSIDE.encode() in path.read_bytes()]
    assert pointing == []


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_relative_link_of_the_docs_resolves(doc: Path):
    broken = []
    for target in LINK.findall(doc.read_text()):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a URL, or an anchor within the page
        path = (doc.parent / target.split("#", 1)[0]).resolve()
        if not path.exists():
            broken.append(target)
    assert broken == []
