"""The application factory: create_app(config) wires routes, services and error handling."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, request
from flask_restful import Api
from werkzeug.exceptions import HTTPException

from ..core.config import Config
from ..core.errors import ApiError, ErrorCode
from . import auth, fleet_pages, live_pages, metrics, pages, sessions_api
from .api import bp as api_bp
from .resources import Alive, PushSequential, Updates
from .services import Services

log = logging.getLogger("co2unit_server")


def error_response(exc: Exception) -> Response:
    """Every error as JSON {"error", "message"}: never a traceback page, always logged."""
    if isinstance(exc, ApiError):
        status, body = exc.status, exc.body()
    elif isinstance(exc, HTTPException):
        status = exc.code or 500
        code = (exc.name or "error").upper().replace(" ", "_")
        body = {"error": code, "message": exc.description}
    else:
        log.exception("unexpected error on %s %s", request.method, request.path)
        status = ErrorCode.INTERNAL_ERROR.status
        body = ApiError(ErrorCode.INTERNAL_ERROR).body()
    if status < 500:
        log.warning("%s %s -> %d %s: %s", request.method, request.full_path.rstrip("?"),
                    status, body["error"], body["message"])
    resp = jsonify(body)
    resp.status_code = status
    if isinstance(exc, ApiError):
        resp.headers.update(exc.headers)  # e.g. a 401's WWW-Authenticate
    return resp


class UnitApi(Api):
    """Flask-RESTful's Api with our JSON error format instead of its own."""

    def handle_error(self, e: Exception) -> Response:
        return error_response(e)


def _configure_logging(level: str) -> None:
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
    log.setLevel(level)


def create_app(config: Config | None = None, *, with_metrics: bool = True) -> Flask:
    """Build the server app for `config` (defaults when None).

    `with_metrics=False` leaves out the metrics hooks: only for the benchmark's comparison.
    """
    config = config or Config()
    _configure_logging(config.log_level)
    app = Flask(__name__)
    # A backstop: read_body answers oversized bodies itself, before Werkzeug would.
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    # Werkzeug would answer `//` or a missing slash with a redirect, which units cannot follow.
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    for directory in (config.var_dir, config.pings_dir, config.locks_dir):
        directory.mkdir(parents=True, exist_ok=True)
    app.extensions["co2unit"] = Services.from_config(config)
    # Metrics first: their timer then covers the access checks too.
    if with_metrics:
        metrics.init_app(app, config)
    auth.init_app(app, config)

    api = UnitApi(app)
    api.add_resource(Alive, "/ou/<hw_id>/alive")
    api.add_resource(PushSequential, "/ou/<hw_id>/push-sequential/<path:path>")
    api.add_resource(Updates, "/ou/<hw_id>/updates", "/ou/<hw_id>/updates/<path:path>")
    app.register_blueprint(pages.bp)
    app.register_blueprint(fleet_pages.bp)
    app.register_blueprint(api_bp)
    app.register_blueprint(sessions_api.bp)
    app.register_blueprint(live_pages.bp)
    app.register_error_handler(Exception, error_response)
    return app
