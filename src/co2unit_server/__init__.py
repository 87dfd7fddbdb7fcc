"""co2unit-server: the server and data toolchain for CO2 Observation Units."""

from .app import create_app

__all__ = ["create_app"]
