"""Pages for admins: the index, recent pings, and what `database/` generates into var/pub/."""

from __future__ import annotations

import mimetypes
from datetime import UTC, datetime
from html import escape

from flask import Blueprint, Response, current_app, request

from ..core.errors import ApiError, ErrorCode
from ..core.validate import is_plain_name, parse_bool, parse_int

bp = Blueprint("pages", __name__)

PINGS_REFRESH_S = 600
CO2_REFRESH_S = 3600
PINGS_SUMMARY = "pings_summary.html"
CO2_SUMMARY = "co2_summary.html"
HW_ID_PREFIX = "co2unit-"

_STYLE = ("body{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;"
          "padding:0 1rem;line-height:1.5;color:#222}code{background:#f2f2f2;padding:0 .2em}")


def html_page(title: str, body: str, status: int = 200) -> Response:
    """A small self-contained HTML page (`body` is already escaped)."""
    page = (f"<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<meta name=viewport content='width=device-width,initial-scale=1'>"
            f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
            f"<body><h1>{escape(title)}</h1>{body}</body></html>")
    return Response(page, status=status, mimetype="text/html")


@bp.get("/")
def index() -> Response:
    links = [
        ("/fleet", "Fleet: every unit's status, signal, data pushed and updates, live"),
        ("/live", "Live: the streaming devices' latest values, and their sessions"),
        ("/status/alive/recent", "Recent alive pings (plain text, newest first)"),
        ("/status/alive/summary", "Ping summary: which units are alive, signal strength"),
        ("/data/co2/summary", "CO2 summary: the tiered CO2 and temperature plots"),
    ]
    items = "".join(f"<li><a href='{href}'>{escape(text)}</a></li>" for href, text in links)
    return html_page(
        "co2unit-server",
        "<p>The server the CO2 Observation Units report to: alive pings, resumable data "
        f"uploads and update downloads over HTTP/1.0.</p><ul>{items}</ul>",
    )


@bp.get("/status/alive/recent")
def recent_pings() -> Response:
    """The newest pings as text: sub-second digits and the `co2unit-` prefix stripped."""
    services = current_app.extensions["co2unit"]
    ascending = parse_bool("asc", request.args.get("asc"), default=False)
    refresh = parse_int("refresh", request.args.get("refresh"))
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S") + "\t(now)"
    pings = services.pings.recent(services.config.recent_pings)
    lines = [now] + [_short_ping(line) for line in pings]
    if ascending:
        lines.reverse()
    resp = Response("\n".join(lines) + "\n", mimetype="text/plain")
    resp.headers["Cache-Control"] = "no-cache"
    if refresh is not None:
        if refresh < 1:
            raise ApiError(ErrorCode.BAD_QUERY, "refresh must be a positive number of seconds")
        resp.headers["Refresh"] = str(refresh)
    return resp


def _short_ping(line: str) -> str:
    fields = line.split("\t")
    fields[0] = fields[0].split(".", 1)[0]
    if len(fields) > 1:
        fields[1] = fields[1].removeprefix(HW_ID_PREFIX)
    return "\t".join(fields)


@bp.get("/status/alive/summary")
def pings_summary() -> Response:
    return published(PINGS_SUMMARY, PINGS_REFRESH_S)


@bp.get("/status/alive/<name>")
def pings_file(name: str) -> Response:
    return published(name, PINGS_REFRESH_S)


@bp.get("/data/co2/summary")
def co2_summary() -> Response:
    return published(CO2_SUMMARY, CO2_REFRESH_S)


@bp.get("/data/co2/<name>")
def co2_file(name: str) -> Response:
    return published(name, CO2_REFRESH_S)


def published(name: str, refresh_s: int) -> Response:
    """Serve a generated page or plot from var/pub/, or explain how to generate it."""
    pub_dir = current_app.extensions["co2unit"].config.pub_dir
    path = pub_dir / name
    if not is_plain_name(name) or name.startswith(".") or not path.is_file():
        return html_page(
            "Not generated yet",
            f"<p><code>{escape(name)}</code> has not been generated. Pages and plots are built "
            "from the pushed data by the research toolchain; on the server run</p>"
            "<pre><code>scripts/make-summaries.sh</code></pre><p>(or <code>make -C database "
            "DATA_DIR=../remote_data DB_DIR=../var WEB_PUB_DIR=../var/pub</code>), for example "
            "from cron every few minutes.</p>",
            status=404,
        )
    mimetype = mimetypes.guess_type(name)[0] or "application/octet-stream"
    resp = Response(path.read_bytes(), mimetype=mimetype)
    resp.headers["Refresh"] = str(refresh_s)
    resp.headers["Cache-Control"] = f"public, max-age={refresh_s}"
    return resp
