"""The summary pages in WEB_PUB_DIR: pings_summary.html (one row per unit) and co2_summary.html.

Self-contained HTML (no external CSS or JS), every value escaped, images by bare file name so
that the server's /status/alive/<name> and /data/co2/<name> routes resolve them.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from html import escape
from pathlib import Path

from ..core.files import write_atomic
from ..core.timestamps import DAY
from ..database import plotdata
from ..database.plotdata import Period
from . import quality

PINGS_SUMMARY = "pings_summary.html"
CO2_SUMMARY = "co2_summary.html"
OUTPUTS = (PINGS_SUMMARY, CO2_SUMMARY)

_STYLE = """body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}
table{border-collapse:collapse;font-size:.85rem}
th,td{padding:.2rem .5rem;border-bottom:1px solid #ddd}
th{background:#f2f2f2;text-align:left;position:sticky;top:0}td.n{text-align:right}
tr.idle td{color:#888}tr.lossy td{background:#fde2e1;color:#8a1c14;font-weight:600}
.wide{overflow-x:auto}table.quality td:first-child{white-space:nowrap}
.alert{background:#fde2e1;color:#8a1c14;padding:.5rem .8rem;
border-left:4px solid #c0392b}img{max-width:100%;height:auto;border:1px solid #eee}
.note{color:#666;font-size:.85rem}"""


@dataclass
class UnitSummary:
    """One row of the ping summary."""

    hw_id: str
    nickname: str | None = None
    site: str | None = None
    tier: int | None = None
    deployed: bool = False
    last_ping: str | None = None
    last_dbm: int | None = None
    last_ping_deployed: str | None = None
    days_deployed: float | None = None
    days_with_ping: int | None = None
    min_dbm: int | None = None
    mean_dbm: float | None = None
    max_dbm: int | None = None


def unit_summaries(conn: sqlite3.Connection, now: float) -> list[UnitSummary]:
    """Every unit seen in pings, readings or deployments; deployed units first."""
    periods = plotdata.periods(conn)
    by_unit: dict[str, list[Period]] = {}
    for p in periods:
        by_unit.setdefault(p.unit_id, []).append(p)
    units = sorted(set(plotdata.ping_units(conn)) | set(plotdata.reading_units(conn))
                   | set(by_unit))
    rows = [_summary(conn, unit, by_unit.get(unit, []), now) for unit in units]
    return sorted(rows, key=lambda r: (not r.deployed, -(r.tier or 0) if r.deployed else 0,
                                       (r.site or "") if r.deployed else "", r.hw_id))


def _summary(conn: sqlite3.Connection, unit: str, periods: list[Period],
             now: float) -> UnitSummary:
    row = UnitSummary(unit)
    last = conn.execute("SELECT ping_ts, rssi_dbm, nickname FROM pings WHERE unit_id = ? "
                        "ORDER BY ping_ts DESC LIMIT 1", (unit,)).fetchone()
    if last:
        row.last_ping, row.last_dbm, row.nickname = last[0][:19].replace("T", " "), last[1], last[2]
    current = plotdata.current_deployment(periods, now)
    latest = max(periods, key=lambda p: p.start or 0.0, default=None)
    for p in (latest, current):
        if p is not None:
            row.nickname, row.site, row.tier = p.nickname or row.nickname, p.site, p.tier
    if current is None or current.start is None:
        return row
    end = now if current.end is None else min(current.end, now)
    row.deployed = current.end is None or current.end > now
    row.days_deployed = max(end - current.start, 0.0) / DAY
    stats = conn.execute(
        "SELECT max(ping_ts), count(DISTINCT ping_date), min(rssi_dbm), avg(rssi_dbm), "
        "max(rssi_dbm) FROM pings WHERE unit_id = ? AND ping_ts >= ? AND ping_ts < ?",
        (unit, plotdata.to_text(current.start, "T"), plotdata.to_text(end + 1, "T"))).fetchone()
    last_deployed, row.days_with_ping, row.min_dbm, row.mean_dbm, row.max_dbm = stats
    row.last_ping_deployed = last_deployed[:19].replace("T", " ") if last_deployed else None
    return row


def _cell(value: object, numeric: bool = False, digits: int = 0) -> str:
    if value is None:
        text = "–"
    elif isinstance(value, float):
        text = f"{value:.{digits}f}"
    else:
        text = str(value)
    return f"<td class=n>{escape(text)}</td>" if numeric else f"<td>{escape(text)}</td>"


_COLUMNS = ("hw_id", "nickname", "site", "last ping (UTC)", "last dBm",
            "last ping since deployment", "days deployed", "days with a ping since deployment",
            "min dBm", "mean dBm", "max dBm")


def pings_page(rows: list[UnitSummary], generated: str) -> str:
    """The ping summary: one row per unit, deployed units first, then the pings plot."""
    body = []
    for r in rows:
        cells = [_cell(r.hw_id), _cell(r.nickname), _cell(r.site), _cell(r.last_ping),
                 _cell(r.last_dbm, True), _cell(r.last_ping_deployed),
                 _cell(r.days_deployed, True, 1), _cell(r.days_with_ping, True),
                 _cell(r.min_dbm, True), _cell(r.mean_dbm, True, 1), _cell(r.max_dbm, True)]
        body.append(f"<tr{'' if r.deployed else ' class=idle'}>{''.join(cells)}</tr>")
    head = "".join(f"<th>{escape(c)}</th>" for c in _COLUMNS)
    deployed = sum(r.deployed for r in rows)
    table = (f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
             if rows else "<p>No units yet: no pings, readings or deployments.</p>")
    return _page("Alive pings: summary per unit", generated,
                 f"<p class=note>{len(rows)} units, {deployed} deployed now (listed first); "
                 "signal figures cover the current deployment. Times in UTC.</p>" + table
                 + '<h2>Pings over time</h2><p><img src="pings_all_tiered.svg" '
                 'alt="pings per deployment group, coloured by signal strength"></p>')


_QUALITY_COLUMNS = ("hw_id", "rows imported", "rows dropped", "lost", "dropped by reason",
                    "first reading (UTC)", "last reading (UTC)", "days with data",
                    "days deployed", "longest gap (days)", "gap from", "gap to")


def quality_alert(rows: list[quality.UnitQuality], warn_share: float) -> str:
    """A line at the top of the page when some unit lost more than warn_share of its rows."""
    lossy = [q.unit_id for q in rows if q.lost_share > warn_share]
    if not lossy:
        return ""
    return (f"<p class=alert>{len(lossy)} unit{'s' if len(lossy) > 1 else ''} lost more than "
            f"{warn_share:.1%} of their readings rows in the import: "
            f"{escape(', '.join(lossy))}. See <a href='#quality'>Data quality</a>.</p>")


def quality_section(rows: list[quality.UnitQuality], warn_share: float) -> str:
    """The data-quality table: one row per unit that pushed anything, lossy units marked."""
    if not rows:
        return "<h2 id=quality>Data quality</h2><p>No unit has pushed readings yet.</p>"
    body = []
    for q in rows:
        reasons = ", ".join(f"{r}: {n}" for r, n in sorted(q.dropped_by_reason.items(),
                                                          key=lambda rn: (-rn[1], rn[0])))
        cells = [_cell(q.unit_id), _cell(q.rows_imported, True), _cell(q.rows_dropped, True),
                 _cell(f"{q.lost_share:.1%}", True), _cell(reasons or None),
                 _cell(q.first_reading), _cell(q.last_reading), _cell(q.days_with_data, True),
                 _cell(q.days_deployed, True, 1), _cell(q.longest_gap_days, True, 1),
                 _cell(q.gap_from), _cell(q.gap_to)]
        lossy = q.lost_share > warn_share
        body.append(f"<tr{' class=lossy' if lossy else ''}>{''.join(cells)}</tr>")
    head = "".join(f"<th>{escape(c)}</th>" for c in _QUALITY_COLUMNS)
    over = sum(q.lost_share > warn_share for q in rows)
    return ("<h2 id=quality>Data quality</h2>"
            f"<p class=note>{len(rows)} units pushed data; {over} lost more than "
            f"{warn_share:.1%} of their rows (highlighted; setting loss_warn_share). Rows "
            "dropped are lines of the unit's readings files the import could not use; days and "
            "gaps count within the unit's deployed periods up to now, or between its first and "
            "last reading if it was never deployed.</p>"
            f"<div class=wide><table class=quality><thead><tr>{head}</tr></thead><tbody>"
            f"{''.join(body)}</tbody></table></div>")


def co2_page(last_import: list[tuple[str, str, str, int]], generated: str,
             recent_days: float, quality_html: str = "", alert_html: str = "") -> str:
    """The CO2 summary: the plots, the data quality per unit, and what the last import did."""
    log_rows = "".join(f"<tr><td>{escape(s)}</td><td>{escape(o)}</td><td>{escape(r)}</td>"
                       f"<td class=n>{n}</td></tr>" for s, o, r, n in last_import)
    log = (f"<h2>Last import</h2><table><thead><tr><th>stage</th><th>outcome</th>"
           f"<th>reason</th><th>lines or rows</th></tr></thead><tbody>{log_rows}</tbody></table>"
           if last_import else "")
    return _page("CO2 and temperature: summary", generated, alert_html +
                 "<p class=note>Mean of the ten CO2 readings (ppm) and temperature (°C) per "
                 "deployment group, highest tier on top. Times in UTC.</p>"
                 f'<h2>Last {recent_days:g} days</h2><p><a href="co2_tiered_recent_hires.svg">'
                 f'<img src="co2_tiered_recent_hires.svg" alt="CO2, last {recent_days:g} days">'
                 '</a></p>'
                 '<h2>All data</h2><p><a href="co2_tiered_all_hires.svg">'
                 '<img src="co2_tiered_all_hires.svg" alt="CO2, all data"></a></p>'
                 + quality_html + log)


def _page(title: str, generated: str, body: str) -> str:
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<meta name=viewport content='width=device-width,initial-scale=1'>"
            f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
            f"<h1>{escape(title)}</h1><p class=note>Generated {escape(generated)} UTC.</p>"
            f"{body}</body></html>\n")


def last_import(conn: sqlite3.Connection) -> list[tuple[str, str, str, int]]:
    """The import_log rows of the latest run that imported something."""
    return conn.execute("SELECT stage, outcome, reason, count FROM import_log WHERE run_ts = "
                        "(SELECT max(run_ts) FROM import_log) ORDER BY rowid").fetchall()


def make_page(conn: sqlite3.Connection, name: str, pub_dir: Path, now: float,
              recent_days: float, warn_share: float) -> None:
    """Write one of OUTPUTS into pub_dir."""
    generated = plotdata.to_text(now)
    if name == PINGS_SUMMARY:
        html = pings_page(unit_summaries(conn, now), generated)
    else:
        rows = quality.load(conn)
        html = co2_page(last_import(conn), generated, recent_days,
                        quality_section(rows, warn_share), quality_alert(rows, warn_share))
    write_atomic(pub_dir / name, html)
