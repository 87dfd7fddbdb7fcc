"""Our app without the metrics hooks and the admin login: bench_server.py's baseline for them."""

import os

from co2unit_server.core.config import load_config
from co2unit_server.server.app import create_app

# An entry point like co2unit_server.wsgi; the bench's `ours` runs with both turned on.
application = create_app(load_config(os.environ, admin_users_file=None), with_metrics=False)
