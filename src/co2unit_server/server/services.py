"""The objects a running app works with, built once from the Config."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..core.config import Config
from ..database import db
from ..database.db_writer import BatchWriter
from ..records.pinglog import PingLog
from ..records.pushstore import PushStore
from ..updates.tree import UpdateTree


@dataclass(frozen=True)
class Services:
    config: Config
    hw_id_pattern: re.Pattern[str]
    push_store: PushStore
    pings: PingLog
    updates: UpdateTree
    downloads: BatchWriter  # rows of update_downloads
    push_stats: BatchWriter  # rows for push_daily

    @classmethod
    def from_config(cls, config: Config) -> Services:
        return cls(
            config=config,
            hw_id_pattern=re.compile(config.hw_id_pattern),
            push_store=PushStore(config.remote_data_dir, config.locks_dir, config.push_dirs,
                                 config.max_file_bytes, config.min_free_bytes),
            pings=PingLog(config.pings_dir, config.ping_rotate_bytes,
                          config.locks_dir / "pings.lock", config.db_path,
                          config.db_busy_timeout_ms),
            updates=UpdateTree(config.remote_data_dir),
            downloads=BatchWriter(config.db_path, config.db_busy_timeout_ms, db.INSERT_DOWNLOAD,
                                  "update download", "logged only, not in"),
            push_stats=BatchWriter(config.db_path, config.db_busy_timeout_ms,
                                   db.UPSERT_PUSH_DAILY, "push statistics",
                                   "lost for the fleet page (the data is stored), not in",
                                   unit_at=0),
        )
