"""co2unit-server: the server and data toolchain for CO2 Observation Units."""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    # Imported on first use: the toolchain's cron runs should not pay for loading Flask.
    if name == "create_app":
        from .server.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
