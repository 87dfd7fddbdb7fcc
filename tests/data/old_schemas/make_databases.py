"""Build tests/data/old_schemas/v<N>.sql: the database each earlier schema's toolchain built
from the frozen tree of tests/old_schema_fixtures.py.

Needs the project's git history; the tests need only what this writes. Run from anywhere:

    .venv/bin/python tests/data/old_schemas/make_databases.py

Per version: `git archive <commit> src` into a temp dir, the tree written beside it, that
commit's `co2unit-server import` run on it, the database dumped (sqlite3's iterdump) with its
PRAGMA user_version.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent.parent
sys.path.insert(0, str(TESTS))

from old_schema_fixtures import OLD_SCHEMAS, build_old_schema_tree  # noqa: E402


def old_sources(commit: str, into: Path) -> Path:
    """That commit's src/ under `into`."""
    archive = subprocess.run(["git", "-C", str(TESTS.parent), "archive", commit, "src"],
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def build(version: int, commit: str, work: Path) -> str:
    """The dump of the database `commit`'s toolchain builds from the frozen tree."""
    src = old_sources(commit, work / "old")
    tree = build_old_schema_tree(work / "tree")
    subprocess.run([sys.executable, "-m", "co2unit_server", "import",
                    "--data-dir", str(tree.data_dir), "--db-dir", str(tree.db_dir),
                    "--deployments", str(tree.deployments)],
                   check=True, cwd=work, env={**os.environ, "PYTHONPATH": str(src)})
    conn = sqlite3.connect(tree.db_dir / "db.sqlite3")
    try:
        user_version = conn.execute("PRAGMA user_version").fetchone()[0]
        assert max(user_version, 1) == version, (commit, user_version)
        dump = "\n".join(conn.iterdump())
    finally:
        conn.close()
    return f"{dump}\nPRAGMA user_version = {user_version};\n"


def main() -> None:
    for version, commit in OLD_SCHEMAS.items():
        with tempfile.TemporaryDirectory() as work:
            (HERE / f"v{version}.sql").write_text(build(version, commit, Path(work)),
                                                  encoding="utf-8")
        print(f"v{version}.sql: built by {commit[:7]}")


if __name__ == "__main__":
    main()
