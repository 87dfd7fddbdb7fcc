"""The live fleet pages: /fleet (every unit, problems first, then the gateways' devices) and
/fleet/<id> (one unit, or one gateway device).

Self-contained HTML (inline CSS and a few lines of inline JS for sorting), every value escaped,
readable on a phone (the tables scroll sideways). Figures come from fleet_status, live.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager
from html import escape

from flask import Blueprint, Response, current_app, request

from ..core.config import Config
from ..core.errors import ApiError, ErrorCode
from ..core.timestamps import DAY, to_epoch
from ..core.validate import check_device_id, check_hw_id
from ..records.sessions import Session, listed
from ..status import fleet_plot, fleet_status, gateway_status
from ..status.fleet_status import UnitDetail, UnitRow, ago, iso_z
from ..status.gateway_status import DeviceDetail, DeviceRow
from .services import Services

bp = Blueprint("fleet", __name__)

REFRESH_S = 60
_STYLE = """body{font-family:system-ui,sans-serif;margin:1rem;color:#222;line-height:1.4}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.6rem}
.wide{overflow-x:auto;-webkit-overflow-scrolling:touch}
table{border-collapse:collapse;font-size:.85rem}
th,td{padding:.25rem .5rem;border-bottom:1px solid #ddd;white-space:nowrap;text-align:left}
th{background:#f2f2f2;position:sticky;top:0}td.n{text-align:right}
table.sortable th{cursor:pointer;user-select:none}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
.st{display:inline-block;padding:0 .45em;border-radius:.6em;font-weight:600}
.st-alive{background:#d3f9d8;color:#2b8a3e}.st-late{background:#fff3bf;color:#8f5b00}
.st-silent{background:#ffe3e3;color:#c92a2a}.st-never-seen{background:#f3d9fa;color:#862e9c}
.st-unknown{background:#e9ecef;color:#495057}
tr.problem td{background:#fff8f8}.note{color:#666;font-size:.85rem}
pre{background:#f6f6f6;padding:.5rem;overflow-x:auto;font-size:.8rem}
img,svg.plot{max-width:100%;height:auto}
@media (max-width:40rem){body{margin:.5rem}table{font-size:.78rem}}"""
# Click a header to sort by it (again to reverse); cells sort by data-v when they have it.
_SORT_JS = """document.querySelectorAll("table.sortable th").forEach((th, i) => {
  th.addEventListener("click", () => {
    const body = th.closest("table").tBodies[0];
    const up = th.getAttribute("aria-sort") !== "ascending";
    th.parentNode.querySelectorAll("th").forEach(h => h.removeAttribute("aria-sort"));
    th.setAttribute("aria-sort", up ? "ascending" : "descending");
    const key = r => { const c = r.cells[i], v = c.dataset.v;
      return v === undefined ? c.textContent.trim().toLowerCase() : v === "" ? null : +v; };
    const cmp = (a, b) => a === b ? 0 : a === null ? 1 : b === null ? -1 : a < b ? -1 : 1;
    const rows = [...body.rows].sort((a, b) => (up ? 1 : -1) * cmp(key(a), key(b)));
    body.append(...rows);
  });
});"""


def services() -> Services:
    return current_app.extensions["co2unit"]


def is_hw_id(ident: str) -> bool:
    """True for a hardware ID, False for a gateway device's name; 400 for neither."""
    if services().hw_id_pattern.fullmatch(ident):
        return True
    check_device_id(ident)
    return False


def unknown_id(ident: str) -> ApiError:
    return ApiError(ErrorCode.NOT_FOUND, f"no CO2 unit or gateway device {ident!r} (hardware "
                    f"IDs match {services().hw_id_pattern.pattern!r})")


def request_db() -> AbstractContextManager[sqlite3.Connection]:
    """The database for one request, in one read snapshot."""
    cfg = services().config
    return fleet_status.server_db(cfg.db_path, cfg.db_busy_timeout_ms)


def page(title: str, body: str, refresh_s: int | None = None) -> Response:
    """A self-contained HTML page (`body` is already escaped)."""
    html = (f"<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<meta name=viewport content='width=device-width,initial-scale=1'>"
            f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
            f"<body><h1>{escape(title)}</h1>{body}<script>{_SORT_JS}</script></body></html>")
    resp = Response(html, mimetype="text/html")
    resp.headers["Cache-Control"] = "no-cache"
    if refresh_s:
        resp.headers["Refresh"] = str(refresh_s)
    return resp


def td(value: object, sort: float | None | str = "text", numeric: bool = False,
       title: str | None = None) -> str:
    """A cell with its text escaped; `sort` (a number, or None for missing) orders it."""
    text = "–" if value is None or value == "" else str(value)
    attrs = " class=n" if numeric else ""
    if sort != "text":
        attrs += f' data-v="{"" if sort is None else sort}"'
    if title:
        attrs += f' title="{escape(title)}"'
    return f"<td{attrs}>{escape(text)}</td>"


def badge(status: str) -> str:
    """A unit's status, coloured."""
    return f"<span class='st st-{status.replace(' ', '-')}'>{escape(status)}</span>"


def table(headers: Iterable[str], rows: Iterable[str], sortable: bool = True,
          table_id: str = "") -> str:
    """A table in a sideways-scrolling box; `rows` are finished <tr> elements."""
    head = "".join(f"<th scope=col>{escape(h)}</th>" for h in headers)
    attrs = (" class=sortable" if sortable else "") + (f" id={table_id}" if table_id else "")
    return (f"<div class=wide><table{attrs}><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def size_text(n: int | None) -> str | None:
    """Bytes for people: '12.3 kB'."""
    if n is None:
        return None
    for unit, scale in (("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _age_cell(epoch: float | None, now: float) -> str:
    # Missing sorts as the oldest: a unit never heard from is the most overdue.
    if epoch is None:
        return td(None, 1e12, True)
    return td(ago(now - epoch), round(now - epoch), True, iso_z(epoch))


def _dbm(value: float | None) -> str:
    return td(None if value is None else f"{value:g}", value, True)


def _updates_text(row: UnitRow) -> str:
    return ", ".join(f"{u.name}: {u.state}" for u in row.updates[-3:])


# Status and last ping right after the unit: what a phone shows before scrolling sideways.
FLEET_COLUMNS = ("unit", "status", "last ping", "nickname", "site", "tier", "deployment",
                 "dBm", "median dBm 7 d", "last push", "readings behind", "pushed 7 d",
                 "error entries 7 d", "updates")


def fleet_row(row: UnitRow, now: float) -> str:
    """A unit's <tr> on /fleet."""
    cells = [f"<td><a href='/fleet/{escape(row.hw_id)}'>{escape(row.hw_id)}</a></td>",
             f"<td data-v='{_status_order(row)}'>{badge(row.status)}</td>",
             _age_cell(row.last_ping, now), td(row.nickname), td(row.site),
             td(row.tier, row.tier, True), td(row.deployment), _dbm(row.rssi_dbm),
             _dbm(row.rssi_median), _age_cell(row.last_push, now),
             _age_cell(row.last_reading, now), td(size_text(row.bytes_7d), row.bytes_7d, True),
             td(row.errors_7d, row.errors_7d, True), td(_updates_text(row))]
    css = " class=problem" if row.problem else ""
    return f"<tr{css} data-status='{escape(row.status)}'>{''.join(cells)}</tr>"


def _status_order(row: UnitRow) -> int:
    # Sorting by status keeps the page's order: deployed units' trouble first.
    return row.rank * 10 + fleet_status.STATUSES.index(row.status)


@bp.get("/fleet")
def fleet_page() -> Response:
    """Every unit, deployed units in trouble first."""
    cfg = services().config
    now = time.time()
    with request_db() as conn:
        rows = fleet_status.fleet(conn, cfg, now)
        devices = gateway_status.fleet_devices(conn, cfg, now)
        recent_sessions = listed(conn, RECENT_SESSIONS)
    body = (f"<p id=summary><strong>{escape(fleet_status.summary(rows))}</strong></p>"
            f"<p class=note>As of {escape(iso_z(now) or '')}; refreshes every {REFRESH_S} s. "
            f"Alive: pinged within {cfg.late_after_hours:g} h; late: longer; silent: nothing "
            f"for {cfg.silent_after_hours:g} h; never seen: deployed, never pinged; unknown: "
            "pings but in no deployment. Deployed units in trouble come first; click a column "
            "to sort. Times are UTC.</p>")
    if rows:
        body += table(FLEET_COLUMNS, [fleet_row(r, now) for r in rows], table_id="fleet")
    else:
        body += "<p>No units yet: no pings, pushes or deployments.</p>"
    if devices:
        body += _devices_section(devices, cfg, now)
    if recent_sessions:
        body += sessions_section(recent_sessions, RECENT_SESSIONS)
    body += "<p class=note><a href='/'>Index</a> · <a href='/api/units'>JSON</a></p>"
    return page("Fleet", body, REFRESH_S)


# As the units' table: status and age first, what a phone shows before scrolling sideways.
DEVICE_COLUMNS = ("device", "status", "last data", "family", "interval", "last values",
                  "received 7 d", "refused 7 d")


def _devices_section(rows: list[DeviceRow], cfg: Config, now: float) -> str:
    ratio = cfg.silent_after_hours / cfg.late_after_hours
    tcp, pull = (gateway_status.LATE_INTERVALS[f] for f in gateway_status.FAMILIES)
    return (f"<h2>Gateway devices</h2><p id=device-summary><strong>"
            f"{escape(gateway_status.summary(rows))}</strong></p>"
            f"<p class=note>Weather stations over TCP (family tcp) and polled NodeMCUs "
            f"(pull). Alive: data within {tcp:g} intervals (tcp: its expectedWakeupTime) or "
            f"{pull:g} (pull: its interval in pull_devices_file); silent: {ratio:.2g} times "
            "that, as for the units; never seen: no usable data yet; unknown: polled before, "
            "no longer in pull_devices_file. Refused: bad packets or answers, failed polls. "
            "Devices in trouble come first.</p>"
            + table(DEVICE_COLUMNS, [device_row(r, now) for r in rows], table_id="devices"))


RECENT_SESSIONS = 10


def sessions_section(rows: list[Session], limit: int) -> str:
    """The newest streaming sessions (`rows`, newest first) and their times."""
    head = "<h2>Streaming sessions</h2>"
    if not rows:
        return head + "<p>No session started yet.</p>"
    cells = [f"<tr>{td(s.id)}{td(s.name)}{td(iso_z(s.started_at))}"
             f"{td(iso_z(s.stopped_at) if s.stopped_at else 'running')}</tr>" for s in rows]
    return (head + table(("session", "name", "started (UTC)", "stopped (UTC)"), cells,
                         table_id="sessions")
            + f"<p class=note>The newest {limit}; all at <a href='/api/sessions'>"
            "/api/sessions</a>; start and stop them on the <a href='/live'>live page</a>.</p>")


def device_row(row: DeviceRow, now: float) -> str:
    """A gateway device's <tr> on /fleet."""
    cells = [f"<td><a href='/fleet/{escape(row.device)}'>{escape(row.device)}</a></td>",
             f"<td data-v='{row.rank * 10 + fleet_status.STATUSES.index(row.status)}'>"
             f"{badge(row.status)}</td>",
             _age_cell(row.last_data, now), td(row.family),
             td(ago(row.interval_s) if row.interval_s else None, row.interval_s, True),
             td(gateway_status.values_text(row.values),
                title=", ".join(f"{v.name} at {v.ts}Z" for v in row.values)),
             td(row.received_7d, row.received_7d, True), td(row.refused_7d, row.refused_7d, True)]
    css = " class=problem" if row.problem else ""
    return f"<tr{css} data-status='{escape(row.status)}'>{''.join(cells)}</tr>"


@bp.get("/fleet/<ident>")
def unit_page(ident: str) -> Response:
    """One unit: status, CO2 plot, pings, deployments, updates, files, error log; or one
    gateway device: status, last values, newest receipts."""
    svc = services()
    now = time.time()
    if not is_hw_id(ident):
        return device_page(ident, now)
    hw_id = ident
    with request_db() as conn:
        detail = fleet_status.unit_detail(conn, svc.config, hw_id, now)
    if detail is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"no unit {hw_id} has pinged, pushed or been "
                       "deployed")
    row = detail.row
    title = f"{hw_id}" + (f" — {row.nickname}" if row.nickname else "")
    body = "".join([
        _status_section(row, now), _co2_section(detail), _signal_section(detail, now),
        _deployments_section(detail), _updates_section(row), _files_section(detail),
        _errors_section(detail),
        "<p class=note><a href='/fleet'>Fleet</a> · "
        f"<a href='/api/units/{escape(hw_id)}'>JSON</a></p>"])
    return page(title, body, REFRESH_S)


def device_page(device: str, now: float) -> Response:
    """A gateway device's page."""
    with request_db() as conn:
        detail = gateway_status.device_detail(conn, services().config, device, now)
    if detail is None:
        raise unknown_id(device)
    row = detail.row
    links = (f"<p class=note><a href='/fleet'>Fleet</a> · <a href='/api/units/{escape(device)}'>"
             f"JSON</a> · <a href='/api/units/{escape(device)}/measurements?format=csv'>"
             "all values (CSV)</a></p>")
    body = "".join([_device_facts(row, now), _values_section(row), _receipts_section(detail),
                    links])
    return page(f"{device} ({row.family} device)", body, REFRESH_S)


def _device_facts(row: DeviceRow, now: float) -> str:
    interval = "unknown" if row.interval_s is None else f"{ago(row.interval_s)}"
    facts = [("status", badge(row.status)),
             ("family", escape(row.family)),
             ("interval", escape(interval + ("" if row.watched else " (not watched)"))),
             ("last data", _when(row.last_data, now)),
             ("last received", _when(row.last_received, now)),
             ("last 7 days", escape(f"{row.received_7d} received, {row.refused_7d} refused"))]
    items = "".join(f"<tr><th scope=row>{escape(k)}</th><td>{v}</td></tr>" for k, v in facts)
    return f"<div class=wide><table id=status>{items}</table></div>"


def _values_section(row: DeviceRow) -> str:
    head = "<h2>Last values</h2>"
    if not row.values:
        return head + "<p>No values stored yet.</p>"
    rows = [f"<tr>{td(v.name)}{td(f'{v.value:g}', v.value, True)}{td(v.ts + 'Z')}</tr>"
            for v in row.values]
    return head + table(("name", "value", "time (UTC)"), rows, table_id="values")


def _receipts_section(detail: DeviceDetail) -> str:
    head = f"<h2>Newest {gateway_status.RECENT_RECEIPTS} packets or polls</h2>"
    if not detail.receipts:
        return head + "<p>Nothing received yet.</p>"
    rows = [f"<tr>{td(r.ts + 'Z')}{td(r.verdict)}{td(r.stored, r.stored, True)}{td(r.detail)}"
            f"{td(r.source)}</tr>" for r in detail.receipts]
    return head + table(("received (UTC)", "verdict", "values stored", "detail", "raw log line"),
                        rows, table_id="receipts")


def _status_section(row: UnitRow, now: float) -> str:
    facts = [("status", badge(row.status)),
             ("deployment", escape(" · ".join(str(v) for v in (row.deployment, row.site,
                                                                   row.tier) if v is not None)
                                   or "none now")),
             ("last ping", _when(row.last_ping, now)),
             ("signal", escape(f"last {_num(row.rssi_dbm)} dBm, 7-day median "
                               f"{_num(row.rssi_median)} dBm")),
             ("last push", _when(row.last_push, now)),
             ("newest reading pushed", _when(row.last_reading, now)),
             ("last 7 days", escape(f"{size_text(row.bytes_7d)} pushed, {row.errors_7d} "
                                    "error-log entries"))]
    items = "".join(f"<tr><th scope=row>{escape(k)}</th><td>{v}</td></tr>" for k, v in facts)
    return f"<div class=wide><table id=status>{items}</table></div>"


def _when(epoch: float | None, now: float) -> str:
    return "never" if epoch is None else escape(f"{iso_z(epoch)} ({ago(now - epoch)} ago)")


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:g}"


def _co2_section(detail: UnitDetail) -> str:
    head = "<h2>CO2 and temperature, last 7 days</h2>"
    if not any(f.directory == fleet_plot.READINGS_DIR for f in detail.files):
        return head + "<p>No readings pushed yet.</p>"
    src = f"/fleet/{escape(detail.row.hw_id)}/co2.svg"
    return (head + "<p class=note>Drawn from the readings files as pushed (not waiting for the "
            "import): the week up to the newest reading.</p>"
            f"<p><a href='{src}'><img src='{src}' alt='CO2 and temperature of the last 7 days'"
            " width=792></a></p>")


def _signal_section(detail: UnitDetail, now: float) -> str:
    head = f"<h2>Pings, last {fleet_status.HISTORY_DAYS} days</h2>"
    if not detail.pings:
        return head + "<p>No pings in this time.</p>"
    rows = [f"<tr>{td(iso_z(p['ping_ts']))}{td(p['nickname'])}"
            f"{td(p['rssi_raw'], p['rssi_raw'], True)}{td(p['rssi_dbm'], p['rssi_dbm'], True)}"
            f"{td(p['ber_raw'], p['ber_raw'], True)}</tr>" for p in detail.pings]
    return (head + signal_svg(detail.pings, now)
            + table(("time", "nickname", "rssi_raw", "dBm", "ber_raw"), rows, table_id="pings"))


DBM_TOP, DBM_BOTTOM = -50, -120


def signal_svg(pings: list[dict], now: float, days: int = fleet_status.HISTORY_DAYS) -> str:
    """The pings' dBm over the last `days` as a small inline SVG (a grey tick: no reading)."""
    w, h, left, right, top, bottom = 640, 160, 44, 8, 8, 22
    lo = now - days * DAY

    def x(epoch: float) -> float:
        return left + (epoch - lo) / (days * DAY) * (w - left - right)

    def y(dbm: float) -> float:
        dbm = min(max(dbm, DBM_BOTTOM), DBM_TOP)
        return top + (DBM_TOP - dbm) / (DBM_TOP - DBM_BOTTOM) * (h - top - bottom)

    parts = []
    for dbm in range(-60, DBM_BOTTOM - 1, -20):
        parts.append(f"<line x1={left} x2={w - right} y1={y(dbm):.1f} y2={y(dbm):.1f} "
                     f"stroke='#ddd'/><text x={left - 4} y={y(dbm) + 4:.1f} "
                     f"text-anchor=end>{dbm}</text>")
    for back in range(days, -1, -10):
        label = "now" if back == 0 else f"−{back} d"
        parts.append(f"<text x={x(now - back * DAY):.1f} y={h - 6} text-anchor=middle>"
                     f"{label}</text>")
    for p in pings:
        px = x(to_epoch(p["ping_ts"]))
        if p["rssi_dbm"] is None:
            parts.append(f"<line x1={px:.1f} x2={px:.1f} y1={h - bottom - 6} "
                         f"y2={h - bottom} stroke='#999'/>")
        else:
            parts.append(f"<circle cx={px:.1f} cy={y(p['rssi_dbm']):.1f} r=2.5 "
                         "fill='#1c7ed6'/>")
    return (f"<svg class=plot role=img aria-label='signal strength of each ping, dBm' "
            f"viewBox='0 0 {w} {h}' width={w} height={h} font-size=10 "
            f"xmlns='http://www.w3.org/2000/svg'>{''.join(parts)}</svg>")


def _deployments_section(detail: UnitDetail) -> str:
    head = "<h2>Deployments</h2>"
    if not detail.deployments:
        return head + "<p>In no deployment (deploy_durations_tiered).</p>"
    rows = [f"<tr>{td(d['nickname'])}{td(d['site'])}{td(d['tier'], d['tier'], True)}"
            f"{td(d['status'])}{td(d['start_ts'])}{td(d['end_ts'])}{td(d['note'])}</tr>"
            for d in detail.deployments]
    return head + table(("nickname", "site", "tier", "status", "start (UTC)", "end (UTC)",
                         "note"), rows, table_id="deployments")


def _updates_section(row: UnitRow) -> str:
    head = "<h2>Updates</h2>"
    if not row.updates:
        return head + "<p>No updates published for this unit.</p>"
    rows = [f"<tr>{td(u.name)}<td>{escape(u.state)}</td>{td(u.published)}{td(u.delivered)}"
            f"{td(u.confirmed)}{td(f'{u.files_sent}/{u.files}')}</tr>" for u in row.updates]
    return head + table(("update", "state", "published", "delivered", "confirmed",
                         "files sent"), rows, table_id="updates")


def _files_section(detail: UnitDetail) -> str:
    head = "<h2>Pushed files</h2>"
    if not detail.files:
        return head + "<p>Nothing pushed yet.</p>"
    rows = [f"<tr>{td(f.directory)}{td(f.name)}{td(size_text(f.size), f.size, True)}"
            f"{td(iso_z(f.mtime), f.mtime)}</tr>" for f in detail.files]
    return head + table(("directory", "file", "size", "last write"), rows, table_id="files")


def _errors_section(detail: UnitDetail) -> str:
    head = "<h2>Newest error log</h2>"
    if detail.error_log is None:
        return head + "<p>No error log pushed yet.</p>"
    return (head + f"<p class=note>The last {len(detail.error_tail)} lines of "
            f"<code>errors/{escape(detail.error_log)}</code>:</p>"
            f"<pre>{escape(chr(10).join(detail.error_tail))}</pre>")


@bp.get("/fleet/<hw_id>/co2.svg")
def co2_plot(hw_id: str) -> Response:
    """The unit's last week of CO2 and temperature as SVG, drawn when new data came."""
    svc = services()
    cfg = svc.config
    hw_id = check_hw_id(hw_id, svc.hw_id_pattern)
    with request_db() as conn:
        row = fleet_status.fleet(conn, cfg, units=[hw_id], with_updates=False)[0]
    label = " ".join(str(v) for v in (hw_id, row.nickname, row.site) if v)
    plot = fleet_plot.co2_svg(cfg.remote_data_dir, cfg.var_dir / "cache" / "fleet",
                              cfg.locks_dir, hw_id, label)
    if plot is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"{hw_id} has pushed no readings")
    key, svg = plot
    resp = Response(svg, mimetype="image/svg+xml")
    resp.headers["Cache-Control"] = "no-cache"
    resp.set_etag(key)
    return resp.make_conditional(request)
