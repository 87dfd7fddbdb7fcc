"""The streaming sessions in the admin API: /api/sessions, /api/sessions/start, .../stop.

Behind the admin login like the rest of /api. Start and stop reach the running gateway
process through its control socket (gateways/control.py), as `co2unit-server session` does;
the list comes from the database's `sessions` table. Gateway not running: 503
GATEWAY_UNAVAILABLE; a start while one runs, or a stop while none does: 409 SESSION_CONFLICT.

The /live page's forms post here with a `next` field: the answer is then a redirect back to
that page (with `?error=` when refused) instead of JSON.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode, urlsplit

from flask import Blueprint, Response, redirect, request

from ..core.errors import ApiError, ErrorCode
from ..gateways import control
from ..records import sessions
from .fleet_pages import request_db, services
from .resources import json_reply

log = logging.getLogger(__name__)
bp = Blueprint("sessions", __name__, url_prefix="/api")


def gateway_call(command: str, timeout: float = 5.0, **args: Any) -> dict[str, Any]:
    """The running gateway's answer; 503 when it is not running, 409 when it refuses."""
    path = services().config.control_socket
    try:
        answer = control.call(path, command, timeout, **args)
    except control.GatewayUnavailable as exc:
        # A 5xx is not logged by the app's error handler: this one says what to look at.
        log.error("%s %s: gateway unavailable: %s", request.method, request.path, exc)
        raise ApiError(ErrorCode.GATEWAY_UNAVAILABLE, f"the gateway is not running: {exc}"
                       ) from exc
    if not answer.get("ok"):
        raise ApiError(ErrorCode.SESSION_CONFLICT, str(answer.get("error")))
    answer.pop("ok")
    return answer


def session_json(session: sessions.Session | None) -> dict[str, Any] | None:
    return None if session is None else session.public()


@bp.get("/sessions")
def session_list() -> Response:
    """Every session, newest first, with its start and stop times; `current` is the one
    running (as the database knows it)."""
    with request_db() as conn:
        rows = sessions.listed(conn)
    return json_reply({"current": session_json(sessions.running(rows)),
                       "sessions": [s.public() for s in rows]})


@bp.post("/sessions/start")
def session_start() -> Response:
    """Start a session (optional `name`, JSON or form); every connected device is told."""
    try:
        name = sessions.check_name(_field("name"))
    except ValueError as exc:
        raise ApiError(ErrorCode.BAD_QUERY, str(exc)) from exc
    return _command("session-start", name=name)


@bp.post("/sessions/stop")
def session_stop() -> Response:
    """Stop the running session; every connected device is told."""
    return _command("session-stop")


def _command(command: str, **args: Any) -> Response:
    _check_origin()
    back = _next_page()
    try:
        answer = gateway_call(command, **{k: v for k, v in args.items() if v})
    except ApiError as exc:
        if back is None:
            raise
        if exc.status < 500:  # gateway_call logged the others
            log.warning("%s %s -> %s: %s", request.method, request.path, exc.code.name,
                        exc.message)
        return redirect(f"{back}?{urlencode({'error': exc.message})}", 303)
    log.info("%s %s: %s", request.method, request.path, answer["session"]["id"])
    return redirect(back, 303) if back is not None else json_reply(answer)


def _field(name: str) -> Any:
    """A field of the JSON body or of the form."""
    if request.is_json:
        body = request.get_json(silent=True)
        return body.get(name) if isinstance(body, dict) else None
    return request.form.get(name)


def _next_page() -> str | None:
    """Where a form wants to go back to: a path on this site only (no open redirect)."""
    target = request.form.get("next") if not request.is_json else None
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        raise ApiError(ErrorCode.BAD_QUERY, "next must be a path on this site")
    return parts.path


def _check_origin() -> None:
    """Refuse a post from another site's page: a browser sends the admin's basic credentials
    with it (cross-site request forgery). Browsers send Origin on every cross-site POST."""
    origin = request.headers.get("Origin")
    # The host alone: behind a proxy that ends TLS the scheme differs and the site is the same.
    if origin is not None and urlsplit(origin).netloc != request.host:
        raise ApiError(ErrorCode.CROSS_ORIGIN, f"Origin {origin!r} is not this site "
                       f"({request.host})")
