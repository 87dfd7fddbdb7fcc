"""The WSGI entry point uWSGI loads (`module = co2unit_server.wsgi:app`)."""

import os

from .config import load_config
from .server.app import create_app

# The one place the server process hands its environment to the configuration.
app = create_app(load_config(os.environ))
