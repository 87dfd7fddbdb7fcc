"""The WSGI entry point uWSGI loads (`module = co2unit_server.wsgi:app`)."""

import os

from flask import Flask

from .core.config import load_config
from .serve import METRICS_DIR_ENV


def _load_app() -> Flask:
    # The one place the server process hands its environment to the configuration.
    config = load_config(os.environ)
    if METRICS_DIR_ENV not in os.environ:
        # Plain `uwsgi --ini` (`co2unit-server serve` set and emptied it): prometheus_client
        # must see it before its first import, which the app's modules do.
        config.metrics_dir.mkdir(parents=True, exist_ok=True)
        os.environ[METRICS_DIR_ENV] = str(config.metrics_dir.resolve())
    from .server.app import create_app

    return create_app(config)


app = _load_app()
