"""What the running gateway process cannot do, for `co2unit-server check`.

The gateway process keeps each gateway apart: one that fails to start (its port taken, say),
or a pull devices file that turns bad, never stops the others. Such a problem is logged and
kept in `<var_dir>/gateways-health.json` (Config.gateway_health_file) while it lasts, written
at every change; `check` reads it. The file is emptied when the process starts and removed
when it stops cleanly, so it never speaks for a process that is gone.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

from ..core.files import write_atomic

log = logging.getLogger(__name__)

# A gateway that is not running takes no data: critical. A devices file in error leaves the
# collector polling its last good version: a warning.
CRITICAL = "critical"
WARNING = "warning"


class Health:
    """The process's current problems, by what they are about, mirrored to the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: dict[str, tuple[str, str]] = {}  # about -> (level, message)
        self._write()

    def set(self, about: str, level: str, message: str | None) -> None:
        """Record a problem (None: it is over); the file is written only on a change."""
        problem = None if message is None else (level, message)
        if self.problems.get(about) == problem:
            return
        if problem is None:
            del self.problems[about]
        else:
            self.problems[about] = problem
        self._write()

    def _write(self) -> None:
        try:
            write_atomic(self.path, json.dumps(
                {about: {"level": level, "message": message}
                 for about, (level, message) in self.problems.items()}))
        except OSError as exc:  # the log has said it already; check cannot see it now
            log.warning("cannot write %s: %s", self.path, exc)

    def remove(self) -> None:
        """At a clean stop: no process, no problems to report."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def read_health(path: Path) -> list[tuple[str, str, str]]:
    """(about, level, message) of each problem the running gateway process reports."""
    try:
        problems = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        return [("gateway health", WARNING, f"{path} cannot be read: {exc}")]
    return [(about, entry.get("level", WARNING), entry.get("message", ""))
            for about, entry in sorted(problems.items())]
